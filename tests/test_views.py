from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import event_body
from tracking.hub.tokens import connection_id_from_token
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.models import Tracker


def test_negotiate_offers_websockets_with_a_connection_token(client: Client) -> None:
    response = client.post("/api/signalr/negotiate?negotiateVersion=1")
    assert response.status_code == 200
    body = response.json()
    assert body["negotiateVersion"] == 1
    assert body["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text"]}]
    assert connection_id_from_token(body["connectionToken"]) == body["connectionId"]


def test_negotiate_version_0_gives_the_token_as_the_connection_id(client: Client) -> None:
    body = client.post("/api/signalr/negotiate").json()
    assert body["negotiateVersion"] == 0 and "connectionToken" not in body
    assert connection_id_from_token(body["connectionId"]) is not None


def test_negotiate_needs_a_post(client: Client) -> None:
    assert client.get("/api/signalr/negotiate").status_code == 405


def test_negotiate_refuses_a_bad_version(client: Client) -> None:
    for bad in ("x", "-1"):
        response = client.post(f"/api/signalr/negotiate?negotiateVersion={bad}")
        assert response.status_code == 400 and "negotiateVersion" in response.json()["error"]


def test_negotiate_answers_a_newer_version_with_version_1(client: Client) -> None:
    assert client.post("/api/signalr/negotiate?negotiateVersion=7").json()["negotiateVersion"] == 1


@override_settings(MAP_PUBLIC=False)
def test_negotiate_asks_signed_out_clients_to_sign_in_when_the_map_is_not_public(
    client: Client,
) -> None:
    assert client.post("/api/signalr/negotiate?negotiateVersion=1").status_code == 401


@pytest.mark.django_db
def test_the_tracker_api_names_latitude_and_longitude(client: Client, now: datetime) -> None:
    tracker_id = uuid.uuid4()
    body = event_body(tracker_id=tracker_id, latitude=60.17, longitude=24.94, at=now, Speed=30.0)
    ingest_batch(events=[RawEvent(body=body, origin="t")], now=now)

    listed = client.get(f"/api/trackers?id={tracker_id}&id={uuid.uuid4()}").json()["trackers"]
    assert listed == [
        {
            "id": str(tracker_id),
            "name": f"Tracker {str(tracker_id)[:8]}",
            "latitude": 60.17,
            "longitude": 24.94,
            "timestamp": int(now.timestamp() * 1000),
            "speed": 30.0,
            "heading": None,
            "status": "online",
        }
    ]
    assert client.get(f"/api/trackers/{tracker_id}").json()["latitude"] == 60.17


@pytest.mark.django_db
def test_the_tracker_api_explains_bad_requests(client: Client) -> None:
    assert "UUID" in client.get("/api/trackers?id=nope").json()["error"]
    too_many = "&".join(f"id={uuid.uuid4()}" for _ in range(501))
    assert "At most 500" in client.get(f"/api/trackers?{too_many}").json()["error"]
    assert client.get(f"/api/trackers/{uuid.uuid4()}").status_code == 404
    assert client.get("/api/trackers/not-a-uuid").status_code == 404


def register(*names: str, seen: datetime | None = None) -> list[Tracker]:
    trackers = [Tracker.objects.create(name=name, position_at=seen) for name in names]
    return trackers


@pytest.mark.django_db
def test_the_tracker_list_pages_through_every_active_tracker_by_name(client: Client) -> None:
    register("Van 3", "Bus 1", "Van 1", "Tram 2", "Bus 2")
    Tracker.objects.create(name="Aardvark (retired)", is_active=False)

    first = client.get("/api/trackers?page_size=2").json()
    assert (first["count"], first["page"], first["pages"]) == (5, 1, 3)
    assert [t["name"] for t in first["trackers"]] == ["Bus 1", "Bus 2"]
    assert first["previous"] is None
    second = client.get(first["next"]).json()
    assert [t["name"] for t in second["trackers"]] == ["Tram 2", "Van 1"]
    last = client.get(second["next"]).json()
    assert [t["name"] for t in last["trackers"]] == ["Van 3"] and last["next"] is None
    assert client.get(last["previous"]).json() == second


@pytest.mark.django_db
def test_the_tracker_list_searches_names_and_device_ids_and_filters_by_status(
    client: Client, now: datetime
) -> None:
    van, bus = register("Van 12", "Bus 7", seen=now)
    register("Van 13")  # never seen

    assert [t["name"] for t in client.get("/api/trackers?q=van").json()["trackers"]] == [
        "Van 12",
        "Van 13",
    ]
    by_id = client.get(f"/api/trackers?q={str(bus.id)[:6]}").json()["trackers"]
    assert [t["id"] for t in by_id] == [str(bus.id)]
    online = client.get("/api/trackers?status=online&q=van").json()
    assert [t["id"] for t in online["trackers"]] == [str(van.id)] and online["count"] == 1
    assert client.get("/api/trackers?status=never").json()["count"] == 1


@pytest.mark.django_db
def test_the_tracker_list_counts_each_status_of_the_trackers_searched_for(
    client: Client, now: datetime
) -> None:
    register("Van 1", "Van 2", seen=now)
    register("Van 3", seen=now - timedelta(minutes=5))
    register("Van 4", seen=now - timedelta(days=1))
    register("Van 5", "Bus 6")
    Tracker.objects.create(name="Van 7 (retired)", position_at=now, is_active=False)

    counts = {"online": 2, "stale": 1, "offline": 1, "never": 1}
    # The counts are the same whichever status is listed: they are for the filter's buttons.
    for query in ("q=van", "q=van&status=stale", "q=van&status=never&page_size=1"):
        assert client.get(f"/api/trackers?{query}").json()["counts"] == counts
    assert client.get("/api/trackers").json()["counts"] == {**counts, "never": 2}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("status=lost", "status must be one of online, stale, offline, never"),
        ("page=0", "page must be 1 or more"),
        ("page=two", "page must be a whole number"),
        ("page=9", "page 9 is past the last page, 1"),
        ("page_size=501", "page_size may be at most 500"),
    ],
)
def test_the_tracker_list_explains_bad_parameters(client: Client, query: str, says: str) -> None:
    register("Van 1")
    response = client.get(f"/api/trackers?{query}")
    assert response.status_code == 400 and says in response.json()["error"]


def test_wrong_api_urls_and_methods_get_json_that_says_what_is_there() -> None:
    client = Client(enforce_csrf_checks=True)  # as a real client: no CSRF token
    missing = client.get("/api/trackers/not-a-uuid")
    assert missing.status_code == 404
    assert "/api/trackers/not-a-uuid" in missing.json()["error"]
    assert "GET /api/trackers" in missing.json()["error"]
    assert client.post("/api/nothing-here").status_code == 404
    # A read-only endpoint posted to says the method is wrong, not that CSRF failed.
    posted = client.post(f"/api/trackers?id={uuid.uuid4()}")
    assert posted.status_code == 405 and posted["Allow"] == "GET"
    assert posted.json()["error"] == "/api/trackers answers GET, not POST."
    # The hub over plain HTTP says how to reach it.
    for method in (client.get, client.post):
        hub = method("/api/signalr")
        assert hub.status_code == 400 and "WebSocket" in hub.json()["error"]
        assert "/api/signalr/negotiate" in hub.json()["error"]


def test_the_map_page_carries_its_settings(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    start = html.index('<script id="map-config" type="application/json">') + len(
        '<script id="map-config" type="application/json">'
    )
    config = json.loads(html[start : html.index("</script>", start)])
    assert config["hubUrl"] == "/api/signalr"
    # The page is laid out by the project's base template.
    assert "<title>Live tracker map</title>" in html
    assert re.search(r'<link rel="icon" href="[^"]*favicon[^"]*\.svg"', html)
    assert config["gridDegrees"] == 1.0 and config["maxCells"] == 50
    assert config["tileUrl"].startswith("https://tile.openstreetmap.org/")
    # The land outlines, coarsest first, finer ones from the zoom they are worth loading at.
    assert config["landUrls"] == [
        {"url": "/static/vendor/world-atlas/land-110m.json", "minZoom": 0},
        {"url": "/static/vendor/world-atlas/land-50m.json", "minZoom": 4},
        {"url": "/static/vendor/world-atlas/land-10m.json", "minZoom": 7},
    ]


@override_settings(MAP_TILE_URL="", MAP_TILE_ATTRIBUTION="")
def test_the_map_page_can_run_without_tiles(client: Client) -> None:
    assert '"tileUrl": ""' in client.get("/").content.decode()


@pytest.mark.django_db
@override_settings(MAP_PUBLIC=False)
def test_the_map_page_sends_anonymous_visitors_to_sign_in(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_vendored_scripts_are_served(client: Client) -> None:
    for path in (
        "/static/vendor/leaflet/leaflet.js",
        "/static/vendor/signalr/signalr.min.js",
        "/static/vendor/world-atlas/land-110m.json",
        "/static/vendor/world-atlas/land-50m.json",
        "/static/vendor/world-atlas/land-10m.json",
        "/static/maps/map.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"".join(response)


@override_settings(DEBUG=True)
def test_a_missing_static_file_is_not_found_even_under_debug(client: Client) -> None:
    assert client.get("/static/maps/no-such-module.js").status_code == 404


# --- Whatever a client sends ---------------------------------------------------------------------

query_values = st.text(max_size=40) | st.integers(-5, 10**12).map(str)


@pytest.mark.django_db
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.dictionaries(
        st.sampled_from(["q", "status", "page", "page_size", "id", "other"]),
        query_values,
        max_size=4,
    )
)
def test_any_query_to_the_tracker_list_gets_a_page_or_a_json_error(
    client: Client, query: dict[str, str]
) -> None:
    if not Tracker.objects.exists():
        register("Van 1", "Bus 2")
    response = client.get("/api/trackers", query)
    assert response.status_code in (200, 400), response.content
    body = response.json()
    if response.status_code == 400:
        assert body["error"]
    else:
        assert isinstance(body["trackers"], list)
        if "id" not in query:
            assert 0 <= len(body["trackers"]) <= body["count"] <= 2
