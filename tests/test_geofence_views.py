from __future__ import annotations

import json
import logging
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client, override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tracking import geofence_views
from tracking.geofence_extents import EXTENTS, Extent, ExtentCache, extent_of
from tracking.geofence_views import parse_bbox
from tracking.models import Geofence, Tracker, Visit

pytestmark = pytest.mark.django_db

GEOFENCES = "/api/geofences"


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    EXTENTS.clear()


def square(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def feature(geometry: dict[str, Any], **properties: Any) -> str:
    return json.dumps({"type": "Feature", "properties": properties, "geometry": geometry})


def fence(
    name: str, geometry: dict[str, Any], *, active: bool = True, **properties: Any
) -> Geofence:
    return Geofence.objects.create(
        name=name, geojson=feature(geometry, **properties), is_active=active
    )


KAMPPI = polygon(square(24.928, 60.166, 24.936, 60.170))
# A square with a square hole.
DONUT = polygon(square(24.90, 60.10, 24.98, 60.14), square(24.92, 60.11, 24.96, 60.13))
TWO_ISLANDS = {
    "type": "MultiPolygon",
    "coordinates": [[square(25.0, 60.0, 25.1, 60.1)], [square(26.0, 60.0, 26.1, 60.1)]],
}
# 179.5 E to 179.5 W, in Fiji.
DATELINE = polygon(
    [[179.5, -17.0], [-179.5, -17.0], [-179.5, -16.5], [179.5, -16.5], [179.5, -17.0]]
)
CIRCLE = {"type": "Point", "coordinates": [-74.006, 40.7128]}


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [f["properties"]["name"] for f in response.json()["features"]]


def test_the_fences_in_a_box_are_answered_as_geojson_with_their_centre(client: Client) -> None:
    kamppi = fence("Kamppi", KAMPPI)
    fence("New York", CIRCLE, radius=500)
    response = client.get(GEOFENCES, {"bbox": "24.9,60.1,25.0,60.2"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/geo+json"
    body = response.json()
    assert body == {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": str(kamppi.pk),
                "geometry": KAMPPI,
                "properties": {
                    "id": str(kamppi.pk),
                    "name": "Kamppi",
                    "centre": {
                        "latitude": pytest.approx(60.168),
                        "longitude": pytest.approx(24.932),
                    },
                    "radius": None,
                },
            }
        ],
    }


def test_a_circle_is_its_point_and_its_radius_in_metres(client: Client) -> None:
    fence("New York", CIRCLE, radius=500, subType="Circle")
    (circle,) = client.get(GEOFENCES, {"bbox": "-75,40,-73,41"}).json()["features"]
    assert circle["geometry"] == CIRCLE
    assert circle["properties"]["radius"] == 500
    assert circle["properties"]["centre"] == {"latitude": 40.7128, "longitude": -74.006}


def test_a_circle_is_found_by_a_box_that_meets_only_its_edge(client: Client) -> None:
    fence("New York", CIRCLE, radius=5000)
    # 0.04 degrees of latitude (4.4 km) north of the centre: inside the radius.
    assert names(client.get(GEOFENCES, {"bbox": "-74.1,40.7528,-73.9,40.8"})) == ["New York"]
    # 0.06 degrees (6.7 km): beyond it.
    assert names(client.get(GEOFENCES, {"bbox": "-74.1,40.7728,-73.9,40.8"})) == []


def test_without_a_box_every_active_fence_is_answered_by_name(client: Client) -> None:
    fence("Kamppi", KAMPPI)
    fence("Fiji", DATELINE)
    fence("Off", TWO_ISLANDS, active=False)
    assert names(client.get(GEOFENCES)) == ["Fiji", "Kamppi"]


def test_an_inactive_fence_is_left_out(client: Client) -> None:
    fence("Kamppi", KAMPPI, active=False)
    assert names(client.get(GEOFENCES, {"bbox": "24,60,25,61"})) == []


def test_a_fence_with_a_hole_is_answered_with_its_hole(client: Client) -> None:
    fence("Donut", DONUT)
    (donut,) = client.get(GEOFENCES, {"bbox": "24.9,60.1,25.0,60.2"}).json()["features"]
    assert donut["geometry"] == DONUT


def test_a_multipolygon_is_found_by_a_box_on_either_island(client: Client) -> None:
    fence("Islands", TWO_ISLANDS)
    assert names(client.get(GEOFENCES, {"bbox": "25.05,60.05,25.06,60.06"})) == ["Islands"]
    assert names(client.get(GEOFENCES, {"bbox": "26.05,60.05,26.06,60.06"})) == ["Islands"]
    assert names(client.get(GEOFENCES, {"bbox": "20,50,22,52"})) == []


def test_a_fence_across_the_antimeridian_is_found_from_either_side(client: Client) -> None:
    fence("Fiji", DATELINE)
    assert names(client.get(GEOFENCES, {"bbox": "179,-18,179.9,-16"})) == ["Fiji"]
    assert names(client.get(GEOFENCES, {"bbox": "-179.9,-18,-179,-16"})) == ["Fiji"]
    assert names(client.get(GEOFENCES, {"bbox": "170,-18,179,-16"})) == []
    (fiji,) = client.get(GEOFENCES, {"bbox": "179,-18,179.9,-16"}).json()["features"]
    assert fiji["properties"]["centre"]["longitude"] == pytest.approx(-180.0)
    assert fiji["geometry"] == DATELINE


def test_a_box_across_the_antimeridian_holds_fences_on_both_sides(client: Client) -> None:
    fence("East of it", polygon(square(-179, -17, -178, -16)))
    fence("West of it", polygon(square(178, -17, 179, -16)))
    fence("Far", polygon(square(0, -17, 1, -16)))
    assert names(client.get(GEOFENCES, {"bbox": "177,-18,-177,-15"})) == [
        "East of it",
        "West of it",
    ]


def test_a_box_that_only_touches_a_fence_still_holds_it(client: Client) -> None:
    fence("Kamppi", KAMPPI)
    # The fence's east edge is 24.936; the box starts there.
    assert names(client.get(GEOFENCES, {"bbox": "24.936,60.16,24.95,60.17"})) == ["Kamppi"]


def test_past_the_limit_the_collection_is_truncated(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(geofence_views, "GEOFENCES_PER_RESPONSE", 2)
    for number in range(3):
        fence(f"Fence {number}", polygon(square(24 + number / 10, 60, 24.05 + number / 10, 60.05)))
    body = client.get(GEOFENCES).json()
    assert [f["properties"]["name"] for f in body["features"]] == ["Fence 0", "Fence 1"]
    assert body["truncated"] is True
    monkeypatch.setattr(geofence_views, "GEOFENCES_PER_RESPONSE", 3)
    assert "truncated" not in client.get(GEOFENCES).json()


def test_a_fence_whose_stored_geojson_no_longer_parses_is_left_out_and_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    fence("Kamppi", KAMPPI)
    broken = fence("Broken", KAMPPI)
    Geofence.objects.filter(pk=broken.pk).update(geojson='{"type": "Feature", "geometry": 3}')
    with caplog.at_level(logging.WARNING, logger="tracking.geofences"):
        assert names(client.get(GEOFENCES)) == ["Kamppi"]
        assert names(client.get(GEOFENCES)) == ["Kamppi"]
    logged = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(logged) == 1 and f"Geofence {broken.pk}" in logged[0], logged


def test_an_edited_fence_is_answered_as_it_is_now(client: Client) -> None:
    kamppi = fence("Kamppi", KAMPPI)
    assert names(client.get(GEOFENCES, {"bbox": "24.9,60.1,25.0,60.2"})) == ["Kamppi"]
    kamppi.geojson = feature(TWO_ISLANDS)
    kamppi.save()
    assert names(client.get(GEOFENCES, {"bbox": "24.9,60.1,24.95,60.2"})) == []
    assert client.get(GEOFENCES).json()["features"][0]["geometry"] == TWO_ISLANDS


def test_fences_are_parsed_once_per_version(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence("Kamppi", KAMPPI)
    EXTENTS.clear()
    parsed: list[str] = []

    def counted(text: str) -> Extent:
        parsed.append(text)
        return extent_of(text)

    monkeypatch.setattr("tracking.geofence_extents.extent_of", counted)
    client.get(GEOFENCES)
    client.get(GEOFENCES, {"bbox": "0,0,1,1"})
    assert len(parsed) == 1


def test_the_cache_keeps_at_most_its_bound() -> None:
    cache = ExtentCache(max_entries=2)
    text = feature(KAMPPI)
    now = datetime(2026, 11, 29)
    for pk in range(5):
        cache.extent((pk, now), text)
    assert len(cache) == 2
    small = ExtentCache(max_bytes=len(extent_of(text).geometry) * 3)
    for pk in range(5):
        small.extent((pk, now), text)
    assert len(small) == 3


@pytest.mark.parametrize(
    ("bbox", "says"),
    [
        ("", "four numbers"),
        ("24,60,25", "in degrees; got 3 parts"),
        ("24,60,25,61,0", "got 5 parts"),
        ("24;60;25;61", "got 1 part"),
        ("west,60,25,61", "bbox west must be a number, got 'west'"),
        ("24,60,nan,61", "bbox east must be a finite number"),
        ("24,60,25,inf", "bbox north must be a finite number"),
        ("24,60,25,1e999", "bbox north must be a finite number"),
        ("24,61,25,60", "bbox south 61 is north of north 60"),
        ("24,-91,25,60", "bbox south -91 is out of range (-90 to 90)"),
        ("181,60,25,61", "bbox west 181 is out of range (-180 to 180)"),
        ("24,60\x00,25,61", "NUL character"),
    ],
)
def test_a_bad_box_is_refused_saying_what_is_wrong(client: Client, bbox: str, says: str) -> None:
    response = client.get(GEOFENCES, {"bbox": bbox})
    assert response.status_code == 400
    assert says in response.json()["error"]


def test_a_box_across_the_antimeridian_is_two_boxes() -> None:
    assert parse_bbox("170,-20,-170,-10") == ((170, -20, 180, -10), (-180, -20, -170, -10))
    assert parse_bbox("-180,-90,180,90") == ((-180, -90, 180, 90),)


@override_settings(MAP_PUBLIC=False)
def test_signed_out_visitors_may_not_read_the_fences_of_a_private_map(client: Client) -> None:
    assert client.get(GEOFENCES).status_code == 401
    assert client.get(f"/api/trackers/{uuid.uuid4()}/visits").status_code == 401


def test_the_fence_list_answers_only_get(client: Client) -> None:
    assert client.post(GEOFENCES).status_code == 405


# --- Visits ----------------------------------------------------------------------------------------


def visits_of(client: Client, tracker: Tracker, **query: Any) -> Any:
    return client.get(f"/api/trackers/{tracker.id}/visits", query)


def test_a_trackers_visits_are_answered_newest_first_in_unix_ms(client: Client) -> None:
    tracker = Tracker.objects.create(name="Tram 4")
    kamppi, islands = fence("Kamppi", KAMPPI), fence("Islands", TWO_ISLANDS)
    entered = datetime.fromisoformat("2026-11-29T10:00:00.123+00:00")
    Visit.objects.create(
        tracker=tracker,
        geofence=kamppi,
        entered_at=entered,
        exited_at=entered + timedelta(minutes=5),
    )
    Visit.objects.create(tracker=tracker, geofence=islands, entered_at=entered + timedelta(hours=1))
    response = visits_of(client, tracker)
    assert response.status_code == 200
    ms = round(entered.timestamp() * 1000)
    assert response.json() == {
        "trackerId": str(tracker.id),
        "visits": [
            {
                "geofenceId": str(islands.pk),
                "geofenceName": "Islands",
                "enteredAt": ms + 3_600_000,
                "exitedAt": None,
            },
            {
                "geofenceId": str(kamppi.pk),
                "geofenceName": "Kamppi",
                "enteredAt": ms,
                "exitedAt": ms + 300_000,
            },
        ],
    }


def test_a_visit_pending_its_dwell_is_not_answered(client: Client) -> None:
    tracker = Tracker.objects.create(name="Tram 4")
    entered = datetime.fromisoformat("2026-11-29T10:00:00+00:00")
    Visit.objects.create(
        tracker=tracker, geofence=fence("Kamppi", KAMPPI), entered_at=entered, pending=True
    )
    assert visits_of(client, tracker).json()["visits"] == []


def test_the_limit_bounds_the_visits(client: Client) -> None:
    tracker = Tracker.objects.create(name="Tram 4")
    kamppi = fence("Kamppi", KAMPPI)
    start = datetime.fromisoformat("2026-11-29T10:00:00+00:00")
    for hour in range(3):
        at = start + timedelta(hours=hour)
        Visit.objects.create(
            tracker=tracker, geofence=kamppi, entered_at=at, exited_at=at + timedelta(minutes=1)
        )
    visits = visits_of(client, tracker, limit=2).json()["visits"]
    ms = round(start.timestamp() * 1000)
    assert [v["enteredAt"] for v in visits] == [ms + 7_200_000, ms + 3_600_000]


def test_an_unknown_or_inactive_tracker_has_no_visits(client: Client) -> None:
    assert client.get(f"/api/trackers/{uuid.uuid4()}/visits").status_code == 404
    hidden = Tracker.objects.create(name="Gone", is_active=False)
    response = visits_of(client, hidden)
    assert response.status_code == 404 and "No active tracker" in response.json()["error"]


@pytest.mark.parametrize(
    ("limit", "says"),
    [("0", "limit must be 1 or more"), ("501", "at most 500"), ("ten", "whole number")],
)
def test_a_bad_limit_is_refused(client: Client, limit: str, says: str) -> None:
    response = visits_of(client, Tracker.objects.create(name="Tram 4"), limit=limit)
    assert response.status_code == 400 and says in response.json()["error"]


# --- Whatever a client sends ---------------------------------------------------------------------

numbers = st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers(-400, 400).map(str)
part = numbers | st.text(max_size=12)
near_boxes = st.lists(part, min_size=0, max_size=6).map(",".join)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bbox=near_boxes | st.text(max_size=60))
@example(bbox="1,2,3,\x00")
@example(bbox="-180,-90,180,90")
@example(bbox="179,-90,-179,90")
def test_any_bbox_gets_fences_or_a_json_error(client: Client, bbox: str) -> None:
    if not Geofence.objects.exists():
        fence("Fiji", DATELINE)
        fence("Kamppi", KAMPPI)
    response = client.get(GEOFENCES, {"bbox": bbox})
    assert response.status_code in (200, 400), response.content
    body = response.json()
    if response.status_code == 400:
        assert body["error"].startswith("bbox") or "NUL" in body["error"]
        return
    values = [float(v) for v in bbox.split(",")]
    assert all(math.isfinite(v) for v in values)
    got = {f["properties"]["name"] for f in body["features"]}
    # Fence boxes carry a few metres of slack: tight sums must hold, loose ones bound.
    tight = {name for name, box in FENCE_BOXES.items() if box_meets(values, box, pad=0.0)}
    loose = {name for name, box in FENCE_BOXES.items() if box_meets(values, box, pad=0.01)}
    assert tight <= got <= loose


FENCE_BOXES = {"Fiji": (179.5, -17.0, 180.5, -16.5), "Kamppi": (24.928, 60.166, 24.936, 60.170)}


def box_meets(bbox: list[float], fence: tuple[float, ...], *, pad: float) -> bool:
    """Whether a query box meets a fence's box (longitudes possibly past 180), counted
    by overlapping longitude intervals a whole turn apart: another way than the view's."""
    west, south, east, north = bbox
    fence_west, fence_south, fence_east, fence_north = fence
    if not (south <= fence_north + pad and north >= fence_south - pad):
        return False
    east = east + 360 if west > east else east
    return any(
        west + turn <= fence_east + pad and fence_west - pad <= east + turn
        for turn in (-360, 0, 360)
    )


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=numbers | st.text(max_size=20))
def test_any_limit_gets_visits_or_a_json_error(client: Client, limit: str) -> None:
    tracker = Tracker.objects.first() or Tracker.objects.create(name="Tram 4")
    response = visits_of(client, tracker, limit=limit)
    assert response.status_code in (200, 400), response.content
    if response.status_code == 200:
        assert 1 <= int(limit) <= 500
        assert response.json()["visits"] == []
    else:
        error = response.json()["error"]
        assert error.startswith("limit") or "NUL" in error
