"""Geofence detection in the pipeline: which positions entered or left which fences.

Runs in the batch's transaction (``store.store_batch``), between writing
history and moving the latest positions, so a batch's visits commit with the
positions that made them or not at all. After the commit the crossings are
published with the positions (``tracking/hub/publishing.py``).

**Which positions count.** Every accepted position that moves its tracker's
latest position forward, in the order they stand (``ordered_at``, then
``Ts``): each tracker's events of the batch that stand later than its latest
position before the batch. A late event is history, not a crossing, and a
repeated one stands level with the latest, so it makes nothing either. How
events are cut into batches changes nothing: after a restart, or when another
``consume_events`` takes over a partition and reads some events again, the
same positions give the same crossings, once.

**State is the database's.** Which fences a tracker is inside is its open
visits, read in the batch's transaction after its tracker row is locked
(``bulk.lock_latest``), so a second process moving the same tracker waits
and then sees the first one's visits.

**The rules** (``tracking.geofences.crossings``): a tracker enters a fence
when a position is inside it (or on its boundary) and leaves it only when a
position is more than ``GEOFENCE_EXIT_MARGIN_M`` outside, so GPS noise on a
boundary does not flap. With ``GEOFENCE_MIN_DWELL_SECONDS`` the visit is
``pending`` until a position that long after the first one inside finds the
tracker still in (within the margin); one that leaves sooner is deleted and
was never an entry. With ``GEOFENCE_CHECK_SEGMENTS`` the straight line from
the previous position is checked too: a fence it passes through, that
neither end is in, is entered and left at once (not with a minimum dwell:
such a pass never stayed). An open visit of a fence switched off or deleted
ends at the tracker's next position.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings

from tracking.events import LocationEvent
from tracking.geofences import Fence, FenceError, FenceIndex
from tracking.ingest.bulk import Standing
from tracking.logsafe import quoted
from tracking.models import Geofence, Visit
from tracking.positions import Crossing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    """How crossings are judged (the ``GEOFENCE_*`` settings)."""

    exit_margin_m: float
    min_dwell: timedelta
    check_segments: bool

    @classmethod
    def from_settings(cls) -> Rules:
        return cls(
            exit_margin_m=settings.GEOFENCE_EXIT_MARGIN_M,
            min_dwell=timedelta(seconds=settings.GEOFENCE_MIN_DWELL_SECONDS),
            check_segments=settings.GEOFENCE_CHECK_SEGMENTS,
        )


class FenceSet:
    """The active fences a ``consume_events`` process checks, reloaded when they change.

    Every ``reload_seconds`` at most, ``refresh`` compares the active fences'
    ids and edit times with those loaded; only fences added or edited since
    are parsed again. A stored fence that no longer parses is left out, with
    a log line once per edit.
    """

    def __init__(
        self, *, reload_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reload_seconds = reload_seconds
        self.index: FenceIndex[int] = FenceIndex({})
        self._clock = clock
        self._checked_at = -float("inf")
        self._loaded: dict[int, tuple[datetime, Fence | None]] = {}
        # Whether some tracker may still be inside a fence that is no longer
        # active: detection then runs even with no fence, to end those visits.
        self._open_visits = False

    @property
    def in_use(self) -> bool:
        """Whether detection has anything to do."""
        return len(self.index) > 0 or self._open_visits

    def refresh(self) -> None:
        """Load what changed, if ``reload_seconds`` have passed; call on the database thread."""
        now = self._clock()
        if now - self._checked_at < self.reload_seconds:
            return
        self._checked_at = now
        current = dict(Geofence.objects.filter(is_active=True).values_list("pk", "updated_at"))
        self._open_visits = Visit.objects.open().exclude(geofence_id__in=current).exists()
        if current.keys() == self._loaded.keys() and all(
            self._loaded[pk][0] == edited for pk, edited in current.items()
        ):
            return
        changed = [
            pk for pk, edited in current.items() if self._loaded.get(pk, (None,))[0] != edited
        ]
        loaded = {pk: self._loaded[pk] for pk in current if pk not in changed}
        for geofence in Geofence.objects.filter(pk__in=changed).only(
            "pk", "name", "geojson", "updated_at"
        ):
            try:
                fence: Fence | None = geofence.fence
            except FenceError as error:
                logger.error(
                    "geofence %d %s is not checked: its stored GeoJSON is refused: %s",
                    geofence.pk,
                    quoted(geofence.name),
                    error,
                )
                fence = None
            loaded[geofence.pk] = (geofence.updated_at, fence)
        self._loaded = loaded
        self.index = FenceIndex(
            {pk: fence for pk, (_, fence) in loaded.items() if fence is not None}
        )
        logger.info("checking %d geofences", len(self.index))


@dataclass(slots=True)
class _Stay:
    """A tracker inside a fence: an open visit, stored (``pk``) or made in this batch."""

    entered_at: datetime
    pending: bool
    pk: int | None = None
    exited_at: datetime | None = None
    changed: bool = False
    # A pending stay made in this batch and left in it: never written.
    dropped: bool = False


@dataclass
class _Changes:
    """The visit rows a batch writes."""

    created: list[tuple[uuid.UUID, int, _Stay]] = field(default_factory=list)
    updated: list[_Stay] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


def detect(
    *,
    events: Iterable[LocationEvent],
    standing: dict[uuid.UUID, Standing],
    fences: FenceIndex[int],
    rules: Rules,
) -> list[Crossing]:
    """Judge the positions of ``events`` that move their trackers forward
    from ``standing`` (read under lock), store the visits they open, close or
    confirm, and return the crossings in order per tracker."""
    ahead = _moving_forward(events, standing)
    if not ahead:
        return []
    positions = [event for moves in ahead.values() for event in moves]
    inside_each = iter(
        fences.containing_many(
            latitudes=[event.latitude for event in positions],
            longitudes=[event.longitude for event in positions],
        )
    )
    stays = _open_stays(ahead.keys())
    changes = _Changes()
    crossings: list[Crossing] = []
    for tracker_id, moves in ahead.items():
        before = standing[tracker_id]
        previous = (
            None
            if before.latitude is None or before.longitude is None or before.position_at is None
            else (before.latitude, before.longitude, before.position_at)
        )
        inside = stays.get(tracker_id, {})
        for event in moves:
            crossings += _judge(
                tracker_id,
                event,
                next(inside_each),
                inside,
                previous,
                fences=fences,
                rules=rules,
                changes=changes,
            )
            previous = (event.latitude, event.longitude, event.timestamp)
    _write(changes)
    return crossings


def _moving_forward(
    events: Iterable[LocationEvent], standing: dict[uuid.UUID, Standing]
) -> dict[uuid.UUID, list[LocationEvent]]:
    """Per tracker, its events that stand later than its latest position, in order, once each."""
    by_tracker: dict[uuid.UUID, dict[tuple[datetime, datetime], LocationEvent]] = defaultdict(dict)
    for event in events:
        before = standing.get(event.tracker_id)
        if before is None:
            continue  # not a tracker whose position may move (inactive, unknown)
        key = (event.ordered_at, event.timestamp)
        floor = before.key()
        if floor is None or key > floor:
            by_tracker[event.tracker_id].setdefault(key, event)
    return {
        tracker_id: [keyed[key] for key in sorted(keyed)]
        for tracker_id, keyed in by_tracker.items()
    }


def _open_stays(trackers: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[int, _Stay]]:
    stays: dict[uuid.UUID, dict[int, _Stay]] = defaultdict(dict)
    rows = Visit.objects.open().filter(tracker_id__in=list(trackers))
    for pk, tracker_id, geofence_id, entered_at, pending in rows.values_list(
        "pk", "tracker_id", "geofence_id", "entered_at", "pending"
    ):
        stays[tracker_id][geofence_id] = _Stay(entered_at=entered_at, pending=pending, pk=pk)
    return stays


def _judge(
    tracker_id: uuid.UUID,
    event: LocationEvent,
    now_inside: frozenset[int],
    inside: dict[int, _Stay],
    previous: tuple[float, float, datetime] | None,
    *,
    fences: FenceIndex[int],
    rules: Rules,
    changes: _Changes,
) -> list[Crossing]:
    """One position of a tracker: update ``inside`` and ``changes``; return its crossings."""
    at = event.timestamp
    crossings: list[Crossing] = []
    left: set[int] = set()
    for geofence_id in sorted(inside.keys() - now_inside):
        fence = fences.get(geofence_id)
        if fence is not None and (
            fence.signed_distance_m(latitude=event.latitude, longitude=event.longitude)
            <= rules.exit_margin_m
        ):
            continue  # within the margin: still inside
        stay = inside.pop(geofence_id)
        left.add(geofence_id)
        if stay.pending:
            _forget(stay, changes)
            continue
        stay.exited_at = at
        _changed(stay, changes)
        crossings.append(Crossing(tracker_id, geofence_id, entered=False, at=at))
    dwell = rules.min_dwell
    for geofence_id in sorted(now_inside - inside.keys()):
        stay = inside[geofence_id] = _Stay(entered_at=at, pending=bool(dwell))
        changes.created.append((tracker_id, geofence_id, stay))
        if not stay.pending:
            crossings.append(Crossing(tracker_id, geofence_id, entered=True, at=at))
    if dwell:
        for geofence_id, stay in sorted(inside.items()):
            if stay.pending and at - stay.entered_at >= dwell:
                stay.pending = False
                _changed(stay, changes)
                crossings.append(Crossing(tracker_id, geofence_id, entered=True, at=at))
    elif rules.check_segments and previous is not None:
        latitude, longitude, then = previous
        passed = fences.crossed_by(
            start=(latitude, longitude), end=(event.latitude, event.longitude)
        )
        for geofence_id in sorted(passed - inside.keys() - left):
            # Recorded from the report before the pass to the one after it.
            stay = _Stay(entered_at=then, pending=False, exited_at=at)
            changes.created.append((tracker_id, geofence_id, stay))
            crossings.append(Crossing(tracker_id, geofence_id, entered=True, at=at))
            crossings.append(Crossing(tracker_id, geofence_id, entered=False, at=at))
    return crossings


def _changed(stay: _Stay, changes: _Changes) -> None:
    """A stored stay is to be written back (a new one is written whole anyway)."""
    if stay.pk is not None and not stay.changed:
        stay.changed = True
        changes.updated.append(stay)


def _forget(stay: _Stay, changes: _Changes) -> None:
    """A pending stay the tracker left: it never was a visit."""
    if stay.pk is not None:
        changes.deleted.append(stay.pk)
    else:
        stay.dropped = True


def _write(changes: _Changes) -> None:
    """Closes and deletes first, then creates: a tracker that left a fence and
    came back in one batch has its old visit closed before the new one opens
    (at most one open visit per tracker and fence, which the database holds)."""
    if changes.deleted:
        Visit.objects.filter(pk__in=changes.deleted).delete()
    if changes.updated:
        Visit.objects.bulk_update(
            [
                Visit(pk=stay.pk, exited_at=stay.exited_at, pending=stay.pending)
                for stay in changes.updated
            ],
            ["exited_at", "pending"],
            batch_size=500,
        )
    created = [
        Visit(
            tracker_id=tracker_id,
            geofence_id=geofence_id,
            entered_at=stay.entered_at,
            exited_at=stay.exited_at,
            pending=stay.pending,
        )
        for tracker_id, geofence_id, stay in changes.created
        if not stay.dropped
    ]
    if created:
        Visit.objects.bulk_create(created, batch_size=500)
