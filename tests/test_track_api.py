"""GET /api/trackers/{id}/track (docs/protocol.md §4.8): a tracker's history
thinned for replay, through the real ingest path."""

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
from tracking.thinning import metres_per_pixel
from tracking.views import MAX_TRACK_POINTS

pytestmark = pytest.mark.django_db


def store(
    tracker_id: uuid.UUID, route: list[tuple[datetime, float, float]], *, now: datetime
) -> None:
    """Store one event per (moment, latitude, longitude), as consume_events would."""
    for start in range(0, len(route), 5000):
        ingest_batch(
            events=[
                RawEvent(
                    body=event_body(
                        tracker_id=tracker_id, latitude=lat, longitude=lng, at=at, Speed=36.0
                    ),
                    origin="t",
                )
                for at, lat, lng in route[start : start + 5000]
            ],
            now=now,
        )


def track_url(tracker_id: uuid.UUID, **query: object) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/trackers/{tracker_id}/track" + (f"?{params}" if params else "")


def drive_stop_drive(start: datetime) -> list[tuple[datetime, float, float]]:
    """Ten minutes east at a report a second, ten minutes stopped, ten minutes north."""
    route = []
    for second in range(1800):
        at = start + timedelta(seconds=second)
        if second < 600:
            route.append((at, 60.0, 24.0 + 0.0002 * second))
        elif second < 1200:
            route.append((at, 60.0, 24.0 + 0.0002 * 600))
        else:
            route.append((at, 60.0 + 0.0001 * (second - 1200), 24.0 + 0.0002 * 600))
    return route


def test_a_drive_with_a_stop_comes_back_as_its_corners_in_time(
    client: Client, now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    start = now - timedelta(minutes=40)
    store(tracker_id, drive_stop_drive(start), now=now)

    body = client.get(track_url(tracker_id)).json()
    assert body["stored"] == 1800 and body["thinned"] is True
    assert body["zoom"] == 16 and body["until"] - body["since"] == 3_600_000
    times = [row[0] - unix_ms(start) for row in body["positions"]]
    # Set off, arrive (and wait ten minutes), leave, arrive: a replay waits where it waited.
    assert times[0] == 0 and times[-1] == 1_799_000
    assert 600_000 in times and 1_200_000 in times
    assert len(times) <= 8
    first = body["positions"][0]
    assert first[1:4] == [pytest.approx(60.0), pytest.approx(24.0), 36.0]
    assert body["gaps"] == [] and 0 < body["toleranceMetres"] < 2


def test_a_silence_is_named_so_the_replay_does_not_invent_a_drive(
    client: Client, now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    before = [(now - timedelta(minutes=30, seconds=-s), 60.0, 24.0 + s / 10_000) for s in range(60)]
    after = [(now - timedelta(minutes=5, seconds=-s), 60.1, 24.1 + s / 10_000) for s in range(60)]
    store(tracker_id, before + after, now=now)

    body = client.get(track_url(tracker_id, zoom=12)).json()
    assert body["gaps"] == [[unix_ms(before[-1][0]), unix_ms(after[0][0])]]
    times = [row[0] for row in body["positions"]]
    assert unix_ms(before[-1][0]) in times and unix_ms(after[0][0]) in times


def test_a_long_range_never_sends_more_than_the_budget_and_says_how_close(
    client: Client, now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    start = now - timedelta(hours=3)
    # A zig-zag every second for three hours: at zoom 20 every corner shows.
    route = [
        (start + timedelta(seconds=s), 60.0 + (0.0003 if s % 2 else 0.0), 24.0 + s * 0.00001)
        for s in range(3 * 3600)
    ]
    store(tracker_id, route, now=now)
    query = {"since": unix_ms(start), "until": unix_ms(now), "zoom": 20}

    body = client.get(track_url(tracker_id, **query)).json()
    assert body["stored"] == len(route) and body["thinned"] is True
    assert 2 <= len(body["positions"]) <= MAX_TRACK_POINTS
    # Thinned harder than a pixel to fit: the tolerance on the ground says by how much.
    assert body["toleranceMetres"] > 1
    # Zoomed out, the zig-zag is within a pixel: a pixel's tolerance keeps a few.
    zoomed_out = client.get(track_url(tracker_id, **{**query, "zoom": 8})).json()
    assert len(zoomed_out["positions"]) < 10
    assert zoomed_out["toleranceMetres"] == pytest.approx(
        metres_per_pixel(zoom=8, latitude=60), rel=0.01
    )


def test_only_active_trackers_answer_and_the_maps_access_rule_holds(
    client: Client, now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    store(tracker_id, [(now, 60.0, 24.0)], now=now)
    assert client.get(track_url(uuid.uuid4())).status_code == 404
    with override_settings(MAP_PUBLIC=False):
        assert client.get(track_url(tracker_id)).status_code == 401
        _, token = issue_token(user=User.objects.create_user("ops"))
        signed = client.get(track_url(tracker_id), headers={"Authorization": f"Bearer {token}"})
        assert signed.status_code == 200 and signed.json()["stored"] == 1
        # One position is the whole track: nothing to thin.
        assert signed.json()["thinned"] is False
    Tracker.objects.filter(id=tracker_id).update(is_active=False)
    assert client.get(track_url(tracker_id)).status_code == 404


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"zoom": "far"}, "zoom must be a number from 0 to 24"),
        ({"zoom": 25}, "zoom must be a number from 0 to 24"),
        ({"zoom": -1}, "zoom must be a number from 0 to 24"),
        ({"zoom": "nan"}, "zoom must be a number from 0 to 24"),
        ({"since": "yesterday"}, "since must be a whole number of Unix milliseconds"),
        ({"since": 2000, "until": 1000}, "since (2000) is after until (1000)"),
        ({"since": 0, "until": 8 * 86_400_000}, "at most 7 days apart"),
    ],
)
def test_bad_parameters_are_explained(client: Client, query: dict[str, object], says: str) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    response = client.get(track_url(tracker.id, **query))
    assert response.status_code == 400 and says in response.json()["error"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=any_query("since", "until", "zoom"))
def test_any_query_gets_a_track_or_a_json_error(client: Client, query: dict[str, str]) -> None:
    tracker = Tracker.objects.get_or_create(name="Van 1")[0]
    body = answered_or_refused(client.get(f"/api/trackers/{tracker.id}/track", query))
    if body is not None:
        assert body["positions"] == [] and body["stored"] == 0 and 0 <= body["zoom"] <= 24


def test_track_pages_step_by_microsecond_and_agree_with_the_positions_api(
    client: Client, now: datetime
) -> None:
    from tracking.selectors import position_pages, track_pages

    tracker_id = uuid.uuid4()
    # Two reports in the same millisecond, half a millisecond apart, and one a
    # microsecond before a millisecond ends: paging must skip none of them.
    moments = [
        now - timedelta(seconds=3) + timedelta(microseconds=micros)
        for micros in (100, 600, 1999, 2000, 900_001)
    ]
    store(
        tracker_id,
        [(moment, 60.0, 24.0 + index / 1000) for index, moment in enumerate(moments)],
        now=now,
    )

    pages = list(track_pages(tracker_id, since=moments[0], until=moments[-1], page_size=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    # Read as datetimes, every one is exactly the moment stored, to the microsecond.
    stored = position_pages(tracker_id, since=moments[0], until=moments[-1], page_size=2)
    assert [row.timestamp for page in stored for row in page] == moments
    answered = client.get(
        f"/api/trackers/{tracker_id}/positions?since={unix_ms(moments[0])}"
        f"&until={unix_ms(moments[-1]) + 1}"
    ).json()["positions"]
    assert [row[0] for page in pages for row in page] == [p["timestamp"] for p in answered]
    assert [row[2] for page in pages for row in page] == pytest.approx(
        [24.0, 24.001, 24.002, 24.003, 24.004]
    )
