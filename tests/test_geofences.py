"""The geofence core: parsing, metres on WGS84, the antimeridian, crossings without flapping."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from tracking.geofences import (
    DEFAULT_EXIT_MARGIN_M,
    MAX_VERTICES,
    Fence,
    FenceError,
    FenceIndex,
    circle,
    crossings,
    parse_geojson,
    parse_geojson_text,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tracking" / "geofence_samples" / "helsinki.geojson"
ROUTES = ROOT / "tracking" / "simulation" / "routes" / "helsinki.geojson"
GEOD = Geod(ellps="WGS84")

# The "Helsinki Station" fence of the mirrored sample, inline so the tests run anywhere.
STATION = [
    [24.9385729618134, 60.1700121134021],
    [24.9445582854212, 60.1700121134021],
    [24.9445582854212, 60.1711592172123],
    [24.9385729618134, 60.1711592172123],
    [24.9385729618134, 60.1700121134021],
]


def polygon(*rings: list[Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": list(rings)},
    }


def fence_of(data: object) -> Fence:
    return parse_geojson(data)[0].fence


def moved(lon: float, lat: float, azimuth: float, metres: float) -> tuple[float, float]:
    """``(lon, lat)`` ``metres`` along ``azimuth`` from a point."""
    lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth, metres)
    return lon2, lat2


def refusal(data: object) -> str:
    with pytest.raises(FenceError) as raised:
        parse_geojson(data)
    return str(raised.value)


# Parsing


def test_the_helsinki_sample_fences_all_parse_and_a_route_point_is_inside_the_station() -> None:
    fences = parse_geojson_text(SAMPLE.read_bytes())
    assert [fence.name for fence in fences] == ["Helsinki Station", "Iglooconf"]
    index = FenceIndex({fence.name: fence.fence for fence in fences})
    route = json.loads(ROUTES.read_text())["features"][0]["geometry"]["coordinates"]
    lon, lat = route[0]  # Helsinki loop 1 starts by the station
    assert index.containing(latitude=lat, longitude=lon) == {"Helsinki Station"}
    assert index.containing(latitude=60.1755, longitude=24.935) == frozenset()


def test_a_circle_is_a_point_with_a_radius_also_in_the_azure_maps_convention() -> None:
    for properties in ({"radius": 100}, {"subType": "Circle", "radius": 100.0}):
        feature = {
            "type": "Feature",
            "properties": properties,
            "geometry": {"type": "Point", "coordinates": [24.94, 60.17]},
        }
        fence = fence_of(feature)
        assert fence.radius_m == 100
        assert fence.contains(latitude=60.17, longitude=24.94)


def test_a_multipolygon_with_a_hole_holds_its_parts_but_not_the_hole() -> None:
    outer = [[0, 0], [0.01, 0], [0.01, 0.01], [0, 0.01], [0, 0]]
    hole = [[0.004, 0.004], [0.006, 0.004], [0.006, 0.006], [0.004, 0.006], [0.004, 0.004]]
    far = [[1, 1], [1.01, 1], [1.01, 1.01], [1, 1.01], [1, 1]]
    fence = fence_of({"type": "MultiPolygon", "coordinates": [[outer, hole], [far]]})
    assert fence.contains(latitude=0.002, longitude=0.002)
    assert fence.contains(latitude=1.005, longitude=1.005)
    assert not fence.contains(latitude=0.005, longitude=0.005)
    assert not fence.contains(latitude=0.5, longitude=0.5)
    index = FenceIndex({"holed": fence})
    assert index.containing(latitude=0.002, longitude=0.002) == {"holed"}
    assert index.containing(latitude=0.005, longitude=0.005) == frozenset()
    assert index.containing(latitude=0.5, longitude=0.5) == frozenset()
    # The hole's edge is 0.001 degrees of latitude (about 110.6 m) from its centre.
    assert fence.signed_distance_m(latitude=0.005, longitude=0.005) == pytest.approx(110.6, abs=0.5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]),
            "crosses itself near lng 0.500000, lat 0.500000",
        ),
        (
            polygon([[0, 0], [1, 0], [1, 1], [0, 1]]),
            "ring 0 is not closed",
        ),
        (polygon([[0, 0], [1, 0], [0, 0]]), "ring 0 has 3 positions; a ring needs 4 or more"),
        (polygon([[0, 0], [1, 0], [1, 91], [0, 0]]), "latitude 91 is out of range"),
        (polygon([[0, 0], [1, 0], [400, 1], [0, 0]]), "longitude 400 is out of range"),
        (polygon([[0, 0], [1, 0], [1, "1"], [0, 0]]), "must be a finite number"),
        (
            {
                "type": "Feature",
                "properties": {"radius": 0},
                "geometry": {"type": "Point", "coordinates": [0, 0]},
            },
            "radius 0 m must be above 0, at most 100,000 m",
        ),
        (
            {
                "type": "Feature",
                "properties": {"radius": 1e6},
                "geometry": {"type": "Point", "coordinates": [0, 0]},
            },
            "at most 100,000 m",
        ),
        (
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Point", "coordinates": [0, 0]},
            },
            'needs a "radius"',
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
            },
            "not 'LineString'",
        ),
        ({"type": "Topology"}, "not GeoJSON"),
        ([1, 2], "not GeoJSON"),
        (
            {"type": "FeatureCollection", "features": [polygon(STATION), {"type": "Feature"}]},
            "feature 1: has no geometry",
        ),
        (polygon([[0, 80], [120, 80], [-120, 80], [0, 80]]), "circles a pole"),
        (
            polygon([[0, 0], [20, 0], [20, 20], [0, 20], [0, 0]]),
            "reaches beyond 1,000 km from its centre",
        ),
    ],
)
def test_an_invalid_fence_is_refused_saying_what_is_wrong(data: object, message: str) -> None:
    assert message in refusal(data)


def test_a_fence_with_too_many_vertices_is_refused() -> None:
    ring = [
        [math.cos(t) * 0.01, math.sin(t) * 0.01]
        for t in (2 * math.pi * i / MAX_VERTICES for i in range(MAX_VERTICES))
    ]
    assert "too many vertices: at most 10,000" in refusal(polygon([*ring, ring[0]]))


def test_text_that_is_not_json_is_refused_as_not_geojson() -> None:
    for text in (b"\xff", "{", "[" * 100_000, "NaN"):
        with pytest.raises(FenceError, match="not GeoJSON"):
            parse_geojson_text(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)
NUMBER = (
    st.integers(-400, 400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([True, None, "1", 10**400])
)
POSITION = st.lists(NUMBER, min_size=0, max_size=4) | st.tuples(
    st.floats(-1, 1), st.floats(-1, 1)
).map(list)
NEAR_VALID = st.one_of(
    st.lists(POSITION, max_size=8).map(lambda ring: polygon(ring)),
    st.lists(
        st.tuples(st.floats(-0.01, 0.01), st.floats(-0.01, 0.01)).map(list), min_size=3, max_size=8
    ).map(lambda ring: polygon([*ring, ring[0]])),
    st.builds(
        lambda props, coordinates: {
            "type": "Feature",
            "properties": props,
            "geometry": {"type": "Point", "coordinates": coordinates},
        },
        st.dictionaries(st.sampled_from(["radius", "subType", "name"]), NUMBER | JSON, max_size=3),
        POSITION,
    ),
    st.builds(
        lambda kind, coordinates: {"type": kind, "coordinates": coordinates},
        st.sampled_from(["Polygon", "MultiPolygon"]),
        JSON,
    ),
    st.builds(lambda features: {"type": "FeatureCollection", "features": features}, JSON),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, NEAR_VALID))
def test_any_json_either_parses_or_raises_a_fence_error(data: object) -> None:
    try:
        fences = parse_geojson(data)
    except FenceError:
        return
    index = FenceIndex({i: parsed.fence for i, parsed in enumerate(fences)})
    for i, parsed in enumerate(fences):
        lon, lat = parsed.fence.centre
        assert crossings(index, set(), latitude=lat, longitude=lon).exited == frozenset()
        assert math.isfinite(parsed.fence.signed_distance_m(latitude=lat, longitude=lon))
        assert i in index.containing(latitude=lat, longitude=lon) or parsed.fence.plane is not None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=50) | st.text(max_size=50))
def test_any_text_either_parses_or_raises_a_fence_error(text: str | bytes) -> None:
    with contextlib.suppress(FenceError):
        parse_geojson_text(text)


# Metres on WGS84


@pytest.mark.parametrize(
    ("latitude", "longitude"), [(80.0, 24.0), (89.995, 10.0), (-89.99, -170.0)]
)
@pytest.mark.parametrize("azimuth", range(0, 360, 30))
def test_a_circle_is_geodesic_at_latitude_80_and_around_a_pole(
    latitude: float, longitude: float, azimuth: int
) -> None:
    fence = circle(latitude=latitude, longitude=longitude, radius_m=1000)
    index = FenceIndex({"c": fence})
    for metres, inside in ((999.0, True), (1001.0, False)):
        lon, lat = moved(longitude, latitude, azimuth, metres)
        assert fence.contains(latitude=lat, longitude=lon) is inside
        assert index.containing(latitude=lat, longitude=lon) == ({"c"} if inside else set())
        assert fence.signed_distance_m(latitude=lat, longitude=lon) == pytest.approx(
            metres - 1000, abs=1e-6
        )


def test_the_distance_to_a_polygon_boundary_is_in_metres() -> None:
    fence = fence_of(polygon(STATION))
    north_west = STATION[3]
    for metres in (1.0, 25.0, 300.0):
        lon, lat = moved(north_west[0] + 0.002, north_west[1], 0, metres)
        assert fence.signed_distance_m(latitude=lat, longitude=lon) == pytest.approx(
            metres, abs=0.01
        )
    lon, lat = moved(north_west[0] + 0.002, north_west[1], 180, 20)
    assert fence.signed_distance_m(latitude=lat, longitude=lon) == pytest.approx(-20, abs=0.01)


@pytest.mark.parametrize("east", [-179, 181])
def test_a_fence_across_the_antimeridian_holds_both_sides(east: float) -> None:
    fence = fence_of(polygon([[179, -1], [east, -1], [east, 1], [179, 1], [179, -1]]))
    index = FenceIndex({"dateline": fence})
    for longitude in (179.5, 180, -180, -179.5, 180.5):
        assert index.containing(latitude=0.5, longitude=longitude) == {"dateline"}
        assert fence.contains(latitude=0.5, longitude=longitude)
    for longitude in (178.9, -178.9, 0):
        assert index.containing(latitude=0.5, longitude=longitude) == frozenset()
        assert not fence.contains(latitude=0.5, longitude=longitude)
    # 0.01 degrees of longitude on the equator is 1,113.2 m, on either side.
    assert fence.signed_distance_m(latitude=0, longitude=-178.99) == pytest.approx(1113.2, abs=0.1)
    assert fence.signed_distance_m(latitude=0, longitude=178.99) == pytest.approx(1113.2, abs=0.1)


def test_a_circle_across_the_antimeridian_is_found_on_both_sides() -> None:
    index = FenceIndex({"fiji": circle(latitude=-16.8, longitude=179.999, radius_m=5000)})
    assert index.containing(latitude=-16.8, longitude=-179.99) == {"fiji"}
    assert index.containing(latitude=-16.8, longitude=179.98) == {"fiji"}


# Crossings


def walk(
    index: FenceIndex[str], positions: list[tuple[float, float]]
) -> tuple[list[str], set[str]]:
    """The crossings of a tracker reporting ``positions`` in turn, as "+fence"/"-fence"."""
    inside: set[str] = set()
    seen = []
    for lon, lat in positions:
        entered, exited = crossings(index, inside, latitude=lat, longitude=lon)
        seen += [f"+{key}" for key in sorted(entered)] + [f"-{key}" for key in sorted(exited)]
        inside = (inside - exited) | entered
    return seen, inside


STATION_INDEX = FenceIndex({"station": fence_of(polygon(STATION))})
NORTH_EDGE = (24.9415, STATION[2][1])


def test_a_tracker_enters_leaves_and_enters_again() -> None:
    inside = moved(*NORTH_EDGE, 180, 30)
    far = moved(*NORTH_EDGE, 0, DEFAULT_EXIT_MARGIN_M + 10)
    assert walk(STATION_INDEX, [far, inside, far, inside]) == (
        ["+station", "-station", "+station"],
        {"station"},
    )


def test_a_fence_that_is_gone_is_left() -> None:
    entered, exited = crossings(
        FenceIndex({}), {"station"}, latitude=NORTH_EDGE[1], longitude=NORTH_EDGE[0]
    )
    assert (entered, exited) == (frozenset(), {"station"})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 360), st.floats(0, 15)), min_size=1, max_size=50))
def test_positions_jittered_up_to_15_m_round_a_boundary_after_an_entry_never_exit(
    jitter: list[tuple[float, float]],
) -> None:
    entry = moved(*NORTH_EDGE, 180, 5)
    noisy = [moved(*NORTH_EDGE, azimuth, metres) for azimuth, metres in jitter]
    assert walk(STATION_INDEX, [entry, *noisy]) == (["+station"], {"station"})


@settings(max_examples=50, deadline=None)
@given(st.floats(-20, 40), st.lists(st.tuples(st.floats(0, 360), st.floats(0, 20)), max_size=50))
def test_a_tracker_parked_near_a_boundary_with_20_m_of_noise_never_flaps(
    offset: float, jitter: list[tuple[float, float]]
) -> None:
    parked = moved(*NORTH_EDGE, 0, offset) if offset >= 0 else moved(*NORTH_EDGE, 180, -offset)
    seen, _ = walk(STATION_INDEX, [moved(*parked, azimuth, metres) for azimuth, metres in jitter])
    assert seen in ([], ["+station"])


@settings(max_examples=50, deadline=None)
@given(
    st.floats(0, 360),
    st.floats(1, 50),
    st.lists(st.tuples(st.floats(0, 360), st.floats(0, 12)), min_size=100, max_size=100),
)
def test_a_walk_straight_through_enters_once_and_leaves_once(
    heading: float, step: float, jitter: list[tuple[float, float]]
) -> None:
    # The noise stays under half the margin, so a position after the exit never looks inside.
    centre = (sum(lon for lon, _ in STATION[:4]) / 4, sum(lat for _, lat in STATION[:4]) / 4)
    start = moved(*centre, heading + 180, 400)
    steps = math.ceil(800 / step) + 1
    path = [moved(*start, heading, i * step) for i in range(steps)]
    noisy = [moved(*point, *jitter[i % len(jitter)]) for i, point in enumerate(path)]
    assert walk(STATION_INDEX, noisy) == (["+station", "-station"], set())


def test_one_position_against_many_fences_finds_only_those_it_is_in() -> None:
    fences = {
        f"c{i}": circle(latitude=60 + i * 0.01, longitude=25, radius_m=100 + i) for i in range(1000)
    }
    index = FenceIndex(fences)
    assert len(index) == 1000
    assert index.containing(latitude=60.5, longitude=25) == {"c50"}
    assert crossings(index, {"c49"}, latitude=60.5, longitude=25) == ({"c50"}, {"c49"})


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-90, 90),
    st.floats(-360, 360),
    st.floats(1, 100_000),
    st.floats(0, 360),
)
def test_a_circle_anywhere_is_found_just_inside_its_edge_and_not_just_outside(
    latitude: float, longitude: float, radius: float, azimuth: float
) -> None:
    index = FenceIndex({"c": circle(latitude=latitude, longitude=longitude, radius_m=radius)})
    assert index.containing(latitude=latitude, longitude=longitude) == {"c"}
    lon, lat = moved(longitude, latitude, azimuth, radius - 0.5)
    assert index.containing(latitude=lat, longitude=lon) == {"c"}
    lon, lat = moved(longitude, latitude, azimuth, radius + 0.5)
    assert index.containing(latitude=lat, longitude=lon) == frozenset()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(), st.integers(), st.booleans()), st.floats(), st.floats())
def test_any_circle_either_builds_or_raises_a_fence_error(latitude, longitude, radius) -> None:
    with contextlib.suppress(FenceError):
        circle(latitude=latitude, longitude=longitude, radius_m=radius)


MANY_FENCES = FenceIndex(
    {
        "square": parse_geojson(
            {"type": "Polygon", "coordinates": [[[24, 60], [25, 60], [25, 61], [24, 61], [24, 60]]]}
        )[0].fence,
        "date line": parse_geojson(
            {
                "type": "Polygon",
                "coordinates": [[[179, -1], [181, -1], [181, 1], [179, 1], [179, -1]]],
            }
        )[0].fence,
        "circle": circle(latitude=59.5, longitude=24.5, radius_m=20_000),
        "pole circle": circle(latitude=89.9, longitude=0, radius_m=30_000),
        "dateline circle": circle(latitude=0, longitude=180, radius_m=50_000),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    points=st.lists(
        st.one_of(
            st.tuples(st.floats(59.0, 61.5), st.floats(23.5, 25.5)),
            st.tuples(st.floats(-1.5, 1.5), st.floats(178, 182)),
            st.tuples(st.floats(89.5, 90), st.floats(-180, 180)),
            st.tuples(st.floats(-90, 90), st.floats(-360, 360)),
        ),
        max_size=40,
    )
)
def test_many_points_at_once_find_what_one_at_a_time_finds(
    points: list[tuple[float, float]],
) -> None:
    many = MANY_FENCES.containing_many(
        latitudes=[lat for lat, _ in points], longitudes=[lon for _, lon in points]
    )
    assert many == [MANY_FENCES.containing(latitude=lat, longitude=lon) for lat, lon in points]


def test_a_segment_finds_the_fences_it_passes_through_and_no_other() -> None:
    assert MANY_FENCES.crossed_by(start=(0.0, 178.0), end=(0.0, -178.0)) == {
        "date line",
        "dateline circle",
    }
    # North of the square fence and of the circle's reach.
    assert MANY_FENCES.crossed_by(start=(61.3, 23.0), end=(61.3, 26.0)) == set()
    # Towards the circle (20 km, about 0.36 degrees of longitude there): short of it, then into it.
    assert MANY_FENCES.crossed_by(start=(59.5, 23.0), end=(59.5, 24.1)) == set()
    assert MANY_FENCES.crossed_by(start=(59.5, 23.0), end=(59.5, 24.2)) == {"circle"}
    # Past the corner of its box, outside the circle itself.
    assert MANY_FENCES.crossed_by(start=(59.66, 24.78), end=(59.7, 24.9)) == set()


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(
                ["square", "date line", "circle", "pole circle", "dateline circle", "gone"]
            ),
            st.floats(-90, 90),
            st.floats(-360, 360),
        ),
        max_size=30,
    ),
    margin=st.sampled_from([0.0, 40.0, 5_000.0]),
)
def test_many_exit_margins_at_once_agree_with_one_at_a_time(
    pairs: list[tuple[str, float, float]], margin: float
) -> None:
    many = MANY_FENCES.beyond_many(
        [key for key, _, _ in pairs],
        latitudes=[lat for _, lat, _ in pairs],
        longitudes=[lon for _, _, lon in pairs],
        margin_m=margin,
    )
    one_at_a_time = []
    for key, lat, lon in pairs:
        fence = MANY_FENCES.get(key)
        one_at_a_time.append(
            fence is None or fence.is_beyond(latitude=lat, longitude=lon, margin_m=margin)
        )
    assert many == one_at_a_time


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "not GeoJSON: empty"),
        (
            '{"type": "Feature", "geometry": ',
            "not GeoJSON: not JSON (Expecting value at line 1, column 33)",
        ),
        (b"\x95\xd7 binary", "not GeoJSON: not UTF-8 text (byte 0 cannot be read)"),
        (
            '{"type": "Point", "coordinates": [24.9, 60.1]}',
            "not a fence: a bare Point has no radius",
        ),
    ],
)
def test_text_that_is_not_a_fence_is_refused_in_words_not_python(
    text: str | bytes, message: str
) -> None:
    with pytest.raises(FenceError) as refused:
        parse_geojson_text(text)
    assert str(refused.value).startswith(message)
    assert "Error(" not in str(refused.value)
