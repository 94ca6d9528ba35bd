"""Origin checking for the hub's WebSocket."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Refuse WebSockets opened by pages of other sites; let programs in.

    A browser always sends ``Origin``, and it must name a host in
    ``ALLOWED_HOSTS``: that is what stops a foreign page from using a
    visitor's session. SignalR clients outside a browser (Python, .NET) send
    no ``Origin`` and are not acting for a visitor, so they are accepted;
    ``MAP_LOGIN_REQUIRED`` is what keeps them out when the map is private.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or bool(self.validate_origin(parsed_origin))


def browser_origin_validator(application: Any) -> BrowserOriginValidator:
    return BrowserOriginValidator(application, settings.ALLOWED_HOSTS)
