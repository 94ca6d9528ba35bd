"""ASGI entry point: HTTP through Django, the SignalR hub over WebSockets.

Run with ``daphne tracker_site.asgi:application`` or
``uvicorn tracker_site.asgi:application``.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from tracker_site.startup import SERVER_CANNOT_START, settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker_site.settings")
# A wrong setting: one line, and an exit that uvicorn's --workers supervisor
# takes as final (python -m tracker_site.serve checks before any worker starts).
settings_or_exit(exit_code=SERVER_CANNOT_START, serving=True)

# Django must be set up before anything imports models, so this comes first.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from tracking.hub.fanout import announce  # noqa: E402
from tracking.hub.routing import websocket_application  # noqa: E402

announce(role="web server")

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application()})
