"""The admin's map widget (``tracking/static/tracking/fence-map.js``): drawing a
geofence on the geofence form, and a tracker's recent trail on its page.

Both use the live map's offline base map: the bundled land outline, and tiles
from ``MAP_TILE_URL`` over it when they answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.html import format_html

from tracking.geofences import MAX_RADIUS_M
from tracking.land_outlines import land_urls
from tracking.models import Geofence, Position, Tracker, Visit

# The other fences drawn on a fence's form, the most recently changed first.
NEIGHBOURS = 200
# The trail on a tracker's page: its newest positions, at most this many and this old.
TRAIL_POSITIONS = 500
TRAIL_AGE = timedelta(hours=24)


def map_media() -> forms.Media:
    module: Any = forms.Script("tracking/fence-map.js", type="module")  # the stubs want str
    return forms.Media(
        css={
            "all": [
                "vendor/leaflet/leaflet.css",
                "vendor/leaflet-geoman/leaflet-geoman.css",
                "tracking/fence-map.css",
            ]
        },
        js=[
            "vendor/leaflet/leaflet.js",
            "vendor/leaflet-geoman/leaflet-geoman.min.js",
            module,
        ],
    )


def map_config(mode: str, **extra: Any) -> str:
    """The widget's settings as JSON, for its ``data-config`` attribute."""
    return json.dumps(
        {
            "mode": mode,
            "landUrls": land_urls(),
            "tileUrl": settings.MAP_TILE_URL,
            "tileAttribution": settings.MAP_TILE_ATTRIBUTION,
            "center": {
                "latitude": settings.MAP_CENTER_LATITUDE,
                "longitude": settings.MAP_CENTER_LONGITUDE,
            },
            "zoom": settings.MAP_ZOOM,
            **extra,
        }
    )


class FenceMapWidget(forms.Textarea):
    """The GeoJSON box under a map to draw the fence on; the box itself folds
    away in a "GeoJSON" section for those who paste or edit the text."""

    template_name = "tracking/fence_map_widget.html"

    def __init__(
        self,
        attrs: dict[str, Any] | None = None,
        *,
        neighbours: Callable[[], list[Geofence]] = list,
    ) -> None:
        super().__init__(
            {
                "rows": 12,
                "cols": 100,
                "spellcheck": "false",
                "class": "vLargeTextField",
                **(attrs or {}),
            }
        )
        # The other fences, drawn faintly for orientation (the map may have no tiles).
        self.neighbours = neighbours

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        others = [
            {"name": fence.name, "geojson": json.loads(fence.geojson)}
            for fence in self.neighbours()
        ]
        context["widget"]["map_config"] = map_config("draw", others=others)
        context["widget"]["max_radius"] = f"{MAX_RADIUS_M:g}"
        return context

    @property
    def media(self) -> forms.Media:
        return map_media()


def neighbours_of(fence: Geofence | None) -> Callable[[], list[Geofence]]:
    """The active fences other than ``fence`` (at most NEIGHBOURS), read when the form is drawn."""
    others = Geofence.objects.filter(is_active=True).order_by("-updated_at", "-id")
    if fence is not None:
        others = others.exclude(pk=fence.pk)
    return lambda: list(others[:NEIGHBOURS])


def trail_map(tracker: Tracker) -> str:
    """A read-only map of the tracker's newest positions (at most TRAIL_POSITIONS,
    none older than TRAIL_AGE before the newest), its latest one marked, and the
    fences it is inside now."""
    newest = tracker.position_at
    if newest is None:
        return "No positions yet."
    rows = list(
        Position.objects.filter(tracker=tracker, timestamp__gte=newest - TRAIL_AGE)
        .order_by("-timestamp")
        .values_list("latitude", "longitude")[:TRAIL_POSITIONS]
    )
    rows.reverse()
    if not rows and tracker.latitude is not None and tracker.longitude is not None:
        rows = [(tracker.latitude, tracker.longitude)]
    inside = Geofence.objects.filter(
        pk__in=Visit.objects.counted().open().filter(tracker=tracker).values("geofence")
    ).order_by("name")
    config = map_config(
        "trail",
        trail={
            "positions": [[round(lat, 7), round(lon, 7)] for lat, lon in rows],
            "latestLabel": f"Latest: {timezone.localtime(newest):%Y-%m-%d %H:%M:%S %Z}",
            "fences": [
                {"name": fence.name, "geojson": json.loads(fence.geojson)} for fence in inside
            ],
        },
    )
    caption = (
        f"The {len(rows)} newest positions (at most {TRAIL_POSITIONS}, none more than "
        f"{TRAIL_AGE.total_seconds() / 3600:g} h before the latest), the latest one marked."
    )
    names = ", ".join(fence.name for fence in inside)
    return format_html(
        '<div class="fence-map" data-config="{}">'
        '<div class="fence-map-canvas" role="img" aria-label="{}"></div>'
        '<p class="fence-map-caption">{}</p><p class="fence-map-inside">{}</p>'
        '<p class="fence-map-note"></p></div>',
        config,
        caption,
        caption,
        f"Inside now (dashed): {names}." if inside else "Inside no fence now.",
    )
