"""The read-only tracker API under ``/api/`` (the hub's negotiate is in ``hub.views``).

Every answer under ``/api/`` is JSON, errors included, so a client that gets
a URL or a method wrong reads why.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from tracking.access import api_refusal
from tracking.events import unix_ms
from tracking.models import Tracker
from tracking.selectors import trackers_by_id

# The most ids one request to the tracker list may ask for.
MAX_IDS_PER_REQUEST = 500


def tracker_json(tracker: Tracker) -> dict[str, Any]:
    """A tracker for the API; latitude and longitude by name, time in Unix ms."""
    return {
        "id": str(tracker.id),
        "name": tracker.name,
        "latitude": tracker.latitude,
        "longitude": tracker.longitude,
        "timestamp": unix_ms(tracker.position_at) if tracker.position_at else None,
        "speed": tracker.speed,
        "heading": tracker.heading,
        "status": tracker.status().value,
    }


@csrf_exempt  # read-only: a POST gets 405 and says why, not a CSRF page.
@require_GET
def tracker_list(request: HttpRequest) -> JsonResponse:
    """``GET /api/trackers?id=UUID&id=UUID``: the named trackers (active ones only)."""
    if (refusal := api_refusal(request)) is not None:
        return refusal
    raw_ids = request.GET.getlist("id")
    if not raw_ids:
        return JsonResponse({"error": "Name the trackers with ?id=UUID (repeatable)."}, status=400)
    if len(raw_ids) > MAX_IDS_PER_REQUEST:
        return JsonResponse(
            {"error": f"At most {MAX_IDS_PER_REQUEST} ids per request, got {len(raw_ids)}."},
            status=400,
        )
    try:
        ids = [uuid.UUID(raw) for raw in raw_ids]
    except ValueError:
        return JsonResponse({"error": "Every id must be a UUID."}, status=400)
    trackers = [tracker for tracker in trackers_by_id(ids=ids) if tracker.is_active]
    return JsonResponse({"trackers": [tracker_json(tracker) for tracker in trackers]})


@csrf_exempt  # read-only, as above.
@require_GET
def tracker_detail(request: HttpRequest, tracker_id: uuid.UUID) -> JsonResponse:
    if (refusal := api_refusal(request)) is not None:
        return refusal
    tracker = Tracker.objects.filter(id=tracker_id, is_active=True).first()
    if tracker is None:
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    return JsonResponse(tracker_json(tracker))


@csrf_exempt  # answers every method the same way.
def api_not_found(request: HttpRequest) -> JsonResponse:
    """Any other path under ``/api/``."""
    return JsonResponse(
        {
            "error": f"No API endpoint at {request.path}. There are POST /api/signalr/negotiate, "
            "GET /api/trackers?id=UUID and GET /api/trackers/UUID."
        },
        status=404,
    )
