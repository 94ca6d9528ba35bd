"""Trips and stops of one tracker at 1 Hz: what one request costs, in time and memory.

A scratch PostgreSQL database holds one tracker's history at one position a
second, written server-side with generate_series: every hour 30 minutes of
driving (about 20 km, north one hour, back south the next) and 30 minutes
parked with GPS noise of a few metres; so a day is 24 trips and 24 stops.
One process with Django set up (``--measure``) then answers
``GET /api/trackers/{id}/trips`` for the whole range through the test client
(the view reads ``selectors.position_pages``, 5,000 rows a page, and
``tracking/trips.py`` finds the trips as it reads), a few times: the median
time, the positions per second, and how far the process's peak memory
(RSS) grew over what it held before the first request.

Quick: one day (86,400 positions); full: the longest range one request may
ask, 7 days (604,800).

    python -m bench.trips [--full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import common
from bench.common import Row, number

QUICK = {"days": 1, "rounds": 3}
FULL = {"days": 7, "rounds": 3}
TRACKER = uuid.UUID("7a1b0000-0000-4000-8000-00000000b00c")


def _start(days: int) -> datetime:
    """The midnight (UTC) ``days`` whole days before today's: inside the days
    of history a fresh database has partitions for."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def run(*, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    with common.scratch_postgres_database() as database:
        env = common.base_env(DATABASE_URL=database, LOG_LEVEL="WARNING")
        migrated = common.manage(["migrate", "-v0"], env=env, timeout=180)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrated.stderr}")
        start = _start(sizes["days"] + 1)
        stored = _fill(database, start=start, days=sizes["days"])
        measured = subprocess.run(
            [
                *(common.PYTHON, "-m", "bench.trips", "--measure"),
                *("--days", str(sizes["days"]), "--rounds", str(sizes["rounds"])),
                *("--start", start.isoformat()),
            ],
            cwd=common.ROOT,
            env=env | {"DJANGO_SETTINGS_MODULE": "tracker_site.settings"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if measured.returncode != 0:
            raise RuntimeError(f"the measurement failed: {measured.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(measured.stdout.strip().splitlines()[-1])
    return {"positions": stored, **sizes, **figures}


def _fill(database: str, *, start: datetime, days: int) -> int:
    """The tracker and its positions, one a second for ``days``; how many."""
    seconds = days * 86_400
    with psycopg.connect(database) as connection:
        connection.execute(
            "INSERT INTO tracking_tracker (id, name, is_active, created_at) "
            "VALUES (%s, 'Bench van', true, now())",
            (TRACKER,),
        )
        # 0.0001° of latitude a second is 11.1 m/s (40 km/h); parked, a few metres of noise.
        connection.execute(
            """
            INSERT INTO tracking_position
                (tracker_id, timestamp, latitude, longitude, speed, heading, accuracy, received_at)
            SELECT %(tracker)s, %(start)s + make_interval(secs => s),
                   CASE WHEN (s / 3600) %% 2 = 0 THEN 60.0 + 0.0001 * least(s %% 3600, 1800)
                        ELSE 60.18 - 0.0001 * least(s %% 3600, 1800) END
                     + CASE WHEN s %% 3600 >= 1800 THEN (random() - 0.5) * 0.00008 ELSE 0 END,
                   24.9 + CASE WHEN s %% 3600 >= 1800 THEN (random() - 0.5) * 0.00016 ELSE 0 END,
                   CASE WHEN s %% 3600 < 1800 THEN 40.0 ELSE 0.0 END,
                   NULL, 5.0, now()
            FROM generate_series(0, %(last)s) AS s
            """,
            {"tracker": TRACKER, "start": start, "last": seconds - 1},
        )
        connection.execute("ANALYZE tracking_position")
    return seconds


def measure(*, start: datetime, days: int, rounds: int) -> dict[str, Any]:
    """Run with Django set up: the requests, timed, and the peak memory they took."""
    import resource

    import django

    django.setup()
    from django.test import Client

    client = Client(HTTP_HOST="localhost")
    since = int(start.timestamp() * 1000)
    until = int((start + timedelta(days=days)).timestamp() * 1000) - 1
    url = f"/api/trackers/{TRACKER}/trips?since={since}&until={until}"
    client.get(f"/api/trackers/{TRACKER}")  # connect and warm up before the baseline
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    body: dict[str, Any] = {}
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.content[:300]!r}")
        body = response.json()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = common.median(times)
    return {
        "seconds": seconds,
        "positions_per_second": days * 86_400 / seconds,
        "trips": len(body["trips"]),
        "stops": len(body["stops"]),
        "peak_growth_mib": (peak_kib - before_kib) / 1024,
        "answer_bytes": len(json.dumps(body)),
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    positions = figures["positions"]
    return [
        Row(
            "trips",
            f"trips and stops of {figures['days']} day(s) at 1 Hz ({positions:,} positions)",
            f"{number(figures['seconds'], 2)} s ({number(figures['positions_per_second'], 0)}/s)",
        ),
        Row(
            "trips",
            "found: trips / stops (planned: 24 and 24 a day)",
            f"{figures['trips']} / {figures['stops']}",
        ),
        Row(
            "trips",
            "peak memory growth of the serving process",
            f"{number(figures['peak_growth_mib'], 1)} MiB",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, default=QUICK["days"], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=QUICK["rounds"], help=argparse.SUPPRESS)
    parser.add_argument("--start", type=datetime.fromisoformat, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.measure:
        print(
            json.dumps(measure(start=arguments.start, days=arguments.days, rounds=arguments.rounds))
        )
        return 0
    figures = run(quick=not arguments.full)
    for row in rows(figures):
        print(f"{row.figure}: {row.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
