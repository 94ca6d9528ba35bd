"""The details panel's trips and stops, in headless Chromium against the demo:
a van drove yesterday morning (Helsinki time), stood ten minutes and drove
on; its panel shows today first, then yesterday's two trips and the stop
between them; a trip asks the replay to play it, a stop's place is shown on
the map."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests import support

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HELSINKI = ZoneInfo("Europe/Helsinki")
VAN = uuid.UUID("5a1e0000-0000-4000-8000-000000000007")
SECTION = "#tracker-details .trips"
DASH = "\N{EN DASH}"

# Run in the demo's database: yesterday 08:00 Helsinki time, drive 10 min east,
# stand 10 min, drive 10 min north, stored through the ingest path.
SEED = """
import json, sys
from datetime import datetime
from tests.conftest import event_body
from tests.test_trips import Route
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.models import Tracker
start = datetime.fromisoformat({start!r})
route = Route()
route.at = start
route.drive(600, kmh=40, east=1, north=0)
route.stand(600, jitter_m=8)
route.drive(600, kmh=40, east=0, north=1)
events = [
    RawEvent(body=event_body(tracker_id={van!r}, latitude=p.latitude, longitude=p.longitude,
             at=p.timestamp, Speed=p.speed, Accuracy=p.accuracy), origin="test")
    for p in route.positions
]
for first in range(0, len(events), 600):
    ingest_batch(events=events[first:first + 600])
Tracker.objects.filter(id={van!r}).update(name="Van 7")
print(json.dumps(route.spots[0]))
"""


@pytest.fixture(scope="module")
def demo_with_a_van(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The demo on SQLite, with Van 7's yesterday stored: its URL and where the van stood."""
    folder: Path = tmp_path_factory.mktemp("trips-demo")
    env = support.base_env(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}", TRACKING_BATCH_WAIT_MS="100"
    )
    migrated = support.manage(["migrate", "-v0"], env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    yesterday = datetime.now(HELSINKI).date() - timedelta(days=1)
    start = datetime(yesterday.year, yesterday.month, yesterday.day, 8, tzinfo=HELSINKI)
    seeded = support.manage(
        ["shell", "-c", SEED.format(start=start.isoformat(), van=str(VAN))], env=env, timeout=120
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    spot = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = support.free_port()
    command = [
        *(support.PYTHON, "manage.py", "demo", "--port", str(port)),
        *("--trackers", "5", "--seed", "5"),
    ]
    with support.background(command, env=env, log=folder / "demo.log") as process:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
        yield f"http://127.0.0.1:{port}/", spot


@pytest.fixture
def helsinki_page(browser: Any) -> Iterator[Any]:
    """A tab whose clock is Helsinki's: the day the panel shows is the local day."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id="Europe/Helsinki", locale="en-GB"
    )
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def van_selected(page: Any, url: str) -> Any:
    """The map open on the van's town, live, the van selected: its trips section."""
    page.goto(url + "#13/60.1800/25.0500")
    page.wait_for_function("window.trackerMap && window.trackerMap.status() === 'live'")
    page.evaluate(f"window.trackerMap.select('{VAN}')")
    return page.locator(SECTION)


def test_the_panel_shows_a_days_trips_and_stops_and_hands_a_trip_to_the_replay(
    demo_with_a_van: tuple[str, Any], helsinki_page: Any
) -> None:
    url, spot = demo_with_a_van
    page = helsinki_page
    section = van_selected(page, url)
    # Today first: the van has not moved today.
    section.locator(".trips-date", has_text="Today").wait_for()
    section.get_by_text("No trips or stops on this day.").wait_for()
    assert section.get_by_role("button", name="Next day").is_disabled()

    section.get_by_role("button", name="Previous day").click()
    section.locator(".trips-date", has_text="Yesterday").wait_for()
    section.locator(".trips-trip").nth(1).wait_for()
    rows = section.locator(".trips-items > li")
    assert rows.count() == 3
    texts = [rows.nth(n).inner_text().replace("\n", " ") for n in range(3)]
    # A trip from 08:00 to 08:10 of about 6.6 km, the stop from 08:10 to 08:20, the trip on
    # (clock times to the second, as the rest of the map writes them).
    assert re.search(f"08:00:0\\d {DASH} 08:(09:5|10:0)\\d", texts[0]), texts[0]
    assert "6.6 km" in texts[0] and "10 min" in texts[0]
    assert "average 40 km/h" in texts[0] and "top 40 km/h" in texts[0]
    assert re.search(f"08:(09:5|10:0)\\d {DASH} 08:(19:5|20:0)\\d", texts[1]), texts[1]
    assert "Stopped 10 min" in texts[1]
    assert re.search(f"08:(19:5|20:0)\\d {DASH} 08:(29:5|30:0)\\d", texts[2]), texts[2]
    summary = section.locator(".trips-summary").inner_text()
    assert summary.startswith("2 trips · 13.") and summary.endswith(" km in 20 min")
    drawn = page.evaluate("window.trackerMap.trips()")
    assert (drawn["trips"], drawn["stops"]) == (2, 1)
    assert drawn["until"] - drawn["since"] == 86_400_000 - 1

    # A trip asks the replay to play it, with the trip's own times.
    page.evaluate(
        """window.replayAsked = [];
        window.addEventListener("tracker-replay", (e) => window.replayAsked.push(e.detail));"""
    )
    section.locator(".trips-trip-button").first.click()
    (asked,) = page.evaluate("window.replayAsked")
    assert asked["trackerIds"] == [str(VAN)]
    assert asked["until"] - asked["since"] == pytest.approx(600_000, abs=10_000)

    # A stop's place brings the map there.
    section.locator(".trips-place").click()
    page.wait_for_function(
        """([lat, lng]) => {
            const c = window.trackerMap.map.getCenter();
            return Math.abs(c.lat - lat) < 0.002 && Math.abs(c.lng - lng) < 0.002;
        }""",
        arg=spot,
    )
    page.locator(".trips-stop-marker").wait_for()
    page.screenshot(path=str(support.ARTIFACTS / "map-trips-yesterday.png"))
    section.screenshot(path=str(support.ARTIFACTS / "map-trips-section.png"))
    assert page.errors == []


# A day as QA saw it (Helsinki time, today): a trip from 04:18:20 to 04:20:40 (140 s),
# a stop, and a trip from 04:59:38 to 05:03:43; the trips answer is the page's, so the
# clock times are exactly these.
def _helsinki_today_ms(hour: int, minute: int, second: int) -> int:
    today = datetime.now(HELSINKI).date()
    moment = datetime(today.year, today.month, today.day, hour, minute, second, tzinfo=HELSINKI)
    return int(moment.timestamp() * 1000)


def _qa_day() -> dict[str, Any]:
    def trip(since: int, until: int, metres: float) -> dict[str, Any]:
        seconds = (until - since) / 1000
        return {
            "start": {"timestamp": since, "latitude": 60.17, "longitude": 24.95},
            "end": {"timestamp": until, "latitude": 60.18, "longitude": 24.98},
            "distanceMetres": metres,
            "durationSeconds": seconds,
            "averageSpeed": metres / seconds * 3.6,
            "topSpeed": 36.0,
        }

    first = (_helsinki_today_ms(4, 18, 20), _helsinki_today_ms(4, 20, 40))
    second = (_helsinki_today_ms(4, 59, 38), _helsinki_today_ms(5, 3, 43))
    return {
        "trips": [trip(*first, 1400.0), trip(*second, 2450.0)],
        "stops": [
            {
                "latitude": 60.18,
                "longitude": 24.98,
                "from": first[1],
                "until": second[0],
                "durationSeconds": (second[0] - first[1]) / 1000,
            }
        ],
    }


# The listed clock times, as the rest of the map writes them (to the second).
QA_TIMES = {
    "en-US": [
        f"04:18:20 AM {DASH} 04:20:40 AM",
        f"04:20:40 AM {DASH} 04:59:38 AM",
        f"04:59:38 AM {DASH} 05:03:43 AM",
    ],
    "en-GB": [
        f"04:18:20 {DASH} 04:20:40",
        f"04:20:40 {DASH} 04:59:38",
        f"04:59:38 {DASH} 05:03:43",
    ],
    "fi-FI": [
        f"04.18.20 {DASH} 04.20.40",
        f"04.20.40 {DASH} 04.59.38",
        f"04.59.38 {DASH} 05.03.43",
    ],
}

# How many lines each row's times take (one per distinct line box of its text).
LINES_OF_TIMES = """() => [...document.querySelectorAll("#tracker-details .trips-items .trips-when")].map((el) => {
    const range = document.createRange();
    range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
})"""


@pytest.mark.parametrize(
    ("locale", "width", "height"),
    [("en-US", 1400, 900), ("en-GB", 1400, 900), ("fi-FI", 1400, 900), ("en-US", 1280, 800)],
)
def test_trip_times_are_to_the_second_on_one_line_and_agree_with_the_replay(
    demo_with_a_van: tuple[str, Any], browser: Any, locale: str, width: int, height: int
) -> None:
    url, _ = demo_with_a_van
    context = browser.new_context(
        viewport={"width": width, "height": height},
        timezone_id="Europe/Helsinki",
        locale=locale,
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    day = _qa_day()
    page.route(
        f"**/api/trackers/{VAN}/trips?**",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(day)
        ),
    )
    try:
        section = van_selected(page, url)
        section.locator(".trips-trip").nth(1).wait_for()
        # Every row's times on one line at the panel's width.
        assert page.evaluate(LINES_OF_TIMES) == [1, 1, 1]
        whens = section.locator(".trips-items .trips-when")
        assert [whens.nth(n).inner_text() for n in range(3)] == QA_TIMES[locale]
        # The 140 s trip reads as 2 minutes, the other as 4; the stop as its 39 minutes.
        whats = [section.locator(".trips-what").nth(n).inner_text() for n in range(3)]
        assert whats == ["1.4 km · 2 min", "Stopped 39 min", "2.5 km · 4 min"]
        name = f"map-trips-times-{locale}-{width}"
        section.screenshot(path=str(support.ARTIFACTS / f"{name}.png"))

        # The trip opens a replay from its listed start: the range's From is that
        # minute (or second), which the listed time begins with.
        section.locator(".trips-trip-button").nth(1).click()
        since_input = page.locator("#replay-range input").first
        page.wait_for_function(
            "(el) => el.value.includes('T04:59')", arg=since_input.element_handle(), timeout=10_000
        )
        since_clock = since_input.input_value().split("T")[1]
        listed = QA_TIMES["en-GB"][2].split(" ")[0]
        assert listed.startswith(since_clock), (since_clock, listed)
        page.screenshot(path=str(support.ARTIFACTS / f"{name}-replay.png"))
        assert errors == []
    finally:
        context.close()


def test_a_stops_ring_goes_when_a_trip_then_replays(
    demo_with_a_van: tuple[str, Any], helsinki_page: Any
) -> None:
    url, _spot = demo_with_a_van
    page = helsinki_page
    section = van_selected(page, url)
    section.locator(".trips-date", has_text="Today").wait_for()
    section.get_by_role("button", name="Previous day").click()
    section.locator(".trips-trip").nth(1).wait_for()
    # The stop looked at is ringed; the trip after it then replayed, the ring goes with the live map.
    section.locator(".trips-place").click()
    page.locator(".trips-stop-marker").wait_for()
    section.locator(".trips-trip-button").nth(1).click()
    page.wait_for_function("window.trackerMap.replay().active")
    assert page.locator(".trips-stop-marker").count() == 0
    page.screenshot(path=str(support.ARTIFACTS / "map-trips-replay-no-ring.png"))
    assert page.errors == []
