"""Requests carrying a NUL character where the database would see it.

PostgreSQL stores no NUL in text and refuses a query that holds one
(``DataError``), so a ``%00`` in a search box or an admin filter would be a
500 on PostgreSQL and a search that finds nothing on SQLite. Forms already
refuse NUL (Django's ``ProhibitNullCharactersValidator``); this covers the
query string and the cookies, before any view or session lookup reads them.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.decorators import sync_and_async_middleware

from tracking.logsafe import quoted

logger = logging.getLogger(__name__)

NUL = "\x00"
REFUSAL = "The query string holds a NUL character (%00), which no value here can contain."


@sync_and_async_middleware
def refuse_nul(get_response: Any) -> Any:
    """A 400 for a NUL in the query string; a cookie holding one is ignored."""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            refused = _refusal(request)
            return refused if refused is not None else await get_response(request)

    else:

        def middleware(request: HttpRequest) -> HttpResponse:  # type: ignore[misc]
            refused = _refusal(request)
            return refused if refused is not None else get_response(request)

    return middleware


def _refusal(request: HttpRequest) -> HttpResponse | None:
    for name in [name for name, value in request.COOKIES.items() if NUL in value or NUL in name]:
        del request.COOKIES[name]
    query = request.META.get("QUERY_STRING", "")
    # A NUL reaches the query only as %00 (or raw): most requests are let
    # through without parsing their query here.
    if NUL not in query and "%00" not in query:
        return None
    if not any(
        NUL in key or any(NUL in value for value in values) for key, values in request.GET.lists()
    ):
        return None
    logger.info("refused a request for %s: a NUL character in its query", quoted(request.path))
    if request.path.startswith("/api/"):
        return JsonResponse({"error": REFUSAL}, status=400)
    return HttpResponseBadRequest(REFUSAL, content_type="text/plain; charset=utf-8")
