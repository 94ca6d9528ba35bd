"""The live map page: a template, its settings as JSON, and static ES modules."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse

from tracking.models import TrackerStatus


def index(request: HttpRequest) -> HttpResponse:
    if settings.MAP_LOGIN_REQUIRED and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse(settings.LOGIN_URL))
    config = {
        "hubUrl": "/api/signalr",
        "tileUrl": settings.MAP_TILE_URL,
        "tileAttribution": settings.MAP_TILE_ATTRIBUTION,
        "landUrl": static("vendor/world-atlas/land-110m.json"),
        "gridDegrees": settings.TRACKING_GRID_DEGREES,
        "maxCells": settings.TRACKING_MAX_CELLS_PER_CONNECTION,
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
    return render(request, "maps/index.html", {"map_config": config})
