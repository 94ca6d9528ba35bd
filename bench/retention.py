"""Retention: what day partitions cost at ingest, and pruning a day while ingesting.

- ``partitioned / unpartitioned``: ``consume_events --source jsonl`` of the
  same file into a fresh PostgreSQL database migrated to the end (history
  partitioned by day) and into one migrated back to 0009 (one plain table),
  in turns (A B A B), median of each: the ratio of events per second.
- ``prune while ingesting``: a database holding one old day of 1,000
  trackers at 1 Hz (generated on the server with generate_series into that
  day's partition, then analysed as autovacuum would), and ``consume_events``
  ingesting a file of current events with TRACKING_HISTORY_DAYS=30: its
  first pass, 5 s after the start, drops that day. The figures: ingest
  events per second (1 s progress lines) before, during and after the pass,
  and how long the pass took, from its log line.

By default the old day is scaled down (one report per tracker a minute,
1.44 million rows) to stay within about three minutes; ``--full`` makes the
whole day, 86.4 million rows (about 10 GB of table and indexes, and a long
wait to generate it).

    python -m bench.retention [--full]
    python -m bench.run --only retention [--full]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import common
from bench.common import Row, number
from bench.ingest import consume_jsonl

QUICK = {"events": 100_000, "rounds": 3, "old_day_every_seconds": 60, "stream_events": 300_000}
FULL = {"events": 300_000, "rounds": 3, "old_day_every_seconds": 1, "stream_events": 2_000_000}
TRACKERS = 1_000
TARGET_RATIO = 0.90
HISTORY_DAYS = 30


def run(*, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    work = Path(common.RESULTS / "work")
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"sizes": sizes, "trackers": TRACKERS}
    events = work / "retention-events.jsonl"
    _write_events(events, count=sizes["events"])
    with common.running_redis() as redis_url:
        if redis_url is None:
            raise RuntimeError("no Redis: start one or install redis-server")
        rates: dict[str, list[float]] = {"partitioned": [], "unpartitioned": []}
        for _ in range(sizes["rounds"]):
            for kind in rates:
                with common.scratch_postgres_database() as database:
                    result = consume_jsonl(
                        events,
                        database=database,
                        redis_url=redis_url,
                        prepare=_unpartition if kind == "unpartitioned" else None,
                    )
                    if result["stored"] != sizes["events"]:
                        raise RuntimeError(
                            f"{kind}: stored {result['stored']} of {sizes['events']}"
                        )
                    rates[kind].append(result["events_per_second"])
        figures["ingest"] = {kind: sorted(values) for kind, values in rates.items()}
        partitioned = statistics.median(rates["partitioned"])
        unpartitioned = statistics.median(rates["unpartitioned"])
        figures["partitioned_events_per_second"] = partitioned
        figures["unpartitioned_events_per_second"] = unpartitioned
        figures["ratio"] = partitioned / unpartitioned
        stream = work / "retention-stream.jsonl"
        _write_events(stream, count=sizes["stream_events"])
        with common.scratch_postgres_database() as database:
            figures["prune"] = _prune_while_ingesting(
                stream, database=database, redis_url=redis_url, every=sizes["old_day_every_seconds"]
            )
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    prune = figures["prune"]
    return [
        Row(
            "retention",
            "ingest, history partitioned by day / one table (PostgreSQL)",
            f"{figures['ratio']:.2f}x ({number(figures['partitioned_events_per_second'])} / "
            f"{number(figures['unpartitioned_events_per_second'])} events/s)",
            f">= {TARGET_RATIO}x",
        ),
        Row(
            "retention",
            f"prune a day of {TRACKERS:,} trackers ({number(prune['old_rows'])} rows) while ingesting",
            f"{prune['prune_seconds']:.1f} s",
        ),
        Row(
            "retention",
            "ingest before / during / after the pass",
            " / ".join(
                number(prune[f"{when}_events_per_second"]) for when in ("before", "during", "after")
            )
            + " events/s",
        ),
    ]


def _write_events(path: Path, *, count: int) -> None:
    """``count`` valid bodies of TRACKERS trackers, a report each per second
    until now, in order of time."""
    now = datetime.now(UTC)
    trackers = [str(uuid.UUID(int=n + 1)) for n in range(TRACKERS)]
    seconds = count // TRACKERS + 1
    with path.open("wb") as out:
        for n in range(count):
            moment = now - timedelta(seconds=seconds - n // TRACKERS)
            out.write(
                orjson.dumps(
                    {
                        "Id": trackers[n % TRACKERS],
                        "Lat": 60.0 + (n % TRACKERS) / 10_000,
                        "Lng": 24.0 + (n // TRACKERS) / 100_000,
                        "Ts": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    }
                )
                + b"\n"
            )


def _unpartition(env: dict[str, str]) -> None:
    """History back to one plain table (migration 0010 reversed)."""
    result = common.manage(["migrate", "tracking", "0009", "-v0"], env=env)
    if result.returncode != 0:
        raise RuntimeError(f"migrate back failed: {result.stderr}")


def _old_day(env: dict[str, str], *, every: int) -> tuple[str, int]:
    """A day of TRACKERS trackers older than HISTORY_DAYS, a report each
    ``every`` seconds, generated on the server; its partition's name and rows."""
    day = (datetime.now(UTC) - timedelta(days=HISTORY_DAYS + 2)).date()
    made = common.manage(
        [
            "shell",
            "-c",
            "import datetime; from tracking import retention; "
            f"print(retention.ensure_days([datetime.date({day.year}, {day.month}, {day.day})]))",
        ],
        env=env,
    )
    if made.returncode != 0:
        raise RuntimeError(f"could not make the old day's partition: {made.stderr}")
    name = f"tracking_position_p{day:%Y%m%d}"
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:
        connection.execute(
            "INSERT INTO tracking_tracker (id, name, is_active, created_at) "
            "SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid, "
            "'bench ' || n, true, now() FROM generate_series(1, %s) n ON CONFLICT DO NOTHING",
            [TRACKERS],
        )
        connection.execute(
            "INSERT INTO tracking_position "
            '(tracker_id, "timestamp", latitude, longitude, speed, heading, accuracy, received_at) '
            "SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid, "
            "%s::timestamptz + s * interval '1 second', 60 + n / 10000.0, 24 + s / 100000.0, "
            "30, 90, 5, %s::timestamptz + s * interval '1 second' "
            "FROM generate_series(0, 86399, %s) s, generate_series(1, %s) n",
            [common_day_start(day), common_day_start(day), every, TRACKERS],
        )
        connection.execute(f"ANALYZE {name}")
        row = connection.execute(f"SELECT count(*) FROM {name}").fetchone()
    return name, int(row[0]) if row else 0


def common_day_start(day: Any) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_LOG_TIME = r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_PROGRESS = re.compile(_LOG_TIME + r".*progress: (?P<rate>\d+) events/s", re.M)
_PRUNED = re.compile(_LOG_TIME + r".*history pruned in (?P<seconds>[\d.]+) s (?P<what>.*)$", re.M)


def _moment(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def _prune_while_ingesting(
    stream: Path, *, database: str, redis_url: str, every: int
) -> dict[str, Any]:
    env = common.base_env(
        DATABASE_URL=database,
        REDIS_URL=redis_url,
        CHANNEL_LAYER_PREFIX=f"bench{uuid.uuid4().hex[:8]}",
        LOG_LEVEL="INFO",
        TRACKING_PROGRESS_SECONDS="1",
        TRACKING_HISTORY_DAYS=str(HISTORY_DAYS),
    )
    migrated = common.manage(["migrate", "-v0"], env=env)
    if migrated.returncode != 0:
        raise RuntimeError(f"migrate failed: {migrated.stderr}")
    name, old_rows = _old_day(env, every=every)
    result = common.manage(["consume_events", "--source", "jsonl", "--path", str(stream)], env=env)
    if result.returncode != 0:
        raise RuntimeError(f"consume_events failed: {result.stderr}")
    log = result.stderr
    pruned = _PRUNED.search(log)
    if pruned is None or name not in pruned["what"]:
        raise RuntimeError(f"the pass did not drop {name} while ingesting:\n{log[-2000:]}")
    ended = _moment(pruned["at"])
    began = ended - timedelta(seconds=float(pruned["seconds"]))
    progress = [(_moment(found["at"]), int(found["rate"])) for found in _PROGRESS.finditer(log)]
    # A progress line covers the second before it.
    before = [rate for at, rate in progress if at <= began]
    during = [rate for at, rate in progress if began < at <= ended + timedelta(seconds=1)]
    after = [rate for at, rate in progress if at > ended + timedelta(seconds=1)]
    with psycopg.connect(database) as connection:
        left = connection.execute("SELECT to_regclass(%s)", [name]).fetchone()
    if left is None or left[0] is not None:
        raise RuntimeError(f"{name} is still there")
    return {
        "old_partition": name,
        "old_rows": old_rows,
        "prune_seconds": float(pruned["seconds"]),
        "pass": pruned["what"],
        "progress": [rate for _, rate in progress],
        # The last line covers a part second at the end of the file: left out.
        "before_events_per_second": _mean(before),
        "during_events_per_second": _mean(during),
        "after_events_per_second": _mean(after[:-1] or after),
    }


def _mean(values: list[int]) -> float:
    return statistics.fmean(values) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="a whole day of 86.4 million rows")
    arguments = parser.parse_args(argv)
    figures = run(quick=not arguments.full)
    print(json.dumps(figures, indent=2, default=str))
    for row in rows(figures):
        print(f"{row.figure}: {row.value} {row.target}")


if __name__ == "__main__":
    main()
