"""tracking/trips.py: trips and stops from positions, without a database."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.positions import PositionRow
from tracking.trips import Rules, TripsAndStops, distance_m, trips_and_stops

START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
HELSINKI = (60.1699, 24.9384)
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180


def offset(origin: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    latitude, longitude = origin
    return (
        latitude + north_m / METRES_PER_DEGREE,
        longitude + east_m / (METRES_PER_DEGREE * math.cos(math.radians(latitude))),
    )


class Route:
    """Positions at 1 Hz of a planned day: drive, stand, drive."""

    def __init__(self, origin: tuple[float, float] = HELSINKI, *, seed: int = 1) -> None:
        self.at = START
        self.place = origin
        self.positions: list[PositionRow] = []
        self.random = random.Random(seed)
        self.spots: list[tuple[float, float]] = []  # where it stood, in order

    def report(self, place: tuple[float, float], speed: float | None, accuracy: float = 5.0):
        self.positions.append(PositionRow(self.at, *place, speed, None, accuracy))
        self.at += timedelta(seconds=1)

    def drive(self, seconds: int, *, kmh: float, east: float, north: float) -> None:
        """Straight on at ``kmh`` towards (``east``, ``north``), a unit direction."""
        step = kmh / 3.6
        for _ in range(seconds):
            self.report(self.place, kmh)
            self.place = offset(self.place, east * step, north * step)

    def stand(self, seconds: int, *, jitter_m: float = 0.0) -> None:
        """Parked, the GPS wandering around the spot as a real one does."""
        self.spots.append(self.place)
        for _ in range(seconds):
            noisy = offset(
                self.place,
                self.random.gauss(0, jitter_m) if jitter_m else 0.0,
                self.random.gauss(0, jitter_m) if jitter_m else 0.0,
            )
            self.report(noisy, 0.0 if jitter_m == 0 else self.random.uniform(0, 3))

    def silence(self, seconds: int) -> None:
        self.at += timedelta(seconds=seconds)


def pages(positions: list[PositionRow], size: int = 97) -> Iterator[list[PositionRow]]:
    for first in range(0, len(positions), size):
        yield positions[first : first + size]


def found(route: Route, rules: Rules | None = None) -> TripsAndStops:
    return trips_and_stops(pages(route.positions), rules or Rules())


def seconds_after_start(moment: datetime) -> float:
    return (moment - START).total_seconds()


def test_a_drive_a_ten_minute_stop_and_a_drive_are_two_trips_and_the_stop_between() -> None:
    route = Route()
    route.drive(600, kmh=40, east=1, north=0)
    stop_place = route.place
    route.stand(600, jitter_m=8)
    route.drive(600, kmh=40, east=0, north=1)

    result = found(route)

    assert len(result.trips) == 2 and len(result.stops) == 1
    first, second = result.trips
    (stop,) = result.stops
    # Where and when it stood: within a few metres, and within the seconds it
    # takes to cross the stop's circle at 40 km/h.
    assert distance_m(stop.latitude, stop.longitude, *stop_place) < 10
    assert seconds_after_start(stop.since) == pytest.approx(600, abs=10)
    assert seconds_after_start(stop.until) == pytest.approx(1200, abs=10)
    assert stop.duration_seconds == pytest.approx(600, abs=20)
    # Each trip drove 10 minutes at 40 km/h: 6,667 m.
    planned = 40 / 3.6 * 600
    for trip in (first, second):
        assert trip.distance_m == pytest.approx(planned, rel=0.03)
        assert trip.average_speed == pytest.approx(40, rel=0.03)
        assert trip.top_speed == 40
    assert first.start.timestamp == START and first.end.timestamp == stop.since
    assert second.start.timestamp == stop.until
    assert seconds_after_start(second.end.timestamp) == 1799
    assert distance_m(first.end.latitude, first.end.longitude, *stop_place) < 100


def test_a_parked_tracker_whose_gps_wanders_makes_one_stop_and_no_trip() -> None:
    route = Route(seed=7)
    route.stand(3 * 3600, jitter_m=20)

    result = found(route)

    assert result.trips == []
    (stop,) = result.stops
    assert (stop.since, stop.until) == (START, route.positions[-1].timestamp)
    assert distance_m(stop.latitude, stop.longitude, *HELSINKI) < 10


def test_a_jump_of_the_gps_while_parked_is_no_trip() -> None:
    route = Route()
    route.stand(600)
    jumped = offset(route.place, 400, 0)
    route.report(jumped, 0.0)
    route.report(jumped, 0.0)
    route.stand(600)

    result = found(route)

    assert result.trips == []
    (stop,) = result.stops
    assert stop.since == START and stop.until == route.positions[-1].timestamp


def test_a_vague_position_does_not_end_a_stop() -> None:
    route = Route()
    route.stand(600)
    route.report(offset(route.place, 2000, 0), None, accuracy=3000)
    route.stand(600)

    assert len(found(route).stops) == 1


def test_nothing_is_found_in_no_positions_or_one() -> None:
    assert found(Route()) == TripsAndStops()
    route = Route()
    route.report(HELSINKI, 12.0)
    assert found(route) == TripsAndStops()


def test_a_gap_while_moving_ends_the_trip_and_is_neither_trip_nor_stop() -> None:
    route = Route()
    route.drive(300, kmh=50, east=1, north=0)
    before_gap = route.positions[-1].timestamp
    route.silence(3600)
    route.place = offset(route.place, 30_000, 0)
    after_gap = route.at
    route.drive(300, kmh=50, east=1, north=0)

    result = found(route)

    assert [(t.start.timestamp, t.end.timestamp) for t in result.trips] == [
        (START, before_gap),
        (after_gap, route.positions[-1].timestamp),
    ]
    assert result.stops == []
    for trip in result.trips:
        assert trip.distance_m == pytest.approx(50 / 3.6 * 299, rel=0.01)


def test_a_gap_at_the_same_place_is_part_of_the_stop() -> None:
    """A device that sleeps while parked reports before and after, at the same spot."""
    route = Route()
    route.drive(300, kmh=50, east=1, north=0)
    route.stand(30)
    route.silence(2 * 3600)
    route.stand(30)
    route.drive(300, kmh=50, east=0, north=-1)

    result = found(route)

    assert len(result.trips) == 2
    (stop,) = result.stops
    assert stop.duration_seconds == pytest.approx(2 * 3600 + 60, abs=20)


def test_a_short_move_between_two_stops_leaves_one_stop() -> None:
    route = Route()
    route.stand(600)
    route.drive(20, kmh=36, east=1, north=0)  # 200 m across the car park
    route.stand(600)

    result = found(route)

    assert result.trips == []
    (stop,) = result.stops
    assert stop.since == START and stop.until == route.positions[-1].timestamp


def test_a_round_trip_back_to_where_it_started_is_a_trip() -> None:
    route = Route()
    route.stand(600)
    route.drive(120, kmh=36, east=1, north=0)
    route.drive(120, kmh=36, east=-1, north=0)
    route.stand(600)

    result = found(route)

    (trip,) = result.trips
    assert trip.distance_m == pytest.approx(2400, rel=0.1)
    assert len(result.stops) == 2


def test_a_stop_across_the_antimeridian_stands_where_it_was() -> None:
    route = Route((-16.5, 179.9995))
    route.drive(300, kmh=40, east=1, north=0)
    spot = route.place
    route.stand(600, jitter_m=10)
    route.drive(300, kmh=40, east=1, north=0)

    result = found(route)

    assert len(result.trips) == 2
    (stop,) = result.stops
    assert -180 <= stop.longitude < 180
    assert distance_m(stop.latitude, stop.longitude, *spot) < 10


def test_a_week_at_one_hertz_holds_only_the_last_minutes() -> None:
    """Memory: the detector keeps a window of at most stop_min_seconds of positions."""
    from tracking.trips import _Detector

    route = Route()
    for _ in range(4):
        route.drive(3000, kmh=3, east=1, north=0)  # a walk: the window is at its fullest
        route.stand(600)
    detector = _Detector(Rules())
    largest = 0
    for position in route.positions:
        detector.feed(position)
        largest = max(largest, len(detector.window.points))
    assert largest <= Rules().stop_min_seconds + 1


# --- Any positions ---------------------------------------------------------------------------

places = st.tuples(
    st.floats(-89.9, 89.9, allow_nan=False), st.floats(-180, 179.999, allow_nan=False)
)
steps = st.lists(
    st.tuples(
        st.integers(1, 2_000),  # seconds since the position before
        st.floats(-300, 300),  # metres east
        st.floats(-300, 300),  # metres north
        st.one_of(st.none(), st.floats(0, 300)),  # speed
        st.one_of(st.none(), st.floats(0, 5_000)),  # accuracy
    ),
    max_size=300,
)
any_rules = st.builds(
    Rules,
    stop_radius_m=st.floats(5, 1_000),
    stop_min_seconds=st.floats(10, 3_600),
    trip_min_distance_m=st.floats(1, 5_000),
    trip_gap_seconds=st.floats(1, 86_400),
)


@settings(max_examples=300, deadline=None)
@given(start=places, steps=steps, rules=any_rules, page_size=st.integers(1, 50))
def test_any_positions_give_ordered_trips_and_stops_inside_the_range(
    start: tuple[float, float],
    steps: list[tuple[int, float, float, float | None, float | None]],
    rules: Rules,
    page_size: int,
) -> None:
    positions, at, place = [], START, start
    for seconds, east, north, speed, accuracy in steps:
        at += timedelta(seconds=seconds)
        latitude, longitude = offset(place, east, north)
        place = (max(-89.9, min(89.9, latitude)), (longitude + 180) % 360 - 180)
        positions.append(PositionRow(at, *place, speed, None, accuracy))

    result = trips_and_stops(pages(positions, page_size), rules)

    first, last = (positions[0].timestamp, positions[-1].timestamp) if positions else (at, at)
    spans = sorted(
        [(t.start.timestamp, t.end.timestamp) for t in result.trips]
        + [(s.since, s.until) for s in result.stops]
    )
    for (_, earlier_end), (later_start, _) in itertools.pairwise(spans):
        assert earlier_end <= later_start
    for begin, end in spans:
        assert first <= begin <= end <= last
    for trip in result.trips:
        assert trip.start.timestamp < trip.end.timestamp
        assert trip.distance_m >= rules.trip_min_distance_m * 0.999
        assert math.isfinite(trip.average_speed) and trip.average_speed >= 0
    for stop in result.stops:
        assert stop.duration_seconds >= rules.stop_min_seconds
        assert -90 <= stop.latitude <= 90 and -180 <= stop.longitude < 180


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    jitter_m=st.floats(0, 30),
    every_seconds=st.integers(1, 120),
    reports=st.integers(0, 600),
)
def test_a_parked_tracker_never_makes_a_trip_however_its_gps_wanders(
    seed: int, jitter_m: float, every_seconds: int, reports: int
) -> None:
    noise = random.Random(seed)
    positions = [
        PositionRow(
            START + timedelta(seconds=every_seconds * n),
            *offset(HELSINKI, noise.gauss(0, jitter_m), noise.gauss(0, jitter_m)),
            noise.uniform(0, 5),
            None,
            None,
        )
        for n in range(reports)
    ]
    result = trips_and_stops(pages(positions), Rules())
    assert result.trips == []
    assert len(result.stops) <= 1
    if reports and (reports - 1) * every_seconds >= 2 * Rules().stop_min_seconds:
        (stop,) = result.stops
        assert distance_m(stop.latitude, stop.longitude, *HELSINKI) < max(10, jitter_m)
