"""The production fan-out: one Redis pub/sub channel per map cell.

A web process subscribes once to each cell that any of its connections
watches and delivers each message to them itself, so a record crosses Redis
once per process and costs each connection an append to its outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from tracking.grid import Cell, group_name
from tracking.hub.fanout.base import (
    ProcessFanOut,
    PublishOutage,
    SkippedMessages,
    describe_error,
)
from tracking.hub.fanout.cells import check_cell_message
from tracking.hub.protocol import ProtocolError
from tracking.redaction import redacted_url

logger = logging.getLogger("tracking.hub.fanout")

REDIS_RETRY_FIRST_SECONDS = 0.5
REDIS_RETRY_MAX_SECONDS = 10.0
# How long a viewer waits for Redis to confirm its subscriptions.
SUBSCRIBE_TIMEOUT_SECONDS = 10.0


class RedisFanOut(ProcessFanOut):
    """One Redis pub/sub channel per cell, one subscription per cell per process."""

    def __init__(self, url: str, *, prefix: str) -> None:
        super().__init__()
        from redis import asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, health_check_interval=30)
        self._prefix = f"{prefix}.cell."
        self._outage = PublishOutage(f"Redis at {redacted_url(url)} (REDIS_URL)")
        self.skipped = SkippedMessages(f"Redis at {redacted_url(url)} (REDIS_URL)")
        self._pubsub = self._redis.pubsub()
        self._commands = asyncio.Lock()
        # Subscriptions sent but not yet confirmed, by channel.
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None

    def channel(self, cell: Cell) -> str:
        return self._prefix + group_name(cell).removeprefix("cell.")

    def _cell(self, channel: bytes) -> Cell:
        x, y = channel.decode()[len(self._prefix) :].split(".")
        return Cell(_unsigned(x), _unsigned(y))

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        if not records_by_cell:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for cell, records in records_by_cell.items():
                    pipe.publish(self.channel(cell), records)
                await pipe.execute()
        except Exception as exc:
            self._outage.failed(cells=len(records_by_cell), error=describe_error(exc))
            return len(records_by_cell)
        self._outage.succeeded()
        return 0

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        await self._redis.aclose()

    async def _watch_cells(self, cells: list[Cell]) -> None:
        loop = asyncio.get_running_loop()
        for cell in cells:
            self._confirming.setdefault(self.channel(cell).encode(), loop.create_future())
        async with self._commands:
            await self._pubsub.subscribe(*(self.channel(cell) for cell in cells))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())

    async def _settled(self, cells: list[Cell]) -> None:
        """Wait for Redis to confirm the subscriptions: a viewer reads its
        snapshot after this, so no update can fall between the two."""
        waiting = [
            future
            for cell in cells
            if (future := self._confirming.get(self.channel(cell).encode())) is not None
        ]
        if waiting:
            await asyncio.wait_for(
                asyncio.shield(asyncio.gather(*waiting)), timeout=SUBSCRIBE_TIMEOUT_SECONDS
            )

    async def _unwatch_cells(self, cells: list[Cell]) -> None:
        with contextlib.suppress(Exception):  # a lost connection forgets them anyway
            async with self._commands:
                await self._pubsub.unsubscribe(*(self.channel(cell) for cell in cells))

    async def _read(self) -> None:
        """Deliver what Redis sends; after a lost connection, subscribe again."""
        delay = REDIS_RETRY_FIRST_SECONDS
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                delay = REDIS_RETRY_FIRST_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error(
                    "Redis subscription lost (%s); subscribing again in %.1f s",
                    describe_error(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, REDIS_RETRY_MAX_SECONDS)
                await self._resubscribe()
                continue
            if message is None:
                continue
            if message["type"] == "message":
                self._receive(message["channel"], message["data"])
            elif message["type"] == "subscribe":
                confirmed = self._confirming.pop(message["channel"], None)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)

    def _receive(self, channel: bytes, data: bytes) -> None:
        """Deliver a cell's message, unless it is not what publishing sends."""
        try:
            records = data.decode()
            check_cell_message(records)
        except (UnicodeDecodeError, ProtocolError) as exc:
            self.skipped.skipped(f"on {channel.decode(errors='replace')}: {exc}", data)
            return
        self._deliver(self._cell(channel), records)

    async def _resubscribe(self) -> None:
        # Messages may have been lost meanwhile: the snapshots kept are read
        # again, once the new subscriptions are confirmed (a joiner waits).
        self.snapshots.distrust()
        loop = asyncio.get_running_loop()
        async with self._commands:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = self._redis.pubsub()
            channels = [self.channel(cell) for cell in self.watched_cells()]
            for channel in channels:
                self._confirming.setdefault(channel.encode(), loop.create_future())
            if channels:
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(*channels)


def _unsigned(text: str) -> int:
    return -int(text[1:]) if text.startswith("m") else int(text)
