"""The batch store of ingestion. Batch-shaped: lists in, one transaction.

``ingest_batch`` is the heart of the pipeline that every source feeds: it
parses and validates each body, keeps the ones it refuses with their reason,
bulk-inserts history, and moves each tracker's latest position forward in time
only. It returns what moved, for the pipeline to publish after the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tracking.events import InvalidEvent, LocationEvent, parse_event
from tracking.ingest import bulk
from tracking.ingest.sources import RawEvent
from tracking.models import RejectedEvent, Tracker, configured_grid, default_tracker_name
from tracking.positions import LatestPosition, newest_per_tracker

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    accepted: int = 0
    # Of the accepted, how many history did not hold yet (the rest were repeats).
    new: int = 0
    rejected: int = 0
    moved: list[LatestPosition] = field(default_factory=list)
    # Timestamps of the accepted events, for the lag figures.
    event_times: list[datetime] = field(default_factory=list)


@dataclass(slots=True)
class ParsedBatch:
    """Bodies read and checked against the contract, before any database work."""

    valid: list[tuple[RawEvent, LocationEvent]] = field(default_factory=list)
    refused: list[tuple[RawEvent, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.valid) + len(self.refused)

    def extend(self, other: ParsedBatch) -> None:
        self.valid += other.valid
        self.refused += other.refused


def parse_batch(*, events: Sequence[RawEvent], now: datetime) -> ParsedBatch:
    """Parse and validate every body (no database): the valid ones, and the
    refused ones with their reason."""
    max_future = timedelta(seconds=settings.TRACKING_MAX_FUTURE_SECONDS)
    max_bytes = settings.TRACKING_MAX_EVENT_BYTES
    parsed = ParsedBatch()
    for raw in events:
        if raw.problem is not None:
            parsed.refused.append((raw, raw.problem))
            continue
        try:
            event = parse_event(raw.body, now=now, max_future=max_future, max_bytes=max_bytes)
        except InvalidEvent as exc:
            parsed.refused.append((raw, str(exc)))
        else:
            parsed.valid.append((raw, event))
    return parsed


def ingest_batch(*, events: Sequence[RawEvent], now: datetime | None = None) -> BatchResult:
    """Store a batch of event bodies in one transaction; return what moved.

    Valid events go to history (a repeated one is ignored) and move their
    tracker's latest position if they are newer than it. Invalid ones, and
    those of unknown or inactive trackers, are stored as ``RejectedEvent``
    with the reason, and never hold back the valid ones.
    """
    now = now or timezone.now()
    return store_batch(parsed=parse_batch(events=events, now=now), now=now)


def store_batch(*, parsed: ParsedBatch, now: datetime) -> BatchResult:
    """The database half of ``ingest_batch``: one transaction for a parsed batch."""
    refused = list(parsed.refused)
    result = BatchResult()
    with transaction.atomic():
        active = _batch_trackers({event.tracker_id for _, event in parsed.valid})
        accepted: list[LocationEvent] = []
        for raw, event in parsed.valid:
            is_active = active.get(event.tracker_id)
            if is_active is None:
                reason = f"unknown tracker {event.tracker_id} (TRACKING_AUTO_REGISTER is off)"
                refused.append((raw, reason))
            elif not is_active:
                refused.append((raw, f"tracker {event.tracker_id} is inactive"))
            else:
                accepted.append(event)
        if accepted:
            result.new = bulk.insert_history(accepted, received_at=now)
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
    known = bulk.tracker_states(ids)
    unknown = ids - known.keys()
    if unknown and settings.TRACKING_AUTO_REGISTER:
        Tracker.objects.bulk_create(
            [
                Tracker(id=tracker_id, name=default_tracker_name(tracker_id))
                for tracker_id in unknown
            ],
            ignore_conflicts=True,
        )
        # Read back: another process may have registered (or deactivated) one meanwhile.
        known.update(bulk.tracker_states(unknown))
    return known


def _move_latest(events: Iterable[LocationEvent]) -> list[LatestPosition]:
    """Move each tracker to its newest event of the batch, if that is newer."""
    grid = configured_grid()
    items = [
        (event, grid.cell_of(latitude=event.latitude, longitude=event.longitude))
        for event in newest_per_tracker(events)
    ]
    moved = bulk.update_latest(items)
    return [
        LatestPosition.of(event, cell=cell, previous_cell=moved[event.tracker_id])
        for event, cell in items
        if event.tracker_id in moved
    ]


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
            Tracker(id=tracker_id, name=name or default_tracker_name(tracker_id))
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
