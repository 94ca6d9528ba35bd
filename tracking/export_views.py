"""``GET /api/trackers/{id}/export``: a tracker's positions over a range as a
file (docs/protocol.md §4.10), streamed a page at a time.

A month of one tracker at 1 Hz is 2.6 million positions, so the file is
never whole in memory: the positions are read a page at a time
(``selectors.position_pages``) and each page is written out
(``tracking/exports.py``) before the next is read.

Which iterator the response gets depends on who serves it, because Django
consumes the wrong kind whole: under ASGI (daphne, uvicorn: the product) a
synchronous iterator is read into a list before the first byte goes out
(``StreamingHttpResponse.__aiter__``), and under WSGI (or the test client)
an asynchronous one is. So an ASGI request gets an asynchronous iterator
whose pages are read and written on the request's database thread
(``sync_to_async``), and anything else a plain generator.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

from tracking.access import api_endpoint
from tracking.exports import ExportHeader, Writer, export_format, file_name, writer
from tracking.models import Tracker
from tracking.selectors import PositionRow, position_pages
from tracking.views import time_range

# The longest range one export may span (a month at 1 Hz is 2.6 million positions),
# and the range exported when none is asked for.
MAX_EXPORT_RANGE = timedelta(days=31)
DEFAULT_EXPORT_RANGE = timedelta(hours=24)
# Positions read and written at a time: what one export holds in memory.
EXPORT_PAGE_SIZE = 5_000


@api_endpoint("GET")
def tracker_export(request: HttpRequest, tracker_id: uuid.UUID) -> HttpResponseBase:
    """``GET /api/trackers/{id}/export?format=csv|geojson|gpx&since=MS&until=MS``."""
    tracker = Tracker.objects.filter(id=tracker_id, is_active=True).first()
    if tracker is None:
        return JsonResponse({"error": f"No active tracker {tracker_id}."}, status=404)
    try:
        fmt = export_format(request.GET.get("format"))
        since, until = time_range(
            request.GET.get("since"),
            request.GET.get("until"),
            default_span=DEFAULT_EXPORT_RANGE,
            max_span=MAX_EXPORT_RANGE,
        )
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    header = ExportHeader(tracker_id=tracker.id, name=str(tracker), since=since, until=until)
    pages = position_pages(tracker.id, since=since, until=until, page_size=EXPORT_PAGE_SIZE)
    document = writer(fmt, header)
    content = (
        _served_async(document, pages)
        if isinstance(request, ASGIRequest)
        else _served(document, pages)
    )
    response = StreamingHttpResponse(content, content_type=fmt.content_type)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=file_name(header, fmt)
    )
    return response


def _served(document: Writer, pages: Iterator[list[PositionRow]]) -> Iterator[str]:
    yield document.start()
    for page in pages:
        yield document.page(page)
    yield document.end()


async def _served_async(document: Writer, pages: Iterator[list[PositionRow]]) -> AsyncIterator[str]:
    # Reading and writing a page both run on the request's thread for sync
    # code (where its database connection is), not on the event loop, which
    # meanwhile serves everyone else (the hub's connections too).
    # A client that goes away stops this between pages; no cursor or
    # transaction stays open between them, so there is nothing to close.
    next_page = sync_to_async(_next_page)
    yield document.start()
    while (text := await next_page(document, pages)) is not None:
        yield text
    yield document.end()


def _next_page(document: Writer, pages: Iterator[list[PositionRow]]) -> str | None:
    page = next(pages, None)
    return None if page is None else document.page(page)
