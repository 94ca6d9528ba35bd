"""Selecting a tracker on the map, in headless Chromium against the demo on
PostgreSQL and Redis: a click opens its details, which follow its reports;
Follow keeps it centred across a cell boundary; its trail grows; a link
reopens the selection; a tracker outside the view is flown to. Positions go
through the real pipeline: a ``consume_events`` process of its own reads
them from a pipe, stores them and publishes them over Redis, as in production."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests import support
from tests.conftest import event_body
from tests.test_map_fences import HubPublisher, LiveDemo, hub, live, open_map, wait_for_tracker
from tracking.models import TrackerStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# The demo (30 trackers, Helsinki's geofences) and the hub publisher are the geofence tests' fixtures.
SHARED_FIXTURES = (live, hub)

HELSINKI_VIEW = "#15/60.1700/24.9416"
TAMPERE = (61.4978, 23.7610)
PANEL = "#tracker-details"


class Reports:
    """A ``consume_events`` reading event bodies from a pipe: each report is stored and published at once."""

    def __init__(self, live: LiveDemo, log: Path) -> None:
        self._log = log.open("wb")
        self._process = subprocess.Popen(
            [support.PYTHON, "manage.py", "consume_events", "--source", "jsonl", "--path", "-"],
            cwd=support.ROOT,
            env=live.env,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        assert self._process.stdin is not None
        self._stdin: IO[bytes] = self._process.stdin
        self._last = datetime.now(UTC) - timedelta(minutes=1)

    def send(
        self, tracker_id: uuid.UUID, where: tuple[float, float], at: datetime | None = None
    ) -> int:
        """Report ``where`` at ``at`` (default: now, and later than every report before); its Unix ms."""
        if at is None:
            at = max(datetime.now(UTC), self._last + timedelta(milliseconds=10))
            self._last = at
        latitude, longitude = where
        body = event_body(tracker_id=tracker_id, latitude=latitude, longitude=longitude, at=at)
        self._stdin.write(body + b"\n")
        self._stdin.flush()
        return int(at.timestamp() * 1000)

    def close(self) -> None:
        self._stdin.close()
        support.stop(self._process, send=None, grace=30)
        self._log.close()


@pytest.fixture(scope="module")
def reports(live: LiveDemo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    pipeline = Reports(live, tmp_path_factory.mktemp("selection") / "consume_events.log")
    try:
        yield pipeline
    finally:
        pipeline.close()


def new_tracker(live: LiveDemo, name: str) -> uuid.UUID:
    tracker_id = uuid.uuid4()
    live.python(
        "import uuid; from tracking.ingest.store import register_trackers; "
        f"register_trackers(trackers=[(uuid.UUID('{tracker_id}'), '{name}')])"
    )
    return tracker_id


def selected(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.trackerMap.selection()")
    return state


def panel_rows(page: Any) -> dict[str, str]:
    rows: dict[str, str] = page.evaluate(
        """() => {
          const panel = document.getElementById("tracker-details");
          const rows = {
            title: panel.querySelector(".details-title").textContent,
            id: panel.querySelector(".details-id-text").textContent,
            follow: panel.querySelector(".details-follow").getAttribute("aria-pressed"),
          };
          for (const term of panel.querySelectorAll("dt")) rows[term.textContent] = term.nextElementSibling.textContent;
          return rows;
        }"""
    )
    return rows


def wait_for_panel(page: Any, name: str) -> None:
    page.wait_for_function(
        """(name) => {
          const panel = document.getElementById("tracker-details");
          return !panel.hidden && panel.querySelector(".details-title").textContent === name;
        }""",
        arg=name,
        timeout=15_000,
    )


def wait_for_row(page: Any, label: str, value: str) -> None:
    page.wait_for_function(
        """([label, value]) => Array.from(document.querySelectorAll("#tracker-details dt"))
             .some((term) => term.textContent === label && term.nextElementSibling.textContent === value)""",
        arg=[label, value],
        timeout=15_000,
    )


def wait_for_position(page: Any, timestamp: int) -> None:
    """Until the page holds the selected tracker's position of ``timestamp`` (or a later one)."""
    page.wait_for_function(
        "(ts) => { const p = window.trackerMap.selection().position; return p !== null && p.timestamp >= ts; }",
        arg=timestamp,
        timeout=15_000,
    )


def trail_of(page: Any) -> list[tuple[float, float]]:
    """The selected tracker's trail as drawn, to the microdegree."""
    return [(round(lat, 6), round(lng, 6)) for lat, lng in selected(page)["trail"]]


def degrees(value: float) -> str:
    """As the panel writes a latitude or longitude."""
    return f"{value:.5f}°"


def marker_point(page: Any, where: tuple[float, float]) -> dict[str, float]:
    point: dict[str, float] = page.evaluate(
        """([lat, lng]) => {
          const { map } = window.trackerMap;
          const point = map.latLngToContainerPoint([lat, lng]);
          const box = map.getContainer().getBoundingClientRect();
          return { x: box.left + point.x, y: box.top + point.y };
        }""",
        list(where),
    )
    return point


CENTRED = """() => {
  const { map, selection } = window.trackerMap;
  const { position } = selection();
  if (!position) return false;
  // The copy of its longitude beside the view's centre (the map may stand past 180 after crossing it).
  const { lng } = map.getCenter();
  const longitude = position.longitude + 360 * Math.round((lng - position.longitude) / 360);
  const point = map.latLngToContainerPoint([position.latitude, longitude]);
  const size = map.getSize();
  return Math.abs(point.x - size.x / 2) < 2 && Math.abs(point.y - size.y / 2) < 2;
}"""


def test_clicking_a_marker_opens_its_details_which_follow_its_reports(
    live: LiveDemo, reports: Reports, page: Any
) -> None:
    courier = new_tracker(live, "Courier 11")
    first = (60.17010, 24.94100)
    reports.send(courier, first)
    open_map(page, live.url + HELSINKI_VIEW)
    wait_for_tracker(page, str(courier))

    point = marker_point(page, first)
    page.mouse.click(point["x"], point["y"])

    wait_for_panel(page, "Courier 11")
    rows = panel_rows(page)
    assert rows["id"] == str(courier)
    assert rows["Status"] == TrackerStatus.ONLINE.label
    assert rows["Latitude"] == degrees(first[0])
    assert rows["Longitude"] == degrees(first[1])
    assert rows["follow"] == "false"
    assert f"/t={courier}" in page.url
    # Its marker is highlighted: drawn from the selection's copy, in its halo.
    assert selected(page)["marker"]

    # A new report moves the panel's position on, and its last update ticks.
    second = (60.17030, 24.94180)
    at = reports.send(courier, second)
    wait_for_row(page, "Latitude", degrees(second[0]))
    wait_for_row(page, "Longitude", degrees(second[1]))
    wait_for_position(page, at)
    updated = panel_rows(page)["Last update"]
    page.wait_for_function(
        "(before) => window.trackerMap.selection().id && "
        "document.querySelector('#tracker-details dd[data-field=updated]').textContent !== before",
        arg=updated,
        timeout=15_000,
    )
    page.wait_for_function("window.trackerMap.selection().trail.length >= 2")
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-selected.png"))

    # The id is one click from the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy id").click()
    page.wait_for_function("document.querySelector('.details-copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == str(courier)

    # Escape clears the selection: the panel, the trail and the link's selection go.
    page.keyboard.press("Escape")
    page.wait_for_function("document.getElementById('tracker-details').hidden")
    assert selected(page)["id"] is None
    assert selected(page)["trail"] == []
    assert "/t=" not in page.url
    assert page.errors == []


def test_follow_keeps_a_moving_tracker_centred_across_a_cell_boundary(
    live: LiveDemo, reports: Reports, page: Any
) -> None:
    courier = new_tracker(live, "Courier 12")
    # Eastwards along 60.17 N, across 25 E: from map cell [24, 60] into [25, 60].
    route = [(60.17000, round(24.98500 + 0.0015 * step, 6)) for step in range(13)]
    reports.send(courier, route[0])
    open_map(page, live.url + "#16/60.1700/24.9850")
    assert [24, 60] in page.evaluate("window.trackerMap.cells()")
    assert [25, 60] not in page.evaluate("window.trackerMap.cells()")
    page.evaluate("(id) => window.trackerMap.select(id)", str(courier))
    wait_for_panel(page, "Courier 12")

    page.click(".details-follow")
    page.wait_for_function(CENTRED, timeout=15_000)
    assert panel_rows(page)["follow"] == "true"
    assert page.url.endswith(f"/t={courier}/follow")

    trail_lengths = []
    for where in route[1:]:
        wait_for_position(page, reports.send(courier, where))
        trail_lengths.append(len(selected(page)["trail"]))
    page.wait_for_function(CENTRED, timeout=15_000)
    assert route[-1][1] > 25
    # The map joined the new cell on its way: the hub brings the tracker's positions there.
    page.wait_for_function(
        "window.trackerMap.cells().some(([x, y]) => x === 25 && y === 60)", timeout=15_000
    )
    assert trail_lengths == sorted(trail_lengths) and trail_lengths[-1] > trail_lengths[0]
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-selected-following.png"))

    # Dragging the map stops following, and the button says so.
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 250, steps=5)
    page.mouse.up()
    page.wait_for_function("!window.trackerMap.selection().following")
    assert panel_rows(page)["follow"] == "false"
    assert page.url.endswith(f"/t={courier}")
    assert page.errors == []


def test_a_followed_tracker_crosses_the_antimeridian_with_a_short_trail(
    live: LiveDemo, reports: Reports, page: Any
) -> None:
    courier = new_tracker(live, "Courier 18")
    # Eastwards along 16.75 S over Fiji's date line: 179.997 E to 179.997 W.
    route = [(-16.75, 179.997 + 0.0015 * step) for step in range(5)]
    route = [(lat, round(lng - 360 if lng >= 180 else lng, 6)) for lat, lng in route]
    reports.send(courier, route[0])
    open_map(page, live.url + f"#16/-16.7500/179.9970/t={courier}/follow")
    wait_for_panel(page, "Courier 18")
    page.wait_for_function(CENTRED, timeout=15_000)

    for where in route[1:]:
        wait_for_position(page, reports.send(courier, where))
    page.wait_for_function(CENTRED, timeout=15_000)
    page.wait_for_function("window.trackerMap.selection().trail.length === 5", timeout=15_000)

    # Drawn step by step the short way round: no segment spans the world.
    drawn = [lng for _, lng in selected(page)["trail"]]
    steps = [later - earlier for earlier, later in pairwise(drawn)]
    assert all(0 < step < 0.002 for step in steps), drawn
    assert selected(page)["marker"]
    assert page.url.endswith(f"/t={courier}/follow")
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-selected-antimeridian.png"))
    assert page.errors == []


def test_the_trail_grows_from_history_with_each_newer_position_and_never_goes_back(
    live: LiveDemo, reports: Reports, hub: HubPublisher, page: Any
) -> None:
    courier = new_tracker(live, "Courier 13")
    start = datetime.now(UTC) - timedelta(seconds=60)
    history = [(round(60.16800 + 0.0002 * n, 6), round(24.93000 + 0.0003 * n, 6)) for n in range(5)]
    for n, where in enumerate(history):
        last = reports.send(courier, where, at=start + timedelta(seconds=5 * n))
    open_map(page, live.url + "#16/60.1685/24.9308")
    # The history is stored once the tracker's latest position is on the map.
    page.wait_for_function(
        "([id, ts]) => window.trackerMap.trackers().some((t) => t.id === id && t.timestamp === ts)",
        arg=[str(courier), last],
        timeout=15_000,
    )
    page.evaluate("(id) => window.trackerMap.select(id)", str(courier))
    wait_for_panel(page, "Courier 13")
    page.wait_for_function("window.trackerMap.selection().trail.length === 5", timeout=15_000)
    assert trail_of(page) == history

    later = [(round(60.16900 + 0.0002 * n, 6), round(24.93150 + 0.0003 * n, 6)) for n in range(3)]
    for where in later:
        wait_for_position(page, reports.send(courier, where))
    page.wait_for_function("window.trackerMap.selection().trail.length === 8")

    # A position older than the newest (a device's late report) is not drawn: no jump back.
    stale = (60.16500, 24.92000)
    hub.send(
        stale,
        "locationUpdated",
        [str(courier), *stale, int((start - timedelta(minutes=1)).timestamp() * 1000)],
    )
    newest = (60.17000, 24.93500)
    wait_for_position(page, reports.send(courier, newest))
    page.wait_for_function("window.trackerMap.selection().trail.length === 9")
    assert trail_of(page) == history + later + [newest]
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-selected-trail.png"))
    assert page.errors == []


def test_a_link_reopens_the_selection_and_follow(
    live: LiveDemo, reports: Reports, page: Any
) -> None:
    courier = new_tracker(live, "Courier 14")
    where = (60.16950, 24.93800)
    reports.send(courier, where)

    open_map(page, live.url + f"#15/60.1700/24.9416/t={courier}/follow")

    wait_for_panel(page, "Courier 14")
    assert panel_rows(page)["follow"] == "true"
    page.wait_for_function(CENTRED, timeout=15_000)
    moved = (60.16970, 24.93900)
    wait_for_position(page, reports.send(courier, moved))
    page.wait_for_function(CENTRED, timeout=15_000)

    # Picking another tracker looks at it without following it: the map does not run off after it.
    other = new_tracker(live, "Courier 14b")
    reports.send(other, (60.16900, 24.93700))
    page.evaluate("(id) => window.trackerMap.select(id)", str(other))
    wait_for_panel(page, "Courier 14b")
    assert panel_rows(page)["follow"] == "false"
    assert page.url.endswith(f"/t={other}")

    # Without /follow the selection opens and the view stays as the link has it.
    page.goto("about:blank")
    open_map(page, live.url + f"#14/60.1720/24.9400/t={courier}")
    wait_for_panel(page, "Courier 14")
    assert panel_rows(page)["follow"] == "false"
    center = page.evaluate("window.trackerMap.map.getCenter()")
    assert (round(center["lat"], 4), round(center["lng"], 4)) == (60.172, 24.94)

    # Zoomed out to the counts by area, a link keeps its zoom too; following, it centres there.
    page.goto("about:blank")
    page.goto(live.url + f"#4/55.0000/10.0000/t={courier}")
    wait_for_panel(page, "Courier 14")
    wait_for_position(page, 0)
    assert page.evaluate("window.trackerMap.map.getZoom()") == 4
    center = page.evaluate("window.trackerMap.map.getCenter()")
    # Within a pixel (a tenth of a degree at zoom 4): the panels' sizes settle after it opens.
    assert (center["lat"], center["lng"]) == (
        pytest.approx(55.0, abs=0.1),
        pytest.approx(10.0, abs=0.1),
    )
    page.goto("about:blank")
    page.goto(live.url + f"#4/55.0000/10.0000/t={courier}/follow")
    wait_for_panel(page, "Courier 14")
    page.wait_for_function(CENTRED, timeout=15_000)
    assert page.evaluate("window.trackerMap.map.getZoom()") == 4

    # A link from before selection existed opens its view, nothing selected.
    page.goto("about:blank")
    open_map(page, live.url + "#13/60.1800/24.9500")
    center = page.evaluate("window.trackerMap.map.getCenter()")
    assert (round(center["lat"], 2), round(center["lng"], 2)) == (60.18, 24.95)
    assert page.locator(PANEL).is_hidden()
    assert page.url.endswith("#13/60.1800/24.9500")

    # A tracker id nobody has: the panel says so.
    nobody = uuid.uuid4()
    page.goto("about:blank")
    open_map(page, live.url + f"#13/60.1800/24.9500/t={nobody}")
    page.wait_for_function(
        "document.querySelector('#tracker-details .details-note').textContent.startsWith('No active tracker')",
        timeout=15_000,
    )
    assert page.errors == []


def test_a_tracker_searched_for_outside_the_view_is_flown_to_and_its_panel_updates_live(
    live: LiveDemo, reports: Reports, page: Any
) -> None:
    courier = new_tracker(live, "Courier 15")
    reports.send(courier, TAMPERE)
    open_map(page, live.url + "#14/60.1750/24.9450")
    assert str(courier) not in {t["id"] for t in page.evaluate("window.trackerMap.trackers()")}

    # As an operator would: type in the list's search box, then Enter on the one match.
    page.click(".tracker-search")
    page.keyboard.type("courier 15")
    page.wait_for_function(
        "id => window.trackerMap.list().shown === 1 && document.querySelector('.tracker-row').dataset.id === id",
        arg=str(courier),
        timeout=15_000,
    )
    page.keyboard.press("Enter")

    wait_for_panel(page, "Courier 15")
    page.wait_for_function(CENTRED, timeout=15_000)
    assert page.evaluate("window.trackerMap.map.getZoom()") >= 13
    moved = (TAMPERE[0] + 0.0004, TAMPERE[1] + 0.0006)
    at = reports.send(courier, moved)
    wait_for_row(page, "Latitude", degrees(moved[0]))
    wait_for_position(page, at)

    # Zoomed out past the cell limit the page watches no cell: the panel is read from
    # the API instead, and the selected marker is still drawn.
    page.evaluate("() => { window.trackerMap.map.setZoom(5, { animate: false }); }")
    page.wait_for_function("window.trackerMap.cells().length === 0", timeout=15_000)
    further = (TAMPERE[0] + 0.0010, TAMPERE[1] + 0.0015)
    reports.send(courier, further)
    wait_for_row(page, "Latitude", degrees(further[0]))
    wait_for_row(page, "Longitude", degrees(further[1]))
    assert selected(page)["marker"]
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-selected-zoomed-out.png"))

    # Selecting it again from afar flies to a zoom where markers show.
    page.evaluate("(id) => window.trackerMap.select(id)", str(courier))
    page.wait_for_function(
        "window.trackerMap.map.getZoom() >= 13 && window.trackerMap.cells().length > 0",
        timeout=15_000,
    )
    page.wait_for_function(CENTRED, timeout=15_000)
    assert page.errors == []


def test_on_a_phone_the_details_are_a_sheet_below_the_tracker(
    live: LiveDemo, reports: Reports, browser: Any
) -> None:
    courier = new_tracker(live, "Courier 16 with a rather long name for a phone")
    where = (60.16990, 24.94200)
    reports.send(courier, where)
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        open_map(page, live.url + f"#15/60.1700/24.9416/t={courier}/follow")
        wait_for_panel(page, "Courier 16 with a rather long name for a phone")
        reports.send(courier, (60.16995, 24.94210))
        page.wait_for_function("window.trackerMap.selection().trail.length >= 2", timeout=15_000)
        sheet = page.locator(PANEL).bounding_box()
        shown = page.locator("#map").bounding_box()
        # A sheet across the bottom of the screen (over the list's), the map in sight above it.
        assert sheet["x"] == 0 and sheet["width"] == 390
        assert sheet["y"] + sheet["height"] == pytest.approx(844, abs=1)
        assert sheet["y"] >= 844 / 2 and sheet["y"] >= shown["y"] + shown["height"] / 2
        page.wait_for_function(
            """() => {
              const { map, selection } = window.trackerMap;
              const { position } = selection();
              const point = map.latLngToContainerPoint([position.latitude, position.longitude]);
              // In the middle of the part of the map the sheet leaves in sight.
              const box = map.getContainer().getBoundingClientRect();
              const top = document.getElementById("tracker-details").getBoundingClientRect().top;
              const uncovered = Math.min(box.bottom, top) - box.top;
              return Math.abs(point.y - uncovered / 2) < 3 && Math.abs(point.x - box.width / 2) < 3;
            }""",
            timeout=15_000,
        )
        support.ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(support.ARTIFACTS / "map-selected-phone.png"))
        # The close button clears the selection.
        page.locator(".details-close").tap()
        page.wait_for_function("document.getElementById('tracker-details').hidden")

        # With the list's sheet closed the map reaches down the screen: a marker tapped low on
        # it, where the details' sheet opens, is brought out from under it.
        page.locator(".side-panel-toggle").tap()
        page.wait_for_function(
            "document.getElementById('map').getBoundingClientRect().bottom > 700"
            # and Leaflet has taken the new size in (a ResizeObserver tells it, a moment later)
            " && window.trackerMap.map.getSize().y > 650"
        )
        point = page.evaluate(
            """(id) => {
              const { map, trackers } = window.trackerMap;
              const tracker = trackers().find((t) => t.id === id);
              map.setView([tracker.latitude, tracker.longitude], 15, { animate: false });
              const height = map.getSize().y;
              map.panBy([0, -(height / 2 - 30)], { animate: false });
              const point = map.latLngToContainerPoint([tracker.latitude, tracker.longitude]);
              const box = map.getContainer().getBoundingClientRect();
              return { x: box.left + point.x, y: box.top + point.y, bottom: box.bottom };
            }""",
            str(courier),
        )
        assert point["bottom"] - 40 < point["y"] < point["bottom"]
        page.touchscreen.tap(point["x"], point["y"])
        wait_for_panel(page, "Courier 16 with a rather long name for a phone")
        page.wait_for_function(
            """() => {
              const { map, selection } = window.trackerMap;
              const { position } = selection();
              const point = map.latLngToContainerPoint([position.latitude, position.longitude]);
              const top = map.getContainer().getBoundingClientRect().top;
              return top + point.y < document.getElementById("tracker-details").getBoundingClientRect().top - 20;
            }""",
            timeout=15_000,
        )
        assert panel_rows(page)["follow"] == "false"
        assert errors == []
    finally:
        context.close()


def test_any_hash_leaves_the_page_working(live: LiveDemo, reports: Reports, page: Any) -> None:
    courier = new_tracker(live, "Courier 17")
    reports.send(courier, (60.17000, 24.94160))
    open_map(page, live.url + HELSINKI_VIEW)
    parts = st.one_of(
        st.text(max_size=12),
        st.sampled_from(["follow", f"t={courier}", f"t={str(courier).upper()}", "t=", "t=bus-42"]),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.integers(-400, 400).map(str),
    )

    @hypothesis_settings(
        max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(hash_=st.one_of(st.text(max_size=40), st.lists(parts, max_size=6).map("/".join)))
    def navigate(hash_: str) -> None:
        page.evaluate("(hash) => { window.location.hash = hash; }", hash_)

    navigate()
    # After all that, a well-formed link still selects and the page is live.
    page.evaluate("(id) => { window.location.hash = `#15/60.1700/24.9416/t=${id}`; }", str(courier))
    wait_for_panel(page, "Courier 17")
    assert page.evaluate("window.trackerMap.status()") == "live"
    assert page.errors == []


def test_the_trail_goes_the_short_way_round_and_links_old_and_new_are_read(
    live: LiveDemo, page: Any
) -> None:
    open_map(page, live.url + HELSINKI_VIEW)
    answers = page.evaluate(
        """async () => {
          const base = document.querySelector('script[type="module"][src$="/map.js"]').src;
          const { TrailPoints, TrailLayer } = await import(new URL("trail.js", base).href);
          const { parseViewHash, formatViewHash } = await import(new URL("view-hash.js", base).href);
          const { map } = window.trackerMap;
          const lngs = (layer) => layer.drawn().map(([, lng]) => Math.round(lng * 100) / 100);
          const at = (longitude, timestamp) => ({ latitude: -16.75, longitude, timestamp });

          map.setView([-16.75, 179.95], 12, { animate: false });
          const points = new TrailPoints({ maxAgeMs: 600000, maxPoints: 5 });
          points.addHistory([at(179.98, 1000), at(-179.99, 2000), at(179.99, 1500)]);
          const layer = new TrailLayer(map, points);
          layer.redraw();
          const fromHistory = lngs(layer);
          const grew = points.extend(at(-179.97, 3000));
          layer.grew();
          const older = points.extend(at(0, 2500));
          const again = points.extend(at(-179.96, 3000));
          const extended = lngs(layer);
          map.setView([-16.75, -179.95], 12, { animate: false });
          const fromTheOtherSide = lngs(layer);
          for (let n = 1; n <= 4; n += 1) points.extend(at(-179.9 + n / 100, 3000 + n));
          const capped = points.length;
          points.extend(at(-179.5, 3004 + 600001));
          const aged = points.length;
          layer.clear();

          const uuid = "5b0e2c1d-7f3a-4e8b-9c6d-2a1f0e9d8c7b";
          const hashes = [
            "#13/60.1699/24.9384",
            `#13/60.1699/24.9384/t=${uuid}`,
            `#13/60.1699/24.9384/t=${uuid.toUpperCase()}/follow`,
            "#13/60.1699/24.9384/follow",
            "#13/60.1699/24.9384/t=bus-42",
            `#13/60.1699/24.9384/later=1/t=${uuid}`,
            "#13/91/24.9",
            "#13/60.17",
            "#//",
            "",
          ];
          return {
            fromHistory, grew, older, again, extended, fromTheOtherSide, capped, aged,
            cleared: layer.drawn().length,
            parsed: hashes.map(parseViewHash),
            formatted: [
              formatViewHash({ zoom: 13, latitude: 60.16991, longitude: 24.93842 }),
              formatViewHash({ zoom: 13, latitude: 60.16991, longitude: 24.93842, tracker: uuid, follow: true }),
              formatViewHash({ zoom: 5, latitude: 60.16991, longitude: 24.93842, tracker: null, follow: true }),
            ],
          };
        }"""
    )

    assert answers["fromHistory"] == [179.98, 179.99, 180.01]
    assert (answers["grew"], answers["older"], answers["again"]) == (True, False, False)
    assert answers["extended"] == [179.98, 179.99, 180.01, 180.03]
    assert answers["fromTheOtherSide"] == [-180.02, -180.01, -179.99, -179.97]
    assert answers["capped"] == 5
    assert answers["aged"] == 1
    assert answers["cleared"] == 0
    uuid_ = "5b0e2c1d-7f3a-4e8b-9c6d-2a1f0e9d8c7b"
    view = {"zoom": 13, "latitude": 60.1699, "longitude": 24.9384}
    assert answers["parsed"] == [
        {**view, "tracker": None, "follow": False},
        {**view, "tracker": uuid_, "follow": False},
        {**view, "tracker": uuid_, "follow": True},
        {**view, "tracker": None, "follow": False},
        {**view, "tracker": None, "follow": False},
        {**view, "tracker": uuid_, "follow": False},
        None,
        None,
        None,
        None,
    ]
    assert answers["formatted"] == [
        "#13/60.1699/24.9384",
        f"#13/60.1699/24.9384/t={uuid_}/follow",
        "#5/60.17/24.94",
    ]
    assert page.errors == []
