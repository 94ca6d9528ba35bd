"""The map page in headless Chromium against the demo: markers appear and move,
the tooltip speaks the server's words, and the page's ES modules compute the
cases shared with their Python twins (tests/cases/) as Python does."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests import cases, support
from tracking.models import TrackerStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HELSINKI = "#14/60.1750/24.9450"


def trackers(page: Any) -> dict[str, dict[str, float]]:
    return {t["id"]: t for t in page.evaluate("window.trackerMap.trackers()")}


def open_map_with_trackers(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.status() === 'live'", timeout=15_000
    )
    page.wait_for_function("window.trackerMap.trackers().length >= 5", timeout=15_000)


# Half of the trackers seen in `before` have since reported a new place.
HALF_HAVE_MOVED = """(before) => {
  const now = new Map(window.trackerMap.trackers().map((t) => [t.id, t]));
  const moved = before.filter((t) => {
    const later = now.get(t.id);
    return later && later.timestamp > t.timestamp
      && (later.latitude !== t.latitude || later.longitude !== t.longitude);
  });
  return moved.length >= Math.floor(before.length / 2);
}"""


def hover_a_marker(page: Any) -> None:
    """Centre the map on a tracker, then put the mouse on its marker."""
    point = page.evaluate(
        """() => {
          const { map, trackers } = window.trackerMap;
          const [tracker] = trackers();
          map.setView([tracker.latitude, tracker.longitude], map.getZoom(), { animate: false });
          const box = map.getContainer().getBoundingClientRect();
          const size = map.getSize();
          return { x: box.left + size.x / 2, y: box.top + size.y / 2 };
        }"""
    )
    page.mouse.move(point["x"], point["y"])


def tooltip_rows(page: Any) -> dict[str, str]:
    """The tooltip's title and rows, once it shows a tracker's name (its details have loaded)."""
    page.wait_for_function(
        """() => {
          const tip = document.getElementById("tracker-tooltip");
          const title = tip.querySelector(".tooltip-title");
          return !tip.hidden && title && !/^Tracker [0-9a-f]{8}$/.test(title.textContent);
        }""",
        timeout=10_000,
    )
    rows: dict[str, str] = page.evaluate(
        """() => {
          const tip = document.getElementById("tracker-tooltip");
          const rows = { title: tip.querySelector(".tooltip-title").textContent };
          for (const term of tip.querySelectorAll("dt")) rows[term.textContent] = term.nextElementSibling.textContent;
          return rows;
        }"""
    )
    return rows


def test_markers_appear_and_move(demo: str, page: Any) -> None:
    open_map_with_trackers(page, demo + HELSINKI)
    before = trackers(page)

    page.wait_for_function(HALF_HAVE_MOVED, arg=list(before.values()), timeout=15_000)

    after = trackers(page)
    # Every marker is in a cell the page joined, and the page joined Helsinki's.
    cells = {tuple(cell) for cell in page.evaluate("window.trackerMap.cells()")}
    assert (24, 60) in cells
    for tracker in after.values():
        assert (int(tracker["longitude"] // 1), int(tracker["latitude"] // 1)) in cells
    # Markers moving along a route get a heading.
    assert any(t["heading"] is not None for t in after.values())
    # The badge, which says "Connecting…" and "0 trackers" until the script runs, says live and counts.
    assert page.locator("[data-status-text]").inner_text() == "Live"
    page.wait_for_function(
        "parseInt(document.querySelector('[data-status-count]').textContent) > 0", timeout=5_000
    )
    assert re.fullmatch(r"\d+ trackers?", page.locator("[data-status-count]").inner_text())
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-helsinki.png"))
    assert page.errors == []


def test_zooming_out_past_the_cell_limit_leaves_every_cell_and_shows_counts_by_area(
    demo: str, page: Any
) -> None:
    page.goto(demo + HELSINKI)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.cells().length > 0", timeout=15_000
    )
    page.evaluate("void window.trackerMap.map.setZoom(4)")
    page.wait_for_function("window.trackerMap.cells().length === 0", timeout=10_000)
    assert page.locator("#zoom-hint").is_visible()
    # The demo's fleet (daphne, SQLite, no Redis), counted by area: never an empty map.
    page.wait_for_function(
        """() => {
          const { total, areas } = window.trackerMap.overview();
          return total > 0 && areas.length > 0;
        }""",
        timeout=15_000,
    )
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-zoomed-out.png"))
    page.evaluate("void window.trackerMap.map.setZoom(13)")
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


def test_hovering_a_marker_shows_its_name_age_and_status_in_the_servers_words(
    demo: str, page: Any
) -> None:
    open_map_with_trackers(page, demo + HELSINKI)

    hover_a_marker(page)
    rows = tooltip_rows(page)

    assert rows["Status"] == TrackerStatus.ONLINE.label
    assert re.fullmatch(r"(just now|\d+ s ago) · .+", rows["Updated"]), rows
    assert re.fullmatch(r"\d+(\.\d)? km/h|unknown", rows["Speed"]), rows
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-tooltip.png"))
    assert page.errors == []


def test_a_tracker_unheard_for_two_minutes_reads_stale_in_the_servers_words(
    demo: str, page: Any
) -> None:
    page.clock.install()
    open_map_with_trackers(page, demo + HELSINKI)

    # The page's clock jumps two minutes ahead of the positions it holds.
    page.clock.fast_forward("02:00")
    hover_a_marker(page)
    rows = tooltip_rows(page)

    assert rows["Status"] == TrackerStatus.STALE.label
    assert rows["Updated"].startswith("2 min ago · "), rows
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-stale.png"))
    assert page.errors == []


# --- The shared cases against the page's ES modules ---------------------------------


def module_url(page: Any, name: str) -> str:
    """The URL of one of the map's ES modules: beside the map.js the page loaded."""
    page.wait_for_function("window.trackerMap !== undefined", timeout=15_000)
    url: str = page.evaluate(
        """(name) => {
          const script = document.querySelector('script[type="module"][src$="/map.js"]');
          return new URL(name, script.src).href;
        }""",
        name,
    )
    return url


def mismatches(shared: list[dict[str, Any]], answers: list[Any], key: str) -> list[str]:
    return [
        f"{cases.case_id(case)}: expected {case[key]!r}, JavaScript says {answer!r}"
        for case, answer in zip(shared, answers, strict=True)
        if answer != case[key]
    ]


def test_grid_js_computes_every_grid_case_as_the_python_grid_does(demo: str, page: Any) -> None:
    shared = cases.load("grid")
    page.goto(demo)

    answers = page.evaluate(
        """async ({ url, cases }) => {
          const { gridOf, cellOf, wrapX, cellsCovering } = await import(url);
          return {
            cellOf: cases.cellOf.map((c) => cellOf(gridOf(c.size), c.latitude, c.longitude)),
            wrapX: cases.wrapX.map((c) => wrapX(gridOf(c.size), c.x)),
            cellsCovering: cases.cellsCovering.map(
              (c) => cellsCovering(gridOf(c.size), c.bounds, c.maxCells ?? Infinity)),
          };
        }""",
        {"url": module_url(page, "grid.js"), "cases": shared},
    )

    wrong = [
        *mismatches(shared["cellOf"], answers["cellOf"], "cell"),
        *mismatches(shared["wrapX"], answers["wrapX"], "wrapped"),
        *mismatches(shared["cellsCovering"], answers["cellsCovering"], "cells"),
    ]
    assert wrong == []
    assert page.errors == []


def test_geo_js_measures_and_folds_every_geo_case_as_python_does(demo: str, page: Any) -> None:
    shared = cases.load("geo")
    page.goto(demo)

    answers = page.evaluate(
        """async ({ url, cases }) => {
          const { distanceMetres, bearingDegrees, wrapLongitude } = await import(url);
          const apart = (c, f) => f(c.from[0], c.from[1], c.to[0], c.to[1]);
          return {
            distance: cases.distance.map((c) => apart(c, distanceMetres)),
            bearing: cases.bearing.map((c) => apart(c, bearingDegrees)),
            wrapLongitude: cases.wrapLongitude.map((c) => wrapLongitude(c.longitude)),
          };
        }""",
        {"url": module_url(page, "geo.js"), "cases": shared},
    )

    # The two languages' sine and cosine may differ in the last bit.
    tolerances = {"distance": ("metres", 0.01), "bearing": ("degrees", 1e-6)}
    tolerances["wrapLongitude"] = ("wrapped", 0.0)
    wrong = [
        f"{name} {cases.case_id(case)}: expected {case[key]!r}, JavaScript says {answer!r}"
        for name, (key, tolerance) in tolerances.items()
        for case, answer in zip(shared[name], answers[name], strict=True)
        if abs(answer - case[key]) > tolerance
    ]
    assert wrong == []
    assert page.errors == []


def test_status_js_gives_every_status_case_the_status_python_gives(demo: str, page: Any) -> None:
    shared = cases.load("status")["cases"]
    page.goto(demo)

    answers = page.evaluate(
        """async ({ url, cases }) => {
          const { trackerStatus } = await import(url);
          const now = Date.UTC(2026, 10, 26, 12);
          return cases.map((c) => trackerStatus(c.ageMs === null ? null : now - c.ageMs, now, c));
        }""",
        {"url": module_url(page, "status.js"), "cases": shared},
    )

    assert mismatches(shared, answers, "status") == []
    assert page.errors == []


def test_ages_js_words_every_age_case_as_python_does(demo: str, page: Any) -> None:
    shared = cases.load("ages")["cases"]
    page.goto(demo)

    answers = page.evaluate(
        """async ({ url, cases }) => {
          const { formatAge } = await import(url);
          const now = Date.UTC(2026, 10, 26, 12);
          return cases.map((c) => formatAge(now - c.ageMs, now));
        }""",
        {"url": module_url(page, "ages.js"), "cases": shared},
    )

    assert mismatches(shared, answers, "text") == []
    assert page.errors == []


def test_trackers_js_shows_the_report_of_every_order_case_as_the_store_does(
    demo: str, page: Any
) -> None:
    shared = cases.load("order")["cases"]
    page.goto(demo)

    answers = page.evaluate(
        """async ({ url, cases }) => {
          const { TrackerStore } = await import(url);
          const start = Date.UTC(2026, 10, 26, 12);
          return cases.map((c) => {
            const store = new TrackerStore();
            c.reports.forEach((report, n) => {
              const update = { id: "t", latitude: n, longitude: 0, timestamp: start + report.stampMs };
              store.enqueue(update, start + report.receivedMs);
              store.applyPending();
            });
            return store.get("t").latitude;
          });
        }""",
        {"url": module_url(page, "trackers.js"), "cases": shared},
    )

    assert mismatches(shared, answers, "shows") == []
    assert page.errors == []


def test_tracker_details_beyond_the_cache_limit_forget_the_least_recently_wanted(
    demo: str, page: Any
) -> None:
    open_map_with_trackers(page, demo + HELSINKI)
    ids = list(trackers(page))[:4]

    answer = page.evaluate(
        """async ({ url, ids }) => {
          const { DetailsCache } = await import(url);
          const config = JSON.parse(document.getElementById("map-config").textContent);
          const cache = new DetailsCache({ url: config.trackersUrl, maxEntries: 3 });
          const loaded = () => new Promise((resolve) => cache.addEventListener("loaded", resolve, { once: true }));
          let answered = loaded();
          cache.want(ids.slice(0, 3));
          await answered;
          cache.want([ids[0], ids[2]]);  // still on the map; the second is not
          answered = loaded();
          cache.want([ids[3]]);
          await answered;
          return { size: cache.size, known: ids.map((id) => cache.get(id) !== undefined) };
        }""",
        {"url": module_url(page, "details.js"), "ids": ids},
    )

    assert answer == {"size": 3, "known": [True, False, True, True]}


def test_an_operator_signs_in_finds_a_tracker_and_follows_it_to_the_map(
    demo: str, demo_admin_password: str, page: Any
) -> None:
    page.goto(f"{demo}admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", demo_admin_password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.goto(f"{demo}admin/tracking/tracker/")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 60
    assert page.locator("#site-name img").is_visible()
    # Every simulated tracker has its route's name, and they report: none is "Never seen".
    assert page.locator("#result_list").inner_text().count("Never seen") == 0
    page.screenshot(path=str(support.ARTIFACTS / "admin-trackers.png"), full_page=True)

    # From a tracker's page to the map, over that tracker.
    page.click("#result_list tbody tr th a")
    device_id = page.locator(".field-id .readonly").inner_text().strip()
    page.screenshot(path=str(support.ARTIFACTS / "admin-tracker.png"), full_page=True)
    page.click("text=Show on the live map")
    page.wait_for_url(re.compile(r".*/#16/-?\d+\.\d+/-?\d+\.\d+$"))
    assert page.title() == "Live tracker map"
    page.wait_for_function(
        "id => window.trackerMap && window.trackerMap.trackers().some((t) => t.id === id)",
        arg=device_id,
        timeout=15_000,
    )
    # And back: the admin's header links to the map too.
    page.go_back()
    page.click("text=Live map")
    page.wait_for_url(demo)
    assert page.errors == []
