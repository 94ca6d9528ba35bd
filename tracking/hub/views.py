"""The hub's HTTP side: SignalR negotiate, and a plain answer to plain HTTP."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from tracking.access import api_endpoint
from tracking.hub.tokens import new_connection


@api_endpoint("POST")  # SignalR clients post no CSRF token; negotiate changes nothing.
def negotiate(request: HttpRequest) -> JsonResponse:
    """``POST /api/signalr/negotiate``: where and how to connect (TransportProtocols.md)."""
    try:
        requested = int(request.GET.get("negotiateVersion", "0"))
    except ValueError:
        requested = -1
    if requested < 0:
        return JsonResponse(
            {"error": "negotiateVersion must be a whole number, 0 or more."}, status=400
        )
    # Version 1 is the newest there is: a client asking for more gets 1.
    version = min(requested, 1)
    connection_id, connection_token = new_connection()
    body: dict[str, Any] = {
        "negotiateVersion": version,
        "connectionId": connection_id,
        "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text"]}],
    }
    if version == 1:
        body["connectionToken"] = connection_token
    else:
        # Version 0 clients send the connection id as ``id``: give them the token there.
        body["connectionId"] = connection_token
    return JsonResponse(body)


@csrf_exempt  # answers every method the same way.
def hub_over_http(request: HttpRequest) -> JsonResponse:
    """``/api/signalr`` over plain HTTP: the hub speaks WebSockets only."""
    return JsonResponse(
        {
            "error": "The hub accepts WebSocket connections only: negotiate with "
            "POST /api/signalr/negotiate?negotiateVersion=1, then open "
            "ws(s)://HOST/api/signalr?id=CONNECTION_TOKEN."
        },
        status=400,
    )
