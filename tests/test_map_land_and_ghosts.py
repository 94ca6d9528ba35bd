"""The map without tiles and without ghosts, in headless Chromium: at city
zoom it draws the 1:10m coast (and at world zoom never fetches it), and a
tracker that stopped reporting fades when stale, leaves the map and the count
once offline, and comes back when it reports. The demo runs without reachable
tiles (this machine has no internet), over Redis and PostgreSQL, so this test
process can publish to the page's cells as ingestion does."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings

from tests import support
from tests.test_map_fences import HubPublisher, LiveDemo, hub, live  # noqa: F401  (fixtures)
from tests.test_map_page import module_url
from tracking.grid import Grid
from tracking.hub.publishing import publish_locations
from tracking.positions import LatestPosition

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

HELSINKI_CITY = "#11/60.1750/24.9450"
WORLD = "#3/45.0000/10.0000"
LAND = ("land-110m.json", "land-50m.json", "land-10m.json")


def drawn_outline(page: Any) -> str:
    """The file name of the land outline the map draws now."""
    url: str = page.evaluate("document.querySelector('.leaflet-land-pane').dataset.outline || ''")
    return url.rsplit("/", 1)[-1]


def wait_for_outline(page: Any, name: str) -> None:
    page.wait_for_function(
        """(name) => {
          const pane = document.querySelector('.leaflet-land-pane');
          return pane !== null && (pane.dataset.outline || '').endsWith('/' + name);
        }""",
        arg=name,
        timeout=30_000,
    )


def land_requests(page: Any) -> list[str]:
    """The land outline files the page has asked for, in order."""
    requested: list[str] = []

    def seen(request: Any) -> None:
        name = request.url.rsplit("/", 1)[-1]
        if name in LAND:
            requested.append(name)

    page.on("request", seen)
    return requested


def test_the_map_draws_the_finest_coast_at_city_zoom_and_only_the_coarse_one_at_world_zoom(
    live: LiveDemo,  # noqa: F811
    page: Any,
) -> None:
    requested = land_requests(page)
    page.goto(live.url + WORLD)
    wait_for_outline(page, "land-110m.json")
    # The finer files would have been asked for when the map was set up.
    assert requested == ["land-110m.json"]
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-land-world.png"))

    # To Helsinki at city zoom: the 1:10m outline, without the 1:50m on the way.
    page.evaluate(
        "() => { window.trackerMap.map.setView([60.175, 24.945], 11, { animate: false }); }"
    )
    wait_for_outline(page, "land-10m.json")
    assert requested == ["land-110m.json", "land-10m.json"]
    page.screenshot(path=str(support.ARTIFACTS / "map-land-helsinki-10m.png"))

    # Back out to the world: the coarse outline again, and no file fetched twice.
    page.evaluate("() => { window.trackerMap.map.setZoom(3, { animate: false }); }")
    wait_for_outline(page, "land-110m.json")
    page.evaluate("() => { window.trackerMap.map.setZoom(5, { animate: false }); }")
    wait_for_outline(page, "land-50m.json")
    page.evaluate("() => { window.trackerMap.map.setZoom(12, { animate: false }); }")
    wait_for_outline(page, "land-10m.json")
    assert requested == ["land-110m.json", "land-10m.json", "land-50m.json"]
    assert page.errors == []


def land_pixels(page: Any, west: float, east: float) -> int:
    """How many pixels of the land canvas between two longitudes of the view are land."""
    count: int = page.evaluate(
        """([west, east]) => {
          const { map } = window.trackerMap;
          const canvas = document.querySelector('.leaflet-land-pane canvas');
          const own = canvas.getBoundingClientRect();
          const box = map.getContainer().getBoundingClientRect();
          const ratio = canvas.width / own.width;
          const centre = map.getCenter().lat;
          const x = (lng) => (box.left + map.latLngToContainerPoint([centre, lng]).x - own.left) * ratio;
          const left = Math.max(0, Math.round(x(west)));
          const right = Math.min(canvas.width, Math.round(x(east)));
          const top = Math.round((box.top - own.top) * ratio);
          const height = Math.round(box.height * ratio);
          const pixels = canvas.getContext('2d').getImageData(left, top, right - left, height).data;
          let land = 0;
          for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) land += 1;
          return land;
        }""",
        [west, east],
    )
    return count


def test_the_fine_coast_shows_on_both_sides_of_the_antimeridian(
    live: LiveDemo,  # noqa: F811
    page: Any,
) -> None:
    # Vanua Levu and Taveuni west of 180 degrees, the Lau islands east of it.
    page.goto(live.url + "#9/-17.0000/180.0000")
    wait_for_outline(page, "land-10m.json")
    assert land_pixels(page, 178.5, 180) > 1000
    assert land_pixels(page, 180, 181.5) > 100
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-land-fiji.png"))
    assert page.errors == []


def test_when_the_finer_coast_cannot_be_had_the_coarse_one_stays(
    live: LiveDemo,  # noqa: F811
    page: Any,
) -> None:
    page.route(re.compile(r".*/land-(50|10)m\.json$"), lambda route: route.abort())
    with page.expect_console_message(
        lambda message: "land-10m.json unavailable" in message.text, timeout=30_000
    ):
        page.goto(live.url + HELSINKI_CITY)
    wait_for_outline(page, "land-110m.json")
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.trackers().length > 0", timeout=15_000
    )
    assert drawn_outline(page) == "land-110m.json"
    # What the offline demo looked like before: Helsinki's coast one straight diagonal.
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-land-helsinki-110m.png"))
    assert page.errors == []


# A square decoded from two quantised arcs, forwards and reversed, and one
# across the antimeridian (absolute arcs, without a transform).
SQUARES = {
    "type": "Topology",
    "transform": {"scale": [0.5, 0.25], "translate": [-10, 20]},
    "arcs": [[[0, 0], [4, 0], [0, 4]], [[4, 4], [-4, 0], [0, -4]]],
    "objects": {
        "land": {
            "type": "GeometryCollection",
            "geometries": [
                {"type": "Polygon", "arcs": [[0, 1]]},
                {"type": "MultiPolygon", "arcs": [[[-2, -1]]]},
            ],
        }
    },
}
ACROSS_180 = {
    "type": "Topology",
    "arcs": [[[179, 0], [-179, 0], [-179, 1], [179, 1], [179, 0]]],
    "objects": {
        "land": {"type": "GeometryCollection", "geometries": [{"type": "Polygon", "arcs": [[0]]}]}
    },
}


def test_land_js_decodes_topojson_arcs_into_rings_continuous_across_180_degrees(
    live: LiveDemo,  # noqa: F811
    page: Any,
) -> None:
    page.goto(live.url)
    answers = page.evaluate(
        """async ({ url, topologies }) => {
          const { landPolygons } = await import(url);
          return topologies.map((topology) => landPolygons(topology).map((polygon) => ({
            ...polygon, rings: polygon.rings.map((ring) => Array.from(ring)),
          })));
        }""",
        {"url": module_url(page, "land.js"), "topologies": [SQUARES, ACROSS_180]},
    )
    square = {"west": -10, "east": -8, "south": 20, "north": 21}
    assert answers[0] == [
        {"rings": [[-10, 20, -8, 20, -8, 21, -10, 21, -10, 20]], **square},
        {"rings": [[-10, 20, -10, 21, -8, 21, -8, 20, -10, 20]], **square},
    ]
    # One continuous ring (no line across the world), centred on the main world.
    assert answers[1] == [
        {
            "rings": [[-181, 0, -179, 0, -179, 1, -181, 1, -181, 0]],
            **{"west": -181, "east": -179, "south": 0, "north": 1},
        }
    ]


# --- Ghosts ---------------------------------------------------------------------------------

# The sea off Hanko: no demo route comes into its cell, so only the test's trackers are there.
QUIET_VIEW = "#15/59.8000/23.0000"
QUIET_CELL = (23, 59)


def report(publisher: HubPublisher, tracker: uuid.UUID, where: tuple[float, float], age: float):
    """Publish ``tracker``'s position at ``where``, stamped ``age`` seconds ago."""
    latitude, longitude = where
    position = LatestPosition(
        tracker_id=tracker,
        latitude=latitude,
        longitude=longitude,
        timestamp=datetime.now(UTC) - timedelta(seconds=age),
        cell=Grid(settings.TRACKING_GRID_DEGREES).cell_of(latitude=latitude, longitude=longitude),
    )
    publisher.run(publish_locations([position], ()))


def marker_alpha(page: Any, where: tuple[float, float]) -> int:
    """The opacity (0..255) of the marker canvas at the centre of a marker at ``where``."""
    alpha: int = page.evaluate(
        """([latitude, longitude]) => {
          const { map } = window.trackerMap;
          const canvas = document.querySelector('.tracker-canvas');
          const point = map.latLngToContainerPoint([latitude, longitude]);
          const box = map.getContainer().getBoundingClientRect();
          const own = canvas.getBoundingClientRect();
          const ratio = canvas.width / own.width;
          const x = Math.round((box.left + point.x - own.left) * ratio);
          const y = Math.round((box.top + point.y - own.top) * ratio);
          return canvas.getContext('2d').getImageData(x, y, 1, 1).data[3];
        }""",
        list(where),
    )
    return alpha


def point_at(page: Any, where: tuple[float, float]) -> None:
    box = page.locator("#map").bounding_box()
    point = page.evaluate(
        "([lat, lng]) => window.trackerMap.map.latLngToContainerPoint([lat, lng])", list(where)
    )
    page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])


def badge_count(page: Any) -> int:
    return int(page.locator("[data-status-count]").inner_text().split()[0])


def test_a_tracker_fades_when_stale_leaves_the_map_when_offline_and_comes_back_when_it_reports(
    live: LiveDemo,  # noqa: F811
    hub: HubPublisher,  # noqa: F811
    page: Any,
) -> None:
    page.goto(live.url + QUIET_VIEW)
    page.wait_for_function(
        "(cell) => window.trackerMap && window.trackerMap.status() === 'live'"
        " && window.trackerMap.cells().some(([x, y]) => x === cell[0] && y === cell[1])",
        arg=list(QUIET_CELL),
        timeout=15_000,
    )
    online, stale, offline = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    places = {online: (59.8000, 22.9960), stale: (59.8000, 23.0000), offline: (59.8000, 23.0040)}
    ages = {
        online: 0,
        stale: settings.TRACKING_ONLINE_SECONDS + 60,
        offline: settings.TRACKING_OFFLINE_SECONDS + 60,
    }
    for tracker in (online, stale, offline):
        report(hub, tracker, places[tracker], ages[tracker])
    page.wait_for_function(
        "(ids) => ids.every((id) => window.trackerMap.trackers().some((t) => t.id === id))",
        arg=[str(online), str(stale), str(offline)],
        timeout=10_000,
    )

    support.wait_until(lambda: badge_count(page) == 2, what="the badge to count 2 trackers")
    assert page.locator("[data-status-count]").inner_text() == "2 trackers"
    assert marker_alpha(page, places[online]) > 230
    assert 60 < marker_alpha(page, places[stale]) < 180  # faded: see-through
    assert marker_alpha(page, places[offline]) == 0  # a ghost: not drawn
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-ghosts.png"))

    # Pointing at the online tracker shows its tooltip; at the offline one, nothing is there.
    point_at(page, places[online])
    page.locator("#tracker-tooltip").wait_for(state="visible", timeout=5_000)
    point_at(page, places[offline])
    page.locator("#tracker-tooltip").wait_for(state="hidden", timeout=5_000)

    # It reports again: back on the map and in the count.
    report(hub, offline, places[offline], 0)
    support.wait_until(lambda: badge_count(page) == 3, what="the badge to count 3 trackers")
    assert marker_alpha(page, places[offline]) > 230
    page.screenshot(path=str(support.ARTIFACTS / "map-ghost-back.png"))
    assert page.errors == []
