"""The SignalR hub at ``/api/signalr``: one channels consumer per WebSocket connection.

The consumer is glue. It admits or refuses the connection, then hands every
message to the connection's ``HubSession`` (the protocol) and ``MapHub`` (the
map's methods), and gives them the socket, the fan-out and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from tracking.access import Credential, ended_credentials, may_view_map
from tracking.api_tokens import InvalidToken, find_token
from tracking.grid import Cell
from tracking.hub.fanout import FanOut, describe_error, get_fanout
from tracking.hub.map_hub import MapHub
from tracking.hub.session import HubError, HubSession, SessionLimits
from tracking.hub.sign_in import SignInWatch, get_sign_in_watch, presented_token
from tracking.hub.tokens import connection_id_from_token, new_connection
from tracking.models import configured_grid
from tracking.positions import LatestPosition
from tracking.selectors import latest_positions_in_cells

logger = logging.getLogger("tracking.hub")


def session_limits() -> SessionLimits:
    return SessionLimits(
        max_message_chars=settings.HUB_MAX_MESSAGE_BYTES,
        ping_seconds=settings.HUB_PING_SECONDS,
        client_timeout_seconds=settings.HUB_CLIENT_TIMEOUT_SECONDS,
        handshake_timeout_seconds=settings.HUB_HANDSHAKE_TIMEOUT_SECONDS,
        coalesce_seconds=settings.HUB_COALESCE_MS / 1000,
    )


class HubConsumer(AsyncWebsocketConsumer):
    # Updates arrive through the fan-out, never through a channels layer, so
    # no connection needs a layer channel of its own (channels makes one per
    # connection when a layer is named here).
    channel_layer_alias = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: HubSession | None = None
        self.hub: MapHub | None = None
        self.fanout: FanOut | None = None
        self.keepalive: asyncio.Task[None] | None = None
        self.sign_in: SignInWatch | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler of ``message``, without channels' per-message database hop.

        Channels' consumers close stale database connections before every
        message, a round trip through a worker thread. This consumer reaches
        the database only through ``database_sync_to_async`` (the snapshot),
        which does that itself, so the hop would only slow down each message.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        admitted = await self._admit()
        if admitted is None:
            await self.close()
            return
        connection_id, credential = admitted
        self.fanout = get_fanout()
        self.hub = MapHub(
            grid=configured_grid(),
            max_cells=settings.TRACKING_MAX_CELLS_PER_CONNECTION,
            ports=self,
        )
        self.session = HubSession(
            connection_id=connection_id,
            hub=self.hub,
            send=self._send_text,
            close=self.close,
            limits=session_limits(),
        )
        await self.accept()
        self.keepalive = asyncio.create_task(self.session.keep_alive())
        if credential is not None:
            self.sign_in = get_sign_in_watch(
                ended=database_sync_to_async(ended_credentials),
                interval=lambda: settings.HUB_CREDENTIAL_CHECK_SECONDS,
            )
            self.sign_in.add(self.session, credential)

    async def _admit(self) -> tuple[str, Credential | None] | None:
        """The connection's id and what signed it in (None: nobody), or None
        (logged) if it is refused. An API token, when one is presented, decides
        who connects; else the session does."""
        user = self.scope["user"]
        credential = None
        token = presented_token(self.scope)
        if token is not None:
            try:
                found = await database_sync_to_async(find_token)(token)
            except InvalidToken as refused:
                logger.info("hub: refused a connection: %s", refused)
                return None
            user, credential = found.user, Credential(token_id=found.pk)
            self.scope["user"] = user
        elif user.is_authenticated:
            session_key = getattr(self.scope.get("session"), "session_key", None)
            credential = Credential(session_key=session_key) if session_key else None
        if not may_view_map(user):
            logger.info("hub: refused a signed-out connection (the map is not public: MAP_PUBLIC)")
            return None
        ids = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("id")
        if not ids:  # skipNegotiation: the client went straight to the WebSocket.
            return new_connection()[0], credential
        known = connection_id_from_token(ids[0])
        if known is None:
            logger.info("hub: refused a connection with an unknown or expired id")
            return None
        return known, credential

    async def disconnect(self, code: int) -> None:
        if self.session is None or self.hub is None:
            return  # refused in connect(): nothing was set up
        self.session.end()
        if self.sign_in is not None:
            self.sign_in.discard(self.session)
        if self.keepalive is not None:
            self.keepalive.cancel()
        with contextlib.suppress(Exception):
            await self.hub.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is not None:
            await self.session.receive(text_data)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    # --- The map hub's ports (CellPorts) ------------------------------------------

    async def watch(self, cells: Sequence[Cell]) -> None:
        assert self.fanout is not None and self.session is not None
        try:
            await self.fanout.watch(self.session, cells)
        except Exception as exc:
            logger.error(
                "hub %s: could not join cells: %s", self.session.connection_id, describe_error(exc)
            )
            raise HubError(
                "Could not join the map cells: the server's message bus is unavailable."
            ) from None

    async def unwatch(self, cells: Collection[Cell]) -> None:
        assert self.fanout is not None and self.session is not None
        await self.fanout.unwatch(self.session, cells)

    async def snapshot(self, cells: Sequence[Cell]) -> Sequence[str]:
        assert self.fanout is not None and self.session is not None
        try:
            return await self.fanout.snapshot(cells, read=read_latest_positions)
        except Exception as exc:
            logger.error(
                "hub %s: could not read the joined cells' positions: %s",
                self.session.connection_id,
                describe_error(exc),
            )
            raise HubError(
                "Could not read the positions in the map cells: the server's database is "
                "unavailable; try again."
            ) from None


async def read_latest_positions(cells: Sequence[Cell]) -> Sequence[LatestPosition]:
    return await database_sync_to_async(latest_positions_in_cells)(cells=cells)
