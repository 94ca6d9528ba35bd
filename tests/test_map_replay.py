"""Replay on the map, in headless Chromium against the demo on PostgreSQL and
Redis: a tracker's stored route plays (the marker glides along it in time,
the clock moves on at the chosen speed, the trail follows), pauses, scrubs,
stops at the end, and the URL brings it all back; the live markers step aside
meanwhile and come back current. Positions are stored through the real
pipeline (a ``consume_events`` of its own, as the selection tests do); the
track comes from ``GET /api/trackers/{id}/track``."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests import support
from tests.test_map_fences import LiveDemo, hub, live, open_map, wait_for_tracker
from tests.test_map_page import module_url
from tests.test_map_selection import Reports, new_tracker, reports, wait_for_panel

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# The demo (30 trackers in Helsinki), its hub publisher and the pipeline are the other map tests' fixtures.
SHARED_FIXTURES = (live, hub, reports)

HELSINKI_VIEW = "#15/60.1740/24.9390"
STEP_S = 30
SPEEDS = [1, 2, 5, 10, 25, 50, 100]
BAR = "#replay-bar"


def zigzag(north: float, east: float, steps: int = 21) -> list[tuple[float, float]]:
    """A route that turns at every position (about 100 m north, 100 m east or west): nothing to thin."""
    return [
        (round(north + 0.0009 * n, 6), round(east + (0.0018 if n % 2 else 0.0), 6))
        for n in range(steps)
    ]


def straight(north: float, east: float, steps: int = 21) -> list[tuple[float, float]]:
    """A route due north at a steady speed: its ends say it all, the rest is thinned away."""
    return [(round(north + 0.0009 * n, 6), east) for n in range(steps)]


class Route:
    """A tracker's stored positions, one every STEP_S seconds from ``start``."""

    def __init__(self, tracker_id: uuid.UUID, start: datetime, points: list[tuple[float, float]]):
        self.id = str(tracker_id)
        self.start_ms = int(start.timestamp() * 1000)
        self.points = points

    @property
    def end_ms(self) -> int:
        return self.start_ms + STEP_S * 1000 * (len(self.points) - 1)

    def at(self, ms: float) -> tuple[float, float]:
        """Where the tracker was at ``ms``, in a straight line in time between its two positions around it."""
        offset = min(max(ms - self.start_ms, 0), self.end_ms - self.start_ms) / (STEP_S * 1000)
        index = min(int(offset), len(self.points) - 2)
        fraction = offset - index
        (lat1, lng1), (lat2, lng2) = self.points[index], self.points[index + 1]
        return lat1 + (lat2 - lat1) * fraction, lng1 + (lng2 - lng1) * fraction


def store_route(
    live: LiveDemo,
    reports: Reports,
    name: str,
    start: datetime,
    north: float,
    east: float,
    now_at: tuple[float, float] | None = None,
    shape: Callable[[float, float], list[tuple[float, float]]] = zigzag,
) -> Route:
    """A new tracker that drove a zigzag from ``start``, and, with ``now_at``, reports from there now
    (once that report is on the map, the route is stored: the pipeline keeps their order)."""
    tracker_id = new_tracker(live, name)
    route = Route(tracker_id, start, shape(north, east))
    for n, where in enumerate(route.points):
        reports.send(tracker_id, where, at=start + timedelta(seconds=STEP_S * n))
    if now_at is not None:
        reports.send(tracker_id, now_at)
    return route


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = (a[0] - b[0]) * 111_195
    east = (a[1] - b[1]) * 111_195 * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


def replay_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.trackerMap.replay()")
    return state


def place_of(state: dict[str, Any], tracker_id: str) -> tuple[float, float]:
    tracker = next(t for t in state["trackers"] if t["id"] == tracker_id)
    return tracker["place"]["latitude"], tracker["place"]["longitude"]


def wait_for_loaded(page: Any, count: int = 1) -> None:
    """Until the replay is open with ``count`` trackers, each read and placed (else say where it stands)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        _wait_for_loaded(page, count)
    except PlaywrightTimeout:
        state = page.evaluate("window.trackerMap && window.trackerMap.replay()")
        raise AssertionError(f"the replay did not load at {page.url}: {state}") from None


def _wait_for_loaded(page: Any, count: int) -> None:
    page.wait_for_function(
        """(count) => {
          const state = window.trackerMap.replay();
          return state.active && state.trackers.length === count
            && state.trackers.every((t) => t.loaded && (t.points === 0 || t.place !== null));
        }""",
        arg=count,
        timeout=15_000,
    )


def scrub(page: Any, ms: int) -> None:
    """Drag the scrub slider to ``ms`` (the value set and its input event sent, as a drag does)."""
    page.evaluate(
        """(ms) => {
          const slider = document.querySelector(".replay-scrub");
          slider.value = String(ms);
          slider.dispatchEvent(new Event("input", { bubbles: true }));
        }""",
        ms,
    )


def frames_pass(page: Any, count: int = 10) -> None:
    """Let the page draw ``count`` animation frames."""
    page.evaluate(
        """(count) => new Promise((done) => {
          let seen = 0;
          const next = () => (++seen >= count ? done() : requestAnimationFrame(next));
          requestAnimationFrame(next);
        })""",
        count,
    )


def live_update_drawn(page: Any) -> None:
    """Until the page has drawn a live update newer than every one it had: frames have been drawn meanwhile."""
    newest = page.evaluate("Math.max(0, ...window.trackerMap.trackers().map((t) => t.timestamp))")
    page.wait_for_function(
        "(newest) => window.trackerMap.trackers().some((t) => t.timestamp > newest)",
        arg=newest,
        timeout=15_000,
    )
    frames_pass(page, 2)


def boxes_overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def replay_hash(route: Route, since: int, until: int, at: int, speed: int, *others: Route) -> str:
    ids = "".join(f",{other.id}" for other in others)
    if others:
        ids = f",{route.id}{ids}"
    return f"/replay={since}-{until}@{at}x{speed}{ids}"


@pytest.fixture(scope="module")
def start() -> datetime:
    """Where the stored routes begin: 40 minutes ago, to the second (inside the last hour)."""
    return (datetime.now(UTC) - timedelta(minutes=40)).replace(microsecond=0)


def test_replay_plays_the_stored_route_pauses_scrubs_changes_speed_and_stops_at_the_end(
    live: LiveDemo, reports: Reports, start: datetime, page: Any
) -> None:
    now_at = (60.1745, 24.9395)
    route = store_route(live, reports, "Courier 21", start, 60.1700, 24.9300, now_at)
    open_map(page, live.url + HELSINKI_VIEW)
    wait_for_tracker(page, route.id)
    page.evaluate("(id) => window.trackerMap.select(id)", route.id)
    wait_for_panel(page, "Courier 21")

    # The details panel's Replay opens the bar on the last hour, paused at its first position in it
    # (20 minutes into the hour: the bar says so).
    page.click(".details-replay")
    wait_for_loaded(page)
    page.wait_for_function("(ms) => window.trackerMap.replay().at === ms", arg=route.start_ms)
    state = replay_state(page)
    assert state["until"] - state["since"] == 3_600_000
    assert state["since"] < route.start_ms and route.end_ms < state["until"]
    assert (state["playing"], state["at"], state["speed"]) == (False, route.start_ms, 1)
    assert place_of(state, route.id) == route.points[0]
    assert not state["trackers"][0]["place"]["waiting"]
    hint = page.locator(".replay-hint").inner_text()
    minutes = round((route.start_ms - state["since"]) / 60_000)
    assert hint.startswith("Started at the first position") and f"first {minutes} min" in hint
    assert page.locator(".replay-paused").inner_text() == "live updates paused"
    assert page.locator(".details-replay").inner_text() == "In the replay"
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-replay-first-position.png"))
    # Before its first position in the range it waits there, faded.
    scrub(page, state["since"])
    state = replay_state(page)
    assert place_of(state, route.id) == route.points[0]
    assert state["trackers"][0]["place"]["waiting"]
    assert page.evaluate("window.trackerMap.drawn()") == [route.id]
    assert re.search(rf"/t={route.id}/replay={state['since']}-{state['until']}@", page.url)

    # Play from the route's start at 10x: the clock moves on and the marker glides along the route.
    scrub(page, route.start_ms)
    page.select_option(".replay-speed", "10")
    page.click(".replay-play")
    page.wait_for_function(
        "(ms) => window.trackerMap.replay().at > ms", arg=route.start_ms + 75_000, timeout=15_000
    )
    state = replay_state(page)
    assert state["playing"] and page.locator(".replay-play").inner_text() == "❚❚ Pause"
    assert metres(place_of(state, route.id), route.at(state["at"])) < 1
    # Between two positions, not on one: motion in time, not a step per point.
    assert (state["at"] - route.start_ms) % (STEP_S * 1000) != 0
    # Each frame moves the replay by the wall-clock time since the last one, times the speed.
    step = state["lastStep"]
    assert step["wallMs"] > 0 and step["replayMs"] == pytest.approx(10 * step["wallMs"])
    # The URL follows while it plays (at most once a second).
    page.wait_for_function(
        """(ms) => { const found = /@(\\d+)x10$/.exec(window.location.hash);
                     return found !== null && Number(found[1]) > ms; }""",
        arg=route.start_ms + 75_000,
        timeout=15_000,
    )
    trail = replay_state(page)["trackers"][0]["trail"]
    assert len(trail) >= 4 and [tuple(p) for p in trail[:3]] == route.points[:3]

    # A faster speed: each frame moves it 100 times the wall clock on.
    page.select_option(".replay-speed", "100")
    page.wait_for_function("window.trackerMap.replay().lastStep.replayMs > 0")
    page.wait_for_function(
        "() => { const { lastStep } = window.trackerMap.replay();"
        " return Math.abs(lastStep.replayMs - 100 * lastStep.wallMs) < 1e-6 && lastStep.wallMs > 0; }",
        timeout=15_000,
    )
    assert replay_state(page)["speed"] == 100 and page.url.endswith("x100")

    # Paused, it stays: the page keeps drawing the live updates it keeps, the replay does not move.
    page.click(".replay-play")
    paused = replay_state(page)
    assert not paused["playing"] and page.locator(".replay-play").inner_text() == "▶ Play"
    live_update_drawn(page)
    assert replay_state(page)["at"] == paused["at"]
    assert place_of(replay_state(page), route.id) == place_of(paused, route.id)
    page.wait_for_function(
        "(at) => window.location.hash.includes(`@${Math.round(at)}x100`)", arg=paused["at"]
    )
    clock_paused = page.locator(".replay-clock").inner_text()

    # Scrubbed back, it jumps to where it was at that time, the trail drawn up to there.
    target = route.start_ms + 4 * STEP_S * 1000 + 12_000
    scrub(page, target)
    state = replay_state(page)
    assert state["at"] == target
    assert metres(place_of(state, route.id), route.at(target)) < 1
    trail = [tuple(p) for p in state["trackers"][0]["trail"]]
    assert trail[:5] == route.points[:5] and len(trail) == 6
    assert metres(trail[-1], route.at(target)) < 1
    assert page.locator(".replay-clock").inner_text() != clock_paused
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-replay.png"))

    # Its silence from the end of the route to its report of now is a gap: it waits, faded, where it was.
    scrub(page, route.end_ms + 600_000)
    state = replay_state(page)
    assert place_of(state, route.id) == route.points[-1]
    assert state["trackers"][0]["place"]["waiting"]

    # Near the end at 100x: it reaches the end and pauses there, at its latest position.
    scrub(page, state["until"] - 20_000)
    page.click(".replay-play")
    page.wait_for_function("!window.trackerMap.replay().playing", timeout=15_000)
    state = replay_state(page)
    assert state["at"] == state["until"]
    assert page.locator(".replay-play").inner_text() == "▶ Play"
    assert place_of(state, route.id) == now_at
    # Play at the end starts again from the start.
    page.click(".replay-play")
    page.wait_for_function("window.trackerMap.replay().playing")
    assert replay_state(page)["at"] < state["since"] + 600_000
    page.click(".replay-play")
    assert page.errors == []


def test_a_replay_link_reopens_several_trackers_paused_where_it_was(
    live: LiveDemo, reports: Reports, start: datetime, page: Any
) -> None:
    first = store_route(live, reports, "Courier 22", start, 60.1702, 24.9310)
    second = store_route(
        live,
        reports,
        "Courier 23",
        start + timedelta(seconds=10),
        60.1704,
        24.9350,
        (60.1746, 24.9396),
        straight,
    )
    open_map(page, live.url + HELSINKI_VIEW)
    wait_for_tracker(page, second.id)

    since = first.start_ms - 60_000
    until = first.end_ms + 60_000
    at = first.start_ms + 95_000
    link = HELSINKI_VIEW + f"/t={first.id}" + replay_hash(first, since, until, at, 25, second)
    page.goto("about:blank")
    open_map(page, live.url + link)
    wait_for_panel(page, "Courier 22")
    wait_for_loaded(page, 2)
    state = replay_state(page)
    assert [t["id"] for t in state["trackers"]] == [first.id, second.id]
    assert (state["since"], state["until"], state["at"], state["speed"], state["playing"]) == (
        since,
        until,
        at,
        25,
        False,
    )
    assert page.locator(".replay-speed").input_value() == "25"
    assert metres(place_of(state, first.id), first.at(at)) < 1
    assert metres(place_of(state, second.id), second.at(at)) < 1
    # Each replayed tracker has a trail colour of its own, in the bar too.
    colours = [t["colour"] for t in state["trackers"]]
    assert len(set(colours)) == 2
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.replay-tracker-name'), (n) => n.textContent).join() "
        "=== 'Courier 22,Courier 23'",
        timeout=15_000,
    )
    assert sorted(page.evaluate("window.trackerMap.drawn()")) == sorted([first.id, second.id])
    # Each replayed tracker's positions of the range can be downloaded, where the server exports them.
    export_url = page.evaluate(
        "JSON.parse(document.getElementById('map-config').textContent).exportUrl ?? null"
    )
    links = page.evaluate(
        """() => Array.from(document.querySelectorAll(".replay-tracker"), (row) =>
             Array.from(row.querySelectorAll("a.replay-export"), (a) => [a.textContent, a.getAttribute("href")]))"""
    )
    if export_url is None:
        assert links == [[], []]
    else:
        assert links == [
            [
                [
                    label,
                    f"{export_url.replace('{id}', route.id)}?format={fmt}&since={since}&until={until}",
                ]
                for label, fmt in (("CSV", "csv"), ("GeoJSON", "geojson"), ("GPX", "gpx"))
            ]
            for route in (first, second)
        ]
    if export_url is not None:
        answer = page.evaluate(
            "async (url) => { const r = await fetch(url); return [r.status, r.headers.get('content-type')]; }",
            links[0][0][1],
        )
        assert answer == [200, "text/csv; charset=utf-8"]
    # The straight route came thinned (its ends are enough to replay it), and the bar says so.
    notes = page.locator(".replay-tracker-note").all_inner_texts()
    assert notes[0] == "21 positions"
    thinned = re.fullmatch(r"thinned: (\d+) of 21 positions", notes[1])
    assert thinned and int(thinned[1]) < 21, notes

    # Zoomed in two levels, the tracks are read again for the finer zoom.
    zoom = page.evaluate("window.trackerMap.map.getZoom()")
    page.evaluate("(z) => window.trackerMap.map.setZoom(z, { animate: false })", zoom + 2)
    page.wait_for_function(
        "(z) => window.trackerMap.replay().trackers.every((t) => t.loaded && t.zoom === z)",
        arg=zoom + 2,
        timeout=15_000,
    )
    page.evaluate("(z) => window.trackerMap.map.setZoom(z, { animate: false })", zoom)

    # Scrubbed and sped up, the URL says so; a reload brings back the same picture.
    later = first.start_ms + 200_000
    scrub(page, later)
    page.select_option(".replay-speed", "50")
    page.wait_for_function(
        "(tail) => window.location.hash.endsWith(tail)",
        arg=replay_hash(first, since, until, later, 50, second),
    )
    page.reload()
    wait_for_loaded(page, 2)
    state = replay_state(page)
    assert (state["at"], state["speed"], state["playing"]) == (later, 50, False)
    assert metres(place_of(state, second.id), second.at(later)) < 1
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-replay-two-trackers.png"))

    # A tracker selected while the replay is open can be added to it; taken out again, it goes.
    third = new_tracker(live, "Courier 24")
    reports.send(third, (60.1747, 24.9397))
    page.evaluate("(id) => window.trackerMap.select(id)", str(third))
    wait_for_panel(page, "Courier 24")
    assert page.locator(".details-replay").inner_text() == "Add to replay"
    page.click(".details-replay")
    wait_for_loaded(page, 3)
    assert page.locator(".details-replay").inner_text() == "In the replay"
    page.wait_for_function("(id) => window.location.hash.includes(id)", arg=str(third))
    page.click(f'.replay-tracker[data-id="{third}"] .replay-remove')
    wait_for_loaded(page, 2)

    # A link of the single-tracker form, after one from before replay existed: both open as they say.
    page.goto("about:blank")
    open_map(page, live.url + HELSINKI_VIEW + f"/t={first.id}/replay={since}-{until}@{at}x5")
    wait_for_loaded(page, 1)
    state = replay_state(page)
    assert (state["trackers"][0]["id"], state["at"], state["speed"]) == (first.id, at, 5)
    page.click(".replay-close")
    page.wait_for_function("!window.trackerMap.replay().active")
    assert "/replay=" not in page.url
    assert page.locator(BAR).is_hidden()
    assert page.errors == []


def test_live_markers_step_aside_during_a_replay_and_come_back_current(
    live: LiveDemo, reports: Reports, start: datetime, page: Any
) -> None:
    route = store_route(live, reports, "Courier 25", start, 60.1706, 24.9330, (60.1742, 24.9392))
    open_map(page, live.url + HELSINKI_VIEW)
    wait_for_tracker(page, route.id)
    page.wait_for_function("window.trackerMap.drawn().length > 3", timeout=15_000)
    demo_ids = set(page.evaluate("window.trackerMap.drawn()")) - {route.id}

    # The trips panel asks for a replay with a window event; it opens playing.
    page.evaluate(
        """([id, since, until]) => window.dispatchEvent(
             new CustomEvent("tracker-replay", { detail: { trackerIds: [id], since, until } }))""",
        [route.id, route.start_ms, route.end_ms],
    )
    wait_for_loaded(page)
    assert replay_state(page)["since"] == route.start_ms
    page.wait_for_function("window.trackerMap.drawn().length === 1")
    assert page.evaluate("window.trackerMap.drawn()") == [route.id]
    assert page.locator(".replay-paused").is_visible()
    # The live trail and the overview's counts step aside too.
    assert page.evaluate("document.getElementById('map-shell').dataset.replay") == "on"

    # Reports keep coming meanwhile: the hub's updates are kept, not drawn.
    moved = (60.1748, 24.9401)
    at = reports.send(uuid.UUID(route.id), moved)
    page.wait_for_function(
        "([id, ts]) => window.trackerMap.trackers().some((t) => t.id === id && t.timestamp === ts)",
        arg=[route.id, at],
        timeout=15_000,
    )
    live_update_drawn(page)
    assert page.evaluate("window.trackerMap.drawn()") == [route.id]
    replayed = place_of(replay_state(page), route.id)
    assert metres(replayed, moved) > 100
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-replay-live-paused.png"))

    # Closed: the live map at once, the tracker where it is now.
    page.click(".replay-close")
    page.wait_for_function(
        "(id) => window.trackerMap.drawn().length > 3 && window.trackerMap.drawn().includes(id)",
        arg=route.id,
        timeout=15_000,
    )
    assert set(page.evaluate("window.trackerMap.drawn()")) & demo_ids
    assert page.evaluate("document.getElementById('map-shell').dataset.replay") is None
    assert replay_state(page)["trackers"] == []
    # An event that names nothing replayable is left alone.
    page.evaluate(
        """() => window.dispatchEvent(new CustomEvent("tracker-replay",
             { detail: { trackerIds: ["bus-42"], since: 5, until: 1 } }))"""
    )
    assert not replay_state(page)["active"]
    assert page.errors == []


def test_on_a_phone_the_replay_bar_stands_above_the_sheets(
    live: LiveDemo, reports: Reports, start: datetime, browser: Any
) -> None:
    route = store_route(
        live, reports, "Courier 26 with a long name", start, 60.1708, 24.9340, (60.1743, 24.9391)
    )
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        open_map(page, live.url + f"#15/60.1740/24.9390/t={route.id}")
        wait_for_panel(page, "Courier 26 with a long name")
        page.locator(".details-replay").tap()
        wait_for_loaded(page)
        scrub(page, route.start_ms + 100_000)
        bar = page.locator(BAR).bounding_box()
        sheet = page.locator("#tracker-details").bounding_box()
        shown = page.locator("#map").bounding_box()
        # Across the map above the details' sheet, inside the screen, the map still in sight above it.
        assert not boxes_overlap(bar, sheet)
        assert bar["x"] >= 0 and bar["x"] + bar["width"] <= 390
        assert bar["y"] > shown["y"] + 180
        for control in (".replay-play", ".replay-scrub", ".replay-speed", ".replay-close"):
            box = page.locator(control).bounding_box()
            assert box["height"] >= 22 and box["x"] >= 0 and box["x"] + box["width"] <= 390, control
        # The map was fitted to the track in the part of it the bar leaves in sight: the marker is there.
        page.wait_for_function(
            """([id, barTop]) => {
              const { map, replay } = window.trackerMap;
              const { place } = replay().trackers.find((t) => t.id === id);
              const box = map.getContainer().getBoundingClientRect();
              const point = map.latLngToContainerPoint([place.latitude, place.longitude]);
              return point.x > 10 && point.x < box.width - 10 && point.y > 10 && box.top + point.y < barTop - 10;
            }""",
            arg=[route.id, bar["y"]],
            timeout=15_000,
        )
        support.ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(support.ARTIFACTS / "map-replay-phone.png"))

        # Played by touch; the range unfolds on demand.
        page.locator(".replay-play").tap()
        page.wait_for_function("window.trackerMap.replay().playing")
        page.locator(".replay-play").tap()
        page.wait_for_function("!window.trackerMap.replay().playing")
        assert page.locator(".replay-range").is_hidden()
        page.locator(".replay-range-toggle").tap()
        assert page.locator(".replay-range").is_visible()
        assert not boxes_overlap(page.locator(BAR).bounding_box(), sheet)
        page.screenshot(path=str(support.ARTIFACTS / "map-replay-phone-range.png"))
        page.locator(".replay-range-toggle").tap()

        # The details closed: the bar sits above the list's sheet; with the list closed, low on the map.
        page.locator(".details-close").tap()
        page.wait_for_function("document.getElementById('tracker-details').hidden")
        bar = page.locator(BAR).bounding_box()
        assert not boxes_overlap(bar, page.locator("#side-panel").bounding_box())
        page.screenshot(path=str(support.ARTIFACTS / "map-replay-phone-list.png"))
        page.locator(".side-panel-toggle").tap()
        page.wait_for_function(
            "document.getElementById('map').getBoundingClientRect().bottom > 700"
        )
        bar = page.locator(BAR).bounding_box()
        assert not boxes_overlap(bar, page.locator("#side-panel").bounding_box())
        assert bar["y"] + bar["height"] > 600
        page.screenshot(path=str(support.ARTIFACTS / "map-replay-phone-list-closed.png"))
        assert errors == []
    finally:
        context.close()


def test_on_a_wide_screen_the_bar_leaves_the_panel_and_the_list_alone(
    live: LiveDemo, reports: Reports, start: datetime, page: Any
) -> None:
    route = store_route(live, reports, "Courier 27", start, 60.1710, 24.9320, (60.1744, 24.9393))
    since, until = route.start_ms - 60_000, route.end_ms + 60_000
    open_map(page, live.url + HELSINKI_VIEW + f"/t={route.id}/replay={since}-{until}@{since}x1")
    wait_for_panel(page, "Courier 27")
    wait_for_loaded(page)
    bar = page.locator(BAR).bounding_box()
    for other in ("#tracker-details", "#side-panel", "#connection"):
        assert not boxes_overlap(bar, page.locator(other).bounding_box()), other
    # The range can be set by hand or by a preset; a backwards range is refused with a sentence.
    page.fill(".replay-date:nth-of-type(1) input", "2020-01-02T10:00")
    page.fill(".replay-date:nth-of-type(2) input", "2020-01-01T10:00")
    page.locator(".replay-date:nth-of-type(2) input").dispatch_event("change")
    page.wait_for_function("document.querySelector('.replay-note').textContent.includes('before')")
    assert replay_state(page)["since"] == since
    page.click(".replay-preset[data-preset='today']")
    page.wait_for_function("(since) => window.trackerMap.replay().since !== since", arg=since)
    page.click(".replay-preset[data-preset='yesterday']")
    state = replay_state(page)
    # A whole day, ending at midnight (23 or 25 hours on the day the clocks change).
    assert round((state["until"] - state["since"]) / 3_600_000) in (23, 24, 25)
    assert (
        page.evaluate("(ms) => new Date(ms).getHours() + new Date(ms).getMinutes()", state["until"])
        == 0
    )
    page.click(".replay-preset[data-preset='hour']")
    wait_for_loaded(page)
    page.screenshot(path=str(support.ARTIFACTS / "map-replay-wide.png"))
    assert page.errors == []


def test_the_replay_clock_and_track_play_in_time_between_positions(
    live: LiveDemo, page: Any
) -> None:
    open_map(page, live.url + HELSINKI_VIEW)
    answers = page.evaluate(
        """async (url) => {
          const m = await import(url);
          const p = (timestamp, latitude, longitude) => ({ timestamp, latitude, longitude, speed: null, heading: null });
          const track = new m.ReplayTrack([
            p(60000, 60.001, 24.0), p(0, 60.0, 24.0), p(60000, 60.5, 25.0),
            p(120000, 60.001, 24.002),
            p(120000 + 600000, 60.101, 24.002),        // 10 min later, 11 km on: a gap, the server says
            p(120000 + 600000 + 900000, 60.101, 24.002), // 15 min still: a stop, no gap
          ], [[120000, 720000]]);
          const at = (ms) => { const place = track.at(ms); return place && [
            Math.round(place.latitude * 1e6) / 1e6, Math.round(place.longitude * 1e6) / 1e6,
            place.waiting, place.heading === null ? null : Math.round(place.heading), place.index]; };
          const across = new m.ReplayTrack([p(0, -16.75, 179.999), p(1000, -16.75, -179.999)]);
          const clock = new m.ReplayClock({ since: 1000, until: 11000, speed: 7 });
          const steps = [];
          clock.advance(100); steps.push([clock.at, clock.playing]);
          clock.play(); clock.advance(100); steps.push([clock.at, clock.playing]);
          clock.setSpeed(5); clock.advance(5000); steps.push([clock.at, clock.playing, clock.lastStep]);
          clock.advance(500); steps.push([clock.at, clock.playing]);
          clock.advance(1000); steps.push([clock.at, clock.playing]);
          clock.play(); steps.push([clock.at, clock.playing]);
          clock.seek(-5); steps.push([clock.at]);
          clock.seek(99999); steps.push([clock.at]);
          const read = m.readTrackAnswer({ stored: 9, thinned: true, zoom: 15, gaps: [[1000, 3000], [5], "x"], positions: [
            [1000, 60, 24, 12.5, 90], [2000, 91, 24, null, null], "x", [3000, 60.1, 24.1, null, "n"], [4000, 60.2]] });
          const now = new Date(2026, 10, 30, 14, 30).getTime();
          return {
            length: track.length,
            places: [-1, 0, 30000, 60000, 90000, 120000, 420000, 720000, 1000000, 1620000, 99999999].map(at),
            across: (() => { const place = across.at(500); return [place.latitude, Math.round(Math.abs(place.longitude) * 1e6) / 1e6]; })(),
            empty: new m.ReplayTrack([]).at(5),
            steps,
            read: read && { points: read.track.points.map((q) => [q.timestamp, q.speed, q.heading]), stored: read.stored, thinned: read.thinned,
                            gap: read.track.at(2000).waiting },
            unreadable: [m.readTrackAnswer(null), m.readTrackAnswer({ error: "No active tracker" })],
            presets: ["hour", "today", "yesterday"].map((name) => {
              const { since, until } = m.presetRange(name, now);
              return [new Date(since).toString().slice(0, 24), new Date(until).toString().slice(0, 24)];
            }),
            clockWords: [m.formatReplayClock(now - 60000, now).includes(","), m.formatReplayClock(now - 86400000 * 2, now).includes(",")],
            inputs: [m.fromLocalInput(m.toLocalInput(now)) === now, m.fromLocalInput("yesterday"), m.fromLocalInput("")],
            ranges: [m.isReplayRange(0, 1), m.isReplayRange(5, 5), m.isReplayRange(0, 7 * 86400000), m.isReplayRange(0, 7 * 86400000 + 1), m.isReplayRange(0.5, 9)],
          };
        }""",
        module_url(page, "replay-clock.js"),
    )
    assert answers["length"] == 5  # one position per timestamp, in time order
    assert answers["places"] == [
        [60.0, 24.0, True, 0, -1],  # before the first: waiting there, facing the way it goes
        [60.0, 24.0, False, 0, 0],
        [60.0005, 24.0, False, 0, 0],  # half way in time, half way in space
        [60.001, 24.0, False, 90, 1],
        [60.001, 24.001, False, 90, 1],
        [60.001, 24.002, True, 90, 2],  # a gap follows: it waits, faded, facing the way it came
        [60.001, 24.002, True, 90, 2],
        [60.101, 24.002, False, 0, 3],  # a stop is no gap: it stands there, not faded
        [60.101, 24.002, False, 0, 3],
        [60.101, 24.002, False, 0, 4],
        [60.101, 24.002, True, 0, 4],  # long after its last position: waiting
    ]
    assert answers["across"] == [-16.75, 180.0]  # the short way over the antimeridian
    assert answers["empty"] is None
    steps = answers["steps"]
    assert steps[0] == [1000, False]  # paused: no move
    assert steps[1] == [1100, True]  # 7x is not offered: real time
    # 5x; a frame moves it by at most 1 s of wall clock (a tab in the background does not jump on).
    assert steps[2] == [6100, True, {"wallMs": 1000, "replayMs": 5000}]
    assert steps[3] == [8600, True]
    assert steps[4] == [11000, False]  # the end: paused there
    assert steps[5] == [1000, True]  # played again: from the start
    assert steps[6:] == [[1000], [11000]]
    assert answers["read"] == {
        "points": [[1000, 12.5, 90], [3000, None, None]],
        "stored": 9,
        "thinned": True,
        "gap": True,
    }
    assert answers["unreadable"] == [None, None]
    assert answers["presets"] == [
        ["Mon Nov 30 2026 13:30:00", "Mon Nov 30 2026 14:30:00"],
        ["Mon Nov 30 2026 00:00:00", "Mon Nov 30 2026 14:30:00"],
        ["Sun Nov 29 2026 00:00:00", "Mon Nov 30 2026 00:00:00"],
    ]
    assert answers["clockWords"] == [False, True]
    assert answers["inputs"] == [True, None, None]
    assert answers["ranges"] == [True, False, True, False, False]
    assert page.errors == []


UUID = "5b0e2c1d-7f3a-4e8b-9c6d-2a1f0e9d8c7b"
OTHER = "0d1c2b3a-4f5e-4d6c-8b7a-9f8e7d6c5b4a"

PARSE = """async ({ url, hashes }) => {
  const { parseReplayHash, parseViewHash, formatViewHash } = await import(url);
  return hashes.map((hash) => {
    const replay = parseReplayHash(hash);
    const view = parseViewHash(hash);
    const again = view && replay ? parseReplayHash(formatViewHash({ ...view, replay })) : null;
    return { replay, view, again };
  });
}"""


def parsed(page: Any, hashes: list[str]) -> list[dict[str, Any]]:
    """What view-hash.js reads of each hash, and of it written back."""
    answers: list[dict[str, Any]] = page.evaluate(
        PARSE, {"url": module_url(page, "view-hash.js"), "hashes": hashes}
    )
    return answers


def test_replay_links_are_read_and_old_links_unchanged(live: LiveDemo, page: Any) -> None:
    open_map(page, live.url + HELSINKI_VIEW)
    view = "#13/60.1699/24.9384"
    hashes = [
        f"{view}/t={UUID}/replay=1000-5000@2000x10",
        f"{view}/t={UUID}/follow/replay=1000-5000@9000x100,{OTHER},{UUID.upper()},bus-42",
        f"{view}/replay=1000-5000@0x1,{OTHER}",
        f"{view}/replay=1000-5000@2000x10",  # no tracker named: nothing to replay
        f"{view}/t={UUID}/replay=5000-1000@2000x10",  # backwards
        f"{view}/t={UUID}/replay=0-604800001@2000x10",  # longer than 7 days
        f"{view}/t={UUID}/replay=1000-5000@2000x3",  # not an offered speed
        f"{view}/t={UUID}/replay=1000-5000@2000",
        f"{view}/t={UUID}/replay=1e3-5000@2000x10",
        view,
        f"{view}/t={UUID}/follow",
    ]
    answers = parsed(page, hashes)
    replays = [answer["replay"] for answer in answers]
    assert replays[0] == {"trackers": [UUID], "since": 1000, "until": 5000, "at": 2000, "speed": 10}
    assert replays[1] == {
        "trackers": [OTHER, UUID],
        "since": 1000,
        "until": 5000,
        "at": 5000,
        "speed": 100,
    }
    assert replays[2] == {"trackers": [OTHER], "since": 1000, "until": 5000, "at": 1000, "speed": 1}
    assert replays[3:] == [None] * 8
    # The view and the selection read as they always were, replay or not.
    old = {"zoom": 13, "latitude": 60.1699, "longitude": 24.9384}
    assert answers[0]["view"] == {**old, "tracker": UUID, "follow": False}
    assert answers[1]["view"] == {**old, "tracker": UUID, "follow": True}
    assert answers[2]["view"] == {**old, "tracker": None, "follow": False}
    assert answers[-1]["view"] == {**old, "tracker": UUID, "follow": True}
    # What is written reads back the same.
    assert [answer["again"] for answer in answers[:3]] == replays[:3]
    assert page.errors == []


def near_replay_hash() -> st.SearchStrategy[str]:
    number = st.one_of(
        st.integers(-5, 2**60).map(str), st.sampled_from(["", "1e3", "0x10", "NaN", "-0", "٣"])
    )
    ids = st.lists(
        st.sampled_from([UUID, OTHER, UUID.upper(), "+" + OTHER, "bus-42", "", "%E0%A4%A", "%41"]),
        max_size=9,
    ).map(lambda items: "".join("," + item for item in items))
    replay = st.builds(
        lambda since, until, at, speed, listed: f"replay={since}-{until}@{at}x{speed}{listed}",
        number,
        number,
        number,
        st.one_of(st.sampled_from(SPEEDS).map(str), number),
        ids,
    )
    part = st.one_of(
        replay,
        st.sampled_from([f"t={UUID}", "follow", "t=%E0%A4%A", "replay=", "t="]),
        st.text(max_size=10),
    )
    return st.one_of(
        st.text(max_size=40),
        st.lists(part, max_size=5).map(lambda parts: "#13/60.1699/24.9384/" + "/".join(parts)),
    )


def test_any_replay_hash_reads_as_a_replay_that_can_be_played_or_none(
    live: LiveDemo, page: Any
) -> None:
    open_map(page, live.url + HELSINKI_VIEW)
    id_pattern = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

    @hypothesis_settings(
        max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(hashes=st.lists(near_replay_hash(), min_size=1, max_size=20))
    def read(hashes: list[str]) -> None:
        for hash_, answer in zip(hashes, parsed(page, hashes), strict=True):
            replay = answer["replay"]
            without = "/".join(part for part in hash_.split("/") if not part.startswith("replay="))
            # A replay part never changes how the rest of the link reads.
            assert answer["view"] == parsed(page, [without])[0]["view"]
            if replay is None:
                continue
            assert 0 <= replay["since"] < replay["until"] <= replay["since"] + 7 * 86_400_000
            assert replay["since"] <= replay["at"] <= replay["until"]
            assert replay["speed"] in SPEEDS
            assert 1 <= len(replay["trackers"]) <= 6
            assert all(id_pattern.match(id_) for id_ in replay["trackers"])
            assert len(set(replay["trackers"])) == len(replay["trackers"])
            if answer["again"] is not None:
                assert answer["again"] == replay

    read()

    # Any of them set as the page's hash leaves it working: a good link then still replays.
    @hypothesis_settings(
        max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(hash_=near_replay_hash())
    def navigate(hash_: str) -> None:
        page.evaluate("(hash) => { window.location.hash = hash; }", hash_)

    navigate()
    page.evaluate("() => { window.location.hash = '#15/60.1740/24.9390'; }")
    assert page.evaluate("window.trackerMap.status()") == "live"
    assert page.errors == []


REPLAY_CONTROLS = (".replay-play", ".replay-scrub", ".replay-speed", ".replay-close")
WIDE_ONLY_CONTROLS = (
    ".replay-date:nth-of-type(1) input",
    ".replay-date:nth-of-type(2) input",
    ".replay-preset[data-preset='hour']",
)


def unreachable_controls(page: Any, selectors: list[str]) -> list[str]:
    """The controls whose centre is off the screen or under something else (what a click there would miss)."""
    missed: list[str] = page.evaluate(
        """(selectors) => selectors.flatMap((selector) =>
          Array.from(document.querySelectorAll(selector)).flatMap((control, n) => {
            const box = control.getBoundingClientRect();
            const x = box.left + box.width / 2, y = box.top + box.height / 2;
            const inside = x >= 0 && y >= 0 && x < window.innerWidth && y < window.innerHeight;
            const hit = inside ? document.elementFromPoint(x, y) : null;
            return hit !== null && (hit === control || control.contains(hit)) ? [] : [`${selector} #${n}`];
          }))""",
        selectors,
    )
    return missed


@pytest.mark.parametrize(
    "width,height", [(1400, 900), (1024, 768), (900, 700), (800, 600), (768, 1024), (390, 844)]
)
def test_the_replay_bar_controls_can_be_reached_at_every_width_with_the_panel_open(
    live: LiveDemo, reports: Reports, start: datetime, browser: Any, width: int, height: int
) -> None:
    first = store_route(live, reports, f"Courier {width} one", start, 60.1712, 24.9322)
    second = store_route(live, reports, f"Courier {width} two", start, 60.1716, 24.9352)
    phone = width < 700
    context = browser.new_context(
        viewport={"width": width, "height": height}, has_touch=phone, device_scale_factor=1
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        since, until = first.start_ms - 60_000, first.end_ms + 60_000
        link = replay_hash(first, since, until, first.start_ms + 90_000, 1, second)
        open_map(page, live.url + HELSINKI_VIEW + f"/t={first.id}{link}")
        wait_for_panel(page, f"Courier {width} one")
        wait_for_loaded(page, 2)
        frames_pass(page, 3)
        selectors = [*REPLAY_CONTROLS, ".replay-remove", ".replay-export"]
        selectors += [".replay-range-toggle"] if phone else list(WIDE_ONLY_CONTROLS)
        support.ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(support.ARTIFACTS / f"map-replay-bar-{width}x{height}.png"))
        assert page.locator(".replay-remove").count() == 2
        assert unreachable_controls(page, selectors) == []
        # The panel's own controls are not under the bar either.
        assert unreachable_controls(page, [".details-close", ".details-replay"]) == []
        # Each tracker's remove button stays beside its downloads, never on a line of its own.
        for row in page.locator(".replay-tracker").all():
            link, remove = row.locator(".replay-export").last, row.locator(".replay-remove")
            link_box, remove_box = link.bounding_box(), remove.bounding_box()
            assert (
                link_box["y"]
                < remove_box["y"] + remove_box["height"] / 2
                < link_box["y"] + link_box["height"]
            )
        # The badge says it is a replay, and live again once the replay is closed; no live
        # crossing notices are drawn over the bar meanwhile.
        assert page.locator("[data-status-text]").inner_text() == "Replay"
        assert (
            page.evaluate("getComputedStyle(document.getElementById('notices')).display") == "none"
        )
        page.locator(".replay-close").click()
        page.wait_for_function("document.getElementById('replay-bar').hidden")
        assert page.locator("[data-status-text]").inner_text() == "Live"
        assert errors == []
    finally:
        context.close()


def test_a_range_with_no_positions_offers_nothing_to_play_or_download(
    live: LiveDemo, reports: Reports, start: datetime, page: Any
) -> None:
    route = store_route(live, reports, "Courier 29", start, 60.1718, 24.9362)
    since, until = route.start_ms - 3_600_000, route.start_ms - 600_000
    link = replay_hash(route, since, until, since, 1)
    open_map(page, live.url + HELSINKI_VIEW + f"/t={route.id}{link}")
    wait_for_panel(page, "Courier 29")
    wait_for_loaded(page)
    page.locator(".replay-tracker-note", has_text="no positions in this range").wait_for()
    assert page.locator(".replay-play").is_disabled()
    assert page.locator(".replay-export").count() == 0
    page.screenshot(path=str(support.ARTIFACTS / "map-replay-empty-range.png"))
    # A range with its positions: playable and downloadable again.
    page.click(".replay-preset[data-preset='hour']")
    wait_for_loaded(page)
    page.locator(".replay-export").first.wait_for()
    assert page.locator(".replay-play").is_enabled()
    assert page.errors == []
