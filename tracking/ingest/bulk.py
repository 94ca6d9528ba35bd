"""Set-at-a-time writes for the pipeline, in each database's fastest form.

``store.ingest_batch`` decides what to write; this module writes it. On
PostgreSQL rows are streamed with ``COPY`` into temporary tables and merged
with one statement each; elsewhere (SQLite) they go as multi-row statements.
Both compare times in the database, so the latest position only moves forward
even with several consumers writing at once.

The ORM is not used here on purpose: building a model instance, or a query
with thousands of placeholders, per event cost more than the database's whole
share of the work.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.db import connection

from tracking.events import LocationEvent
from tracking.grid import Cell
from tracking.models import Geofence, Position, Tracker, Visit

# Rows per statement on SQLite: well below its limit on parameters.
ROWS_PER_STATEMENT = 500

_POSITION_COLUMNS = (
    "tracker_id",
    "timestamp",
    "latitude",
    "longitude",
    "speed",
    "heading",
    "accuracy",
)
_LATEST_COLUMNS = (
    "id",
    "latitude",
    "longitude",
    "position_at",
    "ordered_at",
    "cell_x",
    "cell_y",
    "speed",
    "heading",
)

_STAGED_POSITION_TYPES = ("uuid", "timestamptz", "float8", "float8", "float8", "float8", "float8")
_LATEST_TYPES = (
    "uuid",
    "float8",
    "float8",
    "timestamptz",
    "timestamptz",
    "int4",
    "int4",
    "float8",
    "float8",
)

# Per-connection staging tables on PostgreSQL, emptied at every commit.
_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS tracking_staged_position (
    tracker_id uuid, "timestamp" timestamptz, latitude float8, longitude float8,
    speed float8, heading float8, accuracy float8
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tracking_staged_latest (
    {", ".join(f"{name} {kind}" for name, kind in zip(_LATEST_COLUMNS, _LATEST_TYPES, strict=True))}
) ON COMMIT DELETE ROWS;
"""


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _table(model: type[Position] | type[Tracker]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _uuid_adapter() -> Callable[[uuid.UUID], Any]:
    """How this database takes a UUID parameter (natively, or as hex on SQLite)."""
    if connection.features.has_native_uuid_field:
        return lambda value: value
    return lambda value: value.hex


def tracker_states(ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
    """``{id: is_active}`` for the trackers that exist among ``ids``."""
    if not ids:
        return {}
    if _postgres():
        # One array literal as one parameter: a list would be quoted id by id.
        array = "{" + ",".join(str(tracker_id) for tracker_id in ids) + "}"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, is_active FROM {_table(Tracker)} WHERE id = ANY(%s::uuid[])", [array]
            )
            return dict(cursor.fetchall())
    return dict(Tracker.objects.filter(id__in=ids).values_list("id", "is_active"))


def insert_history(events: Sequence[LocationEvent], *, received_at: datetime) -> int:
    """Add events to history; one already there (a replay) is skipped. Returns
    how many rows were new."""
    if not events:
        return 0
    if _postgres():
        return _insert_history_postgres(events, received_at=received_at)
    inserted = 0
    uuid_value = _uuid_adapter()
    time_value = connection.ops.adapt_datetimefield_value
    received = time_value(received_at)
    columns = (*_POSITION_COLUMNS, "received_at")
    row = f"({', '.join(['%s'] * len(columns))})"
    with connection.cursor() as cursor:
        for start in range(0, len(events), ROWS_PER_STATEMENT):
            chunk = events[start : start + ROWS_PER_STATEMENT]
            params: list[Any] = []
            for event in chunk:
                params += (
                    uuid_value(event.tracker_id),
                    time_value(event.timestamp),
                    event.latitude,
                    event.longitude,
                    event.speed,
                    event.heading,
                    event.accuracy,
                    received,
                )
            cursor.execute(
                f"INSERT INTO {_table(Position)} ({', '.join(columns)}) "
                f"VALUES {', '.join([row] * len(chunk))} "
                "ON CONFLICT (tracker_id, timestamp) DO NOTHING",
                params,
            )
            inserted += cursor.rowcount
    return inserted


def _insert_history_postgres(events: Sequence[LocationEvent], *, received_at: datetime) -> int:
    columns = ", ".join(f'"{name}"' for name in _POSITION_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(_STAGING)
        with cursor.cursor.copy(
            f"COPY tracking_staged_position ({columns}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            # Binary rows of declared types: a fraction of text COPY's cost.
            copy.set_types(_STAGED_POSITION_TYPES)
            for event in events:
                copy.write_row(
                    (
                        event.tracker_id,
                        event.timestamp,
                        event.latitude,
                        event.longitude,
                        event.speed,
                        event.heading,
                        event.accuracy,
                    )
                )
        cursor.execute(
            f"INSERT INTO {_table(Position)} ({columns}, received_at) "
            f"SELECT {columns}, %s FROM tracking_staged_position "
            'ON CONFLICT (tracker_id, "timestamp") DO NOTHING',
            [received_at],
        )
        return int(cursor.rowcount)


def update_latest(items: Sequence[tuple[LocationEvent, Cell]]) -> dict[uuid.UUID, Cell | None]:
    """Move each tracker to its event if that stands later than its latest
    position: by ``ordered_at``, then by ``Ts`` (docs/protocol.md §1.3).

    ``items`` holds at most one event per tracker. Returns the trackers that
    moved, each with the cell it was in before (None if it had no position),
    so the hub can tell that cell the tracker left. Inactive trackers never move.
    """
    if not items:
        return {}
    table = _table(Tracker)
    assignments = ", ".join(f"{column} = v.{column}" for column in _LATEST_COLUMNS[1:])
    # A position stored without an order (before it had one) stands at its Ts.
    current = f"(COALESCE({table}.ordered_at, {table}.position_at), {table}.position_at)"
    condition = (
        f"{table}.id = v.id AND {table}.is_active "
        f"AND ({table}.position_at IS NULL OR {current} < (v.ordered_at, v.position_at))"
    )
    if _postgres():
        with connection.cursor() as cursor:
            cursor.execute(_STAGING)
            with cursor.cursor.copy(
                f"COPY tracking_staged_latest ({', '.join(_LATEST_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(_LATEST_TYPES)
                for event, cell in items:
                    copy.write_row(
                        _latest_row(
                            event,
                            cell,
                            uuid_value=lambda value: value,
                            time_value=lambda value: value,
                        )
                    )
            # The table again as "previous": a row of a FROM item is the
            # statement's snapshot, so it still holds the cell before the update.
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM tracking_staged_latest AS v "
                f"JOIN {table} AS previous ON previous.id = v.id WHERE {condition} "
                f"RETURNING {table}.id, previous.cell_x, previous.cell_y"
            )
            return {moved: _cell_or_none(x, y) for moved, x, y in cursor.fetchall()}
    moved: dict[uuid.UUID, Cell | None] = {}
    uuid_value = _uuid_adapter()
    time_value = connection.ops.adapt_datetimefield_value
    id_field = Tracker._meta.get_field("id")
    row = f"({', '.join(['%s'] * len(_LATEST_COLUMNS))})"
    with connection.cursor() as cursor:
        for start in range(0, len(items), ROWS_PER_STATEMENT):
            chunk = items[start : start + ROWS_PER_STATEMENT]
            ids = [uuid_value(event.tracker_id) for event, _ in chunk]
            # SQLite's RETURNING sees only the new row: read the cells first.
            cursor.execute(
                f"SELECT id, cell_x, cell_y FROM {table} WHERE id IN ({', '.join(['%s'] * len(ids))})",
                ids,
            )
            before = {value: _cell_or_none(x, y) for value, x, y in cursor.fetchall()}
            params: list[Any] = []
            for event, cell in chunk:
                params += _latest_row(event, cell, uuid_value=uuid_value, time_value=time_value)
            cursor.execute(
                f"WITH v({', '.join(_LATEST_COLUMNS)}) AS (VALUES {', '.join([row] * len(chunk))}) "
                f"UPDATE {table} SET {assignments} FROM v WHERE {condition} RETURNING {table}.id",
                params,
            )
            for (value,) in cursor.fetchall():
                moved[id_field.to_python(value)] = before.get(value)
    return moved


def _cell_or_none(x: int | None, y: int | None) -> Cell | None:
    return None if x is None or y is None else Cell(x, y)


def _latest_row(
    event: LocationEvent,
    cell: Cell,
    *,
    uuid_value: Callable[[uuid.UUID], Any],
    time_value: Callable[[datetime], Any],
) -> tuple[Any, ...]:
    return (
        uuid_value(event.tracker_id),
        event.latitude,
        event.longitude,
        time_value(event.timestamp),
        time_value(event.ordered_at),
        cell.x,
        cell.y,
        event.speed,
        event.heading,
    )


class Standing(NamedTuple):
    """Where a tracker's latest position stands before a batch moves it."""

    ordered_at: datetime | None
    position_at: datetime | None
    latitude: float | None
    longitude: float | None

    def key(self) -> tuple[datetime, datetime] | None:
        """What a later event must exceed to move it (see ``update_latest``)."""
        if self.position_at is None:
            return None
        return (self.ordered_at or self.position_at, self.position_at)


def lock_trackers(ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[bool, Standing]]:
    """``tracker_states`` and where each tracker's latest position stands, the
    rows locked until the commit (for geofence detection).

    On PostgreSQL the rows are locked (``FOR NO KEY UPDATE``, in id order, so
    two consumers never deadlock on each other, nor on history's foreign key)
    and read as committed when the lock was granted: a second ``consume_events``
    moving the same tracker waits here and then sees the first one's move. On
    SQLite one writer at a time holds the whole database (``transaction_mode``
    IMMEDIATE), so there is nothing to lock.
    """
    if not ids:
        return {}
    if _postgres():
        array = "{" + ",".join(str(tracker_id) for tracker_id in ids) + "}"
        # Times as microseconds since the epoch: read as integers, they cost a
        # fraction of parsing a thousand timestamps' text a batch.
        times = ", ".join(
            f"(EXTRACT(EPOCH FROM {name}) * 1000000)::int8"
            for name in ("ordered_at", "position_at")
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, is_active, {times}, latitude, longitude FROM {_table(Tracker)} "
                "WHERE id = ANY(%s::uuid[]) ORDER BY id FOR NO KEY UPDATE",
                [array],
            )
            return {
                tracker_id: (
                    is_active,
                    Standing(_moment(ordered), _moment(position), latitude, longitude),
                )
                for tracker_id, is_active, ordered, position, latitude, longitude in (
                    cursor.fetchall()
                )
            }
    rows = Tracker.objects.filter(id__in=ids).values_list(
        "id", "is_active", "ordered_at", "position_at", "latitude", "longitude"
    )
    return {
        tracker_id: (is_active, Standing(ordered_at, position_at, latitude, longitude))
        for tracker_id, is_active, ordered_at, position_at, latitude, longitude in rows
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _moment(microseconds: int | None) -> datetime | None:
    return None if microseconds is None else _EPOCH + timedelta(microseconds=microseconds)


def close_visits(closed: Sequence[tuple[int, datetime]]) -> None:
    """Set the exit time of each visit ``(id, exited_at)``: one statement per
    ``ROWS_PER_STATEMENT`` visits, whatever their times (most differ)."""
    table = connection.ops.quote_name(Visit._meta.db_table)
    time_value = connection.ops.adapt_datetimefield_value
    # PostgreSQL types a VALUES list by its literals: say what they are.
    row = "(%s::int8, %s::timestamptz)" if _postgres() else "(%s, %s)"
    with connection.cursor() as cursor:
        for start in range(0, len(closed), ROWS_PER_STATEMENT):
            chunk = closed[start : start + ROWS_PER_STATEMENT]
            params: list[Any] = []
            for pk, exited_at in chunk:
                params += (pk, time_value(exited_at))
            cursor.execute(
                f"WITH v(id, exited_at) AS (VALUES {', '.join([row] * len(chunk))}) "
                f"UPDATE {table} SET exited_at = v.exited_at FROM v WHERE {table}.id = v.id",
                params,
            )


def insert_visits(
    rows: Sequence[tuple[uuid.UUID, int, datetime, datetime | None, bool]],
) -> list[int]:
    """Insert visits ``(tracker id, geofence id, entered_at, exited_at,
    pending)``; return their new ids, in order."""
    table = connection.ops.quote_name(Visit._meta.db_table)
    uuid_value = _uuid_adapter()
    time_value = connection.ops.adapt_datetimefield_value
    row = "(%s, %s, %s, %s, %s)"
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            params: list[Any] = []
            for tracker_id, geofence_id, entered_at, exited_at, pending in chunk:
                params += (
                    uuid_value(tracker_id),
                    geofence_id,
                    time_value(entered_at),
                    None if exited_at is None else time_value(exited_at),
                    pending,
                )
            cursor.execute(
                f"INSERT INTO {table} (tracker_id, geofence_id, entered_at, exited_at, pending) "
                f"VALUES {', '.join([row] * len(chunk))} RETURNING id",
                params,
            )
            ids += [pk for (pk,) in cursor.fetchall()]
    return ids


def hold_geofences(ids: set[int]) -> set[int]:
    """Which of the geofences ``ids`` exist, each kept from being deleted until
    the commit (on PostgreSQL ``FOR KEY SHARE``, what a visit's foreign key
    would take; SQLite's one writer at a time holds the whole database)."""
    table = connection.ops.quote_name(Geofence._meta.db_table)
    lock = " FOR KEY SHARE" if _postgres() else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE id IN ({', '.join(['%s'] * len(ids))}){lock}",
            sorted(ids),
        )
        return {pk for (pk,) in cursor.fetchall()}
