"""Geofences: shapes from GeoJSON, inside and outside in metres, crossings that do not flap.

Pure: no Django import. Everything a caller gets wrong raises ``FenceError``
with a message an operator can act on, and nothing else.

**Metres.** Each fence lives in its own plane: the azimuthal equidistant
projection of the WGS84 ellipsoid centred on the fence, computed with pyproj's
``Geod`` (Karney's geodesics, accurate to nanometres): a point is placed at its
geodesic distance from the centre along its geodesic azimuth. Distances from
the centre are exact, so a circle is the true geodesic circle at any latitude,
also one around a pole (never an ellipse in longitude and latitude). Other
lengths in the plane are stretched across the radial direction by about
rho^2 / 6R^2 at rho from the centre: on a 40 m exit margin that is 0.3 mm at
100 km and 0.03 m at ``MAX_EXTENT_M`` (1,000 km), well under a metre. pyproj
rather than a hand-written tangent plane: a sphere alone is off by up to 0.5 %
(5 m per kilometre), and a tangent plane's error grows with the square of the
distance from its centre.

**Edges** are straight in longitude and latitude, as GeoJSON says (RFC 7946
section 3.1.1) and as a map draws them: whether a point is inside a polygon is
answered in longitude and latitude, and for distances its rings are densified
every ``DENSIFY_DEGREES`` before projection, so the plane's edges follow them
within centimetres.

**The antimeridian.** Consecutive positions of a ring are joined the short way
round, so a ring from longitude 179 to -179 and one from 179 to 181 are the same
2-degree fence. Longitudes may run from -360 to 360 for that reason. A ring that
circles a pole that way is refused (draw a circle there instead).

**Crossings** (``crossings``): a tracker enters a fence when it is inside, and
leaves only when it is more than ``exit_margin_m`` outside. A tracker parked
near a boundary with GPS noise of up to N metres reports positions spread over
2N metres; it can never flap while the margin is at least that spread, hence
``DEFAULT_EXIT_MARGIN_M`` = 40 m for noise of up to 20 m.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
import shapely
import shapely.affinity
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

MAX_VERTICES = 10_000
"""The most positions a fence may have, all rings together."""
MAX_RADIUS_M = 100_000.0
"""The largest circle's radius."""
MAX_EXTENT_M = 1_000_000.0
"""How far any vertex of a polygon may be from the fence's centre."""
DEFAULT_EXIT_MARGIN_M = 40.0
"""How far outside a fence a tracker must be to have left it (see the module docstring)."""
DENSIFY_DEGREES = 0.01
"""Longest edge, in degrees, before projection (about 1.1 km of latitude)."""

_GEOD = Geod(ellps="WGS84")
# Pads every lon/lat box (metres) for the plane's edges and a circle's sampled outline.
_SLACK_M = 10.0
# Fewer metres than any degree of latitude holds, so a pad in degrees is never short.
_METRES_PER_DEGREE = 110_000.0
_CIRCLE_SAMPLES = 360

Box = tuple[float, float, float, float]
K = TypeVar("K", bound=Hashable)


class FenceError(ValueError):
    """A fence refused, saying what is wrong and where."""


def wrap_longitude(longitude: float) -> float:
    """``longitude`` folded into [-180, 180)."""
    return (longitude + 180.0) % 360.0 - 180.0


@dataclass(slots=True, eq=False, kw_only=True)
class Fence:
    """One fence in WGS84, held in its own plane (see the module docstring).

    ``centre`` is ``(longitude, latitude)``, the longitude in [-180, 180).
    A circle has ``radius_m`` and no ``plane``; a polygon fence has its
    (multi)polygon in metres as ``plane`` and in longitude and latitude as
    ``lonlat`` (centred on the fence: its longitudes may pass +-180). ``boxes``
    are the lon/lat envelopes (west, south, east, north) that hold it, two when
    it crosses the antimeridian.
    Build one with ``circle`` or ``parse_geojson``.
    """

    centre: tuple[float, float]
    boxes: tuple[Box, ...]
    radius_m: float | None = None
    plane: BaseGeometry | None = None
    lonlat: BaseGeometry | None = None
    _edges: BaseGeometry | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._edges = None if self.plane is None else self.plane.boundary
        shapely.prepare([shape for shape in (self.plane, self.lonlat) if shape is not None])

    def _from_centre(self, latitude: float, longitude: float) -> tuple[float, float, float]:
        """``(x, y, distance)`` of a point in this fence's plane, in metres."""
        azimuth, _, distance = _GEOD.inv(*self.centre, longitude, latitude)
        angle = math.radians(azimuth)
        return distance * math.sin(angle), distance * math.cos(angle), distance

    def contains(self, *, latitude: float, longitude: float) -> bool:
        """Whether the point is inside or on the boundary (for a polygon, of its lon/lat edges)."""
        if self.lonlat is not None:
            near = self.centre[0] + wrap_longitude(longitude - self.centre[0])
            return bool(shapely.intersects_xy(self.lonlat, near, latitude))
        assert self.radius_m is not None
        return self._from_centre(latitude, longitude)[2] <= self.radius_m

    def is_beyond(self, *, latitude: float, longitude: float, margin_m: float) -> bool:
        """Whether the point is more than ``margin_m`` metres outside: what
        ``signed_distance_m(...) > margin_m`` says, answered by the prepared
        shape's index without measuring every edge."""
        x, y, distance = self._from_centre(latitude, longitude)
        if self.plane is None:
            assert self.radius_m is not None
            return distance - self.radius_m > margin_m
        return not shapely.dwithin(self.plane, shapely.points(x, y), margin_m)

    def signed_distance_m(self, *, latitude: float, longitude: float) -> float:
        """Metres from the point to the boundary: negative inside, positive outside."""
        x, y, distance = self._from_centre(latitude, longitude)
        if self.plane is None:
            assert self.radius_m is not None
            return distance - self.radius_m
        edge = float(shapely.distance(self._edges, shapely.Point(x, y)))
        return -edge if shapely.intersects_xy(self.plane, x, y) else edge

    def meets_segment(self, *, start: tuple[float, float], end: tuple[float, float]) -> bool:
        """Whether the straight lon/lat line between two ``(latitude, longitude)``
        positions comes inside this fence (for a circle: within its radius of
        the centre, the line sampled every tenth of the radius)."""
        (lat1, lon1), (lat2, lon2) = start, end
        lon2 = lon1 + wrap_longitude(lon2 - lon1)
        if self.lonlat is not None:
            # The line moved by whole turns to lie beside the fence's own longitudes.
            shift = self.centre[0] + wrap_longitude(lon1 - self.centre[0]) - lon1
            line = shapely.LineString([(lon1 + shift, lat1), (lon2 + shift, lat2)])
            return bool(self.lonlat.intersects(line))
        assert self.radius_m is not None
        _, _, length = _GEOD.inv(lon1, lat1, lon2, lat2)
        samples = min(10_000, max(2, math.ceil(length / (self.radius_m / 10)) + 1))
        steps = np.linspace(0.0, 1.0, samples)
        lats = lat1 + (lat2 - lat1) * steps
        lons = lon1 + (lon2 - lon1) * steps
        centre_lon = np.full(samples, self.centre[0])
        centre_lat = np.full(samples, self.centre[1])
        _, _, distances = _GEOD.inv(centre_lon, centre_lat, lons, lats)
        return bool(np.min(distances) <= self.radius_m)


class ParsedFence(NamedTuple):
    """A feature of an uploaded file: its ``name`` property ("" if none), all its properties, its fence."""

    name: str
    properties: dict[str, Any]
    fence: Fence


def parse_geojson_text(text: str | bytes) -> list[ParsedFence]:
    """The fences of a GeoJSON document (see ``parse_geojson``); ``FenceError`` if it is not JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise FenceError(
                f"not GeoJSON: not UTF-8 text (byte {error.start} cannot be read)"
            ) from None
    if not text.strip():
        raise FenceError("not GeoJSON: empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FenceError(
            f"not GeoJSON: not JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None
    except (ValueError, TypeError, RecursionError):
        raise FenceError(
            "not GeoJSON: not JSON (nested too deeply, or a number too large)"
        ) from None
    return parse_geojson(data)


def parse_geojson(data: object) -> list[ParsedFence]:
    """The fences of parsed GeoJSON: a FeatureCollection, a Feature, a Polygon or MultiPolygon.

    A feature is a Polygon or MultiPolygon (holes allowed), or a circle: a Point
    with a ``radius`` property in metres (Azure Maps also sets ``subType``
    "Circle"). Raises ``FenceError`` naming the feature and what is wrong.
    """
    if not isinstance(data, dict):
        raise FenceError('not GeoJSON: expected an object with a "type"')
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list) or not features:
            raise FenceError('not GeoJSON: a FeatureCollection needs a non-empty "features" list')
        return [_feature(feature, f"feature {i}: ") for i, feature in enumerate(features)]
    if kind == "Feature":
        return [_feature(data, "")]
    if kind in ("Polygon", "MultiPolygon"):
        return [ParsedFence("", {}, _polygon_fence(data, ""))]
    if kind == "Point":
        raise FenceError(
            "not a fence: a bare Point has no radius; a circle is a Feature with a Point "
            'geometry and a "radius" property in metres'
        )
    raise FenceError(f"not GeoJSON: a fence is a Feature or FeatureCollection, not {_show(kind)}")


def parse_feature(feature: object, *, where: str = "") -> ParsedFence:
    """One feature of a FeatureCollection; ``FenceError`` starting with ``where`` if it is not a fence."""
    return _feature(feature, where)


def circle(*, latitude: float, longitude: float, radius_m: float) -> Fence:
    """The geodesic circle of ``radius_m`` metres (0 < radius <= ``MAX_RADIUS_M``) round a point."""
    return _circle(_checked_position([longitude, latitude], ""), _number(radius_m, "radius"), "")


def _feature(feature: object, where: str) -> ParsedFence:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise FenceError(f'{where}not GeoJSON: expected an object of "type" "Feature"')
    properties = feature.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise FenceError(f'{where}"properties" must be an object')
    name = properties.get("name", "")
    if not isinstance(name, str):
        raise FenceError(f'{where}"name" must be a string, not {_show(name)}')
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict):
        raise FenceError(f"{where}has no geometry")
    if geometry.get("type") == "Point":
        subtype = properties.get("subType", "Circle")
        if subtype != "Circle":
            raise FenceError(
                f'{where}a Point is a circle: "subType" must be "Circle", not {_show(subtype)}'
            )
        if "radius" not in properties:
            raise FenceError(f'{where}a Point is a circle and needs a "radius" property in metres')
        radius = _number(properties["radius"], f"{where}radius")
        centre = _checked_position(geometry.get("coordinates"), where)
        return ParsedFence(name, properties, _circle(centre, radius, where))
    return ParsedFence(name, properties, _polygon_fence(geometry, where))


def _circle(centre: tuple[float, float], radius: float, where: str) -> Fence:
    if not 0 < radius <= MAX_RADIUS_M:
        raise FenceError(
            f"{where}radius {radius:g} m must be above 0, at most {MAX_RADIUS_M:,.0f} m"
        )
    lon, lat, pad = wrap_longitude(centre[0]), centre[1], _SLACK_M + radius * 1e-4
    many = np.ones(_CIRCLE_SAMPLES)
    azimuths = np.linspace(0.0, 360.0, _CIRCLE_SAMPLES, endpoint=False)
    lons, lats, _ = _GEOD.fwd(many * lon, many * lat, azimuths, many * radius)
    lons = lon + (lons - lon + 180.0) % 360.0 - 180.0
    south, north = float(lats.min()), float(lats.max())
    # Around a pole the outline's longitudes span the whole circle: the box must too.
    north = 90.0 if _GEOD.inv(lon, lat, 0.0, 90.0)[2] <= radius + pad else north
    south = -90.0 if _GEOD.inv(lon, lat, 0.0, -90.0)[2] <= radius + pad else south
    boxes = _boxes((float(lons.min()), south, float(lons.max()), north), pad)
    return Fence(centre=(lon, lat), boxes=boxes, radius_m=radius)


def _polygon_fence(geometry: dict[str, Any], where: str) -> Fence:
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        raise FenceError(f"{where}a fence is a Polygon, MultiPolygon or circle, not {_show(kind)}")
    polygons = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(polygons, list) or not polygons:
        raise FenceError(f'{where}a {kind} needs a non-empty "coordinates" list')
    count, reference, parts = 0, None, []
    for p, rings in enumerate(polygons):
        if not isinstance(rings, list) or not rings:
            raise FenceError(f"{where}polygon {p} has no rings")
        unwrapped = []
        for r, ring in enumerate(rings):
            name = f"ring {r}" + (f" of polygon {p}" if kind == "MultiPolygon" else "")
            if not isinstance(ring, list):
                raise FenceError(f"{where}{name} is not a list of positions")
            count += len(ring)
            if count > MAX_VERTICES:
                raise FenceError(f"{where}too many vertices: at most {MAX_VERTICES:,}")
            if len(ring) < 4:
                raise FenceError(f"{where}{name} has {len(ring)} positions; a ring needs 4 or more")
            points = [_checked_position(position, f"{where}{name}: ") for position in ring]
            if points[0] != points[-1]:
                raise FenceError(f"{where}{name} is not closed: it ends where it did not start")
            reference = points[0][0] if reference is None else reference
            unwrapped.append(_unwrap(points, reference, f"{where}{name}"))
        parts.append(shapely.Polygon(unwrapped[0], unwrapped[1:]))
    shape: BaseGeometry = parts[0] if kind == "Polygon" else shapely.MultiPolygon(parts)
    _check_valid(shape, where)
    west, south, east, north = shape.bounds
    lon, lat = (west + east) / 2, (south + north) / 2
    shift = wrap_longitude(lon) - lon
    shape = _shifted(shape, shift)
    lon += shift
    dense = shapely.segmentize(shape, max(DENSIFY_DEGREES, shape.length / 20_000))
    lonlat = shapely.get_coordinates(dense)
    if len(lonlat) < 4:  # GEOS drops a sliver too thin to hold
        raise FenceError(f"{where}the shape has no area")
    azimuth, _, distance = _GEOD.inv(
        np.full(len(lonlat), lon), np.full(len(lonlat), lat), lonlat[:, 0], lonlat[:, 1]
    )
    if distance.max() > MAX_EXTENT_M:
        raise FenceError(f"{where}reaches beyond {MAX_EXTENT_M / 1000:,.0f} km from its centre")
    angle, bounds = np.radians(azimuth), dense.bounds
    plane = shapely.set_coordinates(
        dense, np.column_stack((distance * np.sin(angle), distance * np.cos(angle)))
    )
    _check_valid(plane, where)
    if plane.area < 1.0:
        raise FenceError(f"{where}the shape has no area (under 1 square metre)")
    return Fence(centre=(lon, lat), boxes=_boxes(bounds, _SLACK_M), plane=plane, lonlat=shape)


def _unwrap(
    points: list[tuple[float, float]], reference: float, name: str
) -> list[tuple[float, float]]:
    """The ring's longitudes made continuous, each step the short way round, starting near ``reference``."""
    first = points[0][0] + 360.0 * round((reference - points[0][0]) / 360.0)
    out, previous, raw = [(first, points[0][1])], first, points[0][0]
    for lon, lat in points[1:]:
        previous += (lon - raw + 180.0) % 360.0 - 180.0
        raw = lon
        out.append((previous, lat))
    if abs(out[-1][0] - out[0][0]) > 180.0:
        raise FenceError(f"{name} circles a pole; draw a circle there instead")
    return out


_VALIDITY = {
    "Self-intersection": "crosses itself",
    "Ring Self-intersection": "has a ring that touches itself",
    "Hole lies outside shell": "has a hole outside its outer ring",
    "Nested shells": "has a polygon inside another",
    "Interior is disconnected": "has holes that cut it in pieces",
    "Too few points": "has a ring with fewer than 3 distinct positions",
    "Nested holes": "has a hole inside another hole",
}


def _check_valid(shape: BaseGeometry, where: str) -> None:
    reason = shapely.is_valid_reason(shape)
    if reason != "Valid Geometry":
        text, _, place = (reason or "").partition("[")
        coordinates = place.rstrip("]").split()
        near = f" near {_at(*map(float, coordinates))}" if len(coordinates) == 2 else ""
        raise FenceError(f"{where}the shape {_VALIDITY.get(text, text.lower())}{near}")
    if shape.area <= 0:
        raise FenceError(f"{where}the shape has no area")


def _shifted(shape: BaseGeometry, degrees: float) -> BaseGeometry:
    """``shape`` moved ``degrees`` of longitude east."""
    return shapely.transform(shape, lambda xy: np.add(xy, (degrees, 0.0)))


def _boxes(bounds: tuple[float, float, float, float], pad_m: float) -> tuple[Box, ...]:
    """Lon/lat boxes holding ``bounds`` padded by ``pad_m``, split at the antimeridian."""
    west, south, east, north = (float(value) for value in bounds)
    south, north = south - pad_m / _METRES_PER_DEGREE, north + pad_m / _METRES_PER_DEGREE
    if south <= -90.0 or north >= 90.0:
        return ((-180.0, max(south, -90.0), 180.0, min(north, 90.0)),)
    pad_lon = pad_m / (_METRES_PER_DEGREE * math.cos(math.radians(max(-south, north))))
    west, east = west - pad_lon, east + pad_lon
    if east - west >= 360.0:
        return ((-180.0, south, 180.0, north),)
    if west < -180.0:
        return ((-180.0, south, east, north), (west + 360.0, south, 180.0, north))
    if east > 180.0:
        return ((west, south, 180.0, north), (-180.0, south, east - 360.0, north))
    return ((west, south, east, north),)


def _number(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise FenceError(f"{what} must be a finite number, not {_show(value)}")


def _checked_position(value: object, where: str) -> tuple[float, float]:
    """``(longitude, latitude)`` of a GeoJSON position, in range."""
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise FenceError(f"{where}a position is [longitude, latitude], not {_show(value)}")
    lon, lat, *_ = (_number(number, f"{where}a coordinate") for number in value)
    if not -90.0 <= lat <= 90.0:
        raise FenceError(f"{where}latitude {lat:g} is out of range (-90 to 90)")
    if not -360.0 <= lon <= 360.0:
        raise FenceError(f"{where}longitude {lon:g} is out of range (-360 to 360)")
    return lon, lat


def _at(lon: float, lat: float) -> str:
    return f"lng {wrap_longitude(lon):.6f}, lat {lat:.6f}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Crossings(NamedTuple, Generic[K]):
    """Which fences a position entered and which it left."""

    entered: frozenset[K]
    exited: frozenset[K]


class FenceIndex(Generic[K]):
    """Many fences by key, found by position through one STRtree.

    The tree holds each polygon fence's lon/lat shape (again 360 degrees over
    where it passes the antimeridian), so GEOS answers containment for all of
    them in one query, and each circle's boxes, whose candidates are then
    measured.
    """

    def __init__(self, fences: Mapping[K, Fence]) -> None:
        self._fences = dict(fences)
        self._keys: list[K] = []
        self._circles: list[bool] = []
        shapes = []
        for key, fence in self._fences.items():
            if fence.lonlat is None:
                copies: list[BaseGeometry] = [shapely.box(*box) for box in fence.boxes]
            else:
                west, _, east, _ = fence.lonlat.bounds
                copies = [
                    _shifted(fence.lonlat, shift)
                    for shift in (0.0, -360.0, 360.0)
                    if west + shift < 180.0 and east + shift > -180.0
                ]
            shapes += copies
            self._keys += [key] * len(copies)
            self._circles += [fence.lonlat is None] * len(copies)
        self._tree = shapely.STRtree(shapes)
        self._key_array = np.empty(len(self._keys), dtype=object)
        self._key_array[:] = self._keys
        # Per shape of the tree, for measuring many circles at once.
        self._circle_flags = np.asarray(self._circles, dtype=bool)
        centres = [self._fences[key].centre for key in self._keys]
        self._centre_lons = np.array([lon for lon, _ in centres], dtype=float)
        self._centre_lats = np.array([lat for _, lat in centres], dtype=float)
        self._radii = np.array(
            [self._fences[key].radius_m or 0.0 for key in self._keys], dtype=float
        )

    def __len__(self) -> int:
        return len(self._fences)

    def get(self, key: K) -> Fence | None:
        return self._fences.get(key)

    def beyond_many(
        self,
        keys: Sequence[K],
        *,
        latitudes: Sequence[float],
        longitudes: Sequence[float],
        margin_m: float,
    ) -> list[bool]:
        """``Fence.is_beyond`` for many (fence, point) pairs at once: whether
        each point is more than ``margin_m`` outside its fence (True for a key
        no longer in the index), measured with one geodesic call for all."""
        count = len(keys)
        if not count:
            return []
        present = [
            (n, fence) for n, key in enumerate(keys) if (fence := self._fences.get(key)) is not None
        ]
        beyond = [True] * count
        if not present:
            return beyond
        known = [n for n, _ in present]
        lats = np.asarray(latitudes, dtype=float)[known]
        lons = np.asarray(longitudes, dtype=float)[known]
        centre_lons = np.array([fence.centre[0] for _, fence in present])
        centre_lats = np.array([fence.centre[1] for _, fence in present])
        azimuths, _, measured = _GEOD.inv(centre_lons, centre_lats, lons, lats)
        angles = np.radians(np.asarray(azimuths))
        distances = np.asarray(measured)
        radii = np.array([fence.radius_m or 0.0 for _, fence in present])
        result = distances - radii > margin_m
        polygons = [m for m, (_, fence) in enumerate(present) if fence.plane is not None]
        if polygons:
            shapes = np.empty(len(polygons), dtype=object)
            shapes[:] = [present[m][1].plane for m in polygons]
            points = shapely.points(
                distances[polygons] * np.sin(angles[polygons]),
                distances[polygons] * np.cos(angles[polygons]),
            )
            result[polygons] = ~np.asarray(shapely.dwithin(shapes, points, margin_m), dtype=bool)
        for n, value in zip(known, result.tolist(), strict=True):
            beyond[n] = value
        return beyond

    def containing(self, *, latitude: float, longitude: float) -> frozenset[K]:
        """The keys of the fences the point is inside or on the boundary of."""
        point = shapely.Point(wrap_longitude(longitude), latitude)
        return frozenset(
            self._keys[i]
            for i in self._tree.query(point, predicate="intersects").tolist()
            if not self._circles[i]
            or self._fences[self._keys[i]].contains(latitude=latitude, longitude=longitude)
        )

    def containing_many(
        self, *, latitudes: Sequence[float], longitudes: Sequence[float]
    ) -> list[frozenset[K]]:
        """``containing`` for many points at once: one query of the tree for
        all of them, and the circles among the candidates measured together."""
        count = len(latitudes)
        if not count or not self._fences:
            return [frozenset()] * count
        lats = np.asarray(latitudes, dtype=float)
        lons = np.asarray(longitudes, dtype=float)
        points = shapely.points((lons + 180.0) % 360.0 - 180.0, lats)
        which, shapes = self._tree.query(points, predicate="intersects")
        circle_at = self._circle_flags[shapes]
        if circle_at.any():
            # A circle's candidates are those inside its boxes: keep the ones
            # within its radius of its centre, all measured in one call.
            at = which[circle_at]
            candidates = shapes[circle_at]
            _, _, distances = _GEOD.inv(
                self._centre_lons[candidates], self._centre_lats[candidates], lons[at], lats[at]
            )
            keep = ~circle_at
            keep[np.flatnonzero(circle_at)[np.asarray(distances) <= self._radii[candidates]]] = True
            which, shapes = which[keep], shapes[keep]
        found: list[frozenset[K]] = [frozenset()] * count
        if not len(which):
            return found
        # Grouped by point: one set per point that has any, the same empty one otherwise.
        order = np.argsort(which, kind="stable")
        which, keys = which[order], self._key_array[shapes[order]].tolist()
        starts = np.flatnonzero(np.diff(which, prepend=-1)).tolist()
        ends = [*starts[1:], len(keys)]
        for point, start, end in zip(which[starts].tolist(), starts, ends, strict=True):
            found[point] = frozenset(keys[start:end])
        return found

    def crossed_by(self, *, start: tuple[float, float], end: tuple[float, float]) -> frozenset[K]:
        """The fences the straight line between two ``(latitude, longitude)``
        positions passes through (the short way round in longitude)."""
        (lat1, lon1), (lat2, lon2) = start, end
        lon1 = wrap_longitude(lon1)
        lon2 = lon1 + wrap_longitude(lon2 - lon1)
        line = shapely.LineString([(lon1, lat1), (lon2, lat2)])
        copies = [line] + [
            shapely.affinity.translate(line, xoff=shift)
            for shift in (-360.0, 360.0)
            if min(lon1, lon2) + shift < 180.0 and max(lon1, lon2) + shift > -180.0
        ]
        keys: set[K] = set()
        for copy in copies:
            for shape in self._tree.query(copy, predicate="intersects").tolist():
                key = self._keys[shape]
                if key in keys:
                    continue
                if not self._circles[shape] or self._fences[key].meets_segment(
                    start=(lat1, lon1), end=(lat2, lon2)
                ):
                    keys.add(key)
        return frozenset(keys)


def crossings(
    fences: FenceIndex[K],
    inside: Set[K],
    *,
    latitude: float,
    longitude: float,
    exit_margin_m: float = DEFAULT_EXIT_MARGIN_M,
) -> Crossings[K]:
    """What a tracker inside the fences ``inside`` did by reporting this position.

    ``entered``: fences the position is inside (or on) that are not in
    ``inside``. ``exited``: fences of ``inside`` the position is more than
    ``exit_margin_m`` metres outside, and those no longer in ``fences``. The
    tracker is then inside ``(inside - exited) | entered``. Latitude in
    [-90, 90], any finite longitude.
    """
    now = fences.containing(latitude=latitude, longitude=longitude)
    exited = set()
    for key in inside:
        if key in now:
            continue
        fence = fences.get(key)
        if fence is None or fence.is_beyond(
            latitude=latitude, longitude=longitude, margin_m=exit_margin_m
        ):
            exited.add(key)
    return Crossings(now - inside, frozenset(exited))
