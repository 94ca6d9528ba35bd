"""The geofence API under ``/api/`` (docs/protocol.md §4.5 and §4.6): the fences
in a map's view, and a tracker's visits."""

from __future__ import annotations

import math
import uuid
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, JsonResponse

from tracking.access import api_endpoint
from tracking.events import unix_ms
from tracking.geofence_extents import active_extents
from tracking.geofences import Box
from tracking.models import Tracker, Visit
from tracking.views import positive_integer

# The most fences one answer holds; past it the collection says "truncated".
GEOFENCES_PER_RESPONSE = 1_000
# Visits per answer unless asked otherwise, and at most.
DEFAULT_VISITS = 50
MAX_VISITS = 500

GEOJSON_CONTENT_TYPE = "application/geo+json"


class BadBox(ValueError):
    """A ``bbox`` parameter that is not a box, saying why."""


def parse_bbox(raw: str) -> tuple[Box, ...]:
    """The boxes of ``west,south,east,north`` in degrees: one, or two when
    west > east (the box crosses the antimeridian). ``BadBox`` says what is wrong."""
    parts = raw.split(",")
    if len(parts) != 4:
        raise BadBox(
            f"bbox must be four numbers, west,south,east,north in degrees; got {len(parts)} "
            f"part{'' if len(parts) == 1 else 's'}."
        )
    numbers = []
    for name, part in zip(("west", "south", "east", "north"), parts, strict=True):
        try:
            number = float(part)
        except ValueError:
            raise BadBox(f"bbox {name} must be a number, got {_shown(part)}.") from None
        if not math.isfinite(number):
            raise BadBox(f"bbox {name} must be a finite number, got {_shown(part)}.")
        limit = 90.0 if name in ("south", "north") else 180.0
        if not -limit <= number <= limit:
            raise BadBox(f"bbox {name} {number:g} is out of range (-{limit:g} to {limit:g}).")
        numbers.append(number)
    west, south, east, north = numbers
    if south > north:
        raise BadBox(f"bbox south {south:g} is north of north {north:g}.")
    if west <= east:
        return ((west, south, east, north),)
    return ((west, south, 180.0, north), (-180.0, south, east, north))


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


@api_endpoint("GET")
def geofence_list(request: HttpRequest) -> HttpResponse:
    """``GET /api/geofences?bbox=west,south,east,north``: the active fences that
    meet the box (all of them without ``bbox``), as a GeoJSON FeatureCollection."""
    raw = request.GET.get("bbox")
    try:
        boxes = None if raw is None else parse_bbox(raw)
    except BadBox as error:
        return JsonResponse({"error": str(error)}, status=400)
    features: list[dict[str, Any]] = []
    truncated = False
    for pk, name, extent in active_extents():
        if boxes is not None and not extent.meets(boxes):
            continue
        if len(features) == GEOFENCES_PER_RESPONSE:
            truncated = True
            break
        features.append(
            {
                "type": "Feature",
                "id": str(pk),
                "geometry": orjson.Fragment(extent.geometry),
                "properties": {
                    "id": str(pk),
                    "name": name,
                    "centre": {"latitude": extent.latitude, "longitude": extent.longitude},
                    "radius": extent.radius_m,
                },
            }
        )
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if truncated:
        collection["truncated"] = True
    return HttpResponse(orjson.dumps(collection), content_type=GEOJSON_CONTENT_TYPE)


@api_endpoint("GET")
def tracker_visits(request: HttpRequest, tracker_id: uuid.UUID) -> JsonResponse:
    """``GET /api/trackers/<id>/visits?limit=N``: the tracker's latest counted
    visits, newest entry first; ``exitedAt`` null while it is inside."""
    try:
        limit = positive_integer(request.GET.get("limit", str(DEFAULT_VISITS)), name="limit")
        if limit > MAX_VISITS:
            raise ValueError(f"limit may be at most {MAX_VISITS}, got {limit}.")
    except ValueError as error:
        return JsonResponse({"error": str(error)}, status=400)
    if not Tracker.objects.filter(id=tracker_id, is_active=True).exists():
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    visits = (
        Visit.objects.counted()
        .filter(tracker_id=tracker_id)
        .order_by("-entered_at", "-pk")
        .values_list("geofence_id", "geofence__name", "entered_at", "exited_at")[:limit]
    )
    return JsonResponse(
        {
            "trackerId": str(tracker_id),
            "visits": [
                {
                    "geofenceId": str(geofence_id),
                    "geofenceName": name,
                    "enteredAt": unix_ms(entered_at),
                    "exitedAt": None if exited_at is None else unix_ms(exited_at),
                }
                for geofence_id, name, entered_at, exited_at in visits
            ],
        }
    )
