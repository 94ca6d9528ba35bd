"""The SignalR hub at ``/api/signalr``: one channels consumer per WebSocket connection.

The consumer is glue. It admits or refuses the connection, then hands every
message to the connection's ``HubSession`` (the protocol) and ``MapHub`` (the
map's methods), and gives them the socket, the fan-out and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from tracking.access import Credential, ended_credentials, may_view_map
from tracking.api_tokens import InvalidToken, find_token
from tracking.areas import FINEST, Overview, OverviewRequest
from tracking.events import unix_ms
from tracking.grid import Cell
from tracking.hub.fanout import FanOut, describe_error, get_fanout
from tracking.hub.map_hub import MapHub
from tracking.hub.overview import OverviewWatch, get_overview_watch
from tracking.hub.servers import ServerSocket, server_socket
from tracking.hub.session import HubError, HubSession, SessionLimits
from tracking.hub.sign_in import SignInWatch, get_sign_in_watch, presented_token
from tracking.hub.tokens import connection_id_from_token, new_connection_id
from tracking.models import configured_grid, offline_before
from tracking.positions import LatestPosition
from tracking.selectors import counted_trackers_by_area, latest_positions_in_cells

logger = logging.getLogger("tracking.hub")


def session_limits() -> SessionLimits:
    return SessionLimits(
        max_message_chars=settings.HUB_MAX_MESSAGE_BYTES,
        ping_seconds=settings.HUB_PING_SECONDS,
        client_timeout_seconds=settings.HUB_CLIENT_TIMEOUT_SECONDS,
        handshake_timeout_seconds=settings.HUB_HANDSHAKE_TIMEOUT_SECONDS,
        coalesce_seconds=settings.HUB_COALESCE_MS / 1000,
        outbox_chars=settings.HUB_OUTBOX_BYTES,
        send_stall_seconds=settings.HUB_SEND_STALL_SECONDS,
        invocations_per_message=settings.HUB_MAX_INVOCATIONS_PER_MESSAGE,
        invocations_per_second=settings.HUB_INVOCATIONS_PER_SECOND,
        invocation_burst=settings.HUB_INVOCATION_BURST,
    )


# How long a closed connection's invocation under way may take to finish
# (a join waits up to 10 s for Redis) before it is cancelled.
INVOCATION_WIND_DOWN_SECONDS = 15.0
# WebSocket close code 1013: "Try Again Later".
TRY_AGAIN_LATER = 1013
# While connections are refused for the cap, a log line at most this often.
REFUSALS_REPORT_SECONDS = 10.0


class ConnectionCap:
    """The hub connections open in this process, at most ``HUB_MAX_CONNECTIONS``;
    refusals are logged, at most one line every ``REFUSALS_REPORT_SECONDS``."""

    def __init__(self) -> None:
        self.open: weakref.WeakSet[HubConsumer] = weakref.WeakSet()
        self._refused = 0
        self._reported = -REFUSALS_REPORT_SECONDS

    def admit(self, consumer: HubConsumer) -> bool:
        if len(self.open) < settings.HUB_MAX_CONNECTIONS:
            self.open.add(consumer)
            return True
        self._refused += 1
        now = time.monotonic()
        if now - self._reported >= REFUSALS_REPORT_SECONDS:
            logger.warning(
                "hub: refused %d connection(s): this process holds its limit of %d "
                "(HUB_MAX_CONNECTIONS)",
                self._refused,
                settings.HUB_MAX_CONNECTIONS,
            )
            self._refused, self._reported = 0, now
        return False


connections = ConnectionCap()


class HubConsumer(AsyncWebsocketConsumer):
    # Updates arrive through the fan-out, never through a channels layer, so
    # no connection needs a layer channel of its own (channels makes one per
    # connection when a layer is named here; ``__call__`` never listens to one).
    channel_layer_alias = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: HubSession | None = None
        self.hub: MapHub | None = None
        self.fanout: FanOut | None = None
        self.keepalive: asyncio.Task[None] | None = None
        self.sign_in: SignInWatch | None = None
        self.socket: ServerSocket | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve the connection: each message the server hands over, in turn.

        Channels' consumer listens to the server and to a channel layer at once,
        with a task and an ``asyncio.wait`` per message; this one has no layer,
        so it awaits the server's next message itself (as channels does, one
        message is handled before the next is read).
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            while True:
                await self.dispatch(await receive())

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """As channels' consumer does, without its closing of stale database
        connections on a worker thread: see ``dispatch``."""
        await self.disconnect(message["code"])
        raise StopConsumer

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
        if not connections.admit(self):
            await self.accept()
            await self.close(
                code=TRY_AGAIN_LATER,
                reason=f"The server is at its limit of {settings.HUB_MAX_CONNECTIONS} "
                "connections; try again later.",
            )
            return
        self.socket = server_socket(self.base_send)
        self.fanout = get_fanout()
        self.hub = MapHub(
            grid=configured_grid(),
            max_cells=settings.TRACKING_MAX_CELLS_PER_CONNECTION,
            ports=self,
            overview=self,
        )
        self.session = HubSession(
            connection_id=connection_id,
            hub=self.hub,
            send=self._send_text,
            close=self.close,
            limits=session_limits(),
            abort=self._abort,
            server_buffered=self.socket.buffered if self.socket is not None else None,
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
            return new_connection_id(), credential
        known = connection_id_from_token(ids[0])
        if known is None:
            logger.info("hub: refused a connection with an unknown or expired id")
            return None
        return known, credential

    async def disconnect(self, code: int) -> None:
        connections.open.discard(self)
        await self._release()

    async def _release(self) -> None:
        """Let go of everything the connection holds; once is enough."""
        if self.session is None or self.hub is None or self.session.ended:
            return  # refused in connect(), or released already
        self.session.end()
        if self.sign_in is not None:
            self.sign_in.discard(self.session)
        if self.keepalive is not None and self.keepalive is not asyncio.current_task():
            self.keepalive.cancel()
        await self.session.wound_down(patience=INVOCATION_WIND_DOWN_SECONDS)
        with contextlib.suppress(Exception):
            await self.hub.close()

    async def _abort(self) -> None:
        """Drop a connection whose client stopped reading; its disconnect follows."""
        if self.socket is not None:
            self.socket.abort()
            return
        # A server this module does not know: let go of what the connection
        # holds now, and close the socket as the server can.
        connections.open.discard(self)
        await self._release()
        with contextlib.suppress(Exception):  # a close may be under way already
            await self.close()

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
            # No ghosts: a tracker offline now is left out, read or kept (docs/protocol.md §3.7).
            heard_since_ms = unix_ms(offline_before(timezone.now()))
            return await self.fanout.snapshot(
                cells, read=read_latest_positions, heard_since_ms=heard_since_ms
            )
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

    # --- The map hub's overview (OverviewPorts) -----------------------------------

    async def watch_overview(self, request: OverviewRequest) -> None:
        assert self.session is not None
        try:
            await overview_watch().watch(self.session, request)
        except Exception as exc:
            logger.error(
                "hub %s: could not read the overview: %s",
                self.session.connection_id,
                describe_error(exc),
            )
            raise HubError(
                "Could not read the overview: the server's database is unavailable; try again."
            ) from None

    async def unwatch_overview(self) -> None:
        assert self.session is not None
        overview_watch().unwatch(self.session)


def overview_watch() -> OverviewWatch:
    return get_overview_watch(read=read_overview, period=lambda: settings.TRACKING_OVERVIEW_SECONDS)


async def read_overview() -> Overview:
    """The counted trackers by area at every level: one query on a database thread,
    summed up to the coarser levels there too, off the event loop."""
    return await database_sync_to_async(_overview_now)()


def _overview_now() -> Overview:
    return Overview.rolled_up(counted_trackers_by_area(size=FINEST))


async def read_latest_positions(cells: Sequence[Cell]) -> Sequence[LatestPosition]:
    """The latest positions in ``cells`` of the trackers not offline now."""
    heard_since = offline_before(timezone.now())
    return await database_sync_to_async(latest_positions_in_cells)(
        cells=cells, heard_since=heard_since
    )
