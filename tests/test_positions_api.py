"""GET /api/trackers/{id}/positions (docs/protocol.md §4.7): a tracker's
history over a time range, newest last, through the real ingest path."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings

from tests.api_queries import answered_or_refused, any_query
from tests.conftest import event_body
from tracking.api_tokens import issue_token
from tracking.events import unix_ms
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.models import Tracker

pytestmark = pytest.mark.django_db


def report(tracker_id: uuid.UUID, moments: list[datetime], *, now: datetime) -> None:
    """Store one event per moment, in the order given, as consume_events would."""
    events = [
        RawEvent(
            body=event_body(
                tracker_id=tracker_id,
                latitude=60.0 + index / 1000,
                longitude=24.0 + index / 1000,
                at=moment,
                Speed=float(index),
            ),
            origin="t",
        )
        for index, moment in enumerate(moments)
    ]
    ingest_batch(events=events, now=now)


def positions_url(tracker_id: uuid.UUID, **query: object) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/trackers/{tracker_id}/positions" + (f"?{params}" if params else "")


def test_the_trail_by_default_is_the_last_minutes_newest_last(
    client: Client, now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    moments = [now - timedelta(minutes=minutes) for minutes in (30, 11, 9, 5, 1, 0)]
    # Stored out of order, one of them late: history keeps each in its place by time.
    report(tracker_id, [moments[3], moments[0], moments[5], moments[1], moments[2]], now=now)
    report(tracker_id, [moments[4]], now=now)

    with override_settings(MAP_TRAIL_MINUTES=10):
        body = client.get(positions_url(tracker_id)).json()
    assert [p["timestamp"] for p in body["positions"]] == [unix_ms(m) for m in moments[2:]]
    assert body["trackerId"] == str(tracker_id) and body["truncated"] is False
    assert body["until"] - body["since"] == 10 * 60 * 1000
    first = body["positions"][0]
    assert set(first) == {"latitude", "longitude", "timestamp", "speed", "heading"}
    assert (first["latitude"], first["longitude"]) == (pytest.approx(60.004), pytest.approx(24.004))


def test_a_range_with_more_than_the_limit_answers_the_newest_and_says_so(
    client: Client, now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    moments = [now - timedelta(seconds=seconds) for seconds in range(10)]
    report(tracker_id, moments, now=now)
    since, until = unix_ms(moments[-1]), unix_ms(moments[0])

    body = client.get(positions_url(tracker_id, since=since, until=until, limit=3)).json()
    assert body["truncated"] is True
    assert [p["timestamp"] for p in body["positions"]] == [unix_ms(m) for m in moments[2::-1]]
    # Paging backwards from the oldest answered reaches every position once.
    seen = [p["timestamp"] for p in body["positions"]]
    while body["truncated"]:
        oldest = body["positions"][0]["timestamp"]
        body = client.get(positions_url(tracker_id, since=since, until=oldest - 1, limit=3)).json()
        seen = [p["timestamp"] for p in body["positions"]] + seen
    assert seen == sorted(unix_ms(m) for m in moments)
    # Both ends of the range are included.
    exact = client.get(positions_url(tracker_id, since=until, until=until)).json()
    assert [p["timestamp"] for p in exact["positions"]] == [until]


def test_only_active_trackers_answer(client: Client, now: datetime) -> None:
    tracker_id = uuid.uuid4()
    report(tracker_id, [now], now=now)
    assert client.get(positions_url(uuid.uuid4())).status_code == 404
    Tracker.objects.filter(id=tracker_id).update(is_active=False)
    response = client.get(positions_url(tracker_id))
    assert response.status_code == 404 and str(tracker_id) in response.json()["error"]


def test_positions_follow_the_maps_access_rule(client: Client, now: datetime) -> None:
    tracker_id = uuid.uuid4()
    report(tracker_id, [now], now=now)
    with override_settings(MAP_PUBLIC=False):
        assert client.get(positions_url(tracker_id)).status_code == 401
        _, token = issue_token(user=User.objects.create_user("ops"))
        signed = client.get(positions_url(tracker_id), headers={"Authorization": f"Bearer {token}"})
        assert signed.status_code == 200 and len(signed.json()["positions"]) == 1


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"limit": 0}, "limit must be 1 or more"),
        ({"limit": 10_001}, "limit may be at most 10000"),
        ({"since": "yesterday"}, "since must be a whole number of Unix milliseconds"),
        ({"until": "1.5"}, "until must be a whole number of Unix milliseconds"),
        ({"since": 2000, "until": 1000}, "since (2000) is after until (1000)"),
        ({"since": 0, "until": 8 * 86_400_000}, "at most 7 days apart"),
        ({"until": 10**18}, "outside the years 1 to 9999"),
    ],
)
def test_bad_parameters_are_explained(client: Client, query: dict[str, object], says: str) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    response = client.get(positions_url(tracker.id, **query))
    assert response.status_code == 400 and says in response.json()["error"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=any_query("since", "until", "limit"))
def test_any_query_gets_positions_or_a_json_error(client: Client, query: dict[str, str]) -> None:
    tracker = Tracker.objects.get_or_create(name="Van 1")[0]
    body = answered_or_refused(client.get(f"/api/trackers/{tracker.id}/positions", query))
    if body is not None:
        assert body["positions"] == [] and 0 <= body["until"] - body["since"] <= 7 * 86_400_000


def test_position_pages_walk_a_range_oldest_first_a_page_at_a_time(now: datetime) -> None:
    from tracking.selectors import position_pages

    tracker_id, other = uuid.uuid4(), uuid.uuid4()
    moments = [now - timedelta(seconds=seconds) for seconds in range(12, 0, -1)]
    report(tracker_id, moments[::-1], now=now)
    report(other, moments, now=now)

    pages = list(position_pages(tracker_id, since=moments[1], until=moments[-2], page_size=4))
    assert [len(page) for page in pages] == [4, 4, 2]
    assert [row.timestamp for page in pages for row in page] == moments[1:-1]
    # A range that ends exactly on a full page has no empty page after it.
    assert [
        len(page)
        for page in position_pages(tracker_id, since=moments[0], until=moments[7], page_size=4)
    ] == [4, 4]
