"""The SignalR hub at ``/api/signalr``: one consumer per WebSocket connection.

The consumer speaks the JSON hub protocol (``hub_protocol``), keeps the set of
grid cells its connection has joined, and forwards the records that
``publishing`` sends to those cells' groups, several to a WebSocket message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from tracking import hub_protocol
from tracking.connections import connection_id_from_token, new_connection
from tracking.events import unix_ms
from tracking.fanout import describe_error, get_fanout
from tracking.grid import Cell, InvalidCells, parse_cells
from tracking.hub_protocol import (
    Close,
    Ignored,
    Invocation,
    Ping,
    ProtocolError,
    RecordBuffer,
    StreamInvocation,
)
from tracking.selectors import latest_positions_in_cells
from tracking.services import current_grid

logger = logging.getLogger(__name__)

# A snapshot of many trackers goes out in messages of at most this many records.
SNAPSHOT_RECORDS_PER_MESSAGE = 500
# channels-redis forgets group members after a day; HUB_FANOUT=channel-layer
# members renew well before.
GROUP_REFRESH_SECONDS = 6 * 3600


class HubError(Exception):
    """An invocation that fails in a way the caller should read: its text is the error."""


class HubConsumer(AsyncWebsocketConsumer):
    connection_id: str
    cells: set[Cell]

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler of ``message``, without channels' per-message database hop.

        Channels' consumers close stale database connections before every
        message, a round trip through a worker thread. This consumer reaches
        the database only through ``database_sync_to_async`` (the snapshot),
        which does that itself, so the hop would only slow down each update.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        if settings.MAP_LOGIN_REQUIRED and not self.scope["user"].is_authenticated:
            logger.info("hub: refused an anonymous connection (MAP_LOGIN_REQUIRED is on)")
            await self.close()
            return
        tokens = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("id")
        if tokens:
            connection_id = connection_id_from_token(tokens[0])
            if connection_id is None:
                logger.info("hub: refused a connection with an unknown or expired id")
                await self.close()
                return
        else:  # skipNegotiation: the client went straight to the WebSocket.
            connection_id, _ = new_connection()
        self.connection_id = connection_id
        self.grid = current_grid()
        self.cells = set()
        self.handshaken = False
        self.closing = False
        self.records = RecordBuffer(max_chars=settings.HUB_MAX_MESSAGE_BYTES)
        self.fanout = get_fanout()
        self.outbox: list[str] = []
        self.flush_handle: asyncio.TimerHandle | None = None
        now = time.monotonic()
        self.opened_at = self.last_received = self.last_sent = self.groups_refreshed = now
        await self.accept()
        self.keepalive = asyncio.create_task(self._keep_alive())

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "keepalive"):
            return  # refused in connect(): nothing was set up
        self.closing = True
        self.keepalive.cancel()
        if self.flush_handle is not None:
            self.flush_handle.cancel()
        with contextlib.suppress(Exception):
            await self.fanout.unwatch(self, self.cells)
        self.cells = set()

    # --- Incoming -------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        self.last_received = time.monotonic()
        if text_data is None:
            await self._close_with_error("Binary messages are not supported: this hub speaks JSON.")
            return
        if len(text_data) > settings.HUB_MAX_MESSAGE_BYTES:
            await self._close_with_error(
                f"The message is larger than the maximum of {settings.HUB_MAX_MESSAGE_BYTES} bytes."
            )
            return
        try:
            for record in self.records.feed(text_data):
                if self.closing:
                    return
                if self.handshaken:
                    await self._handle(hub_protocol.parse_message(record))
                else:
                    await self._handshake(record)
        except ProtocolError as exc:
            logger.info("hub %s: protocol error: %s", self.connection_id, exc)
            if self.handshaken:
                await self._close_with_error(f"Connection closed with an error. {exc}")
            else:
                await self._send(hub_protocol.handshake_error(str(exc)))
                await self._close()

    async def _handshake(self, record: str) -> None:
        hub_protocol.parse_handshake(record)
        self.handshaken = True
        await self._send(hub_protocol.HANDSHAKE_OK)

    async def _handle(self, message: hub_protocol.HubMessage) -> None:
        if isinstance(message, Invocation):
            await self._invoke(message)
        elif isinstance(message, StreamInvocation):
            await self._send(
                hub_protocol.completion_error(
                    message.invocation_id, "Streaming hub methods are not supported."
                )
            )
        elif isinstance(message, Close):
            await self._close()
        else:
            assert isinstance(message, Ping | Ignored)

    async def _invoke(self, invocation: Invocation) -> None:
        method = _METHODS.get(invocation.target.lower())
        try:
            if invocation.stream_ids:
                raise HubError("Client-to-server streaming is not supported.")
            if method is None:
                raise HubError(f"Unknown hub method '{invocation.target}'.")
            result, after = await method(self, invocation.arguments)
        except HubError as exc:
            logger.info("hub %s: %s failed: %s", self.connection_id, invocation.target, exc)
            if invocation.invocation_id is not None:
                await self._send(hub_protocol.completion_error(invocation.invocation_id, str(exc)))
            return
        except Exception:
            logger.exception("hub %s: %s raised", self.connection_id, invocation.target)
            if invocation.invocation_id is not None:
                await self._send(
                    hub_protocol.completion_error(
                        invocation.invocation_id,
                        f"An unexpected error occurred invoking '{invocation.target}' "
                        "on the server.",
                    )
                )
            return
        if invocation.invocation_id is not None:
            await self._send(hub_protocol.completion(invocation.invocation_id, result=result))
        if after is not None:
            await after

    # --- Hub methods ----------------------------------------------------------

    async def update_map_grid_groups(self, arguments: list[Any]) -> tuple[Any, Any]:
        """``updateMapGridGroups(newGridNumbers, previousGridNumbers)``.

        Leaves ``previous - new`` and joins ``new - previous``, by what this
        connection really holds: a cell the connection is not in is joined
        even if the client lists it as previous (after a reconnect, say).
        Joins happen before the snapshot is read, so no update falls between.
        """
        if len(arguments) != 2:
            raise HubError(
                f"updateMapGridGroups takes 2 arguments (newGridNumbers, previousGridNumbers), "
                f"got {len(arguments)}."
            )
        try:
            new = parse_cells(
                arguments[0],
                grid=self.grid,
                name="newGridNumbers",
                max_count=settings.TRACKING_MAX_CELLS_PER_CONNECTION,
            )
            previous = parse_cells(
                arguments[1],
                grid=self.grid,
                name="previousGridNumbers",
                max_count=self.grid.columns * self.grid.rows,
            )
        except InvalidCells as exc:
            raise HubError(str(exc)) from None
        leave = (set(previous) - set(new)) & self.cells
        join = [cell for cell in new if cell not in self.cells]
        holding = (self.cells - leave) | set(join)
        if len(holding) > settings.TRACKING_MAX_CELLS_PER_CONNECTION:
            raise HubError(
                f"This would hold {len(holding)} cells, more than the "
                f"{settings.TRACKING_MAX_CELLS_PER_CONNECTION} a connection may join; zoom in."
            )
        try:
            await self.fanout.watch(self, join)
        except Exception as exc:
            logger.error(
                "hub %s: could not join cells: %s", self.connection_id, describe_error(exc)
            )
            raise HubError(
                "Could not join the map cells: the server's message bus is unavailable."
            ) from None
        await self.fanout.unwatch(self, leave)
        self.cells = holding
        result = {
            "joined": [list(cell) for cell in join],
            "left": [list(cell) for cell in sorted(leave)],
            "cells": [list(cell) for cell in sorted(holding)],
        }
        return result, self._send_snapshot(join)

    async def _send_snapshot(self, cells: list[Cell]) -> None:
        if not cells:
            return
        positions = await database_sync_to_async(latest_positions_in_cells)(cells=cells)
        records = [
            hub_protocol.location_updated(
                tracker_id=str(position.tracker_id),
                latitude=position.latitude,
                longitude=position.longitude,
                timestamp_ms=unix_ms(position.timestamp),
            )
            for position in positions
        ]
        for start in range(0, len(records), SNAPSHOT_RECORDS_PER_MESSAGE):
            await self._send("".join(records[start : start + SNAPSHOT_RECORDS_PER_MESSAGE]))

    # --- From the channel layer --------------------------------------------------

    async def hub_records(self, event: dict[str, Any]) -> None:
        """Records from a cell group (``HUB_FANOUT=channel-layer``)."""
        self.deliver(event["records"])

    def deliver(self, records: str) -> None:
        """Queue records from a watched cell; they go out within ``HUB_COALESCE_MS``,
        several to a WebSocket message."""
        if self.closing or not self.handshaken:
            return
        self.outbox.append(records)
        if self.flush_handle is None:
            self.flush_handle = asyncio.get_running_loop().call_later(
                settings.HUB_COALESCE_MS / 1000, self._start_flush
            )

    def _start_flush(self) -> None:
        self.flush_handle = None
        self.flush_task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        if self.outbox and not self.closing:
            text = "".join(self.outbox)
            self.outbox.clear()
            await self._send(text)

    # --- Keep-alive ------------------------------------------------------------

    async def _keep_alive(self) -> None:
        """Ping when idle, close a silent client, refresh group membership."""
        ping = settings.HUB_PING_SECONDS
        timeout = settings.HUB_CLIENT_TIMEOUT_SECONDS
        try:
            while not self.closing:
                now = time.monotonic()
                if (
                    not self.handshaken
                    and now - self.opened_at >= settings.HUB_HANDSHAKE_TIMEOUT_SECONDS
                ):
                    logger.info("hub %s: no handshake in time; closing", self.connection_id)
                    await self._close()
                    return
                if now - self.last_received >= timeout:
                    await self._close_with_error(
                        "Server timeout elapsed without receiving a message from the client."
                    )
                    return
                if self.handshaken and now - self.last_sent >= ping:
                    await self._send(hub_protocol.PING)
                if now - self.groups_refreshed >= GROUP_REFRESH_SECONDS and self.cells:
                    self.groups_refreshed = now
                    await self.fanout.refresh(self, self.cells)
                deadlines = [self.last_received + timeout, self.last_sent + ping]
                if not self.handshaken:
                    deadlines.append(self.opened_at + settings.HUB_HANDSHAKE_TIMEOUT_SECONDS)
                await asyncio.sleep(max(min(deadlines) - time.monotonic(), 0.05))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("hub %s: keep-alive failed", self.connection_id)

    # --- Outgoing ----------------------------------------------------------------

    async def _send(self, text: str) -> None:
        self.last_sent = time.monotonic()
        try:
            await self.send(text_data=text)
        except OSError:
            # The client went away mid-send (uvicorn raises ClientDisconnected);
            # the disconnect that follows cleans up.
            self.closing = True

    async def _close_with_error(self, error: str) -> None:
        logger.info("hub %s: closing: %s", self.connection_id, error)
        await self._send(hub_protocol.close(error))
        await self._close()

    async def _close(self) -> None:
        if not self.closing:
            self.closing = True
            await self.close()


# Hub method names are matched without regard to case, as ASP.NET Core does.
_METHODS = {
    "updatemapgridgroups": HubConsumer.update_map_grid_groups,
}
