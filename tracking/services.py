"""Database use cases of the tracking domain. Batch-shaped: lists in, one transaction.

``ingest_batch`` is the heart of the pipeline that every source feeds: it
parses and validates each body, keeps the ones it refuses with their reason,
bulk-inserts history, and moves each tracker's latest position forward in time
only. It returns what moved, for ``publishing`` to send after the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tracking.events import InvalidEvent, LocationEvent, parse_event
from tracking.grid import Cell, Grid
from tracking.models import Position, RejectedEvent, Tracker

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One event body as a source delivered it, and where it came from."""

    body: bytes
    origin: str
    # Set when the source already knows the body cannot be an event.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class LatestPosition:
    """A tracker's new latest position: what the map is told."""

    tracker_id: uuid.UUID
    latitude: float
    longitude: float
    timestamp: datetime
    cell: Cell


@dataclass(slots=True)
class BatchResult:
    accepted: int = 0
    rejected: int = 0
    moved: list[LatestPosition] = field(default_factory=list)
    # Timestamps of the accepted events, for the lag figures.
    event_times: list[datetime] = field(default_factory=list)


def current_grid() -> Grid:
    return Grid(settings.TRACKING_GRID_DEGREES)


def ingest_batch(*, events: Sequence[RawEvent], now: datetime | None = None) -> BatchResult:
    """Store a batch of event bodies in one transaction; return what moved.

    Valid events go to history (a repeated one is ignored) and move their
    tracker's latest position if they are newer than it. Invalid ones, and
    those of unknown or inactive trackers, are stored as ``RejectedEvent``
    with the reason, and never hold back the valid ones.
    """
    now = now or timezone.now()
    max_future = timedelta(seconds=settings.TRACKING_MAX_FUTURE_SECONDS)
    valid: list[tuple[RawEvent, LocationEvent]] = []
    refused: list[tuple[RawEvent, str]] = []
    for raw in events:
        if raw.problem is not None:
            refused.append((raw, raw.problem))
            continue
        try:
            event = parse_event(
                raw.body,
                now=now,
                max_future=max_future,
                max_bytes=settings.TRACKING_MAX_EVENT_BYTES,
            )
        except InvalidEvent as exc:
            refused.append((raw, str(exc)))
        else:
            valid.append((raw, event))

    result = BatchResult()
    with transaction.atomic():
        active = _batch_trackers({event.tracker_id for _, event in valid})
        accepted: list[LocationEvent] = []
        for raw, event in valid:
            is_active = active.get(event.tracker_id)
            if is_active is None:
                refused.append(
                    (
                        raw,
                        f"unknown tracker {event.tracker_id} (TRACKING_AUTO_REGISTER is off)",
                    )
                )
            elif not is_active:
                refused.append((raw, f"tracker {event.tracker_id} is inactive"))
            else:
                accepted.append(event)
        if accepted:
            _insert_history(accepted, received_at=now)
            result.moved = _move_latest(accepted)
        if refused:
            _store_rejected(refused, received_at=now)
    result.accepted = len(accepted)
    result.rejected = len(refused)
    result.event_times = [event.timestamp for event in accepted]
    for raw, reason in refused:
        logger.warning("rejected event from %s: %s", raw.origin, reason)
    return result


def _batch_trackers(ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
    """Whether each tracker of a batch is active; unknown ids are absent.

    Unknown ids are registered first when ``TRACKING_AUTO_REGISTER`` is on.
    """
    if not ids:
        return {}
    if settings.TRACKING_AUTO_REGISTER:
        Tracker.objects.bulk_create(
            [Tracker(id=tracker_id) for tracker_id in ids], ignore_conflicts=True
        )
    return dict(Tracker.objects.filter(id__in=ids).values_list("id", "is_active"))


def _insert_history(events: Sequence[LocationEvent], *, received_at: datetime) -> None:
    """Bulk-insert history; an event already there (a replay) is skipped."""
    Position.objects.bulk_create(
        [
            Position(
                tracker_id=event.tracker_id,
                timestamp=event.timestamp,
                latitude=event.latitude,
                longitude=event.longitude,
                speed=event.speed,
                heading=event.heading,
                accuracy=event.accuracy,
                received_at=received_at,
            )
            for event in events
        ],
        ignore_conflicts=True,
        batch_size=500,
    )


# Rows per UPDATE statement: 8 parameters each stays far below SQLite's limit.
_UPDATE_CHUNK = 500


def _move_latest(events: Iterable[LocationEvent]) -> list[LatestPosition]:
    """Move each tracker to its newest event of the batch, if that is newer.

    One ``UPDATE ... FROM (VALUES ...)`` per chunk whose ``WHERE`` compares
    times in the database, so it stays right with several consumers writing
    at once; ``RETURNING`` says which trackers actually moved.
    """
    newest: dict[uuid.UUID, LocationEvent] = {}
    for event in events:
        seen = newest.get(event.tracker_id)
        if seen is None or event.timestamp > seen.timestamp:
            newest[event.tracker_id] = event
    grid = current_grid()
    cells = {
        tracker_id: grid.cell_of(latitude=event.latitude, longitude=event.longitude)
        for tracker_id, event in newest.items()
    }
    moved_ids: set[uuid.UUID] = set()
    items = sorted(newest.items())
    for start in range(0, len(items), _UPDATE_CHUNK):
        moved_ids |= _update_latest(items[start : start + _UPDATE_CHUNK], cells)
    return [
        LatestPosition(
            tracker_id=tracker_id,
            latitude=event.latitude,
            longitude=event.longitude,
            timestamp=event.timestamp,
            cell=cells[tracker_id],
        )
        for tracker_id, event in items
        if tracker_id in moved_ids
    ]


_LATEST_COLUMNS = (
    "id",
    "latitude",
    "longitude",
    "position_at",
    "cell_x",
    "cell_y",
    "speed",
    "heading",
)
# PostgreSQL needs the types of a VALUES list spelled out; SQLite compares the
# stored text forms, which sort as the times do.
_POSTGRES_ROW = (
    "(%s::uuid, %s::float8, %s::float8, %s::timestamptz, %s::int, %s::int, %s::float8, %s::float8)"
)
_PLAIN_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s)"


def _update_latest(
    items: Sequence[tuple[uuid.UUID, LocationEvent]], cells: dict[uuid.UUID, Cell]
) -> set[uuid.UUID]:
    table = connection.ops.quote_name(Tracker._meta.db_table)
    row = _POSTGRES_ROW if connection.vendor == "postgresql" else _PLAIN_ROW
    assignments = ", ".join(f"{column} = v.{column}" for column in _LATEST_COLUMNS[1:])
    sql = (
        f"WITH v({', '.join(_LATEST_COLUMNS)}) AS (VALUES {', '.join([row] * len(items))}) "
        f"UPDATE {table} SET {assignments} FROM v "
        f"WHERE {table}.id = v.id AND {table}.is_active "
        f"AND ({table}.position_at IS NULL OR {table}.position_at < v.position_at) "
        f"RETURNING {table}.id"
    )
    id_field = Tracker._meta.get_field("id")
    time_field = Tracker._meta.get_field("position_at")
    params: list[Any] = []
    for tracker_id, event in items:
        cell = cells[tracker_id]
        params += [
            id_field.get_db_prep_value(tracker_id, connection),
            event.latitude,
            event.longitude,
            time_field.get_db_prep_value(event.timestamp, connection),
            cell.x,
            cell.y,
            event.speed,
            event.heading,
        ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {id_field.to_python(moved_id) for (moved_id,) in cursor.fetchall()}


def _store_rejected(refused: Sequence[tuple[RawEvent, str]], *, received_at: datetime) -> None:
    limit = settings.TRACKING_REJECTED_BODY_CHARS
    RejectedEvent.objects.bulk_create(
        [
            RejectedEvent(
                received_at=received_at,
                source=raw.origin[:200],
                reason=reason[:500],
                body=raw.body[: limit * 4].decode("utf-8", errors="backslashreplace")[:limit],
                body_bytes=len(raw.body),
            )
            for raw, reason in refused
        ],
        batch_size=500,
    )


def register_trackers(*, trackers: Iterable[tuple[uuid.UUID, str]]) -> int:
    """Create the trackers that do not exist yet, with their names; return how many."""
    wanted = dict(trackers)
    existing = set(Tracker.objects.filter(id__in=wanted).values_list("id", flat=True))
    created = Tracker.objects.bulk_create(
        [
            Tracker(id=tracker_id, name=name)
            for tracker_id, name in wanted.items()
            if tracker_id not in existing
        ],
        ignore_conflicts=True,
    )
    return len(created)


def prune_rejected(*, keep: int) -> int:
    """Delete all but the newest ``keep`` rejected events; return how many went."""
    cutoff = RejectedEvent.objects.order_by("-id").values_list("id", flat=True)[keep : keep + 1]
    oldest_kept = list(cutoff)
    if not oldest_kept:
        return 0
    deleted, _ = RejectedEvent.objects.filter(id__lte=oldest_kept[0]).delete()
    return deleted
