"""``python manage.py simulate --to jsonl --path FILE``: write what the simulator would send.

The events cover ``--duration`` seconds of simulated time ending now (so none
is in the future), written as fast as they can be generated: for tests and
benchmarks, and for feeding ``consume_events --source jsonl``.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracking.management.simulator_options import add_simulator_arguments, fleet_from_options
from tracking.simulation import Fleet, encode_event

# Events are generated and written a slice of simulated time at a time.
SLICE_SECONDS = 10.0


class Command(BaseCommand):
    help = "Write the simulated fleet's events as JSON lines, one body per line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", choices=["jsonl"], default="jsonl", help="where events go")
        parser.add_argument("--path", default="-", help="file to write; - for stdout (default)")
        parser.add_argument(
            "--duration", type=float, default=60.0, help="seconds of simulated time (default 60)"
        )
        parser.add_argument("--count", type=int, default=None, help="stop after this many events")
        add_simulator_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["duration"] > 0:
            raise CommandError("--duration must be more than 0 seconds")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be at least 1")
        end = timezone.now()
        start = end - timedelta(seconds=options["duration"])
        fleet = fleet_from_options(options, start=start)
        with ExitStack() as stack:
            output = self._open(options["path"], stack)
            written = self._write(fleet, output, start=start, end=end, count=options["count"])
            output.flush()
        self.stderr.write(f"simulate: wrote {written} events from {len(fleet.trackers)} trackers")

    @staticmethod
    def _open(path: str, stack: ExitStack) -> BinaryIO:
        if path == "-":
            return sys.stdout.buffer
        try:
            return stack.enter_context(Path(path).open("wb"))
        except OSError as exc:
            raise CommandError(f"cannot write --path {path}: {exc.strerror}") from None

    @staticmethod
    def _write(
        fleet: Fleet, output: BinaryIO, *, start: datetime, end: datetime, count: int | None
    ) -> int:
        written = 0
        moment = start
        while moment < end:
            moment = min(moment + timedelta(seconds=SLICE_SECONDS), end)
            bodies = fleet.events_until(moment)
            if count is not None:
                bodies = bodies[: count - written]
            output.write(b"".join(encode_event(body) + b"\n" for body in bodies))
            written += len(bodies)
            if count is not None and written >= count:
                break
        return written
