"""How long history lasts: TRACKING_HISTORY_DAYS, by day partitions on PostgreSQL.

On PostgreSQL ``tracking_position`` is partitioned by range of ``"timestamp"``
(migration 0010), one partition per UTC day named ``tracking_position_pYYYYMMDD``.
A day's partition is made ahead of time by the pruning job (today and the
next ``DAYS_AHEAD`` days) or, for a day nobody made one for (a late event),
by ``ensure_days`` just before the batch that holds it (and before an ORM
write: ``Position.objects.bulk_create`` and ``save`` call it). There is no
DEFAULT partition: PostgreSQL refuses to detach a partition CONCURRENTLY
while one exists. A row for a day without a partition is refused by the
database; code that writes history with its own SQL calls ``ensure_days``. Pruning never runs a large DELETE on PostgreSQL: a
partition whose whole range is older than the cutoff (now minus
TRACKING_HISTORY_DAYS) is detached (``CONCURRENTLY``: inserts go on) and
dropped. Only a partition wider than a day (the old table attached by the
migration) has its old rows deleted, a chunk at a time.

On SQLite old rows are deleted a chunk at a time, by the index on timestamp.
Rejected events received before the cutoff and visits that ended before it
go the same way, in chunks, on both.

``pruning`` is one pass as a sequence of small steps, so ``consume_events``
can run one step between batches; ``prune_history`` runs them all at once.
Of several processes only one works at a time (an advisory lock, tried:
the others skip their pass instead of waiting).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Subquery

from tracking.models import Position, RejectedEvent, Visit

logger = logging.getLogger(__name__)

TABLE = Position._meta.db_table
PARTITION_PREFIX = f"{TABLE}_p"
# Day partitions made ahead of today by each pruning pass.
DAYS_AHEAD = 3
# Rows per DELETE statement wherever rows are deleted.
CHUNK = 5_000
# The advisory lock every process takes to make or drop partitions ("TRKHIST").
LOCK_KEY = 0x54524B48495354

_DAY_NAME = re.compile(rf"^{re.escape(PARTITION_PREFIX)}(\d{{8}})$")
_BOUND = re.compile(r"FROM \((?P<lower>[^)]*)\) TO \((?P<upper>[^)]*)\)")


def cutoff(*, now: datetime, days: int | None = None) -> datetime | None:
    """What is older than this goes (``now`` minus TRACKING_HISTORY_DAYS); None: keep all."""
    days = settings.TRACKING_HISTORY_DAYS if days is None else days
    return None if days <= 0 else now - timedelta(days=days)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def day_of(moment: datetime) -> date:
    """The UTC day of ``moment`` (an aware datetime)."""
    return (moment if moment.tzinfo is UTC else moment.astimezone(UTC)).date()


def partition_name(day: date) -> str:
    # Not strftime: its %Y writes the year 1 as "1".
    return f"{PARTITION_PREFIX}{day.year:04d}{day.month:02d}{day.day:02d}"


@dataclass(frozen=True)
class Partition:
    """One partition of history and its range; None is an open end (MINVALUE,
    MAXVALUE). A DEFAULT partition (none of ours) has neither bound."""

    name: str
    lower: datetime | None
    upper: datetime | None
    is_default: bool = False

    @property
    def is_day(self) -> bool:
        return _DAY_NAME.match(self.name) is not None

    def covers(self, day: date) -> bool:
        """Whether all of ``day`` (UTC) falls in this partition's range."""
        if self.is_default:
            return False
        start, end = day_start(day), day_start(day + timedelta(days=1))
        return (self.lower is None or self.lower <= start) and (
            self.upper is None or end <= self.upper
        )


def _bound(text: str) -> datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


def partitioned() -> bool:
    """Whether history is a partitioned table (PostgreSQL after migration 0010)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relkind FROM pg_class WHERE relname = %s "
            "AND relnamespace = current_schema()::regnamespace",
            [TABLE],
        )
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partitions() -> list[Partition]:
    """History's partitions, oldest first (a DEFAULT one last)."""
    with connection.cursor() as cursor:
        # Bounds read in UTC whatever the session's time zone.
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound in rows:
        if bound == "DEFAULT":
            found.append(Partition(name, None, None, is_default=True))
            continue
        match = _BOUND.search(bound)
        if match is None:  # not one of ours: leave it alone
            continue
        found.append(Partition(name, _bound(match["lower"]), _bound(match["upper"])))
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda part: (part.is_default, part.lower or oldest))


# Days known to have a partition, in this process: in the steady state a
# batch's days are all here and ensuring them costs no query. Filled only
# after the commit that made or saw them (a rolled back partition is not
# known), emptied of the days a pass drops.
_known_days: set[date] = set()
_known_lock = threading.Lock()


def no_partition_for_row(error: Exception) -> bool:
    """Whether the database refused a row for want of its partition."""
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) == "23514" and "no partition" in str(cause)


def forget_known_days() -> None:
    """Forget every known day (another process may have dropped some)."""
    with _known_lock:
        _known_days.clear()


def _remember(days: Iterable[date]) -> Callable[[], None]:
    wanted = set(days)

    def remember() -> None:
        with _known_lock:
            _known_days.update(wanted)

    return remember


def ensure_days(days: Iterable[date]) -> list[str]:
    """Make the day partitions missing for ``days`` (UTC); return their names.

    Costs nothing for days already known in this process. Each partition is
    made as an empty table, then attached (a lock that lets inserts go on).
    Outside a transaction they are made in a short one of their own.
    """
    with _known_lock:
        # The last day there is has no end to bound a partition with: a row
        # of 31 December 9999 is refused by the database.
        missing = {day for day in days if day < date.max} - _known_days
    if not missing or not partitioned():
        return []
    made: list[str] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Waits for another process making or dropping partitions: rare and short.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        existing = partitions()
        for day in sorted(missing):
            if not any(part.covers(day) for part in existing):
                made.append(_make_partition(day))
        transaction.on_commit(_remember(missing))
    if made:
        logger.info("made history partitions %s", ", ".join(made))
    return made


def _make_partition(day: date) -> str:
    name = partition_name(day)
    start, end = day_start(day), day_start(day + timedelta(days=1))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)")
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
            [start, end],
        )
    return name


@dataclass
class PruneReport:
    """What one pass did (or, dry, would do)."""

    cutoff: datetime | None
    dry_run: bool = False
    made: list[str] = field(default_factory=list)
    dropped: list[tuple[str, int]] = field(default_factory=list)
    # Partitions of ``dropped`` whose rows are PostgreSQL's estimate, not a count.
    estimated: set[str] = field(default_factory=set)
    deleted: Counter[str] = field(default_factory=Counter)
    skipped: str = ""

    def lines(self) -> list[str]:
        would = "would " if self.dry_run else ""
        if self.cutoff is None:
            return ["TRACKING_HISTORY_DAYS is 0: history is kept whole, nothing pruned"]
        lines = [f"cutoff {self.cutoff.isoformat(timespec='seconds')}"]
        if self.skipped:
            return [*lines, self.skipped]
        lines += [f"{would}make partition {name}" for name in self.made]
        lines += [
            f"{would}drop partition {name} "
            f"({'about ' if name in self.estimated else ''}{rows} positions)"
            for name, rows in self.dropped
        ]
        lines += [f"{would}delete {count} {what}" for what, count in sorted(self.deleted.items())]
        if len(lines) == 1:
            lines.append("nothing to prune")
        return lines

    def add_dropped(self, name: str, rows: tuple[int, bool]) -> None:
        """A partition dropped, with its rows and whether they are an estimate."""
        self.dropped.append((name, rows[0]))
        if rows[1]:
            self.estimated.add(name)

    def summary(self) -> str:
        """One line for a log."""
        return "; ".join(self.lines())


POSITIONS = "positions"
REJECTED = "rejected events"
VISITS = "finished visits"


def pruning(*, now: datetime) -> Iterator[PruneReport]:
    """One pass of retention at ``now``, a step per ``next()``; each step
    yields the report so far. Nothing happens before the first ``next()``.

    A step is one bounded piece of work: making the partitions ahead, one
    partition detached and dropped, or one chunk of rows deleted.
    """
    report = PruneReport(cutoff=cutoff(now=now))
    limit = report.cutoff
    if limit is None:
        yield report
        return
    if partitioned():
        with _advisory_lock() as got:
            if got:
                ahead = (day_of(now) + timedelta(days=n) for n in range(DAYS_AHEAD + 1))
                report.made += ensure_days(ahead)
        if not got:
            report.skipped = "another process is pruning: skipped"
            yield report
            return
        yield report
        for part in partitions():
            if part.upper is not None and part.upper <= limit:
                with _advisory_lock() as got:
                    dropped = _drop(part) if got else None
                if not got:
                    report.skipped = "another process is pruning: stopped"
                    yield report
                    return
                if dropped is not None:
                    report.add_dropped(part.name, dropped)
                yield report
            elif not part.is_day and (part.lower is None or part.lower < limit):
                # The old table the migration attached: its old rows, a chunk at a time.
                yield from _chunks(report, POSITIONS, _old_rows_of(part.name, limit))
        orphans = _orphans(limit)
        for name in orphans:
            with _advisory_lock() as got:
                if got:
                    report.add_dropped(name, _rows_in(name))
                    _execute(f"DROP TABLE IF EXISTS {name}")
            yield report
    else:
        yield from _chunks(report, POSITIONS, _old_rows_of(TABLE, limit))
    yield from _chunks(report, REJECTED, lambda: _delete_first(RejectedEvent, "received_at", limit))
    yield from _chunks(report, VISITS, lambda: _delete_first(Visit, "exited_at", limit))


def prune(*, now: datetime) -> PruneReport:
    """A whole pass at once (``prune_history``)."""
    *_, report = pruning(now=now)
    return report


def plan(*, now: datetime) -> PruneReport:
    """What a pass at ``now`` would do, doing nothing (``prune_history --dry-run``)."""
    report = PruneReport(cutoff=cutoff(now=now), dry_run=True)
    limit = report.cutoff
    if limit is None:
        return report
    if partitioned():
        existing = partitions()
        for n in range(DAYS_AHEAD + 1):
            day = day_of(now) + timedelta(days=n)
            if not any(part.covers(day) for part in existing):
                report.made.append(partition_name(day))
        for part in existing:
            if part.upper is not None and part.upper <= limit:
                report.add_dropped(part.name, _rows_in(part.name))
            elif not part.is_day and (part.lower is None or part.lower < limit):
                report.deleted[POSITIONS] += _count(part.name, limit)
        for name in _orphans(limit):
            report.add_dropped(name, _rows_in(name))
    else:
        report.deleted[POSITIONS] += Position.objects.filter(timestamp__lt=limit).count()
    report.deleted[REJECTED] += RejectedEvent.objects.filter(received_at__lt=limit).count()
    report.deleted[VISITS] += Visit.objects.filter(exited_at__lt=limit).count()
    report.deleted = +report.deleted
    return report


def _chunks(report: PruneReport, what: str, delete: Callable[[], int]) -> Iterator[PruneReport]:
    while True:
        deleted = delete()
        if deleted:
            report.deleted[what] += deleted
        yield report
        if deleted < CHUNK:
            return


@contextmanager
def _advisory_lock() -> Iterator[bool]:
    """The session advisory lock, tried (never waited for): whether it was had."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        (got,) = cursor.fetchone()
    try:
        yield bool(got)
    finally:
        # Inside a transaction a failed step leaves it aborted: the error that
        # did it is the one to see (the lock goes with the session).
        if got:
            with suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def _execute(sql: str, params: Iterable[Any] = ()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return int(cursor.rowcount)


def _count(table: str, older_than: datetime | None) -> int:
    where = 'WHERE "timestamp" < %s' if older_than is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {table} {where}", [] if older_than is None else [older_than]
        )
        (rows,) = cursor.fetchone()
    return int(rows)


def _rows_in(table: str) -> tuple[int, bool]:
    """The rows of a partition about to go, and whether that is an estimate:
    PostgreSQL's when it has one (autovacuum analyses a filled day), so a day
    of millions of rows is not counted while ingest waits; counted otherwise."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        (estimate,) = cursor.fetchone()
    if estimate >= 0:
        return int(estimate), True
    return _count(table, None), False


def _drop(part: Partition) -> tuple[int, bool] | None:
    """Detach and drop one partition; how many rows it held and whether that
    is an estimate (None: it was gone already)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.inhdetachpending FROM pg_inherits i "
            "WHERE i.inhrelid = to_regclass(%s) AND i.inhparent = %s::regclass",
            [part.name, TABLE],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    rows = _rows_in(part.name)
    if row[0]:  # a detach begun by a pass that was interrupted
        how = "FINALIZE"
    elif connection.in_atomic_block:
        how = ""  # CONCURRENTLY cannot run inside a transaction (a test's)
    else:
        how = "CONCURRENTLY"
    _execute(f"ALTER TABLE {TABLE} DETACH PARTITION {part.name} {how}")
    _execute(f"DROP TABLE {part.name}")
    with _known_lock:
        _known_days.difference_update(
            day for day in list(_known_days) if part.upper is None or day_start(day) < part.upper
        )
    return rows


def _orphans(limit: datetime) -> list[str]:
    """Day tables detached by a pass that stopped before dropping them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
            "AND relnamespace = current_schema()::regnamespace AND relname LIKE %s",
            [PARTITION_PREFIX.replace("_", r"\_") + "%"],
        )
        names = [name for (name,) in cursor.fetchall()]
    old = []
    for name in names:
        match = _DAY_NAME.match(name)
        if match is None:
            continue
        digits = match[1]
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        if day_start(day + timedelta(days=1)) <= limit:
            old.append(name)
    return sorted(old)


def _old_rows_of(table: str, limit: datetime) -> Callable[[], int]:
    """Deletes one chunk of ``table``'s positions older than ``limit``."""
    if connection.vendor == "postgresql":
        sql = (
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
            f'SELECT ctid FROM {table} WHERE "timestamp" < %s LIMIT %s))'
        )
    else:
        # By the index on timestamp that migration 0010 adds on SQLite.
        sql = (
            f"DELETE FROM {table} WHERE id IN ("
            f'SELECT id FROM {table} WHERE "timestamp" < %s LIMIT %s)'
        )
    moment = connection.ops.adapt_datetimefield_value(limit)
    return lambda: _execute(sql, [moment, CHUNK])


def _delete_first(model: type[RejectedEvent] | type[Visit], column: str, limit: datetime) -> int:
    """Delete at most ``CHUNK`` rows of ``model`` whose ``column`` is before ``limit``."""
    old = model.objects.filter(**{f"{column}__lt": limit}).order_by().values("id")[:CHUNK]
    deleted, _ = model.objects.filter(id__in=Subquery(old)).delete()
    return deleted
