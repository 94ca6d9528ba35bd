"""The hub's WebSocket route, behind the browser origin check and session sign-in."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from tracking.hub.consumer import HubConsumer

# Negotiate is this path plus /negotiate (tracking/urls.py); the map page
# derives the hub's URL from negotiate's, and a test opens a WebSocket there.
websocket_urlpatterns = [path("api/signalr", HubConsumer.as_asgi())]


class BrowserOriginValidator(OriginValidator):
    """Refuse WebSockets opened by pages of other sites; let programs in.

    A browser always sends ``Origin``, and it must name a host in
    ``ALLOWED_HOSTS``: that is what stops a foreign page from using a
    visitor's session. SignalR clients outside a browser (Python, .NET) send
    no ``Origin`` and are not acting for a visitor, so they are accepted;
    sign-in (``MAP_PUBLIC`` off) is what keeps them out of a private map.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or bool(self.validate_origin(parsed_origin))


def websocket_application() -> BrowserOriginValidator:
    """The ASGI application for WebSockets: origin check, session user, then the hub."""
    return BrowserOriginValidator(
        AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), settings.ALLOWED_HOSTS
    )
