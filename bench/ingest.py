"""Ingest: events per second through ``consume_events``, and the naive design beside it.

Scenarios, each on a fresh database:

- ``jsonl-sqlite``: ``consume_events --source jsonl`` on SQLite with the
  in-memory channel layer (the embedded demo's engines).
- ``jsonl-postgres``: the same on PostgreSQL, publishing through Redis.
- ``naive-postgres``: one ORM save per event (tracker and history) and one
  channels ``group_send`` per event, on PostgreSQL and Redis (channels-redis's
  default layer): the baseline design.
- ``eventhub-postgres``: the real azure-eventhub consumer reading from the
  local stand-in (events published beforehand), on PostgreSQL and Redis, with
  one and with two ``consume_events`` processes sharing the partitions.
- ``junk-postgres``: ``jsonl-postgres`` again on a file of the same length in
  which every other body is malformed (not JSON, a ``Ts`` in the future, a
  ``Lat`` out of range, a bad ``Id``, bytes that are not UTF-8, by turns),
  beside its ratio to ``jsonl-postgres`` of the same run: bodies per second
  with half of them junk over bodies per second with none.

Events come from ``manage.py simulate`` (1,000 trackers on the bundled
routes), so every one is valid. The figure is events stored per second,
from the first stored to the last, read from the database.

    python -m bench.ingest [--quick|--full] [--scenario junk]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import common
from bench.common import Row, number

QUICK = {"events": 150_000, "naive_events": 1_500, "eventhub_events": 15_000}
FULL = {"events": 300_000, "naive_events": 8_000, "eventhub_events": 60_000}
TARGET_EVENTS_PER_SECOND = 20_000
TARGET_RATIO = 20
# A stream half junk keeps at least this share of the clean stream's bodies per second.
TARGET_JUNK_RATIO = 0.5
# Scenarios that ``--scenario`` can pick; ``junk`` runs the clean PostgreSQL row beside it.
SCENARIOS = ("all", "junk")


def run(*, quick: bool, scenario: str = "all") -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    work = Path(common.RESULTS / "work")
    work.mkdir(parents=True, exist_ok=True)
    events_file = work / "ingest-events.jsonl"
    _simulate(events_file, count=sizes["events"])
    junk_file = work / "ingest-half-junk.jsonl"
    _half_junk(events_file, junk_file)
    figures: dict[str, Any] = {"sizes": sizes}
    with common.running_redis() as redis_url:
        if redis_url is None:
            raise RuntimeError("no Redis: start one or install redis-server")
        if scenario == "all":
            figures["jsonl-sqlite"] = consume_jsonl(
                events_file, database=f"sqlite:///{work / 'ingest.sqlite3'}"
            )
        with common.scratch_postgres_database() as database:
            figures["jsonl-postgres"] = consume_jsonl(
                events_file, database=database, redis_url=redis_url
            )
        with common.scratch_postgres_database() as database:
            figures["junk-postgres"] = consume_jsonl(
                junk_file, database=database, redis_url=redis_url
            )
        clean = figures["jsonl-postgres"]["events_per_second"]
        figures["junk_to_clean"] = figures["junk-postgres"]["events_per_second"] / clean
        if scenario == "junk":
            return figures
        with common.scratch_postgres_database() as database:
            figures["naive-postgres"] = _naive(
                events_file, database=database, redis_url=redis_url, count=sizes["naive_events"]
            )
        for processes in (1, 2):
            with common.scratch_postgres_database() as database:
                figures[f"eventhub-postgres-{processes}"] = _consume_eventhub(
                    events_file,
                    database=database,
                    redis_url=redis_url,
                    count=sizes["eventhub_events"],
                    processes=processes,
                )
    fast = figures["jsonl-postgres"]["events_per_second"]
    naive = figures["naive-postgres"]["events_per_second"]
    figures["ratio_to_naive"] = fast / naive if naive else float("nan")
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    junk = figures["junk-postgres"]
    junk_rows = [
        Row(
            "ingest",
            "jsonl, half malformed, PostgreSQL + Redis",
            f"{number(junk['events_per_second'])} events/s "
            f"({number(junk['accepted_per_second'])} valid)",
        ),
        Row(
            "ingest",
            "half malformed / clean (bodies per second)",
            f"{figures['junk_to_clean']:.2f}x",
            f">= {TARGET_JUNK_RATIO}x",
        ),
    ]
    if "jsonl-sqlite" not in figures:  # --scenario junk
        clean = figures["jsonl-postgres"]["events_per_second"]
        return [Row("ingest", "jsonl, PostgreSQL + Redis", f"{number(clean)} events/s"), *junk_rows]
    table = [
        Row(
            "ingest",
            "jsonl, SQLite, in-memory layer",
            f"{number(figures['jsonl-sqlite']['events_per_second'])} events/s",
        ),
        Row(
            "ingest",
            "jsonl, PostgreSQL + Redis",
            f"{number(figures['jsonl-postgres']['events_per_second'])} events/s",
            f">= {TARGET_EVENTS_PER_SECOND:,}",
        ),
        *junk_rows,
        Row(
            "ingest",
            "naive (ORM save + group_send per event), PostgreSQL + Redis",
            f"{number(figures['naive-postgres']['events_per_second'])} events/s",
        ),
        Row(
            "ingest", "pipeline / naive", f"{figures['ratio_to_naive']:.1f}x", f">= {TARGET_RATIO}x"
        ),
    ]
    for processes in (1, 2):
        result = figures[f"eventhub-postgres-{processes}"]
        table.append(
            Row(
                "ingest",
                f"Event Hubs stand-in, {processes} consume_events process{'es' if processes > 1 else ''}",
                f"{number(result['events_per_second'])} events/s",
            )
        )
    return table


# --- Scenarios ----------------------------------------------------------------------


def _simulate(path: Path, *, count: int) -> None:
    duration = count / 1000 + 5  # 1,000 trackers at about one report a second
    result = common.manage(
        ["simulate", "--to", "jsonl", "--path", str(path), "--trackers", "1000", "--seed", "42",
         "--duration", str(duration), "--count", str(count)],
        env=common.base_env(),
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"simulate failed: {result.stderr}")


def _half_junk(source: Path, target: Path) -> None:
    """``source`` with every other body broken, in one of five ways by turns."""
    future = "2999-01-01T00:00:00Z"
    breakages = [
        lambda line: line[: len(line) // 2],  # cut short: not JSON
        lambda line: orjson.dumps({**orjson.loads(line), "Ts": future}),
        lambda line: orjson.dumps({**orjson.loads(line), "Lat": 91.5}),
        lambda line: orjson.dumps({**orjson.loads(line), "Id": "bus-42"}),
        lambda line: b"\xff\xfe" + line[2:],  # not UTF-8
    ]
    lines = source.read_bytes().splitlines()
    out = [
        breakages[(n // 2) % len(breakages)](line) if n % 2 else line
        for n, line in enumerate(lines)
    ]
    target.write_bytes(b"\n".join(out) + b"\n")


def _env(database: str, redis_url: str | None = None) -> dict[str, str]:
    settings = {
        "DATABASE_URL": database,
        "LOG_LEVEL": "WARNING",
        "TRACKING_PROGRESS_SECONDS": "3600",
    }
    if redis_url:
        settings.update(REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=f"bench{uuid.uuid4().hex[:8]}")
    return common.base_env(**settings)


def _migrate(env: dict[str, str]) -> None:
    result = common.manage(["migrate", "-v0"], env=env)
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed: {result.stderr}")


def _count(env: dict[str, str]) -> int:
    """History rows, asked of the database directly (a manage.py call takes a second)."""
    database = env["DATABASE_URL"]
    if database.startswith("sqlite:///"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as connection:
            return int(connection.execute("SELECT count(*) FROM tracking_position").fetchone()[0])
    with psycopg.connect(database) as connection:
        row = connection.execute("SELECT count(*) FROM tracking_position").fetchone()
        return int(row[0]) if row else 0


def consume_jsonl(
    path: Path,
    *,
    database: str,
    redis_url: str | None = None,
    prepare: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, Any]:
    """``consume_events --source jsonl`` of ``path`` into a migrated ``database``,
    after ``prepare(env)`` (e.g. seeding it) when given: its figures."""
    if database.startswith("sqlite"):
        with contextlib.suppress(FileNotFoundError):
            Path(database.removeprefix("sqlite:///")).unlink()
    env = _env(database, redis_url)
    _migrate(env)
    if prepare is not None:
        prepare(env)
    # The CPU the consumer process used (user and system), steadier than its
    # rate on a shared machine; the database server's is not in it.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = common.manage(["consume_events", "--source", "jsonl", "--path", str(path)], env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"consume_events failed: {result.stderr}")
    # "consume_events finished: A accepted (...), R rejected (N events in S s, E events/s)"
    # and, with rejections, "; rejected R: ..." by reason.
    summary = result.stdout.strip().splitlines()[-1]
    found = _SUMMARY.search(summary)
    if found is None:
        raise RuntimeError(f"unexpected summary line: {summary}")
    # The rate, not the seconds: they are printed to a tenth, too coarse for a
    # run of a few seconds. The rate counts every body, accepted or rejected.
    events, rate = int(found["events"]), float(found["rate"])
    accepted = int(found["accepted"])
    return {
        "events": events,
        "accepted": accepted,
        "rejected": int(found["rejected"]),
        "seconds": round(events / rate, 3),
        "events_per_second": rate,
        "accepted_per_second": round(accepted * rate / events, 1),
        "stored": _count(env),
        "consumer_cpu_seconds": round(
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3
        ),
        "summary": summary,
    }


_SUMMARY = re.compile(
    r"finished: (?P<accepted>\d+) accepted .*?, (?P<rejected>\d+) rejected "
    r"\((?P<events>\d+) events in [\d.]+ s, (?P<rate>[\d.]+) events/s\)"
)


def _naive(path: Path, *, database: str, redis_url: str, count: int) -> dict[str, Any]:
    env = _env(database, redis_url)
    _migrate(env)
    result = common.manage(
        [
            "shell",
            "-v0",
            "-c",
            f"from bench.ingest import naive_consume; naive_consume({str(path)!r}, {count})",
        ],
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the naive consumer failed: {result.stderr}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def naive_consume(path: str, count: int) -> None:
    """The baseline: what a first version would do, one event at a time.

    Runs inside ``manage.py shell``; prints its figures as one JSON line.
    """
    from datetime import timedelta

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from tracking.events import InvalidEvent, parse_event
    from tracking.grid import group_name
    from tracking.hub import protocol as hub_protocol
    from tracking.hub.fanout.channel_layer import RECORDS_MESSAGE
    from tracking.models import Position, Tracker, configured_grid

    layer = get_channel_layer()
    grid = configured_grid()
    send = async_to_sync(layer.group_send)
    lines = Path(path).read_bytes().splitlines()[:count]
    started = time.monotonic()
    for line in lines:
        try:
            event = parse_event(line, now=timezone.now(), max_future=timedelta(minutes=5))
        except InvalidEvent:
            continue
        tracker, _ = Tracker.objects.get_or_create(id=event.tracker_id)
        try:
            with transaction.atomic():
                Position.objects.create(
                    tracker=tracker,
                    timestamp=event.timestamp,
                    latitude=event.latitude,
                    longitude=event.longitude,
                    speed=event.speed,
                    heading=event.heading,
                )
        except IntegrityError:
            continue
        if tracker.position_at is None or event.timestamp > tracker.position_at:
            cell = grid.cell_of(latitude=event.latitude, longitude=event.longitude)
            tracker.latitude, tracker.longitude, tracker.position_at = (
                event.latitude,
                event.longitude,
                event.timestamp,
            )
            tracker.cell_x, tracker.cell_y = cell
            tracker.save()
            record = hub_protocol.location_updated(
                tracker_id=str(event.tracker_id),
                latitude=event.latitude,
                longitude=event.longitude,
                timestamp_ms=event.timestamp_ms,
            )
            send(group_name(cell), {"type": RECORDS_MESSAGE, "records": record})
    seconds = time.monotonic() - started
    print(
        json.dumps(
            {"events": len(lines), "seconds": seconds, "events_per_second": len(lines) / seconds}
        )
    )


def _consume_eventhub(
    path: Path, *, database: str, redis_url: str, count: int, processes: int
) -> dict[str, Any]:
    from tests.eventhub_stub import EventHubStub

    env = _env(database, redis_url)
    _migrate(env)
    lines = path.read_bytes().splitlines()[:count]
    with EventHubStub(hub="bench", partitions=4) as stub:
        _publish(stub.connection_string, lines)
        env = {
            **env,
            "EVENTHUB_CONNECTION_STRING": stub.connection_string,
            "EVENTHUB_LOAD_BALANCING_SECONDS": "1",
            "EVENTHUB_OWNERSHIP_EXPIRY_SECONDS": "5",
        }
        logs = common.RESULTS / "work"
        with contextlib.ExitStack() as stack:
            pids = [
                stack.enter_context(
                    common.background(
                        [common.PYTHON, "manage.py", "consume_events", "--source", "eventhub"],
                        env=env,
                        log=logs / f"eventhub-{processes}-{index}.log",
                    )
                ).pid
                for index in range(processes)
            ]
            with common.measured(pids, interval=1.0) as usage:
                first, last, stored = _watch(env, total=len(lines), timeout=600)
    seconds = last - first
    return {
        "events": len(lines),
        "processes": processes,
        "stored": stored,
        "seconds": seconds,
        "events_per_second": stored / seconds if seconds > 0 else float("nan"),
        "consumer_cores": usage.cpu_share,
        "peak_rss_bytes": usage.peak_rss_bytes,
    }


def _publish(connection_string: str, lines: list[bytes]) -> None:
    """Publish bodies to the stand-in with the real producer, keyed by tracker."""
    from azure.eventhub import EventData, EventHubProducerClient

    by_key: dict[str, list[bytes]] = {}
    for line in lines:
        by_key.setdefault(json.loads(line)["Id"], []).append(line)
    with EventHubProducerClient.from_connection_string(connection_string) as producer:
        for key, bodies in by_key.items():
            batch = producer.create_batch(partition_key=key)
            for body in bodies:
                batch.add(EventData(body))
            producer.send_batch(batch)


def _watch(env: dict[str, str], *, total: int, timeout: float) -> tuple[float, float, int]:
    """Poll the history count until ``total``: (first seen growing, last, count)."""
    deadline = time.monotonic() + timeout
    first = None
    stored = 0
    while time.monotonic() < deadline:
        stored = _count(env)
        now = time.monotonic()
        if stored and first is None:
            first = now
        if stored >= total:
            return first or now, now, stored
        time.sleep(0.1)
    raise TimeoutError(f"only {stored} of {total} events stored in {timeout} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the longer run (default: quick)")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="all",
        help="junk: only the clean and the half-malformed PostgreSQL rows",
    )
    arguments = parser.parse_args(argv)
    figures = run(quick=not arguments.full, scenario=arguments.scenario)
    for row in rows(figures):
        print(f"{row.figure:<70} {row.value:>18}  {row.target}")
    json.dump(figures, sys.stdout, indent=2, default=str)


if __name__ == "__main__":
    main()
