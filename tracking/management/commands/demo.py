"""``python manage.py demo``: the whole product in one process, no external service.

Migrates the database, registers a simulated fleet, then serves the map and
the hub with daphne while the same event loop feeds the simulator through the
ingestion pipeline. With the defaults that is SQLite, with updates passed
within the process; with ``REDIS_URL`` and ``DATABASE_URL`` set it uses those.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import socket
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracking.hub.fanout import announce
from tracking.hub.publishing import publish_locations
from tracking.ingest.pipeline import Pipeline, consume
from tracking.ingest.sources.simulator import SimulatorSource
from tracking.ingest.store import register_trackers
from tracking.management.simulator_options import add_simulator_arguments, fleet_from_options
from tracking.models import Geofence

logger = logging.getLogger("tracking.demo")

SAMPLE_GEOFENCES = Path(__file__).resolve().parents[2] / "geofence_samples" / "helsinki.geojson"
"""The mirrored sample's fences (MIT, see NOTICE.md beside them)."""


class Command(BaseCommand):
    help = "Run the live map with a simulated fleet in one process (SQLite, no Redis)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
        parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
        add_simulator_arguments(parser, trackers=200)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError("--port must be between 1 and 65535")
        _check_can_listen(options["host"], options["port"])
        fleet = fleet_from_options(options, start=timezone.now())
        call_command("migrate", interactive=False, verbosity=0)
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)
        register_trackers(
            trackers=[(tracker.tracker_id, tracker.name) for tracker in fleet.trackers]
        )
        seed_geofences()
        self._ensure_admin()
        source = SimulatorSource(
            fleet=fleet,
            batch_size=settings.TRACKING_BATCH_SIZE,
            batch_wait=settings.TRACKING_BATCH_WAIT_MS / 1000,
        )
        self._serve(source, host=options["host"], port=options["port"])

    def _ensure_admin(self) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write("Admin: sign in with your superuser account.")
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser("admin", password=password)
        self.stdout.write(f"Admin: created user 'admin' with password {password!r} (shown once).")

    def _serve(self, source: SimulatorSource, *, host: str, port: int) -> None:
        announce(role="demo", single_process=True)
        # daphne installs Twisted's asyncio reactor when imported, so import it here.
        from daphne.server import Server
        from twisted.internet import defer
        from twisted.internet import reactor as twisted_reactor

        from tracker_site.asgi import application

        # Twisted's reactor is an interface-typed module attribute mypy cannot follow.
        reactor: Any = twisted_reactor
        stop = asyncio.Event()
        pipeline = Pipeline(publish=publish_locations)
        running: dict[str, asyncio.Task[Any]] = {}
        shown_host = f"[{host}]" if ":" in host else host

        async def feed() -> None:
            try:
                await consume(
                    source=source,
                    pipeline=pipeline,
                    stop=stop,
                    progress_seconds=settings.TRACKING_PROGRESS_SECONDS,
                )
            except Exception:
                logger.exception("the simulated fleet stopped")
            finally:
                await pipeline.close()

        def start_feed() -> None:
            running["feed"] = asyncio.ensure_future(feed())
            self.stdout.write(
                f"Live map: http://{shown_host}:{port}/  ·  admin: http://{shown_host}:{port}/admin/"
                "  ·  Ctrl-C stops"
            )

        def finish_feed() -> Any:
            stop.set()
            task = running.get("feed")
            return defer.Deferred.fromFuture(task) if task else None

        reactor.callWhenRunning(start_feed)
        reactor.addSystemEventTrigger("before", "shutdown", finish_feed)
        Server(
            application=application,
            endpoints=[f"tcp:port={port}:interface={host.replace(':', chr(92) + ':')}"],
            verbosity=0,
            # As the README's server command lines: a larger message is refused
            # before it is read (the hub takes HUB_MAX_MESSAGE_BYTES).
            websocket_max_message_size=65536,
            websocket_max_frame_size=65536,
        ).run()
        self.stdout.write("demo stopped")


def seed_geofences(path: Path = SAMPLE_GEOFENCES) -> None:
    """Import the fences of ``path`` with ``import_geofences`` when the database
    has none, so a fresh demo shows crossings; an operator's fences are kept."""
    if Geofence.objects.exists():
        return
    call_command("import_geofences", str(path), stdout=io.StringIO())
    names = ", ".join(Geofence.objects.order_by("name").values_list("name", flat=True))
    logger.info(
        "no geofences yet: seeded %s from %s (MIT, see its NOTICE.md)",
        names,
        path.relative_to(settings.BASE_DIR) if path.is_relative_to(settings.BASE_DIR) else path,
    )


def _check_can_listen(host: str, port: int) -> None:
    """Fail at once, and clearly, when the port is taken or the interface wrong
    (daphne would only log it and return)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server will: a port left in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CommandError(
                f"cannot listen on {host}:{port} ({reason}): choose another with --port (or --host)"
            ) from None
