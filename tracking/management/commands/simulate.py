"""``python manage.py simulate --to jsonl|eventhub``: send what the simulated fleet reports.

By default the events cover ``--duration`` seconds of simulated time ending
now (so none is in the future), generated as fast as they can be: for tests,
benchmarks and backfills. With ``--realtime`` the fleet drives in real time
and each report is sent when it is due, until ``--duration`` has passed or the
command is stopped (Ctrl-C, SIGTERM).

``--to eventhub`` sends with the SDK's producer, keyed by tracker id so each
tracker's events stay in one partition, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracking.ingest.sources import SourceConfigurationError
from tracking.management.simulator_options import add_simulator_arguments, fleet_from_options
from tracking.redaction import redacted
from tracking.simulation.fleet import Fleet, encode_event

# Events are generated a slice of simulated time at a time.
SLICE_SECONDS = 10.0
# In real time, reports due within this long are sent together.
REALTIME_TICK_SECONDS = 0.1

Body = dict[str, object]


class Command(BaseCommand):
    help = "Send the simulated fleet's events to a JSON-lines file or an Event Hub."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to", choices=["jsonl", "eventhub"], default="jsonl", help="where events go"
        )
        parser.add_argument(
            "--path", default="-", help="jsonl: file to write; - for stdout (default)"
        )
        parser.add_argument(
            "--duration",
            type=float,
            default=None,
            help="seconds of simulated time (default 60; in real time, until stopped)",
        )
        parser.add_argument("--count", type=int, default=None, help="stop after this many events")
        parser.add_argument(
            "--realtime", action="store_true", help="send each report when it is due"
        )
        add_simulator_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        duration = options["duration"]
        if duration is None and not options["realtime"]:
            duration = 60.0
        if duration is not None and not duration > 0:
            raise CommandError("--duration must be more than 0 seconds")
        if options["count"] is not None and options["count"] < 1:
            raise CommandError("--count must be at least 1")
        now = timezone.now()
        if options["realtime"]:
            start, end = now, (now + timedelta(seconds=duration) if duration else None)
        else:
            start, end = now - timedelta(seconds=duration), now
        fleet = fleet_from_options(options, start=start)
        stop = _Stop()
        batches = _limited(
            _batches(fleet, start=start, end=end, realtime=options["realtime"], stop=stop),
            options["count"],
        )
        if options["realtime"] or options["to"] == "eventhub":
            # A long run says how it goes: stdout may be the events themselves.
            where = {"eventhub": "the event hub", "jsonl": options["path"]}[options["to"]]
            if where == "-":
                where = "standard output"
            if not options["realtime"]:
                what = f"the reports of the last {duration:g} s, as fast as they go"
            else:
                what = "reports in real time, " + (
                    "until stopped" if end is None else f"for {duration:g} s"
                )
            self.stderr.write(
                f"simulate: {len(fleet.trackers)} trackers send {what} to {where} (Ctrl-C stops)"
            )
            batches = _reporting(
                batches, every=settings.TRACKING_PROGRESS_SECONDS, say=self.stderr.write
            )
        if options["to"] == "eventhub":
            written = self._to_eventhub(batches, stop)
        else:
            written = self._to_jsonl(batches, options["path"], stop)
        self.stderr.write(f"simulate: sent {written} events from {len(fleet.trackers)} trackers")

    def _to_jsonl(self, batches: AsyncIterator[list[Body]], path: str, stop: _Stop) -> int:
        async def write(output: BinaryIO) -> int:
            written = 0
            async for batch in batches:
                try:
                    output.write(b"".join(encode_event(body) + b"\n" for body in batch))
                    if path == "-":
                        output.flush()
                except BrokenPipeError:
                    # The reader went away (| head, say): stop quietly, as cat
                    # does, and point stdout at nothing so exiting cannot fail.
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    return written
                written += len(batch)
            return written

        with ExitStack() as stack:
            if path == "-":
                output = sys.stdout.buffer
            else:
                try:
                    output = stack.enter_context(Path(path).open("wb"))
                except OSError as exc:
                    raise CommandError(f"cannot write --path {path}: {exc.strerror}") from None
            written = _run_until_signalled(write(output), stop)
            with contextlib.suppress(BrokenPipeError):
                output.flush()
        return written

    def _to_eventhub(self, batches: AsyncIterator[list[Body]], stop: _Stop) -> int:
        # Imported here: only this destination needs the Azure SDK.
        from tracking.ingest.sources.eventhub import EventHubConfig, send_events

        try:
            config = EventHubConfig.from_settings()
            return _run_until_signalled(send_events(config, batches, encode=encode_event), stop)
        except SourceConfigurationError as exc:
            raise CommandError(redacted(str(exc))) from None


def _run_until_signalled(coroutine: Any, stop: _Stop) -> int:
    """Run ``coroutine``; SIGINT or SIGTERM end the stream of batches early."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        result: int = await coroutine
        return result

    return asyncio.run(main())


class _Stop:
    """Set by a signal; the batch generator ends at its next step."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True


async def _batches(
    fleet: Fleet, *, start: datetime, end: datetime | None, realtime: bool, stop: _Stop
) -> AsyncIterator[list[Body]]:
    if not realtime:
        for moment in _slices(start, end or start):
            if stop.requested:
                return
            yield fleet.events_until(moment)
        return
    while not stop.requested:
        now = timezone.now()
        if end is not None and now >= end:
            return
        bodies = fleet.events_until(now)
        if bodies:
            yield bodies
        until_due = (fleet.next_due() - timezone.now()).total_seconds()
        await asyncio.sleep(min(max(until_due, REALTIME_TICK_SECONDS), 1.0))


def _slices(start: datetime, end: datetime) -> Iterator[datetime]:
    moment = start
    while moment < end:
        moment = min(moment + timedelta(seconds=SLICE_SECONDS), end)
        yield moment


async def _reporting(
    batches: AsyncIterator[list[Body]], *, every: float, say: Callable[[str], object]
) -> AsyncIterator[list[Body]]:
    """Pass batches on, saying every ``every`` seconds how many events have gone."""
    started = reported = time.monotonic()
    total = since = 0
    async for batch in batches:
        yield batch
        total += len(batch)
        since += len(batch)
        now = time.monotonic()
        if now - reported >= every:
            say(
                f"simulate: {total} events in {now - started:.0f} s "
                f"({since / (now - reported):.0f} events/s lately)"
            )
            reported, since = now, 0


async def _limited(
    batches: AsyncIterator[list[Body]], count: int | None
) -> AsyncIterator[list[Body]]:
    sent = 0
    async for batch in batches:
        if count is not None:
            batch = batch[: count - sent]
        if batch:
            yield batch
        sent += len(batch)
        if count is not None and sent >= count:
            return
