"""Trips and stops from a tracker's history, in one pass over its positions.

Pure Python, no Django: ``trips_and_stops`` takes the positions oldest first,
in pages (as ``selectors.position_pages`` reads them), and holds only the
positions of the last ``stop_min_seconds`` at once, so a week at 1 Hz costs
no more memory than an hour.

What the rules mean (the settings ``TRACKING_STOP_*`` and ``TRACKING_TRIP_*``):

- A **stop** is a time the tracker stays within ``stop_radius_m`` of one
  point for at least ``stop_min_seconds``. Its place is the mean of its
  positions; it lasts from its first position to its last. A gap in the data
  at the same place (a parked car whose device sleeps) is part of the stop.
- A **trip** is the movement between two stops (or between the edge of the
  range or a gap and a stop): from the last position of the stop before to
  the first position of the stop after. Its distance is the sum of the
  straight lines between its positions, its average speed that distance over
  its duration, its top speed the highest speed the device reported.
- A movement that never takes the tracker ``trip_min_distance_m`` from where
  it started is no trip: GPS noise, a car moved across a car park. Between
  two stops it joins them into one stop.
- A gap in the data longer than ``trip_gap_seconds`` in which the tracker
  moved ends the trip before it: nobody knows the road in between, so the
  gap is neither trip nor stop.
- A position whose reported accuracy is worse than the stop radius cannot
  say whether the tracker left, so it does not end a stop.

How a stop is found: the positions of the last few minutes are held in a
window that keeps only those fitting a square twice the radius on a side
(each within the radius of its centre, north-south and east-west: a square
rather than a circle, so that a few hundred noisy positions of a parked
device, whose extremes spread as their number grows, still fit). Once the
window spans ``stop_min_seconds`` it is a stop, from its first position near
their mean (those further than half the radius are the arrival, not the
stop); the stop then lasts while the positions stay within the radius of
that mean. The box's extremes are kept by monotonic queues, so each position
costs constant time however long the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from tracking.positions import PositionRow

EARTH_RADIUS_M = 6_371_008.8
_METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180
# The window's points are projected on a plane around a reference point; one
# that far away is re-projected around a new one (the plane stays flat enough).
_REPROJECT_BEYOND_M = 10_000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """What counts as a stop and as a trip (see the module docstring)."""

    stop_radius_m: float = 100.0
    stop_min_seconds: float = 300.0
    trip_min_distance_m: float = 500.0
    trip_gap_seconds: float = 900.0

    def __post_init__(self) -> None:
        for name in ("stop_radius_m", "stop_min_seconds", "trip_min_distance_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0, got {getattr(self, name)!r}")
        if not self.trip_gap_seconds > 0:
            raise ValueError(f"trip_gap_seconds must be more than 0, got {self.trip_gap_seconds!r}")


class Place(NamedTuple):
    timestamp: datetime
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Trip:
    start: Place
    end: Place
    distance_m: float
    top_speed: float | None
    """The highest speed reported (km/h) in the trip, None if none was."""

    @property
    def duration_seconds(self) -> float:
        return (self.end.timestamp - self.start.timestamp).total_seconds()

    @property
    def average_speed(self) -> float:
        """km/h over the whole trip (its positions' times are distinct, so it has a duration)."""
        return self.distance_m / self.duration_seconds * 3.6


@dataclass(frozen=True, slots=True)
class Stop:
    latitude: float
    longitude: float
    since: datetime
    until: datetime

    @property
    def duration_seconds(self) -> float:
        return (self.until - self.since).total_seconds()


@dataclass(slots=True)
class TripsAndStops:
    trips: list[Trip] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)


def distance_m(latitude1: float, longitude1: float, latitude2: float, longitude2: float) -> float:
    """Great-circle distance (haversine, mean earth radius) in metres."""
    phi1, phi2 = math.radians(latitude1), math.radians(latitude2)
    dphi = phi2 - phi1
    dlambda = math.radians(_wrap(longitude2 - longitude1))
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _wrap(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


class _Point(NamedTuple):
    seq: int
    timestamp: datetime
    latitude: float
    longitude: float
    speed: float | None
    accuracy: float | None


class _Window:
    """Consecutive points that fit in a square of twice the radius on a side."""

    def __init__(self) -> None:
        self.points: deque[_Point] = deque()
        self._xy: deque[tuple[float, float]] = deque()
        self._ref = (0.0, 0.0, 1.0)  # latitude, longitude, metres per degree of longitude
        self._lows: tuple[deque[tuple[int, float]], deque[tuple[int, float]]] = (deque(), deque())
        self._highs: tuple[deque[tuple[int, float]], deque[tuple[int, float]]] = (deque(), deque())
        self._sum_x = self._sum_y = 0.0

    def _project(self, point: _Point) -> tuple[float, float]:
        latitude, longitude, per_degree = self._ref
        return (
            _wrap(point.longitude - longitude) * per_degree,
            (point.latitude - latitude) * _METRES_PER_DEGREE,
        )

    def _rebase(self, point: _Point) -> None:
        per_degree = _METRES_PER_DEGREE * max(math.cos(math.radians(point.latitude)), 1e-6)
        self._ref = (point.latitude, point.longitude, per_degree)
        kept = list(self.points)
        self.clear()
        for kept_point in kept:
            self._push(kept_point)

    def clear(self) -> None:
        self.points.clear()
        self._xy.clear()
        for queue in (*self._lows, *self._highs):
            queue.clear()
        self._sum_x = self._sum_y = 0.0

    def _push(self, point: _Point) -> None:
        x, y = self._project(point)
        self.points.append(point)
        self._xy.append((x, y))
        self._sum_x += x
        self._sum_y += y
        for axis, value in enumerate((x, y)):
            low, high = self._lows[axis], self._highs[axis]
            while low and low[-1][1] >= value:
                low.pop()
            low.append((point.seq, value))
            while high and high[-1][1] <= value:
                high.pop()
            high.append((point.seq, value))

    def push(self, point: _Point) -> None:
        if not self.points:
            self._ref = (0.0, 0.0, 1.0)
            self._rebase(point)
        else:
            x, y = self._project(point)
            if math.hypot(x, y) > _REPROJECT_BEYOND_M:
                self._rebase(point)
        self._push(point)

    def pop(self) -> _Point:
        point = self.points.popleft()
        x, y = self._xy.popleft()
        self._sum_x -= x
        self._sum_y -= y
        for queue in (*self._lows, *self._highs):
            if queue[0][0] == point.seq:
                queue.popleft()
        return point

    def half_side(self, extra: _Point | None = None) -> float:
        """Half the longer side of the box of the points (and ``extra``), in metres."""
        spans = []
        extra_xy = None if extra is None else self._project(extra)
        for axis in (0, 1):
            low, high = self._lows[axis][0][1], self._highs[axis][0][1]
            if extra_xy is not None:
                low, high = min(low, extra_xy[axis]), max(high, extra_xy[axis])
            spans.append(high - low)
        return max(spans) / 2

    def mean(self) -> tuple[float, float]:
        """The points' mean as (latitude, longitude)."""
        count = len(self.points)
        latitude, longitude, per_degree = self._ref
        return (
            latitude + self._sum_y / count / _METRES_PER_DEGREE,
            _wrap(longitude + self._sum_x / count / per_degree),
        )

    def seconds(self) -> float:
        return (self.points[-1].timestamp - self.points[0].timestamp).total_seconds()


@dataclass(slots=True)
class _Move:
    """A movement in progress: from its first point to the last one committed."""

    start: _Point
    last: _Point
    distance_m: float = 0.0
    reach_m: float = 0.0
    top_speed: float | None = None

    def add(self, point: _Point) -> None:
        self.distance_m += distance_m(
            self.last.latitude, self.last.longitude, point.latitude, point.longitude
        )
        self.reach_m = max(
            self.reach_m,
            distance_m(self.start.latitude, self.start.longitude, point.latitude, point.longitude),
        )
        if point.speed is not None and (self.top_speed is None or point.speed > self.top_speed):
            self.top_speed = point.speed
        self.last = point


@dataclass(slots=True)
class _StopInProgress:
    centre: tuple[float, float]
    first: _Point
    last: _Point
    count: int
    sum_latitude: float
    sum_longitude: float  # of the longitudes' offsets from the centre, so the mean wraps right

    def add(self, point: _Point) -> None:
        self.last = point
        self.count += 1
        self.sum_latitude += point.latitude
        self.sum_longitude += _wrap(point.longitude - self.centre[1])

    def absorb(self, earlier: _StopInProgress) -> None:
        """This stop and an ``earlier`` one become one (nothing between them was a trip)."""
        self.first = earlier.first
        self.count += earlier.count
        self.sum_latitude += earlier.sum_latitude
        self.sum_longitude += earlier.sum_longitude + earlier.count * _wrap(
            earlier.centre[1] - self.centre[1]
        )

    def stop(self) -> Stop:
        return Stop(
            latitude=self.sum_latitude / self.count,
            longitude=_wrap(self.centre[1] + self.sum_longitude / self.count),
            since=self.first.timestamp,
            until=self.last.timestamp,
        )


class _Detector:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.result = TripsAndStops()
        self.window = _Window()
        self.move: _Move | None = None
        self.stop: _StopInProgress | None = None
        # The last stop, kept back until what follows it is known: a movement
        # that is no trip joins it to the next stop.
        self.pending: _StopInProgress | None = None
        self.last: _Point | None = None
        self.seq = 0

    def feed(self, position: PositionRow) -> None:
        if self.last is not None and position.timestamp <= self.last.timestamp:
            return  # positions come oldest first, one per moment; anything else is skipped
        self.seq += 1
        point = _Point(
            self.seq,
            position.timestamp,
            position.latitude,
            position.longitude,
            position.speed,
            position.accuracy,
        )
        gap = (
            self.last is not None
            and (point.timestamp - self.last.timestamp).total_seconds()
            > self.rules.trip_gap_seconds
        )
        if self.stop is not None:
            self._in_stop(point, gap=gap)
        else:
            self._moving(point, gap=gap)
        self.last = point

    def _in_stop(self, point: _Point, *, gap: bool) -> None:
        assert self.stop is not None
        radius = self.rules.stop_radius_m
        away = distance_m(*self.stop.centre, point.latitude, point.longitude)
        if away <= radius:
            self.stop.add(point)
            return
        if point.accuracy is not None and point.accuracy > radius:
            return  # too vague to say the tracker left
        ended, self.stop = self.stop, None
        self._stop_ended(ended)
        if gap:
            self._flush_pending()
        else:
            self.move = _Move(start=ended.last, last=ended.last)
        self.window.clear()
        self.window.push(point)

    def _moving(self, point: _Point, *, gap: bool) -> None:
        window, radius = self.window, self.rules.stop_radius_m
        if gap and window.points and window.half_side(point) > radius:
            # Moved across the gap: what came before ends there.
            self._end_move(into_stop=None)
            window.clear()
        window.push(point)
        while window.half_side() > radius:
            self._commit(window.pop())
        if window.seconds() < self.rules.stop_min_seconds:
            return
        # Long enough: the stop is the window from its first point near the centre.
        centre = window.mean()
        while len(window.points) > 1 and distance_m(
            *centre, window.points[0].latitude, window.points[0].longitude
        ) > (radius / 2):
            self._commit(window.pop())
        if window.seconds() < self.rules.stop_min_seconds:
            return
        first = window.points[0]
        stop = _StopInProgress(centre, first, first, 0, 0.0, 0.0)
        for stopped in window.points:
            stop.add(stopped)
        window.clear()
        self._end_move(into_stop=stop)
        self.stop = stop

    def _commit(self, point: _Point) -> None:
        """``point`` starts no stop: it belongs to the movement."""
        if self.move is None:
            self.move = _Move(start=point, last=point)
        else:
            self.move.add(point)

    def _end_move(self, *, into_stop: _StopInProgress | None) -> None:
        """The movement ends, at ``into_stop``'s first point or (None) at a gap or the end."""
        if into_stop is None:
            for point in self.window.points:
                self._commit(point)
        move, self.move = self.move, None
        if into_stop is not None and move is not None:
            move.add(into_stop.first)
        if move is not None and move.reach_m >= self.rules.trip_min_distance_m:
            self._flush_pending()
            self.result.trips.append(
                Trip(
                    start=_place(move.start),
                    end=_place(move.last),
                    distance_m=move.distance_m,
                    top_speed=move.top_speed,
                )
            )
        elif (
            into_stop is not None
            and self.pending is not None
            and move is not None
            and move.start is self.pending.last
        ):
            # Went nowhere between two stops: one stop.
            into_stop.absorb(self.pending)
            self.pending = None
        if into_stop is None:
            self._flush_pending()

    def _stop_ended(self, stop: _StopInProgress) -> None:
        self._flush_pending()
        self.pending = stop

    def _flush_pending(self) -> None:
        if self.pending is not None:
            self.result.stops.append(self.pending.stop())
            self.pending = None

    def finish(self) -> TripsAndStops:
        if self.stop is not None:
            self._stop_ended(self.stop)
            self.stop = None
        else:
            self._end_move(into_stop=None)
        self._flush_pending()
        return self.result


def _place(point: _Point) -> Place:
    return Place(point.timestamp, point.latitude, point.longitude)


def trips_and_stops(pages: Iterable[Iterable[PositionRow]], rules: Rules) -> TripsAndStops:
    """The trips and stops of positions given oldest first, in pages, each
    list in time order and none overlapping another (a trip may end at the
    moment its stop begins). A position not later than the one before is
    skipped. Memory: the positions of ``rules.stop_min_seconds``, whatever
    the number of pages."""
    detector = _Detector(rules)
    for page in pages:
        for position in page:
            detector.feed(position)
    return detector.finish()
