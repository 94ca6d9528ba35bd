"""The map's overview in headless Chromium: a world view shows the trackers of
five cities far apart counted by area, adding up to every tracker, and a click
on an area zooms in until its trackers' markers show. The web server is
uvicorn with SQLite and no Redis; the positions are stored by consume_events,
a process of its own, as in production."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests import support
from tests.conftest import event_body

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# (latitude, longitude, trackers): Fiji's trackers straddle the antimeridian.
CITIES = {
    "Helsinki": (60.17, 24.94, 7),
    "New York": (40.71, -74.0, 5),
    "Sydney": (-33.87, 151.21, 4),
    "Buenos Aires": (-34.6, -58.38, 3),
    "Fiji": (-16.8, 179.998, 2),
}
TOTAL = sum(n for _, _, n in CITIES.values())
WORLD_VIEW = "#2/20.0000/10.0000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn over a fresh SQLite database holding the five cities' trackers."""
    folder = tmp_path_factory.mktemp("overview")
    env = support.base_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", MAP_TILE_URL="", MAP_PUBLIC="1"
    )
    migrated = support.manage(["migrate", "-v0"], env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    events = folder / "cities.jsonl"
    now = datetime.now(UTC)
    bodies = []
    for latitude, longitude, trackers in CITIES.values():
        for n in range(trackers):
            # A few hundred metres apart (Fiji's on both sides of 180°).
            spread = (n - (trackers - 1) / 2) * 0.004
            bodies.append(
                event_body(
                    tracker_id=uuid.uuid4(),
                    latitude=latitude + spread,
                    longitude=((longitude + 2 * spread + 180) % 360) - 180,
                    at=now,
                )
            )
    events.write_bytes(b"\n".join(bodies) + b"\n")
    consumed = support.manage(
        ["consume_events", "--source", "jsonl", "--path", str(events)], env=env, timeout=120
    )
    assert consumed.returncode == 0, consumed.stdout + consumed.stderr
    port = support.free_port()
    command = [
        *(support.PYTHON, "-m", "tracker_site.serve", "--port", str(port)),
        *("--host", "127.0.0.1", "--workers", "1", "--lifespan", "off"),
    ]
    with support.background(command, env=env, log=folder / "serve.log") as process:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
        yield f"http://127.0.0.1:{port}/"


def overview(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("window.trackerMap.overview()"))


def test_a_world_view_counts_every_tracker_by_area_and_a_click_zooms_in_to_markers(
    server: str, page: Any
) -> None:
    page.goto(server + WORLD_VIEW)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.overview().total === " + str(TOTAL),
        timeout=20_000,
    )
    page.wait_for_function("window.trackerMap.overview().areas.length >= 5", timeout=10_000)
    shown = overview(page)
    assert shown["level"] == 45
    assert sum(area["count"] for area in shown["areas"]) == TOTAL
    assert page.evaluate("window.trackerMap.cells()") == []
    assert page.evaluate("window.trackerMap.trackers()") == []
    # The badge says how many trackers there are, not how many markers are drawn.
    page.wait_for_function(
        f"document.querySelector('[data-status-count]').textContent === '{TOTAL} trackers'",
        timeout=10_000,
    )
    circles = page.locator(".overview-area")
    assert sorted(int(text) for text in circles.all_inner_texts()) == sorted(
        area["count"] for area in shown["areas"]
    )
    assert page.locator("#zoom-hint").is_visible()
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-overview-world.png"))

    helsinki = page.locator(".overview-area", has_text=re.compile(r"^7$"))
    helsinki.click()
    page.wait_for_function("window.trackerMap.trackers().length === 7", timeout=15_000)
    assert page.evaluate("window.trackerMap.overview().areas") == []
    assert not page.locator("#zoom-hint").is_visible()
    assert page.locator(".overview-area").count() == 0
    page.wait_for_function(
        "document.querySelector('[data-status-count]').textContent === '7 trackers'",
        timeout=10_000,
    )
    page.screenshot(path=str(support.ARTIFACTS / "map-overview-zoomed-in.png"))

    # Back out: the counts come back, for the whole world again.
    page.evaluate("void window.trackerMap.map.setView([20, 10], 2, { animate: false })")
    page.wait_for_function("window.trackerMap.overview().areas.length >= 5", timeout=15_000)
    assert sum(area["count"] for area in overview(page)["areas"]) == TOTAL
    assert page.errors == []


def test_areas_on_both_sides_of_the_antimeridian_are_one_circle_that_zooms_to_both(
    server: str, page: Any
) -> None:
    page.goto(server + "#6/-17.0000/180.0000")
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.overview().areas.length >= 1", timeout=20_000
    )
    shown = overview(page)
    assert shown["level"] == 3
    # Fiji's two trackers, a few hundred metres apart across 180°, are in two
    # areas whose circles would overlap: one circle says 2.
    assert [area["count"] for area in shown["areas"]] == [2]
    assert page.locator(".overview-area").all_inner_texts() == ["2"]
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-overview-antimeridian.png"))
    page.locator(".overview-area").click()
    page.wait_for_function("window.trackerMap.trackers().length === 2", timeout=15_000)
    assert page.evaluate("window.trackerMap.map.getZoom()") >= 10
    assert page.errors == []


def test_the_page_modules_choose_the_finest_level_within_the_limit(server: str, page: Any) -> None:
    page.goto(server + WORLD_VIEW)
    page.wait_for_function("window.trackerMap !== undefined", timeout=20_000)
    chosen = page.evaluate(
        """async () => {
          const { overviewRequest } = await import("/static/maps/overview.js");
          const options = { levels: [45, 15, 3], maxAreas: 200 };
          return [
            overviewRequest({ west: -300, south: -85, east: 300, north: 85 }, options),
            overviewRequest({ west: 170, south: -30, east: 190, north: 0 }, options),
            overviewRequest({ west: -20, south: 30, east: 40, north: 70 }, options),
          ];
        }"""
    )
    assert chosen == [
        {"level": 45, "view": [-180, -85, 180, 85]},
        {"level": 3, "view": [170, -30, -170, 0]},
        {"level": 15, "view": [-20, 30, 40, 70]},
    ]
