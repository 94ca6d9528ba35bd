"""``GET /api/trackers/{id}/trips``: a tracker's trips and stops over a time
range (docs/protocol.md §4.9), computed from its history as it is read, a
page at a time (``tracking/trips.py``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from tracking.access import api_endpoint
from tracking.events import unix_ms
from tracking.models import Tracker
from tracking.selectors import position_pages
from tracking.trips import Place, Rules, Stop, Trip, trips_and_stops
from tracking.views import time_range

# The longest range one request may span, and the range when none is asked for.
MAX_TRIPS_RANGE = timedelta(days=7)
DEFAULT_TRIPS_RANGE = timedelta(hours=24)


def rules() -> Rules:
    """The rules as the settings give them."""
    return Rules(
        stop_radius_m=settings.TRACKING_STOP_RADIUS_M,
        stop_min_seconds=settings.TRACKING_STOP_MIN_SECONDS,
        trip_min_distance_m=settings.TRACKING_TRIP_MIN_DISTANCE_M,
        trip_gap_seconds=settings.TRACKING_TRIP_GAP_SECONDS,
    )


@api_endpoint("GET")
def tracker_trips(request: HttpRequest, tracker_id: uuid.UUID) -> JsonResponse:
    """``?since=MS&until=MS``: at most 7 days, the last 24 hours unless asked."""
    if not Tracker.objects.filter(id=tracker_id, is_active=True).exists():
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    try:
        since, until = time_range(
            request.GET.get("since"),
            request.GET.get("until"),
            default_span=DEFAULT_TRIPS_RANGE,
            max_span=MAX_TRIPS_RANGE,
        )
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    used = rules()
    found = trips_and_stops(position_pages(tracker_id, since=since, until=until), used)
    return JsonResponse(
        {
            "trackerId": str(tracker_id),
            "since": unix_ms(since),
            "until": unix_ms(until),
            "rules": {
                "stopRadiusMetres": used.stop_radius_m,
                "stopMinSeconds": used.stop_min_seconds,
                "tripMinDistanceMetres": used.trip_min_distance_m,
                "tripGapSeconds": used.trip_gap_seconds,
            },
            "trips": [_trip_json(trip) for trip in found.trips],
            "stops": [_stop_json(stop) for stop in found.stops],
        }
    )


def _place_json(place: Place) -> dict[str, Any]:
    return {
        "timestamp": unix_ms(place.timestamp),
        "latitude": round(place.latitude, 6),
        "longitude": round(place.longitude, 6),
    }


def _trip_json(trip: Trip) -> dict[str, Any]:
    return {
        "start": _place_json(trip.start),
        "end": _place_json(trip.end),
        "distanceMetres": round(trip.distance_m, 1),
        "durationSeconds": trip.duration_seconds,
        "averageSpeed": round(trip.average_speed, 1),
        "topSpeed": trip.top_speed,
    }


def _stop_json(stop: Stop) -> dict[str, Any]:
    return {
        "latitude": round(stop.latitude, 6),
        "longitude": round(stop.longitude, 6),
        "from": unix_ms(stop.since),
        "until": unix_ms(stop.until),
        "durationSeconds": stop.duration_seconds,
    }
