"""The overview's areas: requests read from a client, counts summed up the levels."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracking.areas import (
    FINEST,
    LEVELS,
    MAX_AREAS,
    AreaSummary,
    InvalidOverviewRequest,
    Overview,
    OverviewRequest,
    parse_overview_request,
)
from tracking.grid import Cell, Grid

WORLD = [-180, -90, 180, 90]


def row_at(latitude: float, longitude: float, trackers: int = 1) -> tuple[Cell, AreaSummary]:
    """The finest area's row of ``trackers`` trackers all at one point, as the database sums it."""
    area = Cell(math.floor(longitude / FINEST), math.floor(latitude / FINEST))
    summary = AreaSummary(
        trackers,
        latitude * trackers,
        longitude * trackers,
        latitude,
        latitude,
        longitude,
        longitude,
    )
    return area, summary


HELSINKI = row_at(60.17, 24.94, 40)
NEW_YORK = row_at(40.71, -74.0, 30)
SYDNEY = row_at(-33.87, 151.21, 20)
FIJI_EAST = row_at(-16.8, 179.5, 5)
FIJI_WEST = row_at(-16.9, -179.8, 3)
CITIES = [HELSINKI, NEW_YORK, SYDNEY, FIJI_EAST, FIJI_WEST]


def test_the_levels_nest_so_the_finest_counts_sum_up_to_every_level() -> None:
    assert all(coarse % fine == 0 for coarse, fine in itertools.pairwise(LEVELS))
    overview = Overview.rolled_up(CITIES)
    assert overview.total == 98
    for level in LEVELS:
        assert sum(area.trackers for area in overview.areas[level].values()) == 98


def test_a_world_view_at_every_level_shows_areas_adding_up_to_the_total() -> None:
    overview = Overview.rolled_up(CITIES)
    for level in (45,):  # the one level whose world view is within the limit
        payload = overview.payload(parse(level, WORLD))
        assert sum(area["count"] for area in payload["areas"]) == payload["total"] == 98


def test_an_area_holds_the_mean_position_and_the_box_of_its_trackers() -> None:
    rows = [row_at(60.0, 24.0, 1), row_at(61.0, 25.0, 3)]
    payload = Overview.rolled_up(rows).payload(parse(15, [20, 55, 30, 65]))
    assert payload == {
        "areaDegrees": 15,
        "total": 4,
        "areas": [
            {
                "area": [1, 4],
                "count": 4,
                "latitude": 60.75,
                "longitude": 24.75,
                "bounds": [24.0, 60.0, 25.0, 61.0],
            }
        ],
    }


def test_an_areas_count_stands_where_most_of_its_trackers_are_not_between_places() -> None:
    # Sydney and the east of Fiji share an area of 45°: their mean is in the Tasman Sea.
    sydney = [row_at(-33.87, 151.21, 6), row_at(-37.81, 144.96, 1)]  # and one in Melbourne
    fiji = [row_at(-16.5, 179.9, 4)]
    wide = Overview.rolled_up(sydney + fiji).payload(parse(45, [135, -45, 180, 0]))
    (area,) = wide["areas"]
    assert (area["count"], area["latitude"], area["longitude"]) == (11, -33.87, 151.21)
    assert area["bounds"] == [144.96, -37.81, 179.9, -16.5]
    # A tie goes to the same place whatever order the database answers in.
    tied = [row_at(-33.87, 151.21, 4), *fiji]
    for rows in (tied, tied[::-1]):
        (area,) = Overview.rolled_up(rows).payload(parse(45, [135, -45, 180, 0]))["areas"]
        assert (area["latitude"], area["longitude"]) == (-33.87, 151.21)


def test_a_view_across_the_antimeridian_has_west_greater_than_east() -> None:
    overview = Overview.rolled_up(CITIES)
    payload = overview.payload(parse(3, [175, -20, -175, -10]))
    assert [area["area"] for area in payload["areas"]] == [[-60, -6], [59, -6]]
    assert sum(area["count"] for area in payload["areas"]) == 8


def test_only_non_empty_areas_meeting_the_view_are_sent() -> None:
    overview = Overview.rolled_up(CITIES)
    payload = overview.payload(parse(15, [0, 30, 45, 75]))
    assert [area["area"] for area in payload["areas"]] == [[1, 4]]
    assert payload["total"] == 98


def test_a_position_at_latitude_90_is_counted_in_the_top_row() -> None:
    overview = Overview.rolled_up([row_at(90.0, 10.0)])
    assert list(overview.areas[45]) == [Cell(0, 1)]
    assert list(overview.areas[FINEST]) == [Cell(3, 29)]


def test_the_areas_of_a_view_are_counted_as_the_cells_covering_a_viewport() -> None:
    request = parse(15, [-10.5, 40, 20, 50])
    assert list(request.covering) == sorted(
        Grid(15).cells_covering(west=-10.5, south=40, east=20, north=50)
    )


def test_null_stops_and_ignores_the_view() -> None:
    assert parse_overview_request(None, "anything") is None


@pytest.mark.parametrize(
    ("area_degrees", "view", "error"),
    [
        (10, WORLD, "areaDegrees must be one of 45, 15, 3, or null to stop"),
        (True, WORLD, "areaDegrees must be one of 45, 15, 3, or null to stop"),
        ("15", WORLD, "areaDegrees must be one of 45, 15, 3, or null to stop"),
        (15, [0, 0, 10], "view must be an array of four numbers [west, south, east, north]"),
        (15, {"west": 0}, "view must be an array of four numbers [west, south, east, north]"),
        (15, [0, 0, 10, True], "view must be an array of four numbers [west, south, east, north]"),
        (15, [0, 0, 200, 10], "view's longitudes must be within [-180, 180]"),
        (15, [0, -95, 10, 10], "view's longitudes must be within [-180, 180]"),
        (15, [0, 10, 10, 0], "view's south must not be north of its north"),
        (3, WORLD, "This view covers 7200 areas of 3°, more than the 200"),
        (15, WORLD, "This view covers 288 areas of 15°, more than the 200"),
    ],
)
def test_a_bad_request_is_refused_with_a_sentence_saying_why(
    area_degrees: object, view: object, error: str
) -> None:
    with pytest.raises(InvalidOverviewRequest) as refused:
        parse_overview_request(area_degrees, view)
    assert str(refused.value).startswith(error)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
near_views = st.lists(
    st.floats(-200, 200, allow_nan=False) | st.integers(-200, 200), min_size=3, max_size=5
)


@given(
    area_degrees=st.sampled_from([*LEVELS, None, 0, 1, 15.0, 45.5]) | json_values,
    view=near_views | json_values,
)
def test_any_arguments_make_a_request_or_a_refusal_never_anything_else(
    area_degrees: Any, view: Any
) -> None:
    try:
        request = parse_overview_request(area_degrees, view)
    except InvalidOverviewRequest as refused:
        assert str(refused)
        return
    if request is not None:
        assert request.level in LEVELS
        assert len(request.covering) <= MAX_AREAS
        assert len(set(request.covering)) == len(request.covering)
        assert all(Grid(request.level).contains(area) for area in request.covering)


@given(
    points=st.lists(
        st.tuples(st.floats(-90, 90), st.floats(-180, 180, exclude_max=True), st.integers(1, 9)),
        max_size=30,
    )
)
def test_every_level_adds_up_to_the_total_wherever_the_trackers_are(
    points: list[tuple[float, float, int]],
) -> None:
    overview = Overview.rolled_up([row_at(lat, lng, n) for lat, lng, n in points])
    assert overview.total == sum(n for _, _, n in points)
    for level in LEVELS:
        assert sum(area.trackers for area in overview.areas[level].values()) == overview.total
        assert all(Grid(level).contains(area) for area in overview.areas[level])
    world = overview.payload(parse(45, WORLD))
    assert sum(area["count"] for area in world["areas"]) == world["total"]


def parse(level: int, view: Sequence[float]) -> OverviewRequest:
    request = parse_overview_request(level, view)
    assert request is not None
    return request
