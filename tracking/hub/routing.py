"""The hub's WebSocket route, behind the browser origin check and session sign-in."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.urls import path

from tracking.hub.consumer import HubConsumer
from tracking.hub.sign_in import presented_token

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


class SessionSignIn:
    """``scope["cookies"]``, ``scope["session"]`` and ``scope["user"]`` as
    channels' ``AuthMiddlewareStack`` sets them, looked up only when they
    can sign someone in.

    The session and its user are read from the database (on a worker thread)
    only for a connection that carries the site's session cookie and no API
    token: without the cookie nobody is signed in by session, and with a token
    the token alone decides (``HubConsumer._admit``). In a reconnect storm of
    clients without a cookie that thread hop was a quarter of each join's CPU.
    Sends are not wrapped: a session is saved only with an HTTP response,
    which a WebSocket connection never sends.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookies = parse_cookie(value.decode("latin-1"))
                break
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key or None)
        scope = dict(scope, cookies=cookies, session=session)
        if session_key and presented_token(scope) is None:
            scope["user"] = await get_user(scope)
        else:
            scope["user"] = AnonymousUser()
        return await self.inner(scope, receive, send)


def websocket_application() -> BrowserOriginValidator:
    """The ASGI application for WebSockets: origin check, session user, then the hub."""
    return BrowserOriginValidator(
        SessionSignIn(URLRouter(websocket_urlpatterns)), settings.ALLOWED_HOSTS
    )
