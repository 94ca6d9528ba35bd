"""Simulated trackers driving bundled routes; pure Python, no Django import.

A ``Fleet`` spreads trackers round-robin over ``Route`` s and, asked for the
reports due up to a moment, returns event bodies as devices send them in time order.
Everything random comes from one seeded generator, so the same seed gives the
same ids, names, positions and times, however the calls are chunked.

Routes are GeoJSON ``LineString`` features (``[longitude, latitude]``) with the
properties ``name`` and ``closed``. Longitudes on file stay within [-180, 180]
as GeoJSON requires; loading unwraps them so a route that crosses the
antimeridian interpolates the short way across it, and reports fold them back
into [-180, 180).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tracking.grid import normalize_longitude

EARTH_RADIUS_M = 6_371_008.8
"""Mean earth radius (IUGG), the radius of every haversine distance here."""

ROUTES_DIRECTORY = Path(__file__).with_name("routes")

# How much each tracker's speed differs from the fleet's, at most (±10%).
SPEED_VARIATION = 0.1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def haversine_distance(
    *, latitude1: float, longitude1: float, latitude2: float, longitude2: float
) -> float:
    """Great-circle distance in metres between two points in degrees."""
    phi1, phi2 = math.radians(latitude1), math.radians(latitude2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(longitude2 - longitude1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def initial_bearing(
    *, latitude1: float, longitude1: float, latitude2: float, longitude2: float
) -> float:
    """Initial great-circle bearing from point 1 to point 2: degrees clockwise
    from north in [0, 360)."""
    phi1, phi2 = math.radians(latitude1), math.radians(latitude2)
    dlambda = math.radians(longitude2 - longitude1)
    y = math.sin(dlambda) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlambda)
    bearing = math.degrees(math.atan2(y, x)) % 360.0
    # -1e-17 % 360 is 360.0 in floating point.
    return 0.0 if bearing >= 360.0 else bearing


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC as .NET writes it: seven fractional digits and ``Z``.

    ``2026-11-26T11:12:40.1234560Z``; Python keeps microseconds, so the seventh
    digit is always 0.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp {moment.isoformat()} is naive; give it a timezone")
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond:06d}0Z"


def encode_event(body: Mapping[str, object]) -> bytes:
    """One event body as compact UTF-8 JSON on one line, without a newline."""
    return orjson.dumps(body if isinstance(body, dict) else dict(body))


@dataclass(frozen=True)
class Route:
    """A polyline the simulator drives: ``points`` are ``(latitude, longitude)``.

    Longitudes are unwrapped on construction (each differs from the previous
    by at most 180 degrees, so they may pass 180 or -180), consecutive
    duplicates are dropped and so is a closed route's repeated first point.
    ``cumulative[i]`` is the haversine distance in metres from the first point
    to point ``i``; a closed route's last entry, ``length``, includes the way
    back to the first point.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    closed: bool
    cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)
    length: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("route name is empty")
        points: list[tuple[float, float]] = []
        for latitude, longitude in self.points:
            if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
                raise ValueError(f"route {self.name!r}: latitude {latitude} is out of range")
            if not math.isfinite(longitude):
                raise ValueError(f"route {self.name!r}: longitude {longitude} is not finite")
            if points:
                longitude = _unwrap(longitude, near=points[-1][1])
                if (latitude, longitude) == points[-1]:
                    continue
            points.append((latitude, longitude))
        if self.closed and len(points) > 2:
            first, last = points[0], points[-1]
            if (first[0], _unwrap(first[1], near=last[1])) == last:
                points.pop()
        if len(points) < 2:
            raise ValueError(f"route {self.name!r} needs at least two distinct points")
        cumulative = [0.0]
        for (lat1, lng1), (lat2, lng2) in _pairs(points, closed=self.closed):
            cumulative.append(
                cumulative[-1]
                + haversine_distance(
                    latitude1=lat1, longitude1=lng1, latitude2=lat2, longitude2=lng2
                )
            )
        object.__setattr__(self, "points", tuple(points))
        object.__setattr__(self, "cumulative", tuple(cumulative))
        object.__setattr__(self, "length", cumulative[-1])

    def position_at(self, distance: float) -> tuple[float, float]:
        """``(latitude, longitude)`` at ``distance`` metres along the route,
        longitude normalised into [-180, 180). Closed routes wrap around;
        open routes clamp to their ends."""
        if self.closed:
            distance %= self.length
        distance = min(max(distance, 0.0), self.length)
        vertices = list(_pairs(self.points, closed=self.closed))
        index = min(bisect_right(self.cumulative, distance) - 1, len(vertices) - 1)
        (lat1, lng1), (lat2, lng2) = vertices[index]
        fraction = (distance - self.cumulative[index]) / (
            self.cumulative[index + 1] - self.cumulative[index]
        )
        return (
            lat1 + fraction * (lat2 - lat1),
            normalize_longitude(lng1 + fraction * (lng2 - lng1)),
        )


def _unwrap(longitude: float, *, near: float) -> float:
    """``longitude`` plus a multiple of 360, within 180 degrees of ``near``."""
    return longitude + 360.0 * round((near - longitude) / 360.0)


def _pairs(
    points: Sequence[tuple[float, float]], *, closed: bool
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The segments of a polyline; a closed one ends with the way back to the start."""
    pairs = list(itertools.pairwise(points))
    if closed:
        last = points[-1]
        first = (points[0][0], _unwrap(points[0][1], near=last[1]))
        pairs.append((last, first))
    return pairs


class RouteError(ValueError):
    """A route file that cannot be used; ``str()`` names the file and the fault."""


def load_routes(directory: Path | None = None) -> list[Route]:
    """Every route of every ``*.geojson`` file in ``directory``, files by name.

    The default is the bundled ``routes/`` folder beside this module. Malformed input
    raises ``RouteError`` (a ``ValueError``) naming the file. Route names must
    be unique, because tracker names are made from them.
    """
    folder = ROUTES_DIRECTORY if directory is None else directory
    paths = sorted(folder.glob("*.geojson"))
    if not paths:
        raise RouteError(f"no *.geojson route files in {folder}")
    routes: list[Route] = []
    seen: dict[str, Path] = {}
    for path in paths:
        for route in _routes_in(path):
            if route.name in seen:
                raise RouteError(
                    f"{path}: route name {route.name!r} is already used in {seen[route.name]}"
                )
            seen[route.name] = path
            routes.append(route)
    return routes


def _routes_in(path: Path) -> list[Route]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RouteError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise RouteError(f"{path}: not a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise RouteError(f"{path}: the FeatureCollection has no features")
    routes = []
    for number, feature in enumerate(features, start=1):
        try:
            routes.append(_route_from_feature(feature))
        except ValueError as exc:
            raise RouteError(f"{path}: feature {number}: {exc}") from None
    return routes


def _route_from_feature(feature: object) -> Route:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise RouteError("not a GeoJSON Feature")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        raise RouteError("has no properties")
    name, closed = properties.get("name"), properties.get("closed")
    if not isinstance(name, str):
        raise RouteError("property 'name' must be a string")
    if not isinstance(closed, bool):
        raise RouteError(f"route {name!r}: property 'closed' must be true or false")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") != "LineString":
        raise RouteError(f"route {name!r}: geometry must be a LineString")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list):
        raise RouteError(f"route {name!r}: coordinates must be a list")
    points = []
    for position in coordinates:
        # GeoJSON positions are [longitude, latitude(, altitude)].
        if (
            not isinstance(position, list)
            or len(position) not in (2, 3)
            or not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in position)
        ):
            raise RouteError(f"route {name!r}: position {position!r} is not [longitude, latitude]")
        longitude, latitude = float(position[0]), float(position[1])
        if not -180.0 <= longitude <= 180.0:
            raise RouteError(
                f"route {name!r}: longitude {longitude} in {position!r} is outside [-180, 180]"
            )
        if not -90.0 <= latitude <= 90.0:
            raise RouteError(
                f"route {name!r}: latitude {latitude} in {position!r} is outside [-90, 90]"
            )
        points.append((latitude, longitude))
    return Route(name=name, points=tuple(points), closed=closed)


@dataclass(frozen=True)
class SimulatedTracker:
    tracker_id: uuid.UUID
    name: str
    """Human friendly and unique within the fleet, like ``Helsinki loop 1 #03``."""
    route_name: str = ""
    speed_kmh: float = 0.0


class _Path:
    """A route's segments in flat lists, precomputed for the per-event loop."""

    __slots__ = (
        "backward_headings",
        "closed",
        "cumulative",
        "delta_latitudes",
        "delta_longitudes",
        "forward_headings",
        "last_segment",
        "latitudes",
        "length",
        "lengths",
        "longitudes",
        "period",
    )

    def __init__(self, route: Route) -> None:
        segments = _pairs(route.points, closed=route.closed)
        self.closed = route.closed
        self.cumulative = list(route.cumulative)
        self.length = route.length
        # An open route is driven there and back: one period is twice its length.
        self.period = route.length if route.closed else 2 * route.length
        self.last_segment = len(segments) - 1
        self.lengths = [b - a for a, b in itertools.pairwise(route.cumulative)]
        self.latitudes = [start[0] for start, _ in segments]
        self.longitudes = [start[1] for start, _ in segments]
        self.delta_latitudes = [end[0] - start[0] for start, end in segments]
        self.delta_longitudes = [end[1] - start[1] for start, end in segments]
        self.forward_headings = [_heading(start, end) for start, end in segments]
        self.backward_headings = [_heading(end, start) for start, end in segments]


def _heading(start: tuple[float, float], end: tuple[float, float]) -> float:
    heading = round(
        initial_bearing(
            latitude1=start[0], longitude1=start[1], latitude2=end[0], longitude2=end[1]
        ),
        1,
    )
    return heading % 360.0


@dataclass(slots=True)
class _Driver:
    body_id: str
    path: _Path
    start_phase: float  # metres into the period at the fleet's start
    speed_mps: float
    speed_kmh: float
    reverse: bool  # closed routes only; open routes encode direction in the phase


class Fleet:
    """Simulated trackers reporting their positions as event bodies (docs/protocol.md §1).

    Trackers are dealt to ``routes`` round-robin, drive from a uniformly random
    point (at the Unix epoch: where they are at ``start`` follows from the
    time, so a fleet of the same seed started later is where the first one
    would be by then) in a random direction at ``speed_kmh`` ±10%, and report every
    ``interval`` seconds ± ``jitter`` (a fraction of the interval); the first
    reports are spread over the first interval. Closed routes wrap around,
    open routes turn back at their ends. ``start`` is timezone-aware.
    """

    def __init__(
        self,
        *,
        routes: Sequence[Route],
        trackers: int,
        speed_kmh: float = 50.0,
        interval: float = 1.0,
        jitter: float = 0.2,
        seed: int | None = None,
        start: datetime,
    ) -> None:
        if not routes:
            raise ValueError("a fleet needs at least one route")
        if trackers < 1:
            raise ValueError(f"a fleet needs at least one tracker, got {trackers}")
        if not (math.isfinite(speed_kmh) and speed_kmh >= 0):
            raise ValueError(f"speed_kmh must be a non-negative number, got {speed_kmh}")
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be a positive number of seconds, got {interval}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")

        self._rng = random.Random(seed)
        self._start = start.astimezone(UTC)
        self._start_epoch_us = (self._start - _EPOCH) // _MICROSECOND
        self._interval_us = interval * 1_000_000
        self._jitter = jitter
        self._second = -1
        self._second_prefix = ""

        paths = {id(route): _Path(route) for route in routes}
        per_route = [
            trackers // len(routes) + (i < trackers % len(routes)) for i in range(len(routes))
        ]
        self.trackers: list[SimulatedTracker] = []
        self._drivers: list[_Driver] = []
        # A heap of (microseconds after start, tracker index): who reports next.
        self._due: list[tuple[int, int]] = []
        rng = self._rng
        for index in range(trackers):
            route = routes[index % len(routes)]
            path = paths[id(route)]
            number = index // len(routes) + 1
            width = max(2, len(str(per_route[index % len(routes)])))
            tracker_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            speed = speed_kmh * (1 + SPEED_VARIATION * (2 * rng.random() - 1))
            speed = round(speed, 1)
            self.trackers.append(
                SimulatedTracker(
                    tracker_id=tracker_id,
                    name=f"{route.name} #{number:0{width}d}",
                    route_name=route.name,
                    speed_kmh=speed,
                )
            )
            self._drivers.append(
                _Driver(
                    body_id=str(tracker_id),
                    path=path,
                    # Where it is on its route depends on the time, not on when the
                    # fleet started: a fleet started again with the same seed carries
                    # on where its trackers would be by now, without jumping back.
                    start_phase=(
                        rng.random() * path.period
                        + (speed / 3.6) * (self._start_epoch_us / 1_000_000)
                    )
                    % path.period,
                    speed_mps=speed / 3.6,
                    speed_kmh=speed,
                    reverse=route.closed and rng.random() < 0.5,
                )
            )
            self._due.append((int(rng.random() * self._interval_us), index))
        heapq.heapify(self._due)

    def next_due(self) -> datetime:
        """The earliest time any tracker will report next."""
        return self._start + timedelta(microseconds=self._due[0][0])

    def events_until(self, moment: datetime) -> list[dict[str, object]]:
        """Every report due at or before ``moment``, in time order, as event bodies."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("moment must be timezone-aware")
        limit = (moment - self._start) // _MICROSECOND
        due = self._due
        drivers = self._drivers
        random_ = self._rng.random
        interval_us = self._interval_us
        spread = 2 * self._jitter
        jitter = self._jitter
        events: list[dict[str, object]] = []
        append = events.append
        while due[0][0] <= limit:
            at, index = due[0]
            driver = drivers[index]
            path = driver.path
            distance = (driver.start_phase + driver.speed_mps * (at / 1_000_000)) % path.period
            if path.closed:
                backward = driver.reverse
                if backward:
                    distance = path.length - distance
            else:
                backward = distance > path.length
                if backward:
                    distance = path.period - distance
            # Travelling backward, a tracker exactly on a vertex is on the
            # segment before it; forward, on the segment after it.
            if backward:
                segment = bisect_left(path.cumulative, distance, 1) - 1
                heading = path.backward_headings[segment]
            else:
                segment = bisect_right(path.cumulative, distance, 0, path.last_segment + 1) - 1
                heading = path.forward_headings[segment]
            fraction = (distance - path.cumulative[segment]) / path.lengths[segment]
            latitude = path.latitudes[segment] + fraction * path.delta_latitudes[segment]
            longitude = path.longitudes[segment] + fraction * path.delta_longitudes[segment]
            if not -180.0 <= longitude < 180.0:
                longitude = normalize_longitude(longitude)
            longitude = round(longitude, 6)
            if longitude == 180.0:  # 179.9999996 rounds up to it
                longitude = -180.0

            epoch_us = self._start_epoch_us + at
            second, microsecond = divmod(epoch_us, 1_000_000)
            if second != self._second:
                self._second = second
                self._second_prefix = f"{_EPOCH + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}"
            append(
                {
                    "Id": driver.body_id,
                    "Lat": round(latitude, 6),
                    "Lng": longitude,
                    "Ts": f"{self._second_prefix}.{microsecond:06d}0Z",
                    "Speed": driver.speed_kmh,
                    "Heading": heading,
                }
            )
            gap = int(interval_us * (1 - jitter + spread * random_()))
            heapq.heapreplace(due, (at + (gap if gap > 0 else 1), index))
        return events
