"""Spherical geometry the map shares with the server, pinned by tests/cases/geo.json.

The same cases run against maps/static/maps/geo.js in tests/test_map_page.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import cases
from tracking.grid import normalize_longitude
from tracking.simulation.fleet import haversine_distance, initial_bearing

CASES = cases.load("geo")
# The two languages' sine and cosine may differ in the last bit.
METRES = 0.01
DEGREES = 1e-6


def points(case: dict[str, Any]) -> dict[str, float]:
    (latitude1, longitude1), (latitude2, longitude2) = case["from"], case["to"]
    return {
        "latitude1": latitude1,
        "longitude1": longitude1,
        "latitude2": latitude2,
        "longitude2": longitude2,
    }


@pytest.mark.parametrize("case", CASES["distance"], ids=cases.case_id)
def test_the_distance_between_two_points_is_the_cases(case: dict[str, Any]) -> None:
    assert haversine_distance(**points(case)) == pytest.approx(case["metres"], abs=METRES)


@pytest.mark.parametrize("case", CASES["bearing"], ids=cases.case_id)
def test_the_bearing_from_one_point_to_another_is_the_cases(case: dict[str, Any]) -> None:
    assert initial_bearing(**points(case)) == pytest.approx(case["degrees"], abs=DEGREES)


@pytest.mark.parametrize("case", CASES["wrapLongitude"], ids=cases.case_id)
def test_a_longitude_folds_as_the_case_says(case: dict[str, Any]) -> None:
    assert normalize_longitude(case["longitude"]) == case["wrapped"]
