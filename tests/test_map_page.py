"""The map page in headless Chromium against the demo: markers appear and move."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HELSINKI = "#14/60.1750/24.9450"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("demo")
    port = support.free_port()
    env = support.base_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", TRACKING_BATCH_WAIT_MS="100"
    )
    command = [
        support.PYTHON,
        "manage.py",
        "demo",
        "--port",
        str(port),
        "--trackers",
        "60",
        "--seed",
        "5",
    ]
    with support.background(command, env=env, log=folder / "demo.log") as process:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(support.CHROMIUM).exists():
        support.unavailable("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=support.CHROMIUM, args=support.CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def trackers(page: Any) -> dict[str, dict[str, float]]:
    return {t["id"]: t for t in page.evaluate("window.trackerMap.trackers()")}


def test_markers_appear_and_move(demo: str, page: Any) -> None:
    page.goto(demo + HELSINKI)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.status() === 'live'", timeout=15_000
    )
    page.wait_for_function("window.trackerMap.trackers().length >= 5", timeout=15_000)
    before = trackers(page)
    time.sleep(3)
    after = trackers(page)

    moved = [
        tracker_id
        for tracker_id, tracker in before.items()
        if tracker_id in after
        and (after[tracker_id]["latitude"], after[tracker_id]["longitude"])
        != (tracker["latitude"], tracker["longitude"])
        and after[tracker_id]["timestamp"] > tracker["timestamp"]
    ]
    assert len(moved) >= len(before) // 2, (before, after)
    # Every marker is in a cell the page joined, and the page joined Helsinki's.
    cells = {tuple(cell) for cell in page.evaluate("window.trackerMap.cells()")}
    assert (24, 60) in cells
    for tracker in after.values():
        assert (int(tracker["longitude"] // 1), int(tracker["latitude"] // 1)) in cells
    # Markers moving along a route get a heading.
    assert any(t["heading"] is not None for t in after.values())
    assert page.locator("#connection").inner_text().strip() != ""
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-helsinki.png"))
    assert page.errors == []


def test_zooming_out_past_the_cell_limit_leaves_every_cell_and_says_why(
    demo: str, page: Any
) -> None:
    page.goto(demo + HELSINKI)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.cells().length > 0", timeout=15_000
    )
    page.evaluate("window.trackerMap.map.setZoom(4)")
    page.wait_for_function("window.trackerMap.cells().length === 0", timeout=10_000)
    assert page.locator("#zoom-hint").is_visible()
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-zoomed-out.png"))
    page.evaluate("window.trackerMap.map.setZoom(13)")
    page.wait_for_function("window.trackerMap.cells().length > 0", timeout=10_000)
    assert not page.locator("#zoom-hint").is_visible()
    assert page.errors == []


def test_the_map_works_across_the_antimeridian(demo: str, page: Any) -> None:
    # The Fiji route crosses 180 degrees between Vanua Levu and Taveuni.
    page.goto(demo + "#9/-16.85/179.95")
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.cells().length > 0", timeout=15_000
    )
    cells = {tuple(cell) for cell in page.evaluate("window.trackerMap.cells()")}
    assert (179, -17) in cells and (-180, -17) in cells
    assert page.errors == []
