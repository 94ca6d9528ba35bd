"""The simulator's command-line options, shared by consume_events, simulate and demo."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser

from tracking.simulation.fleet import Fleet, load_routes

# The fleet every simulator command drives unless told otherwise: a restart
# (of the demo, say) on the same database finds its trackers, not new ones.
DEFAULT_SEED = 1


def add_simulator_arguments(parser: CommandParser, *, trackers: int = 100) -> None:
    group = parser.add_argument_group("simulated fleet")
    group.add_argument(
        "--trackers",
        type=int,
        default=trackers,
        help=f"how many trackers (default {trackers})",
    )
    group.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between a tracker's reports (default 1)",
    )
    group.add_argument(
        "--speed", type=float, default=50.0, help="km/h along the route (default 50)"
    )
    group.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=(
            "the same seed drives the same fleet: the same trackers (ids and names) on "
            f"the same routes, so a restart carries on with them (default {DEFAULT_SEED}; "
            "another seed, another fleet)"
        ),
    )
    group.add_argument(
        "--routes",
        default="",
        help="only routes whose name contains one of these words, comma-separated (e.g. helsinki)",
    )


def fleet_from_options(options: dict[str, Any], *, start: datetime) -> Fleet:
    if options["trackers"] < 1:
        raise CommandError("--trackers must be at least 1")
    if not options["interval"] > 0:
        raise CommandError("--interval must be more than 0 seconds")
    if not options["speed"] >= 0:
        raise CommandError("--speed must be 0 km/h or more")
    routes = load_routes()
    words = [word.strip().lower() for word in options.get("routes", "").split(",") if word.strip()]
    if words:
        routes = [route for route in routes if any(word in route.name.lower() for word in words)]
        if not routes:
            names = ", ".join(route.name for route in load_routes())
            raise CommandError(f"--routes matches none of the routes: {names}")
    return Fleet(
        routes=routes,
        trackers=options["trackers"],
        speed_kmh=options["speed"],
        interval=options["interval"],
        seed=options["seed"],
        start=start,
    )
