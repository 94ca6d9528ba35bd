"""Who a hub connection signed in as, and closing it when that sign-in ends.

A connection opened with an API token, or by a browser signed in to the
site, stays open only while that token or session still signs someone in.
Each web process re-checks the credentials of all its open connections
together every ``HUB_CREDENTIAL_CHECK_SECONDS`` (one query for the tokens,
one for the sessions) and closes, with a Close record saying why, those whose
token was revoked, expired or deleted, or whose user signed out. Every web
process reads the same database, so a sign-out in one process closes the
connections of every other within one interval, with no message between
processes to lose (docs/architecture.md, "Signing in").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs

from tracking.access import Credential
from tracking.api_tokens import bearer_token

logger = logging.getLogger("tracking.hub")

SIGN_IN_ENDED = (
    "Your sign-in has ended (the token was revoked or has expired, or you signed out). "
    "Sign in again to reconnect."
)


def presented_token(scope: Mapping[str, Any]) -> str | None:
    """The API token a WebSocket was opened with: the ``access_token`` query
    parameter (what SignalR clients in a browser send, since a browser cannot
    set a WebSocket's headers) or an ``Authorization: Bearer`` header (what
    clients outside a browser send); None when neither is there. Present but
    empty is presented: it signs nobody in."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if "access_token" in query:
        return query["access_token"][0]
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


class Closable(Protocol):
    async def close_with_error(self, error: str) -> None:
        """Tell the client why, then close."""


class SignInWatch:
    """The open connections of one process that some credential signed in, re-checked together."""

    def __init__(
        self,
        *,
        ended: Callable[[Collection[Credential]], Awaitable[Collection[Credential]]],
        interval: Callable[[], float],
    ) -> None:
        self._ended = ended
        self._interval = interval
        self._connections: dict[Closable, Credential] = {}
        self._checker: asyncio.Task[None] | None = None

    def add(self, connection: Closable, credential: Credential) -> None:
        self._connections[connection] = credential
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_while_watching())

    def discard(self, connection: Closable) -> None:
        self._connections.pop(connection, None)

    def __len__(self) -> int:
        return len(self._connections)

    async def check(self) -> int:
        """Close the connections whose credential has ended; how many were closed."""
        watched = dict(self._connections)
        ended = await self._ended(set(watched.values()))
        closing = [c for c, credential in watched.items() if credential in ended]
        for connection in closing:
            self.discard(connection)
            with contextlib.suppress(Exception):  # a socket already gone needs no close
                await connection.close_with_error(SIGN_IN_ENDED)
        if closing:
            logger.info("hub: closed %d connections whose sign-in ended", len(closing))
        return len(closing)

    async def _check_while_watching(self) -> None:
        while self._connections:
            await asyncio.sleep(self._interval())
            try:
                await self.check()
            except Exception:
                # The database is away: keep the connections, try again next time.
                logger.exception("hub: could not re-check the sign-in of open connections")


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SignInWatch] = (
    weakref.WeakKeyDictionary()
)


def get_sign_in_watch(
    *,
    ended: Callable[[Collection[Credential]], Awaitable[Collection[Credential]]],
    interval: Callable[[], float],
) -> SignInWatch:
    """This event loop's watch, made with ``ended`` and ``interval`` the first time."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = SignInWatch(ended=ended, interval=interval)
    return watch
