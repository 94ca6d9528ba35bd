"""The read-only tracker API under ``/api/`` (the hub's negotiate is in ``hub.views``).

Every answer under ``/api/`` is JSON, errors included, so a client that gets
a URL or a method wrong reads why.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from tracking.access import api_endpoint
from tracking.events import unix_ms
from tracking.models import Position, Tracker, TrackerStatus
from tracking.selectors import (
    matching_trackers,
    positions_between,
    track_pages,
    tracker_page,
    trackers_by_id,
)
from tracking.thinning import TrackRow, thin_track

# The most ids one request to the tracker list may ask for.
MAX_IDS_PER_REQUEST = 500
# Trackers per page of the tracker list, unless asked otherwise, and at most.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# Positions per answer of a tracker's positions, unless asked otherwise, and at most.
DEFAULT_POSITIONS = 1_000
MAX_POSITIONS = 10_000
# The longest time range one request for a tracker's positions may span.
MAX_POSITIONS_RANGE = timedelta(days=7)
# A track for replay: the range unless asked otherwise, the zoom it is thinned
# for unless asked otherwise, and the most positions it holds, whatever the range.
DEFAULT_TRACK_SPAN = timedelta(hours=1)
DEFAULT_TRACK_ZOOM = 16.0
MAX_TRACK_ZOOM = 24.0
MAX_TRACK_POINTS = 5_000


def tracker_json(tracker: Tracker) -> dict[str, Any]:
    """A tracker for the API; latitude and longitude by name, time in Unix ms."""
    return {
        "id": str(tracker.id),
        "name": str(tracker),
        "latitude": tracker.latitude,
        "longitude": tracker.longitude,
        "timestamp": unix_ms(tracker.position_at) if tracker.position_at else None,
        "speed": tracker.speed,
        "heading": tracker.heading,
        "status": tracker.status().value,
    }


@api_endpoint("GET")
def tracker_list(request: HttpRequest) -> JsonResponse:
    """``GET /api/trackers``: a page of the active trackers, or with
    ``?id=UUID&id=UUID`` the named ones."""
    if "id" in request.GET:
        return _named_trackers(request.GET.getlist("id"))
    try:
        page_number = positive_integer(request.GET.get("page", "1"), name="page")
        page_size = positive_integer(
            request.GET.get("page_size", str(DEFAULT_PAGE_SIZE)), name="page_size"
        )
        if page_size > MAX_PAGE_SIZE:
            raise ValueError(f"page_size may be at most {MAX_PAGE_SIZE}, got {page_size}.")
        status = request.GET.get("status")
        if status is not None and status not in TrackerStatus.values:
            raise ValueError(
                f"status must be one of {', '.join(TrackerStatus.values)}, got {status!r}."
            )
        now = timezone.now()
        search = request.GET.get("q", "")
        page = tracker_page(
            search=search,
            status=None if status is None else TrackerStatus(status),
            page=page_number,
            page_size=page_size,
            now=now,
        )
    except ValueError as exc:  # a bad parameter, or a page past the last
        return JsonResponse({"error": str(exc)}, status=400)
    counts = matching_trackers(search).status_counts(now=now)
    return JsonResponse(
        {
            "count": page.paginator.count,
            "counts": {status.value: count for status, count in counts.items()},
            "page": page.number,
            "pages": page.paginator.num_pages,
            "next": _page_url(request, page.next_page_number()) if page.has_next() else None,
            "previous": (
                _page_url(request, page.previous_page_number()) if page.has_previous() else None
            ),
            "trackers": [tracker_json(tracker) for tracker in page],
        }
    )


def _named_trackers(raw_ids: list[str]) -> JsonResponse:
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


def positive_integer(raw: str, *, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw[:40]!r}.") from None
    if value < 1:
        raise ValueError(f"{name} must be 1 or more, got {value}.")
    return value


def _page_url(request: HttpRequest, number: int) -> str:
    query = request.GET.copy()
    query["page"] = str(number)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


@api_endpoint("GET")
def tracker_detail(request: HttpRequest, tracker_id: uuid.UUID) -> JsonResponse:
    tracker = Tracker.objects.filter(id=tracker_id, is_active=True).first()
    if tracker is None:
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    return JsonResponse(tracker_json(tracker))


@api_endpoint("GET")
def tracker_positions(request: HttpRequest, tracker_id: uuid.UUID) -> JsonResponse:
    """``GET /api/trackers/{id}/positions?since=MS&until=MS&limit=N``: the
    tracker's stored positions in a time range, newest last."""
    if not Tracker.objects.filter(id=tracker_id, is_active=True).exists():
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    try:
        limit = positive_integer(request.GET.get("limit", str(DEFAULT_POSITIONS)), name="limit")
        if limit > MAX_POSITIONS:
            raise ValueError(f"limit may be at most {MAX_POSITIONS}, got {limit}.")
        since, until = time_range(request.GET.get("since"), request.GET.get("until"))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    positions, truncated = positions_between(tracker_id, since=since, until=until, limit=limit)
    return JsonResponse(
        {
            "trackerId": str(tracker_id),
            "since": unix_ms(since),
            "until": unix_ms(until),
            "truncated": truncated,
            "positions": [_position_json(position) for position in positions],
        }
    )


@api_endpoint("GET")
def tracker_track(request: HttpRequest, tracker_id: uuid.UUID) -> JsonResponse:
    """``GET /api/trackers/{id}/track?since=MS&until=MS&zoom=Z``: the
    tracker's positions over a range, thinned to what ``zoom`` can show
    (``tracking.thinning``), for replay; oldest first, compact rows."""
    if not Tracker.objects.filter(id=tracker_id, is_active=True).exists():
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    try:
        zoom = _zoom(request.GET.get("zoom"))
        since, until = time_range(
            request.GET.get("since"), request.GET.get("until"), default_span=DEFAULT_TRACK_SPAN
        )
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    track = thin_track(
        track_pages(tracker_id, since=since, until=until), zoom=zoom, max_points=MAX_TRACK_POINTS
    )
    return JsonResponse(
        {
            "trackerId": str(tracker_id),
            "since": unix_ms(since),
            "until": unix_ms(until),
            "zoom": int(zoom) if zoom.is_integer() else zoom,
            "stored": track.stored,
            "thinned": track.thinned,
            "toleranceMetres": round(track.tolerance_metres(zoom=zoom), 2),
            "gaps": [list(gap) for gap in track.gaps],
            "positions": [_track_row(row) for row in track.rows],
        }
    )


def _track_row(row: TrackRow) -> list[float | int | None]:
    """A kept position as sent: the place to 6 decimals (about 10 cm), speed
    and heading to 1, which the map cannot tell from more and which makes a
    full answer a third smaller."""
    moment, latitude, longitude, speed, heading = row
    return [
        moment,
        round(latitude, 6),
        round(longitude, 6),
        None if speed is None else round(speed, 1),
        None if heading is None else round(heading, 1),
    ]


def _zoom(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_TRACK_ZOOM
    try:
        zoom = float(raw) if raw.isascii() and "_" not in raw else math.nan
    except ValueError:
        zoom = math.nan
    if not 0 <= zoom <= MAX_TRACK_ZOOM:  # NaN fails both
        raise ValueError(f"zoom must be a number from 0 to {MAX_TRACK_ZOOM:g}, got {raw[:40]!r}.")
    return zoom


def time_range(
    raw_since: str | None,
    raw_until: str | None,
    *,
    default_span: timedelta | None = None,
    max_span: timedelta = MAX_POSITIONS_RANGE,
) -> tuple[datetime, datetime]:
    """``since`` and ``until`` from Unix ms query parameters; ``until``
    defaults to now and ``since`` to ``default_span`` (``MAP_TRAIL_MINUTES``
    unless given) before ``until``. ``ValueError`` with a sentence for the
    client when either is no time, ``since`` is after ``until``, or they are
    more than ``max_span`` apart."""
    until = timezone.now() if raw_until is None else _moment(raw_until, name="until")
    if raw_since is None:
        since = until - (default_span or timedelta(minutes=settings.MAP_TRAIL_MINUTES))
    else:
        since = _moment(raw_since, name="since")
    if since > until:
        raise ValueError(f"since ({unix_ms(since)}) is after until ({unix_ms(until)}).")
    if until - since > max_span:
        raise ValueError(
            f"since and until may be at most {_span_words(max_span)} apart; "
            "ask for a longer range in several requests."
        )
    return since, until


def _span_words(span: timedelta) -> str:
    if span.days and span == timedelta(days=span.days):
        return f"{span.days} day{'s' if span.days != 1 else ''}"
    return f"{round(span.total_seconds() / 3600)} hours"


def _moment(raw: str, *, name: str) -> datetime:
    shown = raw[:40]
    try:
        if not raw.isascii() or "_" in raw:
            raise ValueError(raw)
        milliseconds = int(raw)
        return _EPOCH + timedelta(milliseconds=milliseconds)
    except ValueError:
        raise ValueError(
            f"{name} must be a whole number of Unix milliseconds, got {shown!r}."
        ) from None
    except OverflowError:
        raise ValueError(f"{name} {shown} is outside the years 1 to 9999.") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _position_json(position: Position) -> dict[str, Any]:
    return {
        "latitude": position.latitude,
        "longitude": position.longitude,
        "timestamp": unix_ms(position.timestamp),
        "speed": position.speed,
        "heading": position.heading,
    }


@csrf_exempt  # answers every method the same way.
def api_not_found(request: HttpRequest) -> JsonResponse:
    """Any other path under ``/api/``."""
    return JsonResponse(
        {
            "error": f"No API endpoint at {request.path}. There are POST /api/signalr/negotiate, "
            "GET /api/trackers (?q=, ?status=, ?page=, or ?id=UUID), GET /api/trackers/UUID, "
            "GET /api/trackers/UUID/visits (?limit=), GET /api/trackers/UUID/positions "
            "(?since=, ?until=, ?limit=), GET /api/trackers/UUID/track (?since=, ?until=, "
            "?zoom=), GET /api/trackers/UUID/trips (?since=, ?until=), "
            "GET /api/trackers/UUID/export (?format=csv|geojson|gpx, ?since=, ?until=) "
            "and GET /api/geofences "
            "(?bbox=west,south,east,north)."
        },
        status=404,
    )
