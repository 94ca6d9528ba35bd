"""The map's geofences in headless Chromium: the fence layer draws the stored
fences with their names, a crossing published through the real hub shows a
notice and changes the tracker's tooltip, and a fence saved later appears
without a reload. The demo runs over Redis and PostgreSQL here, so this test
process can publish to the page's cells as ingestion does."""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests import support
from tests.conftest import event_body
from tracking.grid import Grid
from tracking.hub.fanout import get_fanout, reset_fanouts
from tracking.hub.fanout.cells import cell_message
from tracking.hub.protocol import invocation
from tracking.hub.publishing import publish_locations
from tracking.positions import Crossing, LatestPosition

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

T = TypeVar("T")

SAMPLES = Path(__file__).resolve().parent.parent / "tracking" / "geofence_samples"
# Helsinki Station's fence spans 60.17001..60.17116 N, 24.93857..24.94456 E.
INSIDE = (60.17058, 24.94157)
OUTSIDE = (60.16900, 24.94157)  # 110 m south of it
STATION_VIEW = "#16/60.1700/24.9416"
COURIER = "Courier 7"


@dataclass
class LiveDemo:
    url: str
    env: dict[str, str]

    def python(self, code: str) -> str:
        """Run ``code`` in ``manage.py shell`` against the demo's database; its output."""
        result = support.manage(["shell", "-c", code], env=self.env, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


class HubPublisher:
    """Publishes as ingestion does (tracking.hub.publishing), from an event loop of its own."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._settings = override_settings(
            REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT="cells"
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> HubPublisher:
        self._settings.enable()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        reset_fanouts()
        self._settings.disable()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(15)

    def move(self, tracker_id: uuid.UUID, where: tuple[float, float], *crossings: Crossing) -> None:
        latitude, longitude = where
        position = LatestPosition(
            tracker_id=tracker_id,
            latitude=latitude,
            longitude=longitude,
            timestamp=datetime.now(UTC),
            cell=Grid(settings.TRACKING_GRID_DEGREES).cell_of(
                latitude=latitude, longitude=longitude
            ),
        )
        self.run(publish_locations([position], crossings))

    def send(self, where: tuple[float, float], target: str, arguments: list[Any]) -> None:
        """One raw hub record to the cell of ``where``, as the fan-out carries every record."""
        latitude, longitude = where
        cell = Grid(settings.TRACKING_GRID_DEGREES).cell_of(latitude=latitude, longitude=longitude)

        async def publish() -> None:
            await get_fanout().publish({cell: cell_message(invocation(target, arguments), ())})

        self.run(publish())


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    logs = tmp_path_factory.mktemp("fence-demo")
    prefix = f"fences{uuid.uuid4().hex[:8]}"
    with support.scratch_postgres_database() as database_url:
        env = support.base_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            CHANNEL_LAYER_PREFIX=prefix,
            TRACKING_BATCH_WAIT_MS="100",
        )
        migrated = support.manage(["migrate", "-v0"], env=env, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        imported = support.manage(
            ["import_geofences", str(SAMPLES / "helsinki.geojson")], env=env, timeout=60
        )
        assert imported.returncode == 0, imported.stderr
        port = support.free_port()
        command = [
            *(support.PYTHON, "manage.py", "demo", "--port", str(port)),
            *("--trackers", "30", "--seed", "5"),
        ]
        with support.background(command, env=env, log=logs / "demo.log") as process:
            support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
            yield LiveDemo(url=f"http://127.0.0.1:{port}/", env=env)


@pytest.fixture(scope="module")
def hub(live: LiveDemo, redis_url: str) -> Iterator[HubPublisher]:
    with HubPublisher(redis_url, live.env["CHANNEL_LAYER_PREFIX"]) as publisher:
        yield publisher


@pytest.fixture(scope="module")
def station_id(live: LiveDemo) -> int:
    out = live.python(
        "from tracking.models import Geofence; "
        "print(Geofence.objects.get(name='Helsinki Station').pk)"
    )
    return int(out.split()[-1])


def open_map(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function(
        "window.trackerMap && window.trackerMap.status() === 'live' "
        "&& window.trackerMap.cells().length > 0",
        timeout=15_000,
    )


def drawn_fences(page: Any) -> set[str]:
    return {fence["name"] for fence in page.evaluate("window.trackerMap.fences()")}


def fence_labels(page: Any) -> list[str]:
    labels: list[str] = page.evaluate(
        """() => Array.from(document.querySelectorAll(".fence-label-text"))
                 .filter((label) => label.getBoundingClientRect().width > 0)
                 .map((label) => label.textContent)"""
    )
    return labels


def wait_for_label(page: Any, name: str) -> None:
    page.wait_for_function(
        """(name) => Array.from(document.querySelectorAll(".fence-label-text"))
                    .some((label) => label.textContent === name)""",
        arg=name,
        timeout=15_000,
    )


def wait_for_tracker(page: Any, tracker_id: str) -> None:
    page.wait_for_function(
        "id => window.trackerMap.trackers().some((t) => t.id === id)",
        arg=tracker_id,
        timeout=15_000,
    )


def hover_tracker(page: Any, tracker_id: str) -> None:
    """Put the mouse on a tracker's marker, the map centred on it."""
    wait_for_tracker(page, tracker_id)
    point = page.evaluate(
        """(id) => {
          const { map, trackers } = window.trackerMap;
          const tracker = trackers().find((t) => t.id === id);
          map.setView([tracker.latitude, tracker.longitude], map.getZoom(), { animate: false });
          const box = map.getContainer().getBoundingClientRect();
          const size = map.getSize();
          return { x: box.left + size.x / 2, y: box.top + size.y / 2 };
        }""",
        tracker_id,
    )
    page.mouse.move(point["x"] + 1, point["y"])
    page.mouse.move(point["x"], point["y"])


def wait_for_tooltip_fences(page: Any, expected: str) -> None:
    page.wait_for_function(
        """(expected) => {
          const tip = document.getElementById("tracker-tooltip");
          if (tip.hidden) return false;
          const term = Array.from(tip.querySelectorAll("dt")).find((dt) => dt.textContent === "Geofences");
          return term !== undefined && term.nextElementSibling.textContent === expected;
        }""",
        arg=expected,
        timeout=15_000,
    )


def wait_for_notice(page: Any, text: str) -> None:
    page.wait_for_function(
        """(text) => Array.from(document.querySelectorAll("#notices li"))
                    .some((item) => item.textContent.endsWith(text))""",
        arg=text,
        timeout=15_000,
    )


def register_courier(live: LiveDemo) -> uuid.UUID:
    tracker_id = uuid.uuid4()
    live.python(
        "import uuid; from tracking.ingest.store import register_trackers; "
        f"register_trackers(trackers=[(uuid.UUID('{tracker_id}'), '{COURIER}')])"
    )
    return tracker_id


def cross(
    live: LiveDemo,
    hub: HubPublisher,
    tracker_id: uuid.UUID,
    fence_id: int,
    *,
    entered: bool,
    where: tuple[float, float],
) -> None:
    """What ingestion does on a crossing: commit the visit, then publish the crossing after the position."""
    change = (
        f"Visit.objects.create(tracker_id='{tracker_id}', geofence_id={fence_id}, entered_at=now)"
        if entered
        else f"Visit.objects.filter(tracker_id='{tracker_id}', exited_at=None).update(exited_at=now)"
    )
    live.python(
        "from django.utils import timezone; from tracking.models import Visit; "
        f"now = timezone.now(); {change}"
    )
    hub.move(tracker_id, where, Crossing(tracker_id, fence_id, entered, datetime.now(UTC)))


def courier_on_map(
    live: LiveDemo, hub: HubPublisher, page: Any, where: tuple[float, float]
) -> uuid.UUID:
    """A new tracker named COURIER, at ``where`` on a map opened over Helsinki Station."""
    courier = register_courier(live)
    open_map(page, live.url + STATION_VIEW)
    hub.move(courier, where)
    wait_for_tracker(page, str(courier))
    return courier


def test_the_fence_layer_draws_the_stored_fences_named_at_city_zoom_only(
    live: LiveDemo, page: Any
) -> None:
    open_map(page, live.url + "#15/60.1745/24.9350")

    page.wait_for_function("window.trackerMap.fences().length >= 2", timeout=15_000)
    assert drawn_fences(page) >= {"Helsinki Station", "Iglooconf"}
    wait_for_label(page, "Helsinki Station")
    assert {"Helsinki Station", "Iglooconf"} <= set(fence_labels(page))
    page.wait_for_function("window.trackerMap.trackers().length >= 3", timeout=15_000)
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-fences-helsinki.png"))

    # Seen from afar the fences are specks: drawn, but not named over the whole region.
    page.evaluate("void window.trackerMap.map.setZoom(10, { animate: false })")
    page.wait_for_function(
        "document.querySelectorAll('.fence-label-text').length === 0", timeout=10_000
    )
    assert drawn_fences(page) >= {"Helsinki Station", "Iglooconf"}
    page.screenshot(path=str(support.ARTIFACTS / "map-fences-zoomed-out.png"))

    # The layer can be switched off and on from the map's controls.
    page.evaluate("void window.trackerMap.map.setZoom(15, { animate: false })")
    wait_for_label(page, "Helsinki Station")
    page.get_by_label("Geofences").uncheck()
    assert fence_labels(page) == []
    page.get_by_label("Geofences").check()
    wait_for_label(page, "Helsinki Station")
    assert page.errors == []


def test_a_crossing_shows_a_notice_and_the_tooltip_lists_the_fence_while_inside(
    live: LiveDemo, hub: HubPublisher, station_id: int, page: Any
) -> None:
    courier = courier_on_map(live, hub, page, OUTSIDE)
    hover_tracker(page, str(courier))
    wait_for_tooltip_fences(page, "none")

    cross(live, hub, courier, station_id, entered=True, where=INSIDE)

    wait_for_notice(page, f"{COURIER} entered Helsinki Station")
    hover_tracker(page, str(courier))
    wait_for_tooltip_fences(page, "Helsinki Station")
    notices = page.locator("#notices")
    assert notices.get_attribute("aria-live") == "polite"
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-fence-entered.png"))

    # A page opened now reads the open visit from the API.
    fresh = page.context.new_page()
    fresh.errors = []
    fresh.on("pageerror", lambda error: fresh.errors.append(str(error)))
    open_map(fresh, live.url + STATION_VIEW)
    hub.move(courier, INSIDE)
    hover_tracker(fresh, str(courier))
    wait_for_tooltip_fences(fresh, "Helsinki Station")
    fresh.close()

    cross(live, hub, courier, station_id, entered=False, where=OUTSIDE)

    wait_for_notice(page, f"{COURIER} left Helsinki Station")
    hover_tracker(page, str(courier))
    wait_for_tooltip_fences(page, "none")
    page.screenshot(path=str(support.ARTIFACTS / "map-fence-left.png"))
    assert fresh.errors == [] and page.errors == []


def test_a_burst_of_crossings_shows_a_few_notices_and_counts_the_rest(
    live: LiveDemo, hub: HubPublisher, station_id: int, page: Any
) -> None:
    courier = courier_on_map(live, hub, page, INSIDE)

    # As many as one hub message holds (the demo's server sends at most 64 KiB at once).
    now = datetime.now(UTC)
    crossings = [Crossing(courier, station_id, n % 2 == 0, now) for n in range(400)]
    hub.move(courier, INSIDE, *crossings)

    page.wait_for_function(
        "document.querySelector('#notices .notice-summary') !== null", timeout=15_000
    )
    shown = page.locator("#notices li").all_inner_texts()
    assert len(shown) <= 5
    # The demo's own trackers may cross a fence meanwhile: at least the 396 not shown are counted.
    counted = [
        re.fullmatch(r"([\d,]+) earlier geofence crossings not shown", text) for text in shown
    ]
    assert any(found and int(found[1].replace(",", "")) >= 396 for found in counted), shown
    # The last crossing was an exit: the tooltip says so.
    hover_tracker(page, str(courier))
    wait_for_tooltip_fences(page, "none")
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-fence-burst.png"))
    assert page.errors == []


def test_ten_thousand_notices_at_once_leave_a_few_on_screen(live: LiveDemo, page: Any) -> None:
    open_map(page, live.url + STATION_VIEW)
    url = page.evaluate(
        """() => new URL("notices.js", document.querySelector('script[type="module"][src$="/map.js"]').src).href"""
    )

    shown = page.evaluate(
        """async (url) => {
          const { NoticeBoard } = await import(url);
          const list = document.createElement("ol");
          document.body.append(list);
          const board = new NoticeBoard(list, () => ({ tracker: "Van", fence: "Depot" }));
          for (let n = 0; n < 10000; n += 1) {
            board.add({ trackerId: "t", fenceId: "1", entered: n % 2 === 0, at: Date.now() });
          }
          await new Promise((resolve) => new MutationObserver(resolve).observe(list, { childList: true }));
          return Array.from(list.children, (item) => item.textContent);
        }""",
        url,
    )

    assert len(shown) == 5
    assert shown[0] == "9,996 earlier geofence crossings not shown"
    assert shown[-1].endswith("Van left Depot")
    assert page.errors == []


def test_a_fence_saved_later_appears_on_an_open_map_without_a_reload(
    live: LiveDemo, page: Any, tmp_path: Path
) -> None:
    open_map(page, live.url + STATION_VIEW)
    wait_for_label(page, "Helsinki Station")
    name = f"Railway Square {uuid.uuid4().hex[:4]}"
    circle = {
        "type": "Feature",
        "properties": {"name": name, "radius": 120},
        "geometry": {"type": "Point", "coordinates": [24.9435, 60.1713]},
    }
    path = tmp_path / "square.geojson"
    path.write_text(json.dumps(circle))

    imported = support.manage(["import_geofences", str(path)], env=live.env, timeout=60)
    assert imported.returncode == 0, imported.stderr

    wait_for_label(page, name)
    assert name in drawn_fences(page)
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-fence-added.png"))
    assert page.errors == []


def test_hostile_geofence_messages_neither_break_the_page_nor_inject_markup(
    live: LiveDemo, hub: HubPublisher, station_id: int, page: Any
) -> None:
    courier = courier_on_map(live, hub, page, INSIDE)
    json_values = st.recursive(
        # Integers a JSON encoder writes (the server's, orjson, stops at 64 bits).
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=6,
    )
    near_valid = st.one_of(
        st.just(str(courier)), st.text(), st.just("<img src=x onerror=alert(1)>"), json_values
    )

    @hypothesis_settings(
        max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        target=st.sampled_from(["geofenceEntered", "geofenceExited", "geofencesChanged"]),
        arguments=st.lists(near_valid, max_size=3),
    )
    def send(target: str, arguments: list[Any]) -> None:
        hub.send(INSIDE, target, arguments)

    send()
    # A well-formed crossing after them still gets through: the page is alive and well.
    hub.move(courier, INSIDE, Crossing(courier, station_id, True, datetime.now(UTC)))
    wait_for_notice(page, f"{COURIER} entered Helsinki Station")
    assert page.evaluate("document.querySelectorAll('#notices img, #notices script').length") == 0
    assert page.evaluate("window.trackerMap.status()") == "live"
    assert page.errors == []


def test_a_fence_across_the_antimeridian_is_drawn_whole_from_either_side(
    live: LiveDemo, page: Any, tmp_path: Path
) -> None:
    name = f"Date line {uuid.uuid4().hex[:4]}"
    ring = [[179.8, -16.9], [-179.8, -16.9], [-179.8, -16.6], [179.8, -16.6], [179.8, -16.9]]
    fence = {
        "type": "Feature",
        "properties": {"name": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    path = tmp_path / "dateline.geojson"
    path.write_text(json.dumps(fence))
    imported = support.manage(["import_geofences", str(path)], env=live.env, timeout=60)
    assert imported.returncode == 0, imported.stderr

    for view in ("#10/-16.75/179.9", "#10/-16.75/-179.9"):
        open_map(page, live.url + view)
        wait_for_label(page, name)
        # The copy of the fence beside the view's centre is drawn, whichever side of 180 it is.
        middle = page.evaluate(
            """(name) => {
              const label = Array.from(document.querySelectorAll(".fence-label-text"))
                .find((item) => item.textContent === name);
              const box = label.getBoundingClientRect();
              const map = document.getElementById("map").getBoundingClientRect();
              return box.left + box.width / 2 - (map.left + map.width / 2);
            }""",
            name,
        )
        assert abs(middle) < 100, (view, middle)
        support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-fence-antimeridian.png"))
    assert page.errors == []


def test_fences_js_reads_circles_holes_multipolygons_and_the_antimeridian(
    live: LiveDemo, page: Any
) -> None:
    open_map(page, live.url + STATION_VIEW)
    url = page.evaluate(
        """() => new URL("fences.js", document.querySelector('script[type="module"][src$="/map.js"]').src).href"""
    )

    answers = page.evaluate(
        """async (url) => {
          const { fenceOf, bboxOf } = await import(url);
          const L = window.L;
          const square = (w, s, size) => [[w, s], [w + size, s], [w + size, s + size], [w, s + size], [w, s]];
          const feature = (geometry, properties = {}) => ({ type: "Feature", id: "7", geometry, properties: { name: "F", ...properties } });
          const extent = (fence) => fence && fence.extent;
          return {
            circle: extent(fenceOf(feature({ type: "Point", coordinates: [24.9, 60] }, { radius: 1000 }))),
            holed: fenceOf(feature({ type: "Polygon", coordinates: [square(0, 0, 1), square(0.25, 0.25, 0.5)] })).polygons[0].length,
            multi: fenceOf(feature({ type: "MultiPolygon", coordinates: [[square(0, 0, 1)], [square(2, 0, 1)]] })).polygons.length,
            dateline: extent(fenceOf(feature({ type: "Polygon", coordinates: [[[179.8, 0], [-179.8, 0], [-179.8, 1], [179.8, 1], [179.8, 0]]] }))),
            malformed: [
              fenceOf(feature({ type: "Polygon", coordinates: [[[0, 0], [1, 1]]] })),
              fenceOf(feature({ type: "Point", coordinates: [0, 0] })),
              fenceOf(feature({ type: "LineString", coordinates: [[0, 0], [1, 1]] })),
              fenceOf({ type: "Feature", geometry: null, properties: null }),
              fenceOf(null),
            ],
            bbox: {
              across: bboxOf(L.latLngBounds([-18, 179], [-16, 181])),
              plain: bboxOf(L.latLngBounds([60, 24], [61, 25])),
              eastEdge: bboxOf(L.latLngBounds([0, 170], [1, 180])),
              wider: bboxOf(L.latLngBounds([-80, -300], [80, 300])),
            },
          };
        }""",
        url,
    )

    metres_per_degree = 6371008.8 * math.pi / 180
    circle = answers["circle"]
    assert abs((circle["north"] - 60) * metres_per_degree - 1000) < 1
    # A true circle: as wide as it is tall on the ground, so wider in degrees of longitude.
    ground_width = (
        (circle["east"] - circle["west"]) * metres_per_degree * math.cos(math.radians(60))
    )
    assert abs(ground_width - 2000) < 5
    assert answers["holed"] == 2
    assert answers["multi"] == 2
    dateline = answers["dateline"]
    assert dateline["east"] - dateline["west"] == pytest.approx(0.4)
    assert answers["malformed"] == [None] * 5
    assert answers["bbox"] == {
        "across": "179,-18,-179,-16",
        "plain": "24,60,25,61",
        "eastEdge": "170,0,180,1",
        "wider": "-180,-80,180,80",
    }
    assert page.errors == []


def test_crossings_detected_by_the_pipeline_reach_the_map(
    live: LiveDemo, hub: HubPublisher, page: Any, tmp_path: Path
) -> None:
    """consume_events, a process of its own as in production, detects the
    crossings of reported positions and publishes them over Redis to the page."""
    courier = courier_on_map(live, hub, page, OUTSIDE)
    start = datetime.now(UTC)

    def report(name: str, *places: tuple[float, float], after: int) -> None:
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(
            b"\n".join(
                event_body(
                    tracker_id=courier,
                    latitude=latitude,
                    longitude=longitude,
                    at=start + timedelta(seconds=after + n),
                )
                for n, (latitude, longitude) in enumerate(places)
            )
            + b"\n"
        )
        consumed = support.manage(
            ["consume_events", "--source", "jsonl", "--path", str(path)], env=live.env, timeout=60
        )
        assert consumed.returncode == 0, consumed.stdout + consumed.stderr

    report("in", OUTSIDE, INSIDE, after=1)
    wait_for_notice(page, f"{COURIER} entered Helsinki Station")
    hover_tracker(page, str(courier))
    wait_for_tooltip_fences(page, "Helsinki Station")

    report("out", OUTSIDE, after=3)
    wait_for_notice(page, f"{COURIER} left Helsinki Station")
    hover_tracker(page, str(courier))
    wait_for_tooltip_fences(page, "none")
    support.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(support.ARTIFACTS / "map-fence-detected.png"))
    assert page.errors == []
