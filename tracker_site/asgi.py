"""ASGI entry point: HTTP through Django, the SignalR hub over WebSockets.

Run with ``daphne tracker_site.asgi:application``.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker_site.settings")

# Django must be set up before anything imports models, so this comes first.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from tracking.layers import log_channel_layer  # noqa: E402
from tracking.routing import websocket_urlpatterns  # noqa: E402
from tracking.security import browser_origin_validator  # noqa: E402

log_channel_layer(role="web server")

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": browser_origin_validator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
