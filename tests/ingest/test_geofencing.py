"""Geofence detection in the pipeline: visits stored with the batch, crossings published after it."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.conftest import event_body
from tracking.geofences import FenceIndex, crossings
from tracking.grid import Cell
from tracking.hub import publishing
from tracking.ingest.geofencing import FenceSet
from tracking.ingest.pipeline import Pipeline
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import BatchResult, parse_batch, store_batch
from tracking.models import Geofence, Position, Tracker, Visit
from tracking.positions import Crossing, LatestPosition

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
# Metres per degree at 60 degrees north, near enough for placing test points.
LAT_M = 111_400.0
LON_M = 55_800.0
CENTRE = (60.17, 24.94)  # latitude, longitude


def square(
    name: str, *, half_m: float, centre: tuple[float, float] = CENTRE, hole_m: float = 0
) -> Geofence:
    latitude, longitude = centre
    rings = [_ring(latitude, longitude, half_m)]
    if hole_m:
        rings.append(_ring(latitude, longitude, hole_m))
    return _fence(name, {"type": "Polygon", "coordinates": rings})


def _ring(latitude: float, longitude: float, half_m: float) -> list[list[float]]:
    dlat, dlon = half_m / LAT_M, half_m / LON_M
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]
    return [[longitude + x * dlon, latitude + y * dlat] for x, y in corners]


def _fence(name: str, geometry: dict[str, object]) -> Geofence:
    return Geofence.objects.create(
        name=name, geojson=json.dumps({"type": "Feature", "properties": {}, "geometry": geometry})
    )


def east_of_centre(metres: float, *, centre: tuple[float, float] = CENTRE) -> tuple[float, float]:
    """A position ``metres`` east of the fence's centre (negative: west)."""
    return centre[0], centre[1] + metres / LON_M


class Feeder:
    """Feeds events through ``store_batch`` as the pipeline does, one batch per call."""

    def __init__(self) -> None:
        self.fences = FenceSet(reload_seconds=0)

    def batch(self, *events: tuple[uuid.UUID, tuple[float, float], datetime]) -> BatchResult:
        raws = [
            RawEvent(
                body=event_body(tracker_id=tracker, latitude=lat, longitude=lng, at=at),
                origin=f"test {n}",
            )
            for n, (tracker, (lat, lng), at) in enumerate(events)
        ]
        now = max(at for _, _, at in events) + timedelta(seconds=1)
        self.fences.refresh()
        return store_batch(parsed=parse_batch(events=raws, now=now), now=now, fences=self.fences)


def kinds(result: BatchResult) -> list[tuple[str, int]]:
    return [("entered" if c.entered else "exited", c.geofence_id) for c in result.crossings]


def visits(tracker: uuid.UUID) -> list[tuple[int, datetime, datetime | None]]:
    return list(
        Visit.objects.filter(tracker_id=tracker)
        .order_by("entered_at", "pk")
        .values_list("geofence_id", "entered_at", "exited_at")
    )


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_enter_exit_and_reenter_are_each_one_crossing_and_one_visit() -> None:
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    feed = Feeder()
    assert kinds(feed.batch((tracker, east_of_centre(-500), at(0)))) == []
    assert kinds(feed.batch((tracker, east_of_centre(0), at(1)))) == [("entered", fence.pk)]
    assert kinds(feed.batch((tracker, east_of_centre(50), at(2)))) == []
    assert kinds(feed.batch((tracker, east_of_centre(500), at(3)))) == [("exited", fence.pk)]
    assert kinds(feed.batch((tracker, east_of_centre(0), at(4)))) == [("entered", fence.pk)]
    assert visits(tracker) == [(fence.pk, at(1), at(3)), (fence.pk, at(4), None)]


def test_a_whole_visit_inside_one_batch_is_stored_and_published_in_order() -> None:
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(-500), at(0)))
    result = feed.batch(
        # Out of order within the batch: judged in the order they stand.
        (tracker, east_of_centre(500), at(3)),
        (tracker, east_of_centre(0), at(1)),
        (tracker, east_of_centre(-600), at(5)),
        (tracker, east_of_centre(10), at(4)),
    )
    assert kinds(result) == [
        ("entered", fence.pk),
        ("exited", fence.pk),
        ("entered", fence.pk),
        ("exited", fence.pk),
    ]
    assert [c.at for c in result.crossings] == [at(1), at(3), at(4), at(5)]
    assert visits(tracker) == [(fence.pk, at(1), at(3)), (fence.pk, at(4), at(5))]


def test_a_late_event_is_history_and_a_repeated_one_makes_nothing() -> None:
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(-500), at(0)))
    feed.batch((tracker, east_of_centre(0), at(10)))
    # Late: stamped before the latest position, though inside then outside.
    assert kinds(feed.batch((tracker, east_of_centre(900), at(5)))) == []
    # The same event again, and the whole first batch again.
    assert kinds(feed.batch((tracker, east_of_centre(0), at(10)))) == []
    assert kinds(feed.batch((tracker, east_of_centre(-500), at(0)))) == []
    assert visits(tracker) == [(fence.pk, at(10), None)]


def test_jitter_on_a_boundary_enters_once_and_never_flaps() -> None:
    fence = square("Gate", half_m=300)
    tracker = uuid.uuid4()
    feed = Feeder()
    rng = random.Random(4)
    results = []
    # Parked on the east edge, reports scattered by GPS noise of up to 20 m.
    for second in range(200):
        position = east_of_centre(300 + rng.uniform(-20, 20))
        results.append(feed.batch((tracker, position, at(second))))
    assert [k for result in results for k in kinds(result)] == [("entered", fence.pk)]
    # Driving away: one exit, once more than the margin (40 m) outside.
    assert kinds(feed.batch((tracker, east_of_centre(330), at(300)))) == []
    assert kinds(feed.batch((tracker, east_of_centre(345), at(301)))) == [("exited", fence.pk)]


@override_settings(GEOFENCE_EXIT_MARGIN_M=0)
def test_without_a_margin_the_same_jitter_does_flap() -> None:
    """The control of the test above: the margin is what holds the entries to one."""
    square("Gate", half_m=300)
    tracker = uuid.uuid4()
    feed = Feeder()
    rng = random.Random(4)
    entries = 0
    for second in range(200):
        result = feed.batch((tracker, east_of_centre(300 + rng.uniform(-20, 20)), at(second)))
        entries += sum(c.entered for c in result.crossings)
    assert entries > 10


def test_a_hole_is_outside() -> None:
    fence = square("Ring road", half_m=1_000, hole_m=400)
    tracker = uuid.uuid4()
    feed = Feeder()
    assert kinds(feed.batch((tracker, east_of_centre(0), at(0)))) == []  # in the hole
    assert kinds(feed.batch((tracker, east_of_centre(700), at(1)))) == [("entered", fence.pk)]
    assert kinds(feed.batch((tracker, east_of_centre(0), at(2)))) == [("exited", fence.pk)]


def test_a_fence_across_the_antimeridian() -> None:
    fence = _fence(
        "Date line",
        {
            "type": "Polygon",
            "coordinates": [[[179, -1], [-179, -1], [-179, 1], [179, 1], [179, -1]]],
        },
    )
    tracker = uuid.uuid4()
    feed = Feeder()
    assert kinds(feed.batch((tracker, (0.0, 178.0), at(0)))) == []
    assert kinds(feed.batch((tracker, (0.0, 179.5), at(1)))) == [("entered", fence.pk)]
    assert kinds(feed.batch((tracker, (0.5, -179.5), at(2)))) == []
    assert kinds(feed.batch((tracker, (0.0, -178.0), at(3)))) == [("exited", fence.pk)]


def test_a_restart_between_entry_and_exit_neither_repeats_nor_misses() -> None:
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    Feeder().batch((tracker, east_of_centre(0), at(0)))
    # A new process: nothing in memory, the open visit is in the database.
    restarted = Feeder()
    assert kinds(restarted.batch((tracker, east_of_centre(20), at(1)))) == []
    assert kinds(restarted.batch((tracker, east_of_centre(900), at(2)))) == [("exited", fence.pk)]
    assert visits(tracker) == [(fence.pk, at(0), at(2))]


def test_a_consumer_sees_what_another_did_to_a_tracker_it_moved_before() -> None:
    """What a process keeps of a tracker's visits serves only while nobody else moved it."""
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    first, second = Feeder(), Feeder()
    assert kinds(first.batch((tracker, east_of_centre(0), at(0)))) == [("entered", fence.pk)]
    assert kinds(second.batch((tracker, east_of_centre(900), at(1)))) == [("exited", fence.pk)]
    assert kinds(first.batch((tracker, east_of_centre(0), at(2)))) == [("entered", fence.pk)]
    assert kinds(second.batch((tracker, east_of_centre(10), at(3)))) == []
    assert visits(tracker) == [(fence.pk, at(0), at(1)), (fence.pk, at(2), None)]


@override_settings(GEOFENCE_MIN_DWELL_SECONDS=30)
def test_a_minimum_dwell_counts_only_stays_that_long() -> None:
    fence = square("Yard", half_m=200)
    brief, staying = uuid.uuid4(), uuid.uuid4()
    feed = Feeder()
    # In for 20 s and out: never an entry, never an exit, no visit left.
    for second, metres in [(0, 0), (10, 0), (20, 0), (21, 900)]:
        assert kinds(feed.batch((brief, east_of_centre(metres), at(second)))) == []
    assert visits(brief) == []
    # In for 30 s: the entry counts at 30 s, with the time it first was inside.
    assert kinds(feed.batch((staying, east_of_centre(0), at(0)))) == []
    assert not Visit.objects.counted().filter(tracker_id=staying).exists()
    assert kinds(feed.batch((staying, east_of_centre(220), at(15)))) == []  # within the margin
    assert kinds(feed.batch((staying, east_of_centre(0), at(30)))) == [("entered", fence.pk)]
    assert kinds(feed.batch((staying, east_of_centre(900), at(40)))) == [("exited", fence.pk)]
    assert visits(staying) == [(fence.pk, at(0), at(40))]


@override_settings(GEOFENCE_CHECK_SEGMENTS=True)
def test_a_jump_across_a_small_fence_is_caught_by_the_segment_check() -> None:
    fence = square("Toll gantry", half_m=15)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(-400), at(0)))
    result = feed.batch((tracker, east_of_centre(400), at(30)))
    assert kinds(result) == [("entered", fence.pk), ("exited", fence.pk)]
    assert visits(tracker) == [(fence.pk, at(0), at(30))]


def test_without_the_segment_check_a_jump_across_goes_unseen() -> None:
    square("Toll gantry", half_m=15)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(-400), at(0)))
    assert kinds(feed.batch((tracker, east_of_centre(400), at(30)))) == []


def test_a_fence_switched_off_ends_its_visits_at_the_next_position() -> None:
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(0), at(0)))
    Geofence.objects.filter(pk=fence.pk).update(is_active=False, updated_at=at(100))
    assert kinds(feed.batch((tracker, east_of_centre(0), at(1)))) == [("exited", fence.pk)]
    assert kinds(feed.batch((tracker, east_of_centre(0), at(2)))) == []
    assert visits(tracker) == [(fence.pk, at(0), at(1))]


def test_a_fence_deleted_before_the_consumer_reloads_makes_no_crossing_and_loses_no_event() -> None:
    """Between a delete and the next reload the index still holds the fence:
    an entry into it is not stored (its visit would have no fence) nor sent,
    and the position is stored as any other."""
    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.fences.reload_seconds = 3_600
    feed.batch((tracker, east_of_centre(-500), at(0)))
    fence.delete()
    result = feed.batch((tracker, east_of_centre(0), at(1)))
    assert (result.accepted, result.rejected, kinds(result)) == (1, 0, [])
    assert Position.objects.filter(tracker_id=tracker).count() == 2
    assert visits(tracker) == []


def test_a_fence_added_while_running_is_checked_from_then_on() -> None:
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(0), at(0)))
    fence = square("New yard", half_m=200)
    assert kinds(feed.batch((tracker, east_of_centre(10), at(1)))) == [("entered", fence.pk)]


def test_a_stored_fence_that_no_longer_parses_is_skipped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = square("Depot", half_m=200)
    broken = square("Broken", half_m=200, centre=(61.0, 25.0))
    Geofence.objects.filter(pk=broken.pk).update(geojson="{not json")
    tracker = uuid.uuid4()
    assert kinds(Feeder().batch((tracker, east_of_centre(0), at(0)))) == [("entered", good.pk)]
    assert f"geofence {broken.pk} 'Broken' is not checked" in caplog.text


def test_an_inactive_tracker_makes_no_crossing() -> None:
    square("Depot", half_m=200)
    tracker = uuid.uuid4()
    feed = Feeder()
    feed.batch((tracker, east_of_centre(-500), at(0)))
    Tracker.objects.filter(id=tracker).update(is_active=False)
    assert kinds(feed.batch((tracker, east_of_centre(0), at(1)))) == []


# --- Batches cut anywhere give the crossings of one position at a time ---------------------------


def reference(
    index: FenceIndex[int], positions: Sequence[tuple[float, float]]
) -> list[tuple[str, int]]:
    """What ``tracking.geofences.crossings`` says, one position at a time."""
    inside: frozenset[int] = frozenset()
    found: list[tuple[str, int]] = []
    for latitude, longitude in positions:
        entered, exited = crossings(index, inside, latitude=latitude, longitude=longitude)
        found += [("exited", key) for key in sorted(exited)]
        found += [("entered", key) for key in sorted(entered)]
        inside = (inside - exited) | entered
    return found


@hypothesis.settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.floats(min_value=-700, max_value=700), min_size=1, max_size=25),
    cuts=st.lists(st.integers(min_value=1, max_value=25), max_size=6),
    repeats=st.lists(st.integers(min_value=0, max_value=24), max_size=4),
)
def test_any_batching_with_repeats_gives_the_crossings_of_one_position_at_a_time(
    steps: list[float], cuts: list[int], repeats: list[int]
) -> None:
    Geofence.objects.all().delete()
    near = square("Near", half_m=250)
    far = square("Far", half_m=100, centre=east_of_centre(450))
    index = FenceIndex({near.pk: near.fence, far.pk: far.fence})
    tracker = uuid.uuid4()
    events = [(tracker, east_of_centre(metres), at(n)) for n, metres in enumerate(steps)]
    # Repeats of earlier events ride along in later batches.
    sent = list(events)
    for n in repeats:
        if n < len(events):
            sent.insert(min(len(sent), n + 3), events[n])
    feed = Feeder()
    found: list[tuple[str, int]] = []
    start = 0
    for cut in [*sorted({min(cut, len(sent)) for cut in cuts}), len(sent)]:
        if cut > start:
            found += kinds(feed.batch(*sent[start:cut]))
            start = cut
    assert found == reference(index, [position for _, position, _ in events])
    assert Visit.objects.open().filter(tracker_id=tracker).count() <= 2


# --- Published after the commit, after the tracker's locationUpdated ------------------------------


async def test_the_pipeline_hands_each_batchs_crossings_to_the_publisher() -> None:
    fence = await sync_to_async(square)("Depot", half_m=200)
    tracker = uuid.uuid4()
    published: list[list[tuple[bool, int]]] = []

    async def publish(positions: Sequence[LatestPosition], crossings: Sequence[Crossing]) -> None:
        assert {p.tracker_id for p in positions} == {tracker}
        published.append([(c.entered, c.geofence_id) for c in crossings])

    pipeline = Pipeline(publish=publish)
    try:
        for second, metres in [(0, -500), (1, 0), (2, 900)]:
            latitude, longitude = east_of_centre(metres)
            body = event_body(
                tracker_id=tracker, latitude=latitude, longitude=longitude, at=at(second)
            )
            await pipeline.process([RawEvent(body=body, origin="test")])
    finally:
        await pipeline.close()
    assert published == [[], [(True, fence.pk)], [(False, fence.pk)]]


class CapturingFanOut:
    def __init__(self) -> None:
        self.texts: dict[Cell, str] = {}

    async def publish(self, messages: dict[Cell, str]) -> int:
        self.texts.update(messages)
        return 0


async def test_crossing_records_follow_the_trackers_location_in_its_cell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fanout = CapturingFanOut()
    monkeypatch.setattr(publishing, "get_fanout", lambda: fanout)
    tracker = uuid.uuid4()
    position = LatestPosition(
        tracker_id=tracker,
        latitude=60.17,
        longitude=24.94,
        timestamp=at(5),
        cell=Cell(24, 60),
        previous_cell=Cell(23, 60),
    )
    await publishing.publish_locations(
        [position],
        [
            Crossing(tracker, 7, entered=True, at=at(4)),
            Crossing(tracker, 8, entered=False, at=at(5)),
        ],
    )
    records = fanout.texts[Cell(24, 60)].split("\x1e")[:-1]
    assert [json.loads(record)["target"] for record in records] == [
        "locationUpdated",
        "geofenceEntered",
        "geofenceExited",
    ]
    assert json.loads(records[1])["arguments"] == [str(tracker), "7"]
    assert json.loads(records[2])["arguments"] == [str(tracker), "8"]
    # The cell it left hears only of its departure.
    assert "geofence" not in fanout.texts[Cell(23, 60)]


# --- Two consumers moving the same tracker at once ----------------------------------------------


@pytest.mark.postgres  # SQLite has one writer at a time: nothing runs at once there
def test_two_consumers_on_one_tracker_at_once_neither_repeat_nor_lose_a_crossing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes storing one tracker's events at the same time (its events
    spread over partitions, or a partition taken over): each crossing is made by exactly one of them and
    stored once, because a tracker's row is locked while its batch is judged."""
    import time

    from django.db import connection

    from tracking.ingest import geofencing

    read_stays = geofencing._open_stays

    def slowly_read_stays(trackers: object) -> object:
        # Widens the window between reading the open visits and writing the
        # new ones, where a second consumer without the lock would read the same.
        found = read_stays(trackers)  # type: ignore[arg-type]
        time.sleep(0.02)
        return found

    monkeypatch.setattr(geofencing, "_open_stays", slowly_read_stays)

    if connection.vendor != "postgresql":
        pytest.skip("SQLite holds one writer at a time: nothing runs at once there")
    import threading

    from django.db import connections

    fence = square("Depot", half_m=200)
    tracker = uuid.uuid4()
    # In and out of the fence every three reports.
    events = [(tracker, east_of_centre(0 if (n // 3) % 2 else 900), at(n)) for n in range(90)]
    made: list[Crossing] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(2)

    def consumer(offset: int) -> None:
        feed = Feeder()
        try:
            # Alternate stretches, as a device sending without a partition key
            # spreads its events over the partitions of two consumers.
            for start in range(offset, len(events), 10):
                barrier.wait(timeout=30)
                made.extend(feed.batch(*events[start : start + 5]).crossings)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=consumer, args=(offset,)) for offset in (0, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    stored = visits(tracker)
    assert sum(c.entered for c in made) == len(stored) > 0
    assert sum(not c.entered for c in made) == sum(exited is not None for _, _, exited in stored)
    # One stay after another, never two at once.
    for (_, _, exited), (_, entered, _) in itertools.pairwise(stored):
        assert exited is not None and exited <= entered
    assert all(geofence == fence.pk for geofence, _, _ in stored)
