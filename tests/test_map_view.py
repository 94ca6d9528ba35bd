"""maps/views.py: the map page's config names every URL and shared rule the page uses."""

from __future__ import annotations

import json
import re
from typing import Any

from django.test import Client, override_settings

from tracking.models import TrackerStatus


def map_config(client: Client) -> dict[str, Any]:
    """The JSON the page's script reads from its map-config element."""
    html = client.get("/").content.decode()
    found = re.search(r'<script id="map-config" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page has no map-config"
    config: dict[str, Any] = json.loads(found.group(1))
    return config


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
