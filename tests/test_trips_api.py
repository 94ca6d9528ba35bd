"""GET /api/trackers/{id}/trips (docs/protocol.md §4.9): a tracker's trips and
stops over a range, from positions stored through the real ingest path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_queries import answered_or_refused, any_query
from tests.conftest import event_body
from tests.test_trips import HELSINKI, START, Route, offset
from tracking.api_tokens import issue_token
from tracking.events import unix_ms
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.models import Tracker
from tracking.trips import distance_m

pytestmark = pytest.mark.django_db


def store(tracker_id: uuid.UUID, route: Route) -> None:
    """The route's positions as a device sends them, stored as consume_events would."""
    events = []
    for position in route.positions:
        extra: dict[str, object] = {"Accuracy": position.accuracy}
        if position.speed is not None:
            extra["Speed"] = position.speed
        body = event_body(
            tracker_id=tracker_id,
            latitude=position.latitude,
            longitude=position.longitude,
            at=position.timestamp,
            **extra,
        )
        events.append(RawEvent(body=body, origin="t"))
    for first in range(0, len(events), 1000):
        ingest_batch(events=events[first : first + 1000], now=route.at)


def trips_url(tracker_id: uuid.UUID, **query: object) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/trackers/{tracker_id}/trips" + (f"?{params}" if params else "")


def planned_day() -> Route:
    """Drive 10 minutes east, stand 10 minutes, drive 10 minutes north."""
    route = Route()
    route.drive(600, kmh=40, east=1, north=0)
    route.stand(600, jitter_m=8)
    route.drive(600, kmh=40, east=0, north=1)
    return route


def test_a_planned_stop_between_two_drives_is_answered_as_two_trips_and_one_stop(
    client: Client,
) -> None:
    tracker_id = uuid.uuid4()
    route = planned_day()
    store(tracker_id, route)
    (stop_place,) = route.spots

    since, until = unix_ms(START - timedelta(hours=1)), unix_ms(START + timedelta(hours=1))
    body = client.get(trips_url(tracker_id, since=since, until=until)).json()

    assert (body["trackerId"], body["since"], body["until"]) == (str(tracker_id), since, until)
    assert body["rules"] == {
        "stopRadiusMetres": 100,
        "stopMinSeconds": 300,
        "tripMinDistanceMetres": 500,
        "tripGapSeconds": 900,
    }
    first, second = body["trips"]
    (stop,) = body["stops"]
    start_ms = unix_ms(START)
    assert stop["from"] == pytest.approx(start_ms + 600_000, abs=10_000)
    assert stop["until"] == pytest.approx(start_ms + 1_200_000, abs=10_000)
    assert stop["durationSeconds"] == (stop["until"] - stop["from"]) / 1000
    assert distance_m(stop["latitude"], stop["longitude"], *stop_place) < 10
    assert first["start"] == {
        "timestamp": start_ms,
        "latitude": pytest.approx(route.positions[0].latitude),
        "longitude": pytest.approx(route.positions[0].longitude),
    }
    assert first["end"]["timestamp"] == stop["from"]
    assert second["start"]["timestamp"] == stop["until"]
    assert second["end"]["timestamp"] == start_ms + 1_799_000
    for trip in (first, second):
        assert trip["distanceMetres"] == pytest.approx(6667, rel=0.03)
        assert trip["averageSpeed"] == pytest.approx(40, rel=0.03)
        assert trip["topSpeed"] == 40
        duration = (trip["end"]["timestamp"] - trip["start"]["timestamp"]) / 1000
        assert trip["durationSeconds"] == duration


def test_a_range_reads_only_its_own_positions_a_page_at_a_time(client: Client) -> None:
    tracker_id = uuid.uuid4()
    store(tracker_id, planned_day())
    since = unix_ms(START + timedelta(minutes=15))

    with override_settings(DEBUG=True), CaptureQueriesContext(connection) as queries:
        body = client.get(trips_url(tracker_id, since=since, until=since + 3_600_000)).json()

    # From the middle of the stop: the rest of the stop, then the drive north.
    (stop,) = body["stops"]
    assert stop["from"] == since
    (trip,) = body["trips"]
    assert trip["start"]["timestamp"] == stop["until"]
    reads = [q for q in queries.captured_queries if "tracking_position" in q["sql"]]
    assert len(reads) == 1  # 1,200 positions: one page


def test_an_empty_range_has_no_trips_and_no_stops(client: Client, now: datetime) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    body = client.get(trips_url(tracker.id)).json()
    assert body["trips"] == [] and body["stops"] == []
    assert body["until"] - body["since"] == 24 * 3_600_000


def test_only_active_trackers_answer(client: Client) -> None:
    assert client.get(trips_url(uuid.uuid4())).status_code == 404
    tracker = Tracker.objects.create(name="Van 1", is_active=False)
    response = client.get(trips_url(tracker.id))
    assert response.status_code == 404
    assert response.json()["error"] == f"No active tracker {tracker.id}."


def test_trips_follow_the_maps_access_rule(client: Client) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    with override_settings(MAP_PUBLIC=False):
        assert client.get(trips_url(tracker.id)).status_code == 401
        _, token = issue_token(user=User.objects.create_user("ops"))
        signed = client.get(trips_url(tracker.id), headers={"Authorization": f"Bearer {token}"})
        assert signed.status_code == 200


def test_the_settings_decide_what_a_stop_is(client: Client) -> None:
    tracker_id = uuid.uuid4()
    store(tracker_id, planned_day())
    query = {"since": unix_ms(START), "until": unix_ms(START + timedelta(hours=1))}
    # A stop must last 15 minutes: the 10-minute one is none, and one trip drives on.
    with override_settings(TRACKING_STOP_MIN_SECONDS=900):
        body = client.get(trips_url(tracker_id, **query)).json()
    assert body["stops"] == [] and len(body["trips"]) == 1
    assert body["rules"]["stopMinSeconds"] == 900


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"since": "today"}, "since must be a whole number of Unix milliseconds"),
        ({"until": "1e3"}, "until must be a whole number of Unix milliseconds"),
        ({"since": 2000, "until": 1000}, "since (2000) is after until (1000)"),
        ({"since": 0, "until": 7 * 86_400_000 + 1}, "at most 7 days apart"),
        ({"since": -(10**15)}, "outside the years 1 to 9999"),
    ],
)
def test_bad_parameters_are_explained(client: Client, query: dict[str, object], says: str) -> None:
    answer = client.get(trips_url(Tracker.objects.create(name="Van 1").id, **query))
    assert (answer.status_code, says in answer.json()["error"]) == (400, True)


# Any query, and ranges of moments around now (Unix ms), so that many are answered.
moments = st.integers(0, 2 * 10**12).map(str)
queries = any_query("since", "until") | st.fixed_dictionaries({"since": moments, "until": moments})


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries)
def test_any_query_gets_trips_or_a_json_error(client: Client, query: dict[str, str]) -> None:
    tracker = Tracker.objects.get_or_create(name="Van 1")[0]
    body = answered_or_refused(client.get(trips_url(tracker.id), query))
    if body is not None:
        assert (body["trips"], body["stops"]) == ([], [])
        assert 0 <= body["until"] - body["since"] <= 7 * 86_400_000


def test_a_trip_across_midnight_is_cut_at_the_days_edge(client: Client) -> None:
    tracker_id = uuid.uuid4()
    route = planned_day()
    store(tracker_id, route)
    midnight = unix_ms(START + timedelta(minutes=5))  # a day that ends mid-drive
    body = client.get(trips_url(tracker_id, since=midnight - 86_400_000, until=midnight)).json()
    (trip,) = body["trips"]
    assert trip["end"]["timestamp"] == midnight
    assert datetime.fromtimestamp(trip["start"]["timestamp"] / 1000, tz=UTC) == START


# --- docs/protocol.md §4.9 -------------------------------------------------------------------


def documented_day() -> tuple[uuid.UUID, Route]:
    """The day the doc's example answers, a report every 30 s from 26 November
    2026, 10:00 UTC: 2.4 km east at 36 km/h, 6 minutes standing, 1.5 km north."""
    route = Route()
    start = datetime(2026, 11, 26, 10, tzinfo=UTC)
    legs = [(300 * k, 0, 36.0) for k in range(9)] + [(2400, 0, 0.0)] * 12
    legs += [(2400, 300 * k, 36.0) for k in range(1, 6)]
    for index, (east, north, speed) in enumerate(legs):
        route.at = start + timedelta(seconds=30 * index)
        route.report(offset(HELSINKI, east, north), speed)
    return uuid.UUID("5b0e2c1d-7f3a-4e8b-9c6d-2a1f0e9d8c7b"), route


def test_the_documented_trips_are_answered_as_documented(client: Client) -> None:
    from tests.test_protocol_doc import conforms, documented_json, span, table

    documented = documented_json("trips")
    tracker_id, route = documented_day()
    store(tracker_id, route)
    query = f"since={documented['since']}&until={documented['until']}"
    assert client.get(f"/api/trackers/{tracker_id}/trips?{query}").json() == documented
    for name, items in (("trip field", documented["trips"]), ("stop field", documented["stops"])):
        fields = {span(row[name]): row["type"] for row in table(name)}
        for item in items:
            assert set(item) == set(fields)
            assert all(conforms(item[key], kind) for key, kind in fields.items()), item


# --- The settings -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRACKING_STOP_RADIUS_M": "1"},
            "TRACKING_STOP_RADIUS_M must be a number from 5 to 10000, got '1'",
        ),
        ({"TRACKING_STOP_MIN_SECONDS": "five minutes"}, "TRACKING_STOP_MIN_SECONDS must be a"),
        (
            {"TRACKING_TRIP_MIN_DISTANCE_M": "-1"},
            "TRACKING_TRIP_MIN_DISTANCE_M must be a number from 1 to",
        ),
        (
            {"TRACKING_TRIP_GAP_SECONDS": "inf"},
            "TRACKING_TRIP_GAP_SECONDS must be a number from 1 to 86400, got 'inf'",
        ),
    ],
)
def test_a_wrong_trips_setting_stops_the_process_naming_it(
    env: dict[str, str], message: str
) -> None:
    from tests.test_settings import check

    code, output = check(**env)
    assert code == 2 and message in output, output


@pytest.mark.slow
def test_the_trips_settings_are_read_from_the_environment() -> None:
    from tests.test_settings import settings_of

    names = ["TRACKING_STOP_RADIUS_M", "TRACKING_STOP_MIN_SECONDS", "TRACKING_TRIP_GAP_SECONDS"]
    assert settings_of(
        names,
        DEBUG="1",
        TRACKING_STOP_RADIUS_M="50",
        TRACKING_STOP_MIN_SECONDS="120.5",
        TRACKING_TRIP_GAP_SECONDS="",
    ) == {
        "TRACKING_STOP_RADIUS_M": 50,
        "TRACKING_STOP_MIN_SECONDS": 120.5,
        "TRACKING_TRIP_GAP_SECONDS": 900,
    }
