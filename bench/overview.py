"""The overview at world zoom with 100,000 trackers in the database: what one update costs the server, and what it sends.

100,000 trackers round 60 places on every continent (a few big fleets, many
small ones) on a scratch PostgreSQL database: most online, some stale, some
offline (not counted) and a few inactive (not counted). Each round does what
a web process does every ``TRACKING_OVERVIEW_SECONDS`` while anyone watches
the overview (``tracking/hub/overview.py``), timed step by step in one
process with Django set up (``--measure``):

- ``query``: ``selectors.counted_trackers_by_area`` (one query, areas of 3°);
- ``roll-up``: ``Overview.rolled_up`` to 15° and 45°;
- ``encode``: the ``overviewUpdated`` record of a world view at 45°, for one
  viewer;
- ``send``: ``OverviewWatch.send`` to ``viewers`` connections, all watching
  the world (one encoding shared), and to as many watching views of their
  own (areas of 15° or 3° round a random point: one encoding each).

Bytes per second to one viewer: the world view's message (record and
WebSocket frame header) once per default period, 5 s; and the largest
message one view can cost: 200 areas of 3°, each holding trackers.

    python -m bench.overview [--full]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import common
from bench.common import Row, number

TRACKERS = 100_000
PLACES = 60
QUICK = {"rounds": 10, "viewers": 1_000}
FULL = {"rounds": 40, "viewers": 10_000}
PERIOD_SECONDS = 5.0
WORLD = [-180.0, -90.0, 180.0, 90.0]
# WebSocket frame header of a server's text message of 126 to 65,535 bytes.
FRAME_HEADER_BYTES = 4


def run(*, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    with common.scratch_postgres_database() as database:
        env = common.base_env(DATABASE_URL=database, LOG_LEVEL="WARNING")
        migrated = common.manage(["migrate", "-v0"], env=env, timeout=180)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrated.stderr}")
        fleet = _fill(database)
        figures: dict[str, Any] = common.run_with_django(
            "bench.overview",
            ["--measure", "--rounds", str(sizes["rounds"]), "--viewers", str(sizes["viewers"])],
            env=env,
        )
    return {"trackers": fleet, **sizes, **figures}


def _fill(database: str) -> dict[str, int]:
    """``TRACKERS`` trackers round ``PLACES`` places, written with COPY; how many of each kind."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    places = [
        (rng.uniform(-45, 65), rng.uniform(-180, 180), rng.paretovariate(1.2))
        for _ in range(PLACES)
    ]
    weights = [weight for _, _, weight in places]
    kinds = {"online": 0, "stale": 0, "offline": 0, "inactive": 0}
    with psycopg.connect(database) as connection:
        with connection.cursor().copy(
            "COPY tracking_tracker (id, name, is_active, created_at, latitude, longitude, "
            "position_at, ordered_at, cell_x, cell_y) FROM STDIN"
        ) as copy:
            for number_ in range(TRACKERS):
                latitude, longitude, _ = rng.choices(places, weights)[0]
                latitude = max(-89.9, min(89.9, rng.gauss(latitude, 0.4)))
                longitude = ((rng.gauss(longitude, 0.6) + 180) % 360) - 180
                draw = rng.random()
                kind = (
                    "inactive"
                    if draw < 0.02
                    else "offline"
                    if draw < 0.10
                    else "stale"
                    if draw < 0.15
                    else "online"
                )
                kinds[kind] += 1
                seen = (
                    now
                    - {
                        "online": timedelta(seconds=5),
                        "stale": timedelta(minutes=5),
                        "offline": timedelta(hours=2),
                        "inactive": timedelta(seconds=5),
                    }[kind]
                )
                copy.write_row(
                    (
                        uuid.uuid4(),
                        f"Tracker {number_}",
                        kind != "inactive",
                        now,
                        latitude,
                        longitude,
                        seen,
                        seen,
                        math.floor(longitude),
                        min(math.floor(latitude), 89),
                    )
                )
        connection.commit()
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE tracking_tracker")
    return kinds


# --- Measured in a process of its own, with Django set up on the scratch database ---------


def measure(*, rounds: int, viewers: int) -> dict[str, Any]:
    import django

    django.setup()
    from tracking.areas import FINEST, MAX_AREAS, Overview, parse_overview_request
    from tracking.hub.overview import OverviewWatch, encoded
    from tracking.selectors import counted_trackers_by_area

    world = parse_overview_request(45, WORLD)
    assert world is not None
    query_ms, roll_up_ms, encode_us = [], [], []
    overview = None
    for _ in range(rounds):
        started = time.perf_counter()
        rows = counted_trackers_by_area(size=FINEST)
        queried = time.perf_counter()
        overview = Overview.rolled_up(rows)
        rolled = time.perf_counter()
        message = encoded(overview, world)
        done = time.perf_counter()
        query_ms.append((queried - started) * 1000)
        roll_up_ms.append((rolled - queried) * 1000)
        encode_us.append((done - rolled) * 1e6)
    assert overview is not None
    world_areas = len(overview.payload(world)["areas"])

    rng = random.Random(5)
    distinct = []
    for _ in range(viewers):
        level = rng.choice((15, 3))
        half = 40.0 if level == 15 else 8.0
        latitude, longitude = rng.uniform(-50, 50), rng.uniform(-180, 180)
        west, east = (((edge + 180) % 360) - 180 for edge in (longitude - half, longitude + half))
        request = parse_overview_request(
            level, [west, latitude - half / 2, east, latitude + half / 2]
        )
        assert request is not None
        distinct.append(request)
    send_ms = {
        "world": _send_ms(OverviewWatch, overview, [world] * viewers, rounds),
        "distinct": _send_ms(OverviewWatch, overview, distinct, rounds),
    }

    # The largest message one view can cost: 200 areas of 3°, every one holding trackers.
    busy = parse_overview_request(3, [0.0, 30.0, 60.0, 60.0])
    assert busy is not None and len(busy.covering) == MAX_AREAS
    full = Overview.counting(
        (y * 3 + 1.5 + n * 0.01, x * 3 + 1.5 + n * 0.01) for x, y in busy.covering for n in range(3)
    )
    largest = encoded(full, busy)
    return {
        "counted": overview.total,
        "query_ms": common.median(query_ms),
        "query_ms_p95": common.percentile(query_ms, 0.95),
        "roll_up_ms": common.median(roll_up_ms),
        "encode_world_us": common.median(encode_us),
        "update_ms": common.median(query_ms) + common.median(roll_up_ms),
        "send_world_viewers_ms": send_ms["world"],
        "send_distinct_viewers_ms": send_ms["distinct"],
        "world_areas": world_areas,
        "world_message_bytes": len(message.encode()),
        "world_bytes_per_second": (len(message.encode()) + FRAME_HEADER_BYTES) / PERIOD_SECONDS,
        "largest_message_bytes": len(largest.encode()),
        "largest_bytes_per_second": (len(largest.encode()) + FRAME_HEADER_BYTES) / PERIOD_SECONDS,
    }


class _Viewer:
    __slots__ = ("chars",)

    def __init__(self) -> None:
        self.chars = 0

    def deliver(self, records: str) -> None:
        self.chars += len(records)


def _send_ms(watch_class: Any, overview: Any, requests: list[Any], rounds: int) -> float:
    """The median time of one ``send`` to a viewer per request."""

    async def timed() -> float:
        async def read() -> Any:
            return overview

        watch = watch_class(read=read, period=lambda: 3600.0)
        viewers = [_Viewer() for _ in requests]
        for viewer, request in zip(viewers, requests, strict=True):
            await watch.watch(viewer, request)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            watch.send(overview)
            times.append((time.perf_counter() - started) * 1000)
        for viewer in viewers:
            watch.unwatch(viewer)
        return float(common.median(times))

    return asyncio.run(timed())


def rows(figures: dict[str, Any]) -> list[Row]:
    counted = figures["counted"]
    viewers = figures["viewers"]
    return [
        Row(
            "overview",
            f"aggregate query, {TRACKERS:,} trackers ({counted:,} counted), PostgreSQL",
            f"{number(figures['query_ms'], 1)} ms (p95 {number(figures['query_ms_p95'], 1)})",
        ),
        Row("overview", "roll-up to 15° and 45°", f"{number(figures['roll_up_ms'], 2)} ms"),
        Row(
            "overview",
            f"encode a world view ({figures['world_areas']} areas of 45°), one viewer",
            f"{number(figures['encode_world_us'], 0)} us",
        ),
        Row(
            "overview",
            f"send to {viewers:,} viewers: all the world / each its own view",
            f"{number(figures['send_world_viewers_ms'], 1)} / "
            f"{number(figures['send_distinct_viewers_ms'], 1)} ms",
        ),
        Row(
            "overview",
            "bytes to one viewer, world view (every 5 s)",
            f"{number(figures['world_bytes_per_second'], 0)} B/s "
            f"({number(figures['world_message_bytes'], 0)} B a message)",
        ),
        Row(
            "overview",
            "bytes to one viewer, largest view (200 areas of 3°, all busy)",
            f"{number(figures['largest_bytes_per_second'], 0)} B/s",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=QUICK["rounds"], help=argparse.SUPPRESS)
    parser.add_argument("--viewers", type=int, default=QUICK["viewers"], help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.measure:
        print(json.dumps(measure(rounds=arguments.rounds, viewers=arguments.viewers)))
        return 0
    figures = run(quick=not arguments.full)
    for row in rows(figures):
        print(f"{row.figure}: {row.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
