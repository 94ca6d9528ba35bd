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
(``bulk.lock_trackers``), so a second process moving the same tracker waits
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
import operator
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings

from tracking.events import LocationEvent
from tracking.geofences import Fence, FenceError, FenceIndex
from tracking.ingest import bulk
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
        self.presence = Presence()

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
        self.presence.clear()
        self.index = FenceIndex(
            {pk: fence for pk, (_, fence) in loaded.items() if fence is not None}
        )
        logger.info("checking %d geofences", len(self.index))


@dataclass(frozen=True, slots=True)
class _Stay:
    """A tracker inside a fence: an open visit, stored (``pk``) or made in this batch.

    Frozen: the stays kept between batches (``Presence``) are shared with the
    batch being judged, which makes new ones rather than changing them, so a
    batch that rolls back leaves them as they were.
    """

    entered_at: datetime
    pending: bool
    pk: int | None = None


# Where a tracker's latest position stood, as ``Standing.key``.
Key = tuple[datetime, datetime]


class Presence:
    """The open visits of the trackers this process moved last, kept between batches.

    A tracker's entry is good while its latest position is where this process
    left it (the key read under the row's lock is the one recorded at this
    process's commit): no other process has moved it since, so none has
    changed its visits. Otherwise its visits are read from the database.
    Entries are recorded only after their batch commits; at most
    ``max_trackers`` are kept, and all are dropped when the fences change.
    """

    def __init__(self, *, max_trackers: int = 200_000) -> None:
        self.max_trackers = max_trackers
        self._known: dict[uuid.UUID, tuple[Key, dict[int, _Stay]]] = {}

    def get(self, tracker_id: uuid.UUID, key: Key | None) -> dict[int, _Stay] | None:
        known = self._known.get(tracker_id)
        if known is None or key is None or known[0] != key:
            return None
        return known[1]

    def record(self, entries: dict[uuid.UUID, tuple[Key, dict[int, _Stay]]]) -> None:
        if len(self._known) + len(entries) > self.max_trackers:
            self._known.clear()  # rare: a fleet larger than the bound reads more
        self._known.update(entries)

    def clear(self) -> None:
        self._known.clear()


@dataclass
class _Changes:
    """The visit rows a batch writes: stays created (with their exit, if they
    ended in the batch), stored stays closed or confirmed, pending ones deleted."""

    # By the stay's identity, so one made and ended in a batch is found at once.
    created: dict[int, tuple[uuid.UUID, int, _Stay, datetime | None]] = field(default_factory=dict)
    closed: list[tuple[int, datetime]] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


def detect(
    *,
    events: Iterable[LocationEvent],
    standing: dict[uuid.UUID, Standing],
    fences: FenceIndex[int],
    rules: Rules,
    presence: Presence | None = None,
) -> tuple[list[Crossing], dict[uuid.UUID, tuple[Key, dict[int, _Stay]]]]:
    """Judge the positions of ``events`` that move their trackers forward
    from ``standing`` (read under lock), store the visits they open, close or
    confirm, and return the crossings in order per tracker, with each judged
    tracker's open visits after the batch (for ``Presence.record`` once it
    has committed)."""
    ahead = _moving_forward(events, standing)
    if not ahead:
        return [], {}
    positions = [event for moves in ahead.values() for event in moves]
    containing = fences.containing_many(
        latitudes=[event.latitude for event in positions],
        longitudes=[event.longitude for event in positions],
    )
    stays: dict[uuid.UUID, dict[int, _Stay]] = {}
    unknown = []
    for tracker_id in ahead:
        known = None if presence is None else presence.get(tracker_id, standing[tracker_id].key())
        if known is None:
            unknown.append(tracker_id)
        else:
            stays[tracker_id] = known
    if unknown:
        stays.update(_open_stays(unknown))
    beyond = _measure_exits(ahead, containing, stays, fences=fences, rules=rules)
    inside_each = iter(containing)
    changes = _Changes()
    crossings: list[Crossing] = []
    after: dict[uuid.UUID, tuple[Key, dict[int, _Stay]]] = {}
    # Without a dwell or the segment check, a position inside the fences the
    # tracker is already in changes nothing: most positions, judged no further.
    plain = not rules.min_dwell and not rules.check_segments
    for tracker_id, moves in ahead.items():
        before = standing[tracker_id]
        previous = (
            None
            if before.latitude is None or before.longitude is None or before.position_at is None
            else (before.latitude, before.longitude, before.position_at)
        )
        inside = dict(stays.get(tracker_id, ()))
        for event in moves:
            now_inside = next(inside_each)
            if plain and inside.keys() == now_inside:
                continue  # (plain: no segment to check, so no previous position needed)
            crossings += _judge(
                tracker_id,
                event,
                now_inside,
                inside,
                previous,
                fences=fences,
                rules=rules,
                changes=changes,
                beyond=beyond,
            )
            previous = (event.latitude, event.longitude, event.timestamp)
        last = moves[-1]
        after[tracker_id] = ((last.ordered_at, last.timestamp), inside)
    gone = _deleted_meanwhile(changes, crossings)
    if gone:
        # Deleted since this process last loaded the fences: their visits went
        # with them, so none is written and nothing is said of them.
        crossings = [crossing for crossing in crossings if crossing.geofence_id not in gone]
        changes.created = {
            key: made for key, made in changes.created.items() if made[1] not in gone
        }
        for _, inside in after.values():
            for geofence_id in gone & inside.keys():
                del inside[geofence_id]
    created = _write(changes)
    # The stays made in this batch and still open get the ids the database gave them.
    for (tracker_id, geofence_id, stay, _), pk in created:
        inside = after[tracker_id][1]
        if inside.get(geofence_id) is stay:
            inside[geofence_id] = replace(stay, pk=pk)
    return crossings, after


def _deleted_meanwhile(changes: _Changes, crossings: list[Crossing]) -> set[int]:
    """The fences a batch touched that no longer exist; the others are held
    (on PostgreSQL, ``FOR KEY SHARE``) so none can go before the batch commits."""
    touched = {crossing.geofence_id for crossing in crossings}
    touched |= {geofence_id for _, geofence_id, _, _ in changes.created.values()}
    if not touched:
        return set()
    return touched - bulk.hold_geofences(touched)


def _measure_exits(
    ahead: dict[uuid.UUID, list[LocationEvent]],
    containing: list[frozenset[int]],
    stays: dict[uuid.UUID, dict[int, _Stay]],
    *,
    fences: FenceIndex[int],
    rules: Rules,
) -> dict[tuple[int, int], bool]:
    """Whether each position is beyond the exit margin of each fence its
    tracker may be inside then without the position being in it: every
    fence the tracker was in before the batch or entered at an earlier
    position of it (more than judging needs, never less), measured in one
    go. Keyed by ``(id(event), geofence id)``."""
    pairs: list[tuple[LocationEvent, int]] = []
    inside_each = iter(containing)
    for tracker_id, moves in ahead.items():
        possible = set(stays.get(tracker_id, ()))
        for event in moves:
            now_inside = next(inside_each)
            if possible:
                pairs += [(event, geofence_id) for geofence_id in possible - now_inside]
            if now_inside:
                possible |= now_inside
    if not pairs:
        return {}
    measured = fences.beyond_many(
        [geofence_id for _, geofence_id in pairs],
        latitudes=[event.latitude for event, _ in pairs],
        longitudes=[event.longitude for event, _ in pairs],
        margin_m=rules.exit_margin_m,
    )
    return {
        (id(event), geofence_id): value
        for (event, geofence_id), value in zip(pairs, measured, strict=True)
    }


def _moving_forward(
    events: Iterable[LocationEvent], standing: dict[uuid.UUID, Standing]
) -> dict[uuid.UUID, list[LocationEvent]]:
    """Per tracker, its events that stand later than its latest position, in order, once each."""
    grouped: dict[uuid.UUID, list[LocationEvent]] = defaultdict(list)
    for event in events:
        grouped[event.tracker_id].append(event)
    ahead: dict[uuid.UUID, list[LocationEvent]] = {}
    for tracker_id, group in grouped.items():
        before = standing.get(tracker_id)
        if before is None:
            continue  # not a tracker whose position may move (inactive, unknown)
        floor = before.key()
        keys = [(event.ordered_at, event.timestamp) for event in group]
        if (floor is None or keys[0] > floor) and all(map(operator.lt, keys, keys[1:])):
            ahead[tracker_id] = group  # in order already, each once: a live stream
            continue
        keyed: dict[Key, LocationEvent] = {}
        for event in group:
            key = (event.ordered_at, event.timestamp)
            if (floor is None or key > floor) and key not in keyed:
                keyed[key] = event
        if keyed:
            ahead[tracker_id] = [keyed[key] for key in sorted(keyed)]
    return ahead


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
    beyond: dict[tuple[int, int], bool],
) -> list[Crossing]:
    """One position of a tracker: update ``inside`` and ``changes``; return its
    crossings. ``beyond`` holds the exit margin measured (``_measure_exits``)."""
    at = event.timestamp
    crossings: list[Crossing] = []
    left: set[int] = set()
    for geofence_id in sorted(inside.keys() - now_inside):
        if not beyond[id(event), geofence_id]:
            continue  # within the margin: still inside
        stay = inside.pop(geofence_id)
        left.add(geofence_id)
        if stay.pending:
            _end(changes, tracker_id, geofence_id, stay, exited_at=None)
        else:
            _end(changes, tracker_id, geofence_id, stay, exited_at=at)
            crossings.append(Crossing(tracker_id, geofence_id, entered=False, at=at))
    dwell = rules.min_dwell
    for geofence_id in sorted(now_inside - inside.keys()):
        stay = inside[geofence_id] = _Stay(entered_at=at, pending=bool(dwell))
        changes.created[id(stay)] = (tracker_id, geofence_id, stay, None)
        if not stay.pending:
            crossings.append(Crossing(tracker_id, geofence_id, entered=True, at=at))
    if dwell:
        for geofence_id, stay in sorted(inside.items()):
            if stay.pending and at - stay.entered_at >= dwell:
                confirmed = inside[geofence_id] = replace(stay, pending=False)
                if stay.pk is not None:
                    changes.confirmed.append(stay.pk)
                else:
                    _replace_created(changes, stay, confirmed, exited_at=None)
                crossings.append(Crossing(tracker_id, geofence_id, entered=True, at=at))
    elif rules.check_segments and previous is not None:
        latitude, longitude, then = previous
        passed = fences.crossed_by(
            start=(latitude, longitude), end=(event.latitude, event.longitude)
        )
        for geofence_id in sorted(passed - inside.keys() - left):
            # Recorded from the report before the pass to the one after it.
            passing = _Stay(entered_at=then, pending=False)
            changes.created[id(passing)] = (tracker_id, geofence_id, passing, at)
            crossings.append(Crossing(tracker_id, geofence_id, entered=True, at=at))
            crossings.append(Crossing(tracker_id, geofence_id, entered=False, at=at))
    return crossings


def _end(
    changes: _Changes,
    tracker_id: uuid.UUID,
    geofence_id: int,
    stay: _Stay,
    *,
    exited_at: datetime | None,
) -> None:
    """A stay ends: closed at ``exited_at``, or, a pending one (None), never was a visit."""
    if stay.pk is None:
        _replace_created(changes, stay, None if exited_at is None else stay, exited_at=exited_at)
    elif exited_at is None:
        changes.deleted.append(stay.pk)
    else:
        changes.closed.append((stay.pk, exited_at))


def _replace_created(
    changes: _Changes, stay: _Stay, new: _Stay | None, *, exited_at: datetime | None
) -> None:
    """Change a stay made in this batch before it is written (None: drop it)."""
    tracker_id, geofence_id, _, _ = changes.created.pop(id(stay))
    if new is not None:
        changes.created[id(new)] = (tracker_id, geofence_id, new, exited_at)


def _write(
    changes: _Changes,
) -> list[tuple[tuple[uuid.UUID, int, _Stay, datetime | None], int]]:
    """Write a batch's visits; return each stay created with its new id.

    Closes and deletes first, then creates: a tracker that left a fence and
    came back in one batch has its old visit closed before the new one opens
    (at most one open visit per tracker and fence, which the database holds).
    """
    if changes.deleted:
        Visit.objects.filter(pk__in=changes.deleted).delete()
    if changes.closed:
        bulk.close_visits(changes.closed)
    if changes.confirmed:
        Visit.objects.filter(pk__in=changes.confirmed).update(pending=False)
    if not changes.created:
        return []
    ids = bulk.insert_visits(
        [
            (tracker_id, geofence_id, stay.entered_at, exited_at, stay.pending)
            for tracker_id, geofence_id, stay, exited_at in changes.created.values()
        ]
    )
    return list(zip(changes.created.values(), ids, strict=True))
