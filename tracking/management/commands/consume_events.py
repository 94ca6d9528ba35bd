"""``python manage.py consume_events --source jsonl|simulator``: run the ingestion pipeline.

SIGINT or SIGTERM finish the batch in hand, commit it and exit 0; a second
signal exits at once. A finite source (a file) ends with a summary line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracking.hub.fanout import announce
from tracking.hub.publishing import publish_locations
from tracking.ingest.pipeline import Pipeline, consume
from tracking.ingest.sources import EventSource, SourceConfigurationError
from tracking.ingest.sources.jsonl import JsonlSource
from tracking.ingest.sources.simulator import SimulatorSource
from tracking.ingest.store import register_trackers
from tracking.management.database import require_migrated
from tracking.management.simulator_options import (
    add_simulator_arguments,
    fleet_from_options,
)
from tracking.redaction import redacted

logger = logging.getLogger("tracking.consume_events")


class Command(BaseCommand):
    help = "Consume location events in batches: store them, track latest positions, push to maps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", choices=["eventhub", "jsonl", "simulator"], required=True)
        parser.add_argument("--path", help="jsonl: file of one event body per line; - for stdin")
        parser.add_argument(
            "--consumer-group",
            default=None,
            help="eventhub: the consumer group (default EVENTHUB_CONSUMER_GROUP, $Default)",
        )
        add_simulator_arguments(parser)
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.TRACKING_BATCH_SIZE,
            help="most events per batch",
        )
        parser.add_argument(
            "--progress-seconds",
            type=float,
            default=settings.TRACKING_PROGRESS_SECONDS,
            help="seconds between progress lines",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        # A database that is down is waited out (the pipeline retries); one
        # that was never migrated would only fail every batch.
        require_migrated(outage_waited=True)
        pipeline = Pipeline(publish=publish_locations)
        source = self._source(options, pipeline)
        announce(role="consume_events")
        logger.info("consuming from %s", source.description)
        try:
            progress = asyncio.run(self._run(source, pipeline, options["progress_seconds"]))
        except SourceConfigurationError as exc:
            raise CommandError(redacted(str(exc))) from None
        verb = "finished" if source.finite else "stopped"
        self.stdout.write(f"consume_events {verb}: {progress.summary_line()}")

    def _source(self, options: dict[str, Any], pipeline: Pipeline) -> EventSource:
        if options["source"] == "eventhub":
            # Imported here: only this source needs the Azure SDK.
            from tracking.ingest.sources.eventhub import EventHubConfig, EventHubSource

            try:
                config = EventHubConfig.from_settings(consumer_group=options["consumer_group"])
            except SourceConfigurationError as exc:
                raise CommandError(redacted(str(exc))) from None
            return EventHubSource(config=config, run_in_db=pipeline.run_in_db)
        if options["source"] == "jsonl":
            if not options["path"]:
                raise CommandError(
                    "--source jsonl needs --path FILE (or --path - for standard input)"
                )
            source = JsonlSource(
                path=options["path"],
                batch_size=options["batch_size"],
                max_line_bytes=settings.TRACKING_MAX_EVENT_BYTES,
            )
            try:
                if options["path"] != "-":
                    source.open().close()
            except OSError as exc:
                raise CommandError(
                    f"cannot read --path {options['path']}: {exc.strerror}"
                ) from None
            return source
        fleet = fleet_from_options(options, start=timezone.now())
        register_trackers(
            trackers=[(tracker.tracker_id, tracker.name) for tracker in fleet.trackers]
        )
        return SimulatorSource(
            fleet=fleet,
            batch_size=options["batch_size"],
            batch_wait=settings.TRACKING_BATCH_WAIT_MS / 1000,
        )

    async def _run(self, source: EventSource, pipeline: Pipeline, progress_seconds: float) -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                logger.warning("second %s: exiting now", signal.Signals(signum).name)
                os._exit(1)
            name = signal.Signals(signum).name
            if pipeline.waiting_for_database:
                logger.warning(
                    "%s: the database is down; the %d events in hand are stored when it "
                    "answers, then this exits (a second %s exits at once without them)",
                    name,
                    pipeline.waiting_for_database,
                    name,
                )
            else:
                logger.info("%s: finishing the current batch", name)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await consume(
                source=source,
                pipeline=pipeline,
                stop=stop,
                progress_seconds=progress_seconds,
            )
        finally:
            await pipeline.close()
