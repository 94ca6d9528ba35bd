"""The live map page: a template, its settings as JSON, and static ES modules.

The page's config carries every URL the page needs and the rules it shares
with the server (the status thresholds and words), so the JavaScript holds
no path and no wording of its own.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from tracking.access import may_view_map
from tracking.areas import LEVELS, MAX_AREAS
from tracking.land_outlines import land_urls
from tracking.models import TrackerStatus

_NEGOTIATE_SUFFIX = "/negotiate"
_ANY_TRACKER = uuid.UUID(int=0)


def hub_url() -> str:
    """The hub's URL, the one a SignalR client is given.

    The hub is a WebSocket route with no Django URL name, but a SignalR client
    negotiates at the hub's URL plus ``/negotiate``, so the named negotiate
    URL fixes where the hub is.
    """
    negotiate = reverse("tracking:negotiate")
    if not negotiate.endswith(_NEGOTIATE_SUFFIX):
        raise ImproperlyConfigured(
            f"tracking:negotiate is {negotiate}; SignalR clients negotiate at the hub's URL "
            f"plus {_NEGOTIATE_SUFFIX}, so it must end with that"
        )
    return negotiate.removesuffix(_NEGOTIATE_SUFFIX)


def tracker_url(name: str) -> str:
    """The URL named ``name`` (of one tracker) with ``{id}`` where the tracker's id goes."""
    url = reverse(name, kwargs={"tracker_id": _ANY_TRACKER})
    return url.replace(str(_ANY_TRACKER), "{id}")


def map_config() -> dict[str, Any]:
    """What the page's JavaScript reads from its ``map-config`` script element."""
    return {
        "hubUrl": hub_url(),
        "trackersUrl": reverse("tracking:tracker-list"),
        "trackerUrl": tracker_url("tracking:tracker-detail"),
        "trackerVisitsUrl": tracker_url("tracking:tracker-visits"),
        "trackerPositionsUrl": tracker_url("tracking:tracker-positions"),
        # A tracker's history thinned for replay (docs/protocol.md §4.8).
        "trackUrl": tracker_url("tracking:tracker-track"),
        "tripsUrl": tracker_url("tracking:tracker-trips"),
        # ?format=csv|geojson|gpx&since=MS&until=MS: a file of the tracker's positions.
        "exportUrl": tracker_url("tracking:tracker-export"),
        "trailMinutes": settings.MAP_TRAIL_MINUTES,
        "geofencesUrl": reverse("tracking:geofence-list"),
        "landUrls": land_urls(),
        "tileUrl": settings.MAP_TILE_URL,
        "tileAttribution": settings.MAP_TILE_ATTRIBUTION,
        "gridDegrees": settings.TRACKING_GRID_DEGREES,
        "maxCells": settings.TRACKING_MAX_CELLS_PER_CONNECTION,
        # Past maxCells the page shows the overview: areas of these sizes, coarsest first.
        "overview": {
            "levels": list(LEVELS),
            "seconds": settings.TRACKING_OVERVIEW_SECONDS,
            "maxAreas": MAX_AREAS,
        },
        # The status rule and its words, as the server has them (tracking/models.py).
        "trackerStatus": {
            "onlineSeconds": settings.TRACKING_ONLINE_SECONDS,
            "offlineSeconds": settings.TRACKING_OFFLINE_SECONDS,
            "labels": {status.value: str(status.label) for status in TrackerStatus},
        },
        "center": {
            "latitude": settings.MAP_CENTER_LATITUDE,
            "longitude": settings.MAP_CENTER_LONGITUDE,
        },
        "zoom": settings.MAP_ZOOM,
    }


def index(request: HttpRequest) -> HttpResponse:
    if not may_view_map(request.user):
        return redirect_to_login(request.get_full_path(), reverse(settings.LOGIN_URL))
    return render(request, "maps/index.html", {"map_config": map_config()})
