"""Connection ids and tokens handed out by negotiate and checked by the hub.

The token is signed rather than stored, so a client may negotiate with one
web process and open its WebSocket on another.
"""

from __future__ import annotations

import secrets

from django.core import signing

_SALT = "tracking.hub.connection-token"
# Clients open the WebSocket straight after negotiating; a token older than
# this was not meant for a connection starting now.
TOKEN_MAX_AGE_SECONDS = 300


def new_connection_id() -> str:
    """A fresh connection id, for a client that skipped negotiate (it needs no token)."""
    return secrets.token_urlsafe(16)


def new_connection() -> tuple[str, str]:
    """A fresh ``(connection_id, connection_token)`` pair."""
    connection_id = new_connection_id()
    return connection_id, signing.dumps(connection_id, salt=_SALT)


def connection_id_from_token(token: str) -> str | None:
    """The connection id a token was issued for, or None if it is forged or expired."""
    try:
        connection_id = signing.loads(token, salt=_SALT, max_age=TOKEN_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None
    return connection_id if isinstance(connection_id, str) else None
