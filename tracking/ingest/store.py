"""The batch store of ingestion. Batch-shaped: lists in, one transaction.

``ingest_batch`` is the heart of the pipeline that every source feeds: it
parses and validates each body, keeps the ones it refuses with their reason,
bulk-inserts history, and moves each tracker's latest position forward only
(ordered by the earlier of each event's Ts and its receipt). It returns what moved, for the pipeline to publish after the commit.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tracking import retention
from tracking.events import InvalidEvent, LocationEvent, parse_event
from tracking.ingest import bulk
from tracking.ingest.bulk import Standing
from tracking.ingest.geofencing import FenceSet, Rules, detect
from tracking.ingest.rejections import StoreAllowance
from tracking.ingest.sources import RawEvent
from tracking.logsafe import quoted
from tracking.models import RejectedEvent, Tracker, configured_grid, default_tracker_name
from tracking.positions import Crossing, LatestPosition, newest_per_tracker

logger = logging.getLogger(__name__)

# The category of an event the database refused to store (see ``refused_by_database``).
REFUSED_BY_DATABASE = "refused-by-database"
# The category of an event older than history keeps (TRACKING_HISTORY_DAYS).
TOO_OLD = "too-old"


@dataclass(slots=True)
class BatchResult:
    accepted: int = 0
    # Of the accepted, how many history did not hold yet (the rest were repeats).
    new: int = 0
    rejected: int = 0
    # The rejected per category (``InvalidEvent.category``), and how many of
    # them were only counted, over TRACKING_REJECTED_STORE_PER_MINUTE.
    rejected_by_category: Counter[str] = field(default_factory=Counter)
    not_stored: int = 0
    moved: list[LatestPosition] = field(default_factory=list)
    # Geofence entries and exits, per tracker in the order they happened.
    crossings: list[Crossing] = field(default_factory=list)
    # Timestamps of the accepted events, for the lag figures.
    event_times: list[datetime] = field(default_factory=list)

    def merged(self, later: BatchResult) -> BatchResult:
        """This result and that of a batch committed after it, as one."""
        # A tracker that moved in both keeps its later position, as having
        # left the cell it was in before the earlier one.
        moved = {position.tracker_id: position for position in self.moved}
        for position in later.moved:
            earlier = moved.get(position.tracker_id)
            moved[position.tracker_id] = (
                position
                if earlier is None
                else replace(position, previous_cell=earlier.previous_cell)
            )
        return BatchResult(
            accepted=self.accepted + later.accepted,
            new=self.new + later.new,
            rejected=self.rejected + later.rejected,
            rejected_by_category=self.rejected_by_category + later.rejected_by_category,
            not_stored=self.not_stored + later.not_stored,
            moved=list(moved.values()),
            crossings=self.crossings + later.crossings,
            event_times=self.event_times + later.event_times,
        )


class Refusal(NamedTuple):
    """A body refused, why (for an operator) and the kind of why (for counting)."""

    raw: RawEvent
    reason: str
    category: str


@dataclass(slots=True)
class ParsedBatch:
    """Bodies read and checked against the contract, before any database work."""

    valid: list[tuple[RawEvent, LocationEvent]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.valid) + len(self.refused)

    def extend(self, other: ParsedBatch) -> None:
        self.valid += other.valid
        self.refused += other.refused

    def bodies(self) -> list[RawEvent]:
        return [raw for raw, _ in self.valid] + [refusal.raw for refusal in self.refused]

    def halves(self) -> tuple[ParsedBatch, ParsedBatch]:
        """The batch cut in two of (about) the same size."""
        middle = len(self) // 2
        if middle <= len(self.valid):
            return (
                ParsedBatch(valid=self.valid[:middle]),
                ParsedBatch(valid=self.valid[middle:], refused=self.refused),
            )
        cut = middle - len(self.valid)
        return (
            ParsedBatch(valid=self.valid, refused=self.refused[:cut]),
            ParsedBatch(refused=self.refused[cut:]),
        )

    def refused_by_database(self, message: str) -> ParsedBatch:
        """Every body of this batch as rejected because the database refused
        it with ``message``; a body already rejected keeps its reason, and is
        kept without its body, the part the database may have refused."""
        return ParsedBatch(
            refused=[
                Refusal(raw, f"the database refused it: {message}", REFUSED_BY_DATABASE)
                for raw, _ in self.valid
            ]
            + [
                Refusal(
                    RawEvent(body=b"", origin=raw.origin),
                    f"{reason} (body not kept: {message})",
                    category,
                )
                for raw, reason, category in self.refused
            ]
        )


def parse_batch(*, events: Sequence[RawEvent], now: datetime) -> ParsedBatch:
    """Parse and validate every body (no database): the valid ones, and the
    refused ones with their reason. ``now`` is when the batch was received;
    a body the source knows the receipt time of is judged by that instead."""
    max_future = timedelta(seconds=settings.TRACKING_MAX_FUTURE_SECONDS)
    max_bytes = settings.TRACKING_MAX_EVENT_BYTES
    # Judged by when the batch came, whatever the source says: what is older
    # than the cutoff now would be pruned at once (its partition may be gone).
    oldest = retention.cutoff(now=now)
    parsed = ParsedBatch()
    for raw in events:
        if raw.problem is not None:
            parsed.refused.append(Refusal(raw, raw.problem, "not-data"))
            continue
        try:
            event = parse_event(
                raw.body, now=raw.received_at or now, max_future=max_future, max_bytes=max_bytes
            )
        except InvalidEvent as exc:
            parsed.refused.append(Refusal(raw, str(exc), exc.category))
        except Exception as exc:
            # A parser bug, which the parser's tests should have found: one
            # body must still not stop the stream.
            logger.exception("the parser failed on the body from %s", quoted(raw.origin))
            reason = f"the parser failed on it: {type(exc).__name__}: {exc}"
            parsed.refused.append(Refusal(raw, reason, "parser-failed"))
        else:
            if oldest is not None and event.timestamp < oldest:
                reason = (
                    f"Ts {event.timestamp.isoformat()} is older than TRACKING_HISTORY_DAYS "
                    f"({settings.TRACKING_HISTORY_DAYS}) allows: history before "
                    f"{oldest.isoformat(timespec='seconds')} is not kept"
                )
                parsed.refused.append(Refusal(raw, reason, TOO_OLD))
                continue
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


def store_batch(
    *,
    parsed: ParsedBatch,
    now: datetime,
    allowance: StoreAllowance | None = None,
    fences: FenceSet | None = None,
) -> BatchResult:
    """The database half of ``ingest_batch``: one transaction for a parsed batch.

    Refused bodies are stored as far as ``allowance`` lets (all of them
    without one), and counted per category in the result either way. With
    ``fences`` in use, the positions that move trackers forward are checked
    against them and the visits stored in the same transaction
    (``tracking/ingest/geofencing.py``).
    """
    # Before the batch's transaction, in short ones of their own: the partitions
    # of the days it holds that have none yet (none, in the steady state).
    days = {retention.day_of(event.timestamp) for _, event in parsed.valid}
    retention.ensure_days(days)
    try:
        return _store_in_one_transaction(parsed=parsed, now=now, allowance=allowance, fences=fences)
    except IntegrityError as exc:
        if not retention.no_partition_for_row(exc):
            raise
        # A partition this process knew of is gone (dropped by another
        # process's pruning): forget what it knew, make what is missing, again.
        retention.forget_known_days()
        if connection.in_atomic_block:
            raise
        retention.ensure_days(days)
        return _store_in_one_transaction(parsed=parsed, now=now, allowance=allowance, fences=fences)


def _store_in_one_transaction(
    *,
    parsed: ParsedBatch,
    now: datetime,
    allowance: StoreAllowance | None,
    fences: FenceSet | None,
) -> BatchResult:
    refused = list(parsed.refused)
    result = BatchResult()
    detecting = fences is not None and fences.in_use
    with transaction.atomic():
        active, standing = _batch_trackers(
            {event.tracker_id for _, event in parsed.valid}, lock=detecting
        )
        accepted: list[LocationEvent] = []
        for raw, event in parsed.valid:
            is_active = active.get(event.tracker_id)
            if is_active is None:
                reason = f"unknown tracker {event.tracker_id} (TRACKING_AUTO_REGISTER is off)"
                refused.append(Refusal(raw, reason, "unknown-tracker"))
            elif not is_active:
                reason = f"tracker {event.tracker_id} is inactive"
                refused.append(Refusal(raw, reason, "inactive-tracker"))
            else:
                accepted.append(event)
        if accepted:
            result.new = bulk.insert_history(accepted, received_at=now)
            if fences is not None and detecting:
                result.crossings, after = detect(
                    events=accepted,
                    standing=standing,
                    fences=fences.index,
                    rules=Rules.from_settings(),
                    presence=fences.presence,
                )
                # Kept for the next batch only once this one is committed.
                transaction.on_commit(functools.partial(fences.presence.record, after))
            result.moved = _move_latest(accepted)
        stored = len(refused) if allowance is None else allowance.take(len(refused))
        if stored:
            _store_rejected(refused[:stored], received_at=now)
    result.accepted = len(accepted)
    result.rejected = len(refused)
    # Counted, not logged one by one: the pipeline's progress line sums them up.
    result.rejected_by_category = Counter(refusal.category for refusal in refused)
    result.not_stored = len(refused) - stored
    result.event_times = [event.timestamp for event in accepted]
    return result


def _batch_trackers(
    ids: set[uuid.UUID], *, lock: bool
) -> tuple[dict[uuid.UUID, bool], dict[uuid.UUID, Standing]]:
    """Whether each tracker of a batch is active (unknown ids are absent) and,
    with ``lock``, where each one's latest position stands, its row locked
    until the commit (``bulk.lock_trackers``), before any position moves.

    Unknown ids are registered first when ``TRACKING_AUTO_REGISTER`` is on.
    """

    def read(wanted: set[uuid.UUID]) -> tuple[dict[uuid.UUID, bool], dict[uuid.UUID, Standing]]:
        if not lock:
            return bulk.tracker_states(wanted), {}
        rows = bulk.lock_trackers(wanted)
        return (
            {tracker_id: is_active for tracker_id, (is_active, _) in rows.items()},
            {tracker_id: standing for tracker_id, (_, standing) in rows.items()},
        )

    known, standing = read(ids)
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
        more, more_standing = read(unknown)
        known.update(more)
        standing.update(more_standing)
    return known, standing


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


def _store_rejected(refused: Sequence[Refusal], *, received_at: datetime) -> None:
    limit = settings.TRACKING_REJECTED_BODY_CHARS
    RejectedEvent.objects.bulk_create(
        [
            RejectedEvent(
                received_at=received_at,
                source=storable_text(raw.origin)[:200],
                reason=storable_text(reason)[:500],
                body=storable_text(
                    raw.body[: limit * 4].decode("utf-8", errors="backslashreplace")
                )[:limit],
                body_bytes=len(raw.body),
            )
            for raw, reason, _ in refused
        ],
        batch_size=500,
    )


def storable_text(text: str) -> str:
    """``text`` as every database can store it: NUL, which PostgreSQL refuses
    in text, and lone surrogates, which are not UTF-8, written as escapes
    (``\\x00``, ``\\ud800``) the way undecodable bytes already are."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda match: match[0].encode("unicode_escape").decode("ascii"), text)


# NUL and the surrogate code points: the characters no database column here takes.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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


def rejected_prune_point(*, keep: int) -> int | None:
    """The id of the newest rejected event that is not among the newest ``keep``:
    it and every older one may go. None when there are no more than ``keep``."""
    ids = RejectedEvent.objects.order_by("-id").values_list("id", flat=True)
    found = list(ids[keep : keep + 1])
    return found[0] if found else None


def prune_rejected(*, up_to: int, chunk: int) -> int:
    """Delete the oldest rejected events with ids up to ``up_to``, at most
    ``chunk`` of them; return how many went (fewer than ``chunk``: none is left).

    One bounded statement per call, so the caller can interleave batches
    between chunks instead of waiting for a million rows to go at once.
    """
    # The ids as a LIMITed subquery: the database walks the primary key for
    # them even before it has statistics of a freshly filled table.
    oldest = RejectedEvent.objects.filter(id__lte=up_to).order_by("id")
    deleted, _ = RejectedEvent.objects.filter(id__in=oldest.values("id")[:chunk]).delete()
    return deleted
