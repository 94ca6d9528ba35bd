"""maps/views.py: the map page's config names every URL and shared rule the page uses."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings
from django.urls import set_script_prefix

from tracker_site.asgi import application
from tracking.models import TrackerStatus

MAP_SCRIPTS = Path(__file__).resolve().parent.parent / "maps" / "static" / "maps"
RS = "\x1e"


def map_config(client: Client) -> dict[str, Any]:
    """The JSON the page's script reads from its map-config element."""
    html = client.get("/").content.decode()
    found = re.search(r'<script id="map-config" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page has no map-config"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_opened_at_the_hub_url_reaches_the_hub() -> None:
    from asgiref.sync import sync_to_async

    hub_url = (await sync_to_async(map_config)(Client()))["hubUrl"]
    communicator = WebsocketCommunicator(
        application, hub_url, headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    try:
        assert connected
        await communicator.send_to(text_data='{"protocol":"json","version":1}' + RS)
        assert await communicator.receive_from() == "{}" + RS
    finally:
        await communicator.disconnect()


def test_a_signalr_client_negotiates_at_the_hub_url_plus_negotiate(client: Client) -> None:
    hub_url = map_config(client)["hubUrl"]
    body = client.post(f"{hub_url}/negotiate?negotiateVersion=1").json()
    assert body["negotiateVersion"] == 1 and body["connectionToken"]


def test_the_urls_follow_where_the_site_is_mounted(client: Client) -> None:
    # What a server does for a site mounted under /tracker/ (SCRIPT_NAME).
    set_script_prefix("/tracker/")
    try:
        config = map_config(client)
    finally:
        set_script_prefix("/")
    assert config["hubUrl"] == "/tracker/api/signalr"
    assert config["trackersUrl"] == "/tracker/api/trackers"
    assert config["geofencesUrl"] == "/tracker/api/geofences"
    assert config["trackerVisitsUrl"] == "/tracker/api/trackers/{id}/visits"


@pytest.mark.django_db
def test_the_visits_url_of_the_config_answers_for_a_tracker(client: Client) -> None:
    from tracking.models import Tracker

    tracker = Tracker.objects.create(id=uuid.uuid4(), name="Van 3")
    url = map_config(client)["trackerVisitsUrl"].replace("{id}", str(tracker.id))
    response = client.get(url)
    assert response.status_code == 200
    assert response.json() == {"trackerId": str(tracker.id), "visits": []}


@pytest.mark.django_db
def test_the_geofence_api_is_where_the_config_says(client: Client) -> None:
    response = client.get(map_config(client)["geofencesUrl"], {"bbox": "24,60,25,61"})
    assert response.status_code == 200
    assert response.json()["type"] == "FeatureCollection"


@pytest.mark.django_db
def test_the_tracker_api_is_where_the_config_says(client: Client) -> None:
    trackers_url = map_config(client)["trackersUrl"]
    response = client.get(trackers_url, {"id": str(uuid.uuid4())})
    assert response.status_code == 200 and response.json() == {"trackers": []}


@override_settings(TRACKING_ONLINE_SECONDS=120, TRACKING_OFFLINE_SECONDS=3600)
def test_the_page_gets_the_status_thresholds_and_words_of_the_server(client: Client) -> None:
    rule = map_config(client)["trackerStatus"]
    assert (rule["onlineSeconds"], rule["offlineSeconds"]) == (120, 3600)
    assert rule["labels"] == {
        "online": "Online",
        "stale": "Stale",
        "offline": "Offline",
        "never": "Never seen",
    }
    assert rule["labels"] == {status.value: status.label for status in TrackerStatus}


def test_no_map_script_carries_a_server_path_of_its_own() -> None:
    for script in sorted(MAP_SCRIPTS.glob("*.js")):
        paths = re.findall(r"""["'`](/(?:api|static|admin)\b[^"'`]*)""", script.read_text())
        assert paths == [], f"{script.name} names {paths}; take them from the page's config"
