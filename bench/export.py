"""A month of one tracker at 1 Hz exported as CSV, GeoJSON and GPX through a real web server.

One tracker reporting every second for 30 days (2,592,000 positions; the
quick run: 7 days, 604,800) is generated inside a scratch PostgreSQL
database by one ``INSERT ... SELECT ... FROM generate_series`` (written by a
process with Django set up, so the table and its columns are the model's:
nothing here assumes how the history table is laid out). Then one web server
process (``python -m tracker_site.serve``: uvicorn, as the README runs it,
or daphne with ``--server daphne``) serves the product on loopback, and this
process downloads the whole range in each format with
``GET /api/trackers/{id}/export``, reading the answer as it comes and
keeping none of it. For each format:

- the time to the first byte and to the last, and the bytes;
- the positions in the file (counted as it streams: they must be all of them);
- the server process's **peak RSS growth**: its resident memory sampled
  every 50 ms during the download, minus what it held just before (after a
  small export of the same format, so code and caches are loaded). A server
  that read the range whole would grow by about the file's size; one that
  streams grows by about a page (5,000 positions).

    python -m bench.export [--full] [--server uvicorn|daphne]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from bench import common
from bench.common import Row, number

QUICK_DAYS = 7
FULL_DAYS = 30
FORMATS = ("csv", "geojson", "gpx")
# What marks one position in each format, counted across the chunk boundaries.
POSITION_MARKS = {"csv": b"Z,", "geojson": b'"Feature"', "gpx": b"<trkpt "}
SECRET_KEY = "export-benchmark-secret-key-not-for-production-use-0123456789"
APPLICATION = "tracker_site.asgi:application"
# The server's log (not kept in git).
WORK = common.RESULTS / "work"


def run(*, quick: bool, server: str = "uvicorn", days: int | None = None) -> dict[str, Any]:
    days = days or (QUICK_DAYS if quick else FULL_DAYS)
    with common.scratch_postgres_database() as database:
        env = common.base_env(
            DATABASE_URL=database,
            DEBUG="0",
            SECRET_KEY=SECRET_KEY,
            MAP_PUBLIC="1",
            SECURE_SSL_REDIRECT="0",  # plain HTTP on loopback
            LOG_LEVEL="WARNING",
        )
        migrated = common.manage(["migrate", "-v0"], env=env, timeout=300)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrated.stderr}")
        history: dict[str, Any] = common.run_with_django(
            "bench.export", ["--fill", "--days", str(days)], env=env, timeout=900
        )
        port = common.free_port()
        log = WORK / f"export-{server}.log"
        WORK.mkdir(parents=True, exist_ok=True)
        with common.background(_server_command(server, port), env=env, log=log) as process:
            common.wait_for_port("127.0.0.1", port, timeout=60, process=process)
            exports = {fmt: _export(port, process.pid, history, fmt, log=log) for fmt in FORMATS}
    return {"server": server, "days": days, **history, "exports": exports}


def _server_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        where = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return [common.PYTHON, "-m", "tracker_site.serve", *where]
    if server == "daphne":
        return [
            common.PYTHON,
            "-m",
            "daphne",
            "-v",
            "0",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            APPLICATION,
        ]
    raise ValueError(f"unknown server {server!r}")


def _export(port: int, pid: int, history: dict[str, Any], fmt: str, *, log: Path) -> dict[str, Any]:
    path = f"/api/trackers/{history['tracker_id']}/export?format={fmt}"
    # A minute of the same export first: the code is loaded and the connection pool warm.
    _download(port, f"{path}&since={history['until'] - 60_000}&until={history['until']}", fmt)
    server = psutil.Process(pid)
    before = server.memory_info().rss
    peak = before
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            try:
                peak = max(peak, server.memory_info().rss)
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_before = sum(server.cpu_times()[:2])
    sampler.start()
    try:
        figures = _download(port, f"{path}&since={history['since']}&until={history['until']}", fmt)
    finally:
        stop.set()
        sampler.join()
    if figures["status"] != 200:
        raise RuntimeError(f"{fmt}: the server answered {figures['status']}; see {log}")
    if figures["positions"] != history["positions"]:
        raise RuntimeError(
            f"{fmt}: the file holds {figures['positions']:,} positions of {history['positions']:,}"
        )
    return {
        **figures,
        "server_cpu_seconds": sum(server.cpu_times()[:2]) - cpu_before,
        "rss_before_bytes": before,
        "rss_peak_bytes": peak,
        "rss_growth_bytes": peak - before,
    }


def _download(port: int, target: str, fmt: str) -> dict[str, Any]:
    """GET ``target``, reading the body as it arrives and keeping only counts."""
    mark = POSITION_MARKS[fmt]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request("GET", target)
    response = connection.getresponse()
    first_byte: float | None = None
    size = positions = 0
    tail = b""
    while chunk := response.read1(1 << 16):
        if first_byte is None:
            first_byte = time.perf_counter() - started
        size += len(chunk)
        joined = tail + chunk
        positions += joined.count(mark)
        # Keep what could be the start of a mark cut by the chunk's end (no mark is in it whole).
        tail = joined[-(len(mark) - 1) :]
    seconds = time.perf_counter() - started
    connection.close()
    return {
        "status": response.status,
        "content_type": response.getheader("Content-Type"),
        "bytes": size,
        "positions": positions,
        "first_byte_seconds": first_byte,
        "seconds": seconds,
        "positions_per_second": positions / seconds if seconds else float("nan"),
    }


# --- Run in a process of its own, with Django set up on the scratch database -------------


def fill(*, days: int) -> dict[str, Any]:
    """One tracker at 1 Hz for ``days`` days up to the last whole minute, in one statement."""
    import django

    django.setup()
    from django.db import connection, transaction

    from tracking import retention
    from tracking.events import unix_ms
    from tracking.models import Position, Tracker

    until = datetime.now(UTC).replace(second=0, microsecond=0)
    count = days * 86_400
    since = until - timedelta(seconds=count - 1)
    # Written with SQL of its own: the day partitions it needs are made first.
    retention.ensure_days(retention.day_of(since + timedelta(days=day)) for day in range(days + 1))
    tracker = Tracker.objects.create(name="Export benchmark van")
    column = {field.name: field.column for field in Position._meta.concrete_fields if field.column}
    names = ["tracker", "timestamp", "latitude", "longitude", "speed", "heading", "accuracy"]
    qn = connection.ops.quote_name
    # A loop of about 6 km round Helsinki every hour; every tenth report has no
    # speed, heading or accuracy, as devices leave them out.
    sql = (
        f"INSERT INTO {qn(Position._meta.db_table)} "
        f"({', '.join(qn(column[name]) for name in [*names, 'received_at'])}) "
        "SELECT %s, %s + make_interval(secs => n), "
        "60.17 + 0.01 * sin(n * pi() / 1800), 24.94 + 0.02 * cos(n * pi() / 1800), "
        "CASE WHEN n %% 10 = 0 THEN NULL ELSE 20 + 15 * sin(n / 97.0) END, "
        "CASE WHEN n %% 10 = 0 THEN NULL ELSE mod(n / 10.0, 360) END, "
        "CASE WHEN n %% 10 = 0 THEN NULL ELSE 3 + n %% 12 END, "
        "%s + make_interval(secs => n) "
        "FROM generate_series(0, %s) AS n"
    )
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # Nothing here needs to survive a crash: no wait for the disk at commit.
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(sql, [tracker.id, since, since, count - 1])
    inserted = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {qn(Position._meta.db_table)}")
    stored = Position.objects.filter(tracker=tracker).count()
    return {
        "tracker_id": str(tracker.id),
        "positions": stored,
        "since": unix_ms(since),
        "until": unix_ms(until),
        "insert_seconds": inserted,
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    exports = figures["exports"]
    label = (
        f"{figures['days']} days at 1 Hz ({figures['positions']:,} positions), {figures['server']}"
    )
    table = [
        Row(
            "export",
            f"history generated in PostgreSQL, {figures['positions']:,} positions",
            f"{number(figures['insert_seconds'], 1)} s",
        )
    ]
    for fmt in FORMATS:
        export = exports[fmt]
        table.append(
            Row(
                "export",
                f"{fmt}: {label}",
                f"{number(export['seconds'], 1)} s, {number(export['bytes'] / 1e6, 0)} MB, "
                f"first byte {number(export['first_byte_seconds'] * 1000, 0)} ms, "
                f"server RSS +{number(export['rss_growth_bytes'] / 2**20, 1)} MiB",
                "streamed: RSS growth far below the file's size",
            )
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help=f"{FULL_DAYS} days (default {QUICK_DAYS})"
    )
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, help="days of history, overriding --full")
    arguments = parser.parse_args(argv)
    if arguments.fill:
        print(json.dumps(fill(days=arguments.days or QUICK_DAYS)))
        return 0
    figures = run(quick=not arguments.full, server=arguments.server, days=arguments.days)
    for row in rows(figures):
        print(f"{row.figure}: {row.value}")
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"export-{figures['days']}-days-{arguments.server}.json"
    (common.RESULTS / name).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
