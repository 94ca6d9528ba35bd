"""A day of one tracker at one report a second, served thinned for replay.

86,400 positions of one tracker are stored in a scratch PostgreSQL database
(generated there: a winding drive through the day with stops, and GPS noise
of a few metres), and daphne serves ``GET /api/trackers/{id}/track`` for the
whole day at the zooms a replay is watched at. For each zoom: the median time
the answer takes (the request from this process, on loopback), its bytes,
how many positions it kept and the tolerance it states.

    python -m bench.track [--full]
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import common
from bench.common import Row, number

POSITIONS = 86_400
ZOOMS = (10, 13, 16, 18)
QUICK = {"rounds": 5}
FULL = {"rounds": 21}

# One position a second: driving round a loop for 50 minutes of each hour,
# then stopped for 10, with noise of about 3 metres all the time.
_GENERATE = """
INSERT INTO tracking_position (tracker_id, "timestamp", latitude, longitude, speed, heading, accuracy, received_at)
SELECT %(tracker)s::uuid,
       to_timestamp((%(start)s + s * 1000) / 1000.0),
       60.17 + 0.03 * sin(moving / 1500.0) + (random() - 0.5) * 0.00005,
       24.94 + 0.06 * cos(moving / 2100.0) + (random() - 0.5) * 0.0001,
       CASE WHEN s %% 3600 < 3000 THEN 30 + 20 * random() ELSE 0 END,
       NULL, 5, now()
FROM generate_series(0, %(count)s - 1) AS s,
     LATERAL (SELECT (s / 3600) * 3000 + least(s %% 3600, 3000) AS moving) AS m
"""


def run(*, quick: bool) -> dict[str, Any]:
    rounds = (QUICK if quick else FULL)["rounds"]
    folder = common.RESULTS / "work" / "track"
    folder.mkdir(parents=True, exist_ok=True)
    tracker = uuid.uuid4()
    # Yesterday (UTC): a fresh database has the partitions of the last days.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day_start_ms = int((today - timedelta(days=1)).timestamp() * 1000)
    with common.scratch_postgres_database() as database:
        env = common.base_env(DATABASE_URL=database, LOG_LEVEL="WARNING", DEBUG="1")
        migrated = common.manage(["migrate", "-v0"], env=env, timeout=180)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrated.stderr}")
        with psycopg.connect(database, autocommit=True) as connection:
            connection.execute(
                "INSERT INTO tracking_tracker (id, name, is_active, created_at) VALUES (%s, 'Bus 1', true, now())",
                [tracker],
            )
            connection.execute(
                _GENERATE, {"tracker": tracker, "start": day_start_ms, "count": POSITIONS}
            )
            connection.execute("ANALYZE tracking_position")
        port = common.free_port()
        with common.background(
            common.daphne_command(port), env=env, log=folder / "daphne.log"
        ) as daphne:
            common.wait_for_port("127.0.0.1", port, timeout=60, process=daphne)
            figures = {
                str(zoom): _measure(port, tracker, since=day_start_ms, zoom=zoom, rounds=rounds)
                for zoom in ZOOMS
            }
    return {"positions": POSITIONS, "rounds": rounds, "zooms": figures}


def _measure(
    port: int, tracker: uuid.UUID, *, since: int, zoom: int, rounds: int
) -> dict[str, Any]:
    path = (
        f"/api/trackers/{tracker}/track?since={since}"
        f"&until={since + POSITIONS * 1000 - 1}&zoom={zoom}"
    )
    seconds: list[float] = []
    body: dict[str, Any] = {}
    size = 0
    for _ in range(rounds + 1):  # the first warms the server up and is not counted
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        started = time.perf_counter()
        connection.request("GET", path, headers={"Host": "localhost"})
        response = connection.getresponse()
        content = response.read()
        elapsed = time.perf_counter() - started
        connection.close()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {content[:300]!r}")
        seconds.append(elapsed)
        size = len(content)
        body = json.loads(content)
    return {
        "median_seconds": common.median(seconds[1:]),
        "bytes": size,
        "stored": body["stored"],
        "kept": len(body["positions"]),
        "tolerance_metres": body["toleranceMetres"],
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    table = []
    for zoom, measured in figures["zooms"].items():
        table.append(
            Row(
                "track",
                f"day at 1 Hz, zoom {zoom}",
                f"{number(measured['median_seconds'] * 1000)} ms, {number(measured['bytes'] / 1024)} KiB, "
                f"{number(measured['kept'])} of {number(measured['stored'])} kept, "
                f"±{measured['tolerance_metres']} m",
            )
        )
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    result = run(quick=not parser.parse_args().full)
    for row in rows(result):
        print(f"{row.figure}: {row.value}")
