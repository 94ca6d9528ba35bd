"""GET /api/trackers/{id}/export (docs/protocol.md §4.10): a tracker's
positions over a range as CSV, GeoJSON or GPX, read back by the parsers a
user would open them with, and streamed a page at a time."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import gpxpy
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking import export_views
from tracking.api_tokens import issue_token
from tracking.events import unix_ms
from tracking.models import Position, Tracker

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 26, 11, 15, tzinfo=UTC)
HOSTILE_NAME = 'Van <1> & "Co" </name></trk> ]]> \x01\''


def store(tracker: Tracker, count: int, *, start: datetime = START, step: float = 1.0) -> None:
    """``count`` positions a ``step`` of seconds apart from ``start``; every
    third reports no speed, heading or accuracy."""
    Position.objects.bulk_create(
        Position(
            tracker=tracker,
            timestamp=start + timedelta(seconds=index * step, milliseconds=index % 1000),
            latitude=60.0 + index / 10_000,
            longitude=24.0 + index / 7_000,
            speed=None if index % 3 == 2 else 36.0 + index,
            heading=None if index % 3 == 2 else float(index % 360),
            accuracy=None if index % 3 == 2 else 5.0 + index % 7,
        )
        for index in range(count)
    )


def export_url(tracker_id: uuid.UUID, **query: object) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/trackers/{tracker_id}/export" + (f"?{params}" if params else "")


def whole_range(count: int, *, start: datetime = START, step: float = 1.0) -> dict[str, int]:
    return {
        "since": unix_ms(start),
        "until": unix_ms(start + timedelta(seconds=count * step + 1)),
    }


def body(response: Any) -> bytes:
    """The whole file of a (synchronously) streamed answer."""
    assert isinstance(response, StreamingHttpResponse) and not response.is_async
    return b"".join(cast(Iterator[bytes], response.streaming_content))


def stored(tracker: Tracker) -> list[Position]:
    return list(Position.objects.filter(tracker=tracker).order_by("timestamp"))


def test_gpx_reads_back_in_gpxpy_with_every_point_its_time_and_the_trackers_name(
    client: Client,
) -> None:
    tracker = Tracker.objects.create(name="Helsinki tram 4")
    store(tracker, 12)
    response = client.get(export_url(tracker.id, format="gpx", **whole_range(12)))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/gpx+xml"

    gpx = gpxpy.parse(body(response).decode())
    assert gpx.version == "1.1"
    (track,) = gpx.tracks
    assert track.name == "Helsinki tram 4"
    (segment,) = track.segments
    positions = stored(tracker)
    assert [(p.latitude, p.longitude, p.time) for p in segment.points] == [
        (p.latitude, p.longitude, p.timestamp) for p in positions
    ]
    # Speed (m/s, as GPX has it, to the mm/s) and course in the track point extension, where reported.
    speeds = [_extension(point, "speed") for point in segment.points]
    assert speeds == [
        None if p.speed is None else pytest.approx(p.speed / 3.6, abs=0.0005) for p in positions
    ]
    courses = [_extension(point, "course") for point in segment.points]
    assert courses == [p.heading for p in positions]


def _extension(point: Any, name: str) -> float | None:
    for extension in point.extensions:
        for child in extension:
            if child.tag.endswith("}" + name):
                return float(child.text)
    return None


def test_a_hostile_trackers_name_stays_text_in_the_gpx(client: Client) -> None:
    tracker = Tracker.objects.create(name=HOSTILE_NAME)
    store(tracker, 2)
    response = client.get(export_url(tracker.id, format="gpx", **whole_range(2)))
    gpx = gpxpy.parse(body(response).decode())
    # XML cannot hold a control character even escaped: it becomes U+FFFD.
    assert gpx.tracks[0].name == HOSTILE_NAME.replace("\x01", "\ufffd")
    assert len(gpx.tracks) == 1 and len(gpx.tracks[0].segments[0].points) == 2
    disposition = response["Content-Disposition"]
    assert (
        disposition == 'attachment; filename="van-1-co-name-trk-20261126T1115Z-20261126T1115Z.gpx"'
    )


def test_csv_reads_back_in_the_csv_module(client: Client) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    store(tracker, 7)
    response = client.get(export_url(tracker.id, format="csv", **whole_range(7)))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(body(response).decode(), newline="")))
    assert list(rows[0]) == [
        "time",
        "latitude",
        "longitude",
        "speed_kmh",
        "heading_deg",
        "accuracy_m",
    ]

    def text(value: float | None) -> str:
        return "" if value is None else repr(value)

    assert rows == [
        {
            "time": p.timestamp.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{p.timestamp.microsecond // 1000:03d}Z",
            "latitude": repr(p.latitude),
            "longitude": repr(p.longitude),
            "speed_kmh": text(p.speed),
            "heading_deg": text(p.heading),
            "accuracy_m": text(p.accuracy),
        }
        for p in stored(tracker)
    ]
    assert datetime.fromisoformat(rows[1]["time"]) == START + timedelta(seconds=1, milliseconds=1)


def test_geojson_is_an_rfc_7946_feature_collection_of_points(client: Client) -> None:
    tracker = Tracker.objects.create(name=HOSTILE_NAME)
    store(tracker, 4)
    response = client.get(export_url(tracker.id, format="geojson", **whole_range(4)))
    assert response["Content-Type"] == "application/geo+json"
    document = json.loads(body(response))
    assert document["type"] == "FeatureCollection"
    assert (document["trackerId"], document["name"]) == (str(tracker.id), HOSTILE_NAME)
    assert (document["since"], document["until"]) == (
        whole_range(4)["since"],
        whole_range(4)["until"],
    )
    assert [feature["type"] for feature in document["features"]] == ["Feature"] * 4
    assert document["features"] == [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [p.longitude, p.latitude]},
            "properties": {
                "time": document["features"][index]["properties"]["time"],
                "timestamp": unix_ms(p.timestamp),
                "speed": p.speed,
                "heading": p.heading,
                "accuracy": p.accuracy,
            },
        }
        for index, p in enumerate(stored(tracker))
    ]
    times = [feature["properties"]["time"] for feature in document["features"]]
    assert [datetime.fromisoformat(time) for time in times] == [
        p.timestamp for p in stored(tracker)
    ]


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gpx"])
def test_an_empty_range_is_an_empty_file_of_the_format(client: Client, fmt: str) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    response = client.get(export_url(tracker.id, format=fmt, **whole_range(3)))
    assert response.status_code == 200
    text = body(response).decode()
    if fmt == "csv":
        assert list(csv.reader(io.StringIO(text))) == [
            ["time", "latitude", "longitude", "speed_kmh", "heading_deg", "accuracy_m"]
        ]
    elif fmt == "geojson":
        assert json.loads(text)["features"] == []
    else:
        assert gpxpy.parse(text).tracks[0].segments[0].points == []


def test_the_default_range_is_the_last_24_hours_and_both_ends_are_included(
    client: Client, now: datetime
) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    for hours in (25, 23.9, 1, 0):
        store(tracker, 1, start=now - timedelta(hours=hours))
    with override_settings(MAP_TRAIL_MINUTES=10):
        rows = list(
            csv.DictReader(
                io.StringIO(body(client.get(export_url(tracker.id, format="csv"))).decode())
            )
        )
    assert len(rows) == 3

    store(tracker, 3, start=START)
    exact = {
        "since": unix_ms(START),
        "until": unix_ms(START + timedelta(seconds=2, milliseconds=2)),
    }
    text = body(client.get(export_url(tracker.id, format="csv", **exact))).decode()
    assert len(list(csv.DictReader(io.StringIO(text)))) == 3


def test_a_month_may_be_exported_in_one_file(client: Client) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    until = unix_ms(START)
    month = client.get(
        export_url(tracker.id, format="csv", since=until - 31 * 86_400_000, until=until)
    )
    assert month.status_code == 200
    longer = client.get(
        export_url(tracker.id, format="csv", since=until - 31 * 86_400_000 - 1, until=until)
    )
    assert longer.status_code == 400
    assert "at most 31 days apart" in longer.json()["error"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({}, "format must be one of csv, geojson, gpx, got nothing."),
        ({"format": "kml"}, "format must be one of csv, geojson, gpx, got 'kml'."),
        ({"format": "CSV"}, "format must be one of csv, geojson, gpx, got 'CSV'."),
        ({"format": "gpx", "since": "yesterday"}, "since must be a whole number of Unix"),
        ({"format": "gpx", "since": 2000, "until": 1000}, "since (2000) is after until (1000)"),
        ({"format": "gpx", "until": 10**18}, "outside the years 1 to 9999"),
    ],
)
def test_bad_parameters_are_explained_in_json(
    client: Client, query: dict[str, object], says: str
) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    response = client.get(export_url(tracker.id, **query))
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert says in response.json()["error"]


def test_only_active_trackers_are_exported(client: Client) -> None:
    unknown = uuid.uuid4()
    response = client.get(export_url(unknown, format="csv"))
    assert response.status_code == 404
    assert response.json() == {"error": f"No active tracker {unknown}."}
    tracker = Tracker.objects.create(name="Van 1", is_active=False)
    assert client.get(export_url(tracker.id, format="csv")).status_code == 404


def test_an_export_follows_the_maps_access_rule_and_takes_only_get(client: Client) -> None:
    tracker = Tracker.objects.create(name="Van 1")
    store(tracker, 2)
    url = export_url(tracker.id, format="csv", **whole_range(2))
    with override_settings(MAP_PUBLIC=False):
        refused = client.get(url)
        assert refused.status_code == 401 and refused.json()["error"]
        _, token = issue_token(user=User.objects.create_user("ops"))
        signed = client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert signed.status_code == 200 and len(body(signed).splitlines()) == 3
    posted = client.post(url)
    assert posted.status_code == 405 and posted["Allow"] == "GET"


def test_the_file_is_read_and_sent_a_page_at_a_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_views, "EXPORT_PAGE_SIZE", 4)
    tracker = Tracker.objects.create(name="Van 1")
    store(tracker, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django warns when it must read a stream whole
        response = client.get(export_url(tracker.id, format="csv", **whole_range(10)))
        assert isinstance(response, StreamingHttpResponse)
        chunks = iter(cast(Iterator[bytes], response.streaming_content))
        lines_and_queries = []
        for _ in range(5):
            with CaptureQueriesContext(connection) as queries:
                chunk = next(chunks)
            lines_and_queries.append((len(chunk.splitlines()), len(queries)))
        assert next(chunks, None) is None
    # The header, then each page read (one query) just before it is sent, then the end.
    assert lines_and_queries == [(1, 0), (4, 1), (4, 1), (2, 1), (0, 0)]


def test_under_asgi_the_file_streams_from_an_asynchronous_iterator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_views, "EXPORT_PAGE_SIZE", 4)
    tracker = Tracker.objects.create(name="Van 1")
    store(tracker, 10)

    async def export() -> tuple[bool, list[bytes]]:
        # Run from this test's thread (async_to_sync), the view's database
        # work comes back to it, inside the test's transaction.
        response = await AsyncClient().get(export_url(tracker.id, format="gpx", **whole_range(10)))
        assert isinstance(response, StreamingHttpResponse)
        content = cast(AsyncIterator[bytes], response.streaming_content)
        return response.is_async, [chunk async for chunk in content]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django warns when it must read a stream whole
        is_async, chunks = async_to_sync(export)()
    assert is_async
    points = [chunk.count(b"<trkpt ") for chunk in chunks]
    assert points == [0, 4, 4, 2, 0]
    gpx = gpxpy.parse(b"".join(chunks).decode())
    assert len(gpx.tracks[0].segments[0].points) == 10


query_values = (
    st.sampled_from(["csv", "geojson", "gpx", ""])
    | st.text(max_size=30)
    | st.integers(-(10**16), 10**16).map(str)
    | st.sampled_from([str(unix_ms(START)), str(unix_ms(START) - 31 * 86_400_000)])
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.none() | query_values, since=st.none() | query_values, until=st.none() | query_values)
def test_any_query_gets_a_file_or_a_json_error(
    client: Client, fmt: str | None, since: str | None, until: str | None
) -> None:
    asked = {"format": fmt, "since": since, "until": until}
    query = {key: value for key, value in asked.items() if value is not None}
    tracker = Tracker.objects.get_or_create(name="Van 1")[0]
    response = client.get(export_url(tracker.id), query)
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert response.json()["error"]
        return
    text = body(response).decode()
    assert response["Content-Disposition"].startswith('attachment; filename="van-1-')
    if fmt == "csv":
        assert text.startswith("time,latitude,")
    elif fmt == "geojson":
        assert json.loads(text)["features"] == []
    else:
        assert gpxpy.parse(text).tracks[0].name == "Van 1"


@pytest.mark.django_db(transaction=True)
def test_the_asgi_application_sends_each_page_as_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the product's ASGI application, as uvicorn and daphne call it:
    a body message per page, none of them the whole file."""
    from tracker_site.asgi import application

    monkeypatch.setattr(export_views, "EXPORT_PAGE_SIZE", 4)
    tracker = Tracker.objects.create(name="Van 1")
    store(tracker, 10)
    query = "&".join(f"{key}={value}" for key, value in whole_range(10).items())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/trackers/{tracker.id}/export",
        "raw_path": f"/api/trackers/{tracker.id}/export".encode(),
        "query_string": f"format=gpx&{query}".encode(),
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def serve() -> None:
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client never leaves
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await application(scope, receive, send)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django warns when it must read a stream whole
        async_to_sync(serve)()
    start, *bodies = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert (b"content-type", b"application/gpx+xml") in {
        (name.lower(), value) for name, value in start["headers"]
    }
    assert [body.get("body", b"").count(b"<trkpt ") for body in bodies] == [0, 4, 4, 2, 0, 0]
    assert [body.get("more_body", False) for body in bodies] == [True] * 5 + [False]
    gpx = gpxpy.parse(b"".join(body.get("body", b"") for body in bodies).decode())
    assert len(gpx.tracks[0].segments[0].points) == 10
