"""The admin's map widget in headless Chromium: an operator draws a fence by
clicking on the map and saves it, opens a stored fence to edit it, sees a
refused drawing's message beside the map, and sees a tracker's recent trail."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tests import support
from tests.test_admin import BOW_TIE, SQUARE, feature
from tracking.geofence_import import import_geofences
from tracking.models import Geofence, Position, Tracker, Visit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HELSINKI_SAMPLE = (
    Path(__file__).resolve().parent.parent / "tracking" / "geofence_samples" / "helsinki.geojson"
)


@pytest.fixture(scope="module", autouse=True)
def database_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an event loop running in this thread, which
    Django takes for async code; the test's own database calls are synchronous."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(autouse=True)
def no_tiles() -> Iterator[None]:
    # This machine has no internet: the widget must stand on the bundled land outline.
    with override_settings(MAP_TILE_URL=""):
        yield


@pytest.fixture
def admin_page(live_server: Any, admin_user: Any, page: Any) -> Any:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.base = live_server.url
    return page


def open_add_page(page: Any, *, name: str | None = None) -> None:
    page.goto(f"{page.base}/admin/tracking/geofence/add/")
    page.wait_for_selector(".fence-map[data-ready=yes] .leaflet-pm-toolbar")
    if name is not None:
        page.fill("#id_name", name)


def canvas_box(page: Any) -> dict[str, float]:
    box = page.locator(".fence-map-canvas").bounding_box()
    assert box is not None
    return box


def click_at(page: Any, x: float, y: float) -> None:
    box = canvas_box(page)
    page.mouse.click(box["x"] + x, box["y"] + y)


def latlng_at(page: Any, x: float, y: float) -> dict[str, float]:
    """Where a point of the map (pixels from its top left) is."""
    return dict(
        page.evaluate(
            """([x, y]) => {
                const map = document.querySelector(".fence-map").fenceDrawing.map;
                const at = map.containerPointToLatLng([x, y]);
                return {latitude: at.lat, longitude: at.lng};
            }""",
            [x, y],
        )
    )


def the_fence(name: str) -> Geofence:
    return Geofence.objects.get(name=name)


def save(page: Any) -> None:
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")


def test_an_operator_draws_a_polygon_on_the_map_and_saves_it(admin_page: Any) -> None:
    page = admin_page
    open_add_page(page)
    assert page.locator(".fence-map-status").inner_text().startswith("Nothing drawn yet")
    assert not page.locator(".fence-map-raw").evaluate("details => details.open")
    assert page.locator(".fence-map-note").inner_text().startswith("No map tiles")
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-add-empty.png"), full_page=True)

    page.fill("#id_name", "Drawn square")
    page.click("[title='Draw Polygons']")
    for x, y in [(300, 150), (500, 150), (500, 350), (300, 350), (300, 150)]:
        click_at(page, x, y)
    page.wait_for_selector(".fence-map[data-shape=polygon]")
    assert page.locator(".fence-map-status").inner_text() == "Polygon, 4 vertices."
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-add-polygon.png"), full_page=True)
    inside, outside = (latlng_at(page, x, y) for x, y in [(400, 250), (200, 250)])
    save(page)

    stored = the_fence("Drawn square")
    data = json.loads(stored.geojson)
    assert data["type"] == "Feature"
    assert data["geometry"]["type"] == "Polygon"
    assert len(data["geometry"]["coordinates"][0]) == 5
    # What was drawn around is inside, what was left out is not.
    assert stored.fence.contains(**inside)
    assert not stored.fence.contains(**outside)
    assert page.errors == []


def test_an_operator_draws_a_circle_and_types_its_radius(admin_page: Any) -> None:
    page = admin_page
    open_add_page(page, name="Drawn circle")
    page.click("[title='Draw Circle']")
    click_at(page, 400, 240)
    click_at(page, 480, 240)
    page.wait_for_selector(".fence-map[data-shape=circle]")
    radius = page.locator(".fence-map-radius input")
    assert radius.is_visible()
    assert float(radius.input_value()) > 0
    radius.fill("250")
    page.wait_for_function(
        "() => JSON.parse(document.querySelector('#id_geojson').value).properties.radius === 250"
    )
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-add-circle.png"), full_page=True)
    save(page)

    fence = the_fence("Drawn circle").fence
    assert fence.radius_m == 250
    assert page.errors == []


def test_a_stored_multipolygon_with_a_hole_is_shown_for_editing(admin_page: Any) -> None:
    page = admin_page
    holed = [
        [[24.90, 60.15], [24.98, 60.15], [24.98, 60.19], [24.90, 60.19], [24.90, 60.15]],
        [[24.93, 60.16], [24.95, 60.16], [24.95, 60.18], [24.93, 60.18], [24.93, 60.16]],
    ]
    other = [[[25.00, 60.15], [25.02, 60.15], [25.02, 60.17], [25.00, 60.15]]]
    multipolygon: dict[str, object] = {"type": "MultiPolygon", "coordinates": [holed, other]}
    fence = Geofence.objects.create(name="Holed pair", geojson=feature(multipolygon))
    page.goto(f"{page.base}/admin/tracking/geofence/{fence.pk}/change/")
    page.wait_for_selector(".fence-map[data-shape=polygon]")
    assert (
        page.locator(".fence-map-status").inner_text() == "Multipolygon of 2, 11 vertices, 1 hole."
    )
    # The outline is in view: its rings are drawn as one path with the hole.
    assert page.locator(".fence-map-canvas path.leaflet-interactive").count() == 1
    page.screenshot(
        path=str(support.ARTIFACTS / "admin-geofence-change-multipolygon.png"), full_page=True
    )
    # Saved untouched, the fence keeps its shape.
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    assert the_fence("Holed pair").fence.contains(latitude=60.155, longitude=24.91)
    assert not the_fence("Holed pair").fence.contains(latitude=60.17, longitude=24.94)


def test_the_change_page_of_a_helsinki_fence_draws_it(admin_page: Any) -> None:
    page = admin_page
    import_geofences(raw=HELSINKI_SAMPLE.read_bytes(), default_name="helsinki")
    fence, *others = Geofence.objects.order_by("name")
    tram = Tracker.objects.create(id=uuid.uuid4(), name="Tram 7")
    now = datetime.now(UTC)
    Visit.objects.create(
        tracker=tram,
        geofence=fence,
        entered_at=now - timedelta(hours=2),
        exited_at=now - timedelta(hours=1),
    )
    Visit.objects.create(tracker=tram, geofence=fence, entered_at=now - timedelta(minutes=5))
    page.goto(f"{page.base}/admin/tracking/geofence/{fence.pk}/change/")
    page.wait_for_selector(".fence-map[data-shape]:not([data-shape=none])")
    assert "inside now" in page.locator(".latest-visits").inner_text()
    # The other fences are there, faint and named, for orientation.
    neighbours = page.locator(".fence-map-neighbour").all_inner_texts()
    assert sorted(neighbours) == sorted(other.name for other in others)
    page.screenshot(
        path=str(support.ARTIFACTS / "admin-geofence-change-helsinki.png"), full_page=True
    )
    assert page.errors == []


def test_a_refused_shape_is_explained_beside_the_map(admin_page: Any) -> None:
    page = admin_page
    open_add_page(page, name="Bow tie")
    page.click(".fence-map-raw summary")
    page.fill("#id_geojson", BOW_TIE)
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote")
    message = page.locator(".field-geojson .errorlist").inner_text()
    assert "crosses itself" in message or "self" in message, message
    # The refused shape is still on the map to fix.
    page.wait_for_selector(".fence-map[data-shape=polygon]")
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-error.png"), full_page=True)
    assert not Geofence.objects.filter(name="Bow tie").exists()


def test_a_trackers_page_shows_its_recent_trail_and_latest_position(admin_page: Any) -> None:
    page = admin_page
    tracker = Tracker.objects.create(id=uuid.uuid4(), name="Tram 3")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    positions = [
        Position(
            tracker=tracker,
            timestamp=start + timedelta(seconds=30 * step),
            latitude=60.160 + 0.0008 * step,
            longitude=24.930 + 0.0005 * step,
        )
        for step in range(40)
    ]
    Position.objects.bulk_create(positions)
    last = positions[-1]
    Tracker.objects.filter(pk=tracker.pk).update(
        latitude=last.latitude, longitude=last.longitude, position_at=last.timestamp
    )
    centre: dict[str, object] = {"type": "Point", "coordinates": [last.longitude, last.latitude]}
    fence = Geofence.objects.create(name="Around the end", geojson=feature(centre, radius=400))
    Visit.objects.create(tracker=tracker, geofence=fence, entered_at=last.timestamp)

    page.goto(f"{page.base}/admin/tracking/tracker/{tracker.pk}/change/")
    page.wait_for_selector(".fence-map[data-ready=yes]")
    assert page.locator(".fence-map").get_attribute("data-trail-points") == "40"
    assert page.locator(".fence-map-inside").inner_text() == "Inside now (dashed): Around the end."
    assert "Latest: " in page.locator(".leaflet-tooltip").inner_text()
    page.locator(".field-trail").scroll_into_view_if_needed()
    page.screenshot(path=str(support.ARTIFACTS / "admin-tracker-trail.png"), full_page=True)
    assert page.errors == []


def test_an_operator_drags_a_vertex_of_a_stored_fence_and_saves_it(admin_page: Any) -> None:
    page = admin_page
    fence = Geofence.objects.create(name="Square", geojson=SQUARE)
    page.goto(f"{page.base}/admin/tracking/geofence/{fence.pk}/change/")
    page.wait_for_selector(".fence-map[data-shape=polygon]")
    page.click("[title='Edit Layers']")
    corner = page.locator(".fence-map-canvas .marker-icon:not(.marker-icon-middle)").first
    box = corner.bounding_box()
    assert box is not None
    start = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] - 60, start[1] - 60, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "square => document.querySelector('#id_geojson').value !== square", arg=SQUARE
    )
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")

    ring = json.loads(the_fence("Square").geojson)["geometry"]["coordinates"][0]
    before = json.loads(SQUARE)["geometry"]["coordinates"][0]
    assert len(ring) == len(before)
    assert sum(1 for point, old in zip(ring, before, strict=True) if point != old) in (1, 2)
    assert page.errors == []


def test_the_import_page_names_what_is_wrong_then_imports_the_helsinki_sample(
    admin_page: Any, tmp_path: Path
) -> None:
    page = admin_page
    page.goto(f"{page.base}/admin/tracking/geofence/")
    page.click("text=Import GeoJSON")
    page.wait_for_selector("input[type=file]")
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-import.png"), full_page=True)

    bad = tmp_path / "bad.geojson"
    bad.write_text(
        json.dumps(
            {"type": "FeatureCollection", "features": [json.loads(SQUARE), json.loads(BOW_TIE)]}
        )
    )
    page.set_input_files("input[type=file]", str(bad))
    page.click("input[name=_import]")
    page.wait_for_selector(".errornote")
    assert "feature 1: the shape crosses itself" in page.locator(".errorlist").inner_text()
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-import-error.png"), full_page=True)

    page.set_input_files("input[type=file]", str(HELSINKI_SAMPLE))
    page.click("input[name=_import]")
    page.wait_for_selector("#result_list")
    assert "Imported" in page.locator(".messagelist").inner_text()
    page.screenshot(path=str(support.ARTIFACTS / "admin-geofence-imported.png"), full_page=True)
    assert Geofence.objects.count() > 1


def test_pasting_geojson_in_the_folded_section_redraws_the_map(admin_page: Any) -> None:
    page = admin_page
    open_add_page(page, name="Pasted")
    page.click(".fence-map-raw summary")
    page.fill("#id_geojson", feature({"type": "Point", "coordinates": [24.94, 60.17]}, radius=300))
    page.locator("#id_geojson").dispatch_event("change")

    page.wait_for_selector(".fence-map[data-shape=circle]")
    assert page.locator(".fence-map-radius input").input_value() == "300.0"
    page.fill("#id_geojson", "{not json")
    page.locator("#id_geojson").dispatch_event("change")
    page.wait_for_selector(".fence-map[data-shape=none]")
    assert "no shape the map can draw" in page.locator(".fence-map-status").inner_text()


def test_a_fence_across_the_antimeridian_is_drawn_the_short_way(admin_page: Any) -> None:
    page = admin_page
    fiji = [[[179.9, -17.0], [-179.9, -17.0], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.0]]]
    fence = Geofence.objects.create(
        name="Across", geojson=feature({"type": "Polygon", "coordinates": fiji})
    )
    page.goto(f"{page.base}/admin/tracking/geofence/{fence.pk}/change/")
    page.wait_for_selector(".fence-map[data-shape=polygon]")

    width = page.evaluate(
        """() => {
            const bounds = document.querySelector(".fence-map").fenceDrawing.layer.getBounds();
            return bounds.getEast() - bounds.getWest();
        }"""
    )
    assert abs(width - 0.2) < 1e-6
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    assert Geofence.objects.get(name="Across").fence.contains(latitude=-16.95, longitude=180.0)
