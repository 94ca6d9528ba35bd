"""The tracker list beside the map, in headless Chromium: every tracker with its
status in the server's words, counts per status, search as one types (the
server's rule, held to tests/cases/search.json), the status filter, the
keyboard, 10,000 trackers with a handful of rows in the page, and the
phone-sized layout. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests import cases, support
from tests.test_map_page import module_url
from tracking.models import TrackerStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HELSINKI = "#14/60.1750/24.9450"
LABELS = {status.value: str(status.label) for status in TrackerStatus}

# What the visible rows say, top to bottom, and what the list holds.
ROWS = """() => Array.from(document.querySelectorAll(".tracker-row"))
  .sort((a, b) => Number(a.getAttribute("aria-posinset")) - Number(b.getAttribute("aria-posinset")))
  .map((row) => ({
    id: row.dataset.id,
    name: row.querySelector(".tracker-row-name").textContent,
    status: row.querySelector(".tracker-row-status").textContent,
    age: row.querySelector(".tracker-row-age").textContent,
    speed: row.querySelector(".tracker-row-speed").textContent,
    selected: row.getAttribute("aria-selected"),
  }))"""


def open_list(page: Any, url: str, *, total: int | None = None) -> None:
    page.goto(url)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.list().loaded && window.trackerMap.list().total > 0",
        timeout=15_000,
    )
    if total is not None:
        page.wait_for_function(f"window.trackerMap.list().total === {total}", timeout=15_000)
    page.wait_for_selector(".tracker-row")


def rows(page: Any) -> list[dict[str, str]]:
    return list(page.evaluate(ROWS))


def filter_counts(page: Any) -> dict[str, int]:
    counts: dict[str, str] = page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll(".tracker-filter-choice"),
             (choice) => [choice.dataset.status, choice.querySelector(".tracker-filter-count").textContent]))"""
    )
    return {status: int(text.replace(",", "")) for status, text in counts.items()}


def wait_for_shown(page: Any, count: int) -> None:
    page.wait_for_function(f"window.trackerMap.list().shown === {count}", timeout=10_000)


def screenshot(page: Any, name: str) -> None:
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / name))


# --- A fleet served in place of GET /api/trackers ----------------------------------------


def fleet(size: int) -> list[dict[str, Any]]:
    """``size`` trackers whose statuses cycle: six online, two stale, one offline, one never seen."""
    now = int(time.time() * 1000)
    ages = [5_000] * 6 + [300_000] * 2 + [7_200_000] + [None]
    trackers = []
    for n in range(size):
        age = ages[n % len(ages)]
        trackers.append(
            {
                "id": str(uuid.UUID(f"{n:08x}-0000-4000-8000-{n:012x}")),
                "name": f"Fleet unit {n:05d}",
                "latitude": None if age is None else -40.0,
                "longitude": None if age is None else -120.0,
                "timestamp": None if age is None else now - age,
                "speed": None if age is None else 30.0 + n % 50,
                "heading": None,
                "status": "never" if age is None else "online",
            }
        )
    return trackers


def serve_fleet(page: Any, trackers: list[dict[str, Any]]) -> Callable[[], int]:
    """Answer the list's pages of GET /api/trackers with ``trackers``; returns how many pages were asked for."""
    asked = []

    def answer(route: Any) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        if "id" in query:  # the map's details of the trackers it shows
            route.continue_()
            return
        size = int(query.get("page_size", ["100"])[0])
        number = int(query.get("page", ["1"])[0])
        pages = max(1, -(-len(trackers) // size))
        asked.append(number)
        body = {
            "count": len(trackers),
            "page": number,
            "pages": pages,
            "next": None,
            "previous": None,
            "trackers": trackers[(number - 1) * size : number * size],
        }
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(re.compile(r".*/api/trackers\?.*"), answer)
    return lambda: len(asked)


# --- The demo's trackers --------------------------------------------------------------------


def test_the_list_shows_every_tracker_with_its_status_age_and_speed(demo: str, page: Any) -> None:
    open_list(page, demo + HELSINKI, total=60)

    assert page.locator(".tracker-list-total").inner_text() == "60 trackers"
    shown = rows(page)
    assert 5 <= len(shown) < 60  # only the rows in view, and a margin
    for row in shown:
        assert row["status"] in LABELS.values(), row
        assert re.fullmatch(r"just now|\d+ s ago", row["age"]), row
        assert re.fullmatch(r"\d+(\.\d)? km/h|\u2013", row["speed"]), row  # an en dash: unknown
    counts = filter_counts(page)
    assert counts["all"] == 60
    assert sum(counts[status] for status in LABELS) == 60
    assert counts["online"] > 0
    # The chips speak the admin's words.
    chips = page.locator(".tracker-filter-choice").all_inner_texts()
    assert [re.sub(r"\s*[\d,]+$", "", chip) for chip in chips] == ["All", *LABELS.values()]
    screenshot(page, "tracker-list-desktop.png")
    assert page.errors == []


def test_typing_finds_a_tracker_outside_the_view_and_enter_selects_it(demo: str, page: Any) -> None:
    open_list(page, demo + HELSINKI, total=60)

    page.click(".tracker-search")
    page.keyboard.type("buenos")
    page.wait_for_function(
        "window.trackerMap.list().shown > 1 && window.trackerMap.list().shown < 60", timeout=5_000
    )
    assert all(row["name"].startswith("Buenos Aires") for row in rows(page))
    page.keyboard.type(" #07")
    wait_for_shown(page, 1)
    (found,) = rows(page)
    assert found["name"] == "Buenos Aires loop #07"
    assert page.locator(".tracker-list-total").inner_text() == "1 of 60 trackers"
    on_map = {t["id"] for t in page.evaluate("window.trackerMap.trackers()")}
    assert found["id"] not in on_map

    page.keyboard.press("Enter")

    page.wait_for_function("id => window.trackerMap.selected() === id", arg=found["id"])
    # The row is marked on the list's next drawing.
    page.wait_for_function(
        "id => document.querySelector(`.tracker-row[data-id='${id}']`)?.getAttribute('aria-selected') === 'true'",
        arg=found["id"],
    )

    # By the start of its device id, as the server searches.
    page.fill(".tracker-search", found["id"][:6].upper())
    page.wait_for_function(
        "id => window.trackerMap.list().shown >= 1 && document.querySelector('.tracker-row').dataset.id === id",
        arg=found["id"],
    )
    # Nothing found says so.
    page.fill(".tracker-search", "no such tracker")
    wait_for_shown(page, 0)
    assert page.locator(".tracker-list-empty").is_visible()
    assert page.locator(".tracker-list-total").inner_text() == "0 of 60 trackers"
    assert page.errors == []


def test_the_keyboard_reaches_the_search_the_filter_and_the_rows(demo: str, page: Any) -> None:
    open_list(page, demo + HELSINKI, total=60)

    page.keyboard.press("Tab")  # the panel's toggle
    assert page.evaluate("document.activeElement.className") == "side-panel-toggle"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "tracker-search"
    page.keyboard.press("Tab")  # the status filter: a radio group, moved through with arrows
    assert page.evaluate("document.activeElement.value") == "all"
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.value") == "online"
    wait_for_shown(page, filter_counts(page)["online"])
    page.keyboard.press("ArrowLeft")
    wait_for_shown(page, 60)

    page.keyboard.press("Tab")  # the rows: a listbox
    assert page.evaluate("document.activeElement.getAttribute('role')") == "listbox"
    first, second = rows(page)[:2]
    active = "document.querySelector('.tracker-rows').getAttribute('aria-activedescendant')"
    assert page.evaluate(active) == f"tracker-row-{first['id']}"
    page.keyboard.press("ArrowDown")
    assert page.evaluate(active) == f"tracker-row-{second['id']}"
    page.keyboard.press("Enter")
    page.wait_for_function("id => window.trackerMap.selected() === id", arg=second["id"])
    page.wait_for_function(
        "id => document.querySelector(`.tracker-row[data-id='${id}']`)?.getAttribute('aria-selected') === 'true'",
        arg=second["id"],
    )
    assert [row["selected"] for row in rows(page)[:2]] == ["false", "true"]

    # End goes to the last tracker; its row is in the page, though far below the first.
    page.keyboard.press("End")
    last = page.evaluate(active)
    assert page.locator(f"[id='{last}']").is_visible()
    assert page.evaluate("window.trackerMap.list().rowsInPage") < 60
    # Arrow up from the top returns to the search box.
    page.keyboard.press("Home")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.className") == "tracker-search"
    # Typing on the rows goes on in the search box.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.type("buenos")
    assert page.input_value(".tracker-search") == "buenos"
    wait_for_shown(page, 9)
    page.fill(".tracker-search", "")
    screenshot(page, "tracker-list-keyboard.png")
    assert page.errors == []


def test_closing_the_panel_gives_the_map_its_room(demo: str, page: Any) -> None:
    open_list(page, demo + HELSINKI, total=60)
    width = page.evaluate("window.trackerMap.map.getSize().x")
    toggle = page.locator(".side-panel-toggle")
    assert toggle.get_attribute("aria-expanded") == "true"

    toggle.click()

    assert toggle.get_attribute("aria-expanded") == "false"
    assert not page.locator(".tracker-search").is_visible()
    page.wait_for_function(f"window.trackerMap.map.getSize().x > {width} + 200")
    screenshot(page, "tracker-list-closed.png")
    toggle.click()
    page.wait_for_function(f"window.trackerMap.map.getSize().x === {width}")
    assert page.locator(".tracker-row").count() > 0
    assert page.errors == []


def test_the_phone_sized_layout_keeps_the_map_above_a_bottom_sheet(demo: str, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        open_list(page, demo + HELSINKI, total=60)
        sheet = page.locator("#side-panel").bounding_box()
        map_box = page.locator("#map").bounding_box()
        assert sheet["y"] > 844 * 0.4 and sheet["y"] + sheet["height"] == pytest.approx(844, abs=1)
        assert map_box["y"] + map_box["height"] <= sheet["y"] + 1
        assert map_box["width"] == pytest.approx(390, abs=1)
        page.wait_for_function("window.trackerMap.trackers().length >= 5", timeout=15_000)
        screenshot(page, "tracker-list-phone.png")

        page.tap(".tracker-row >> nth=2")
        picked = page.locator(".tracker-row >> nth=2").get_attribute("data-id")
        page.wait_for_function("id => window.trackerMap.selected() === id", arg=picked)

        page.locator(".side-panel-toggle").tap()
        assert page.locator("#side-panel").bounding_box()["height"] < 80
        page.wait_for_function("window.trackerMap.map.getSize().y > 844 - 80")
        screenshot(page, "tracker-list-phone-closed.png")
        assert errors == []
    finally:
        context.close()


def test_the_list_search_finds_every_shared_case_as_the_server_does(demo: str, page: Any) -> None:
    shared = cases.load("search")["cases"]
    page.goto(demo)

    answers = page.evaluate(
        """async ({ url, cases }) => {
          const { found, searchKey, searchWords } = await import(url);
          return cases.map((c) => found(searchKey(c.name, c.id), searchWords(c.query)));
        }""",
        {"url": module_url(page, "tracker-search.js"), "cases": shared},
    )

    wrong = [
        f"{cases.case_id(case)}: expected {case['found']}, JavaScript says {answer}"
        for case, answer in zip(shared, answers, strict=True)
        if answer != case["found"]
    ]
    assert wrong == []


# --- A fleet of 10,000 --------------------------------------------------------------------


def test_ten_thousand_trackers_scroll_and_filter_with_a_few_rows_in_the_page(
    demo: str, page: Any
) -> None:
    trackers = fleet(10_000)
    pages_asked = serve_fleet(page, trackers)
    open_list(page, demo + HELSINKI, total=10_000)

    assert pages_asked() == 20  # 500 a page
    assert page.locator(".tracker-list-total").inner_text() == "10,000 trackers"
    assert filter_counts(page) == {
        "all": 10_000,
        "online": 6_000,
        "stale": 2_000,
        "offline": 1_000,
        "never": 1_000,
    }
    in_page = page.evaluate("window.trackerMap.list().rowsInPage")
    assert in_page < 60

    # Scrolled to the end, the last trackers are there, and still only a few rows.
    page.evaluate(
        "() => { const rows = document.querySelector('.tracker-rows'); rows.scrollTop = rows.scrollHeight; }"
    )
    page.wait_for_function(
        "document.querySelector('.tracker-row[aria-posinset=\"10000\"]') !== null", timeout=5_000
    )
    assert any(row["name"] == "Fleet unit 09999" for row in rows(page))
    assert page.evaluate("window.trackerMap.list().rowsInPage") <= in_page + 1

    # The status filter, then a search within it.
    page.click(".tracker-filter-choice[data-status='offline']")
    wait_for_shown(page, 1_000)
    assert {row["status"] for row in rows(page)} == {LABELS["offline"]}
    assert page.locator(".tracker-list-total").inner_text() == "1,000 of 10,000 trackers"
    page.click(".tracker-search")
    page.keyboard.type('"unit 0999"')
    wait_for_shown(page, 1)  # 09990..09999 (a phrase in quotes), one of which is offline
    assert [row["name"] for row in rows(page)] == ["Fleet unit 09998"]
    # The counts are those of the search, whatever the filter.
    assert filter_counts(page) == {"all": 10, "online": 6, "stale": 2, "offline": 1, "never": 1}
    page.click(".tracker-filter-choice[data-status='never']")
    wait_for_shown(page, 1)
    assert rows(page)[0]["age"] == "" and rows(page)[0]["status"] == LABELS["never"]
    page.click(".tracker-filter-choice[data-status='all']")
    page.fill(".tracker-search", "")
    wait_for_shown(page, 10_000)
    screenshot(page, "tracker-list-10000.png")
    assert page.errors == []


def test_a_tracker_on_the_live_map_shows_the_maps_newer_position(demo: str, page: Any) -> None:
    # The list's answer is ten minutes old; the map hears the trackers in view live.
    answer = json.loads(page.request.get(demo + "api/trackers?page_size=500").text())
    old = int(time.time() * 1000) - 600_000
    trackers = [{**tracker, "timestamp": old} for tracker in answer["trackers"]]
    serve_fleet(page, trackers)
    open_list(page, demo + HELSINKI, total=60)
    page.wait_for_function("window.trackerMap.trackers().length >= 5", timeout=15_000)
    on_map = {t["id"] for t in page.evaluate("window.trackerMap.trackers()")}

    page.fill(".tracker-search", "helsinki")
    page.wait_for_function("window.trackerMap.list().shown > 1")
    page.wait_for_function(
        """(onMap) => Array.from(document.querySelectorAll(".tracker-row"))
             .filter((row) => onMap.includes(row.dataset.id))
             .every((row) => row.dataset.status === "online")""",
        arg=sorted(on_map),
        timeout=5_000,
    )
    page.fill(".tracker-search", "buenos")
    page.wait_for_function("window.trackerMap.list().shown > 1")
    assert {row["status"] for row in rows(page)} == {LABELS["stale"]}
    assert {row["age"] for row in rows(page)} == {"10 min ago"}
    assert page.errors == []


def test_the_list_reads_every_tracker_again_keeping_its_scroll_and_selection(
    demo: str, page: Any
) -> None:
    page.clock.install()
    trackers = fleet(2_000)
    pages_asked = serve_fleet(page, trackers)
    open_list(page, demo + HELSINKI, total=2_000)
    assert pages_asked() == 4
    page.evaluate("document.querySelector('.tracker-rows').scrollTop = 41_400")
    page.wait_for_selector(".tracker-row[aria-posinset='800']")
    page.click(".tracker-row[aria-posinset='800']")
    picked = page.locator(".tracker-row[aria-posinset='800']").get_attribute("data-id")
    page.wait_for_function("id => window.trackerMap.selected() === id", arg=picked)
    scrolled = page.evaluate("document.querySelector('.tracker-rows').scrollTop")
    assert scrolled == 41_400  # a click does not move the list
    trackers.append({**trackers[0], "id": str(uuid.uuid4()), "name": "Zz newcomer"})

    page.clock.fast_forward("00:31")  # twice per TRACKING_ONLINE_SECONDS (60)

    page.wait_for_function("window.trackerMap.list().total === 2_001", timeout=10_000)
    assert pages_asked() == 9  # 2,001 trackers are 5 pages
    assert page.evaluate("document.querySelector('.tracker-rows').scrollTop") == scrolled
    row = page.locator(f".tracker-row[data-id='{picked}']")
    assert row.get_attribute("aria-selected") == "true" and row.is_visible()
    assert page.errors == []


def test_a_selection_made_elsewhere_is_marked_and_scrolled_into_view(demo: str, page: Any) -> None:
    trackers = fleet(2_000)
    serve_fleet(page, trackers)
    open_list(page, demo + HELSINKI, total=2_000)
    target = trackers[1_500]["id"]

    # A second list on a copy of the panel, with a selection the test holds: a
    # marker click calls select(id, {source: "map"}) on the map's selection.
    answer = page.evaluate(
        """async ({ listUrl, selectionUrl, target }) => {
          const { TrackerList } = await import(listUrl);
          const { Selection } = await import(selectionUrl);
          const config = JSON.parse(document.getElementById("map-config").textContent);
          const original = document.getElementById("side-panel");
          const panel = original.cloneNode(true);
          panel.id = "second-panel";
          panel.querySelectorAll(".tracker-filter-choice, .tracker-row").forEach((e) => e.remove());
          original.style.display = "none";
          document.body.append(panel);
          const selection = new Selection();
          const list = new TrackerList({
            panel, url: config.trackersUrl, statusRule: config.trackerStatus, selection, live: () => undefined,
          });
          await list.refresh();
          selection.select(target, { source: "map" });
          await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
          const row = panel.querySelector(`.tracker-row[data-id="${target}"]`);
          const box = row.getBoundingClientRect();
          const view = panel.querySelector(".tracker-rows").getBoundingClientRect();
          return {
            selected: row.getAttribute("aria-selected"),
            inView: box.top >= view.top && box.bottom <= view.bottom,
            marked: panel.querySelectorAll('.tracker-row[aria-selected="true"]').length,
          };
        }""",
        {
            "listUrl": module_url(page, "tracker-list.js"),
            "selectionUrl": module_url(page, "selection.js"),
            "target": target,
        },
    )

    assert answer == {"selected": "true", "inView": True, "marked": 1}
    screenshot(page, "tracker-list-selected-elsewhere.png")
    assert page.errors == []


def test_a_link_with_a_selection_opens_the_list_at_its_row(demo: str, page: Any) -> None:
    trackers = fleet(2_000)
    serve_fleet(page, trackers)
    target = trackers[1_500]["id"]
    open_list(page, demo + HELSINKI + f"/t={target}", total=2_000)

    page.wait_for_function(
        """(id) => {
          const row = document.querySelector(`.tracker-row[data-id="${id}"]`);
          if (!row || row.getAttribute("aria-selected") !== "true") return false;
          const box = row.getBoundingClientRect();
          const view = document.querySelector(".tracker-rows").getBoundingClientRect();
          return box.top >= view.top && box.bottom <= view.bottom;
        }""",
        arg=target,
        timeout=15_000,
    )
    assert page.errors == []


def test_the_list_says_when_it_cannot_load_and_loads_on_its_own_later(demo: str, page: Any) -> None:
    page.clock.install()
    broken = {"on": True}
    trackers = fleet(100)

    def answer(route: Any) -> None:
        if "id=" in route.request.url:
            route.continue_()
        elif broken["on"]:
            route.fulfill(status=503, content_type="application/json", body='{"error": "down"}')
        else:
            number = int(parse_qs(urlsplit(route.request.url).query)["page"][0])
            body = {"count": 100, "page": number, "pages": 1, "trackers": trackers}
            route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(re.compile(r".*/api/trackers\?.*"), answer)
    page.goto(demo + HELSINKI)
    note = page.locator(".tracker-list-note")
    note.wait_for(state="visible", timeout=15_000)
    assert note.inner_text() == "Could not load the trackers (HTTP 503); trying again."
    assert page.locator(".tracker-list-total").inner_text() == "Loading trackers…"

    broken["on"] = False
    page.clock.fast_forward("00:30")

    page.wait_for_function("window.trackerMap.list().total === 100", timeout=10_000)
    assert not note.is_visible()
    assert page.locator(".tracker-list-total").inner_text() == "100 trackers"
    assert page.errors == []


# --- Whatever the API answers -------------------------------------------------------------

# What a JSON encoder writes (the server's writes no NaN or Infinity).
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
NEAR_TRACKERS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["a", "b", str(uuid.UUID(int=7))]) | JSON_VALUES,
        "name": st.text(max_size=20) | JSON_VALUES,
        "timestamp": st.integers(min_value=-(2**60), max_value=2**60) | JSON_VALUES,
        "speed": st.floats(allow_nan=False, allow_infinity=False) | JSON_VALUES,
    },
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "pages": st.integers(min_value=-3, max_value=10**9) | JSON_VALUES,
        "trackers": st.lists(NEAR_TRACKERS | JSON_VALUES, max_size=6) | JSON_VALUES,
    },
)


def test_the_list_reads_any_answer_without_breaking(demo: str, page: Any) -> None:
    answer: dict[str, Any] = {"body": "{}", "asked": 0}

    def serve(route: Any) -> None:
        answer["asked"] += 1
        route.fulfill(status=200, content_type="application/json", body=answer["body"])

    page.route(re.compile(r".*/probe-trackers\?.*"), serve)
    page.goto(demo)
    urls = {
        "listUrl": module_url(page, "tracker-list.js"),
        "rosterUrl": module_url(page, "roster.js"),
    }

    @hypothesis_settings(
        max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(body=BODIES | JSON_VALUES, query=st.text(max_size=12))
    def reads(body: Any, query: str) -> None:
        answer["body"], answer["asked"] = json.dumps(body), 0
        result = page.evaluate(
            """async ({ listUrl, rosterUrl, query }) => {
              const { fetchAllTrackers } = await import(listUrl);
              const { Roster } = await import(rosterUrl);
              const trackers = await fetchAllTrackers("/probe-trackers");
              const roster = new Roster({ thresholds: { onlineSeconds: 60, offlineSeconds: 900 } });
              roster.replace(trackers);
              roster.setQuery(query);
              roster.update();
              const counted = Object.values(roster.counts).reduce((a, b) => a + b, 0);
              return { size: roster.size, shown: roster.shown.length, counted, matches: roster.matchCount };
            }""",
            {**urls, "query": query},
        )
        listed = body.get("trackers") if isinstance(body, dict) else None
        ids = (
            {t["id"] for t in listed if isinstance(t, dict) and isinstance(t.get("id"), str)}
            if isinstance(listed, list)
            else set()
        )
        assert result["size"] == len(ids)
        assert result["counted"] == result["matches"] == result["shown"] <= result["size"]
        assert answer["asked"] == 1  # a short first page is the last, whatever "pages" says

    reads()
    assert page.errors == []
