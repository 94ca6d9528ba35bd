"""Fan-out of cell updates to the map connections watching those cells.

The pipeline publishes, per batch, one piece of text per cell: the encoded
hub records of every tracker that moved in it. Each web process then hands
that text to its own connections that watch the cell. Three ways to carry it,
chosen by ``HUB_FANOUT`` and ``REDIS_URL`` (see ``get_fanout``):

- ``RedisFanOut`` (``HUB_FANOUT=cells`` with Redis, the production default):
  one Redis pub/sub channel per cell. A web process subscribes once to each
  cell that any of its connections watches and delivers each message to them
  itself, so the cost per connection is an append to its outbox.
- ``LocalFanOut`` (``cells`` without Redis: the demo): the same, within one
  process.
- ``ChannelLayerFanOut`` (``HUB_FANOUT=channel-layer``): a channels group per
  cell and a channel-layer message per connection. Kept to compare with (see
  BENCHMARKS.md) and for deployments that want the channel layer's delivery.

Pub/sub is at-most-once: a message published while a web process is
reconnecting to Redis does not reach its viewers, who see that tracker's
next update instead (trackers report every second or so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from channels.layers import get_channel_layer
from django.conf import settings

from tracking.grid import Cell, group_name

logger = logging.getLogger(__name__)

# The channel-layer message type ``ChannelLayerFanOut`` sends (``HubConsumer.hub_records``).
RECORDS_MESSAGE = "hub.records"
REDIS_RETRY_FIRST_SECONDS = 0.5
REDIS_RETRY_MAX_SECONDS = 10.0
# While publishing fails, how often the outage is logged again.
OUTAGE_REPORT_SECONDS = 30.0


def describe_error(exc: BaseException) -> str:
    """An exception for a log line: its class and message (redis-py's repr
    names only the class)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def redacted_url(url: str) -> str:
    """A service URL without its credentials, to name it in a log line."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


class PublishOutage:
    """Says when publishing starts failing, every ``OUTAGE_REPORT_SECONDS``
    while it keeps failing, and when it works again: one line per batch would
    flood the log during an outage, and none would hide it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._since: float | None = None
        self._reported = 0.0
        self._batches = 0
        self._cells = 0

    def failed(self, *, cells: int, error: str) -> None:
        now = time.monotonic()
        self._batches += 1
        self._cells += cells
        if self._since is None:
            self._since = self._reported = now
            logger.error(
                "could not publish %d cells to %s (%s): map viewers miss these updates "
                "until it answers",
                cells,
                self.target,
                error,
            )
        elif now - self._reported >= OUTAGE_REPORT_SECONDS:
            self._reported = now
            logger.error(
                "still cannot publish to %s (%s): %d batches (%d cells) not sent in %.0f s",
                self.target,
                error,
                self._batches,
                self._cells,
                now - self._since,
            )

    def succeeded(self) -> None:
        if self._since is None:
            return
        logger.warning(
            "publishing to %s again after %.0f s; %d batches (%d cells) were not sent",
            self.target,
            time.monotonic() - self._since,
            self._batches,
            self._cells,
        )
        self._since = None
        self._batches = self._cells = 0


class Viewer(Protocol):
    """A connection that watches cells; ``channel_name`` is its channel-layer address."""

    channel_name: str

    def deliver(self, records: str) -> None:
        """Queue encoded records for sending; must not block."""


class FanOut:
    """Which local viewers watch which cells, and delivery to them."""

    def __init__(self) -> None:
        self._viewers: dict[Cell, set[Viewer]] = defaultdict(set)

    async def watch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        """Start delivering the updates of ``cells`` to ``viewer``.

        Returns once updates published from now on will reach it; on failure
        it watches none of ``cells``.
        """
        cells = list(cells)
        first = []
        for cell in cells:
            if not self._viewers[cell]:
                first.append(cell)
            self._viewers[cell].add(viewer)
        try:
            if first:
                await self._watch_cells(viewer, first)
            await self._settled(cells)
        except BaseException:
            await self.unwatch(viewer, cells)
            raise

    async def unwatch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        """Stop delivering the updates of ``cells`` to ``viewer``."""
        last = []
        for cell in cells:
            viewers = self._viewers.get(cell)
            if viewers is None:
                continue
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[cell]
                last.append(cell)
        if last:
            await self._unwatch_cells(viewer, last)

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        """Send each cell's records to whoever watches it; return how many cells failed."""
        raise NotImplementedError

    async def refresh(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        """Renew ``viewer``'s membership of ``cells`` where it can expire."""

    def _deliver(self, cell: Cell, records: str) -> None:
        for viewer in tuple(self._viewers.get(cell, ())):
            viewer.deliver(records)

    async def _watch_cells(self, viewer: Viewer, cells: list[Cell]) -> None:
        """The first local viewer of each of ``cells`` arrived."""

    async def _unwatch_cells(self, viewer: Viewer, cells: list[Cell]) -> None:
        """The last local viewer of each of ``cells`` left."""

    async def _settled(self, cells: list[Cell]) -> None:
        """Wait until updates of ``cells`` published from now on will arrive."""


class LocalFanOut(FanOut):
    """Publisher and viewers in one process (the demo, and tests)."""

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        for cell, records in records_by_cell.items():
            self._deliver(cell, records)
        return 0


class RedisFanOut(FanOut):
    """One Redis pub/sub channel per cell, one subscription per cell per process."""

    def __init__(self, url: str, *, prefix: str) -> None:
        super().__init__()
        from redis import asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, health_check_interval=30)
        self._prefix = f"{prefix}.cell."
        self._outage = PublishOutage(f"Redis at {redacted_url(url)} (REDIS_URL)")
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

    async def _watch_cells(self, viewer: Viewer, cells: list[Cell]) -> None:
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
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*waiting)), timeout=10)

    async def _unwatch_cells(self, viewer: Viewer, cells: list[Cell]) -> None:
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
                self._deliver(self._cell(message["channel"]), message["data"].decode())
            elif message["type"] == "subscribe":
                confirmed = self._confirming.pop(message["channel"], None)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)

    async def _resubscribe(self) -> None:
        async with self._commands:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = self._redis.pubsub()
            channels = [self.channel(cell) for cell in self._viewers]
            if channels:
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(*channels)


class ChannelLayerFanOut(FanOut):
    """A channels group per cell; each member gets a ``hub.records`` message."""

    def __init__(self) -> None:
        super().__init__()
        self._layer: Any = get_channel_layer()
        self._outage = PublishOutage("the channel layer")

    async def watch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        cells = list(cells)
        await asyncio.gather(
            *(self._layer.group_add(group_name(cell), viewer.channel_name) for cell in cells)
        )

    async def unwatch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        outcomes = await asyncio.gather(
            *(self._layer.group_discard(group_name(cell), viewer.channel_name) for cell in cells),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            logger.warning(
                "could not leave %d groups: %s", len(failures), describe_error(failures[0])
            )

    async def refresh(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        # channels-redis forgets group members after a day (its group_expiry).
        await self.watch(viewer, cells)

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        outcomes = await asyncio.gather(
            *(
                self._layer.group_send(
                    group_name(cell), {"type": RECORDS_MESSAGE, "records": records}
                )
                for cell, records in records_by_cell.items()
            ),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            self._outage.failed(cells=len(failures), error=describe_error(failures[0]))
        else:
            self._outage.succeeded()
        return len(failures)


def _unsigned(text: str) -> int:
    return -int(text[1:]) if text.startswith("m") else int(text)


# One fan-out per event loop: Redis connections belong to the loop that made them.
_fanouts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FanOut] = weakref.WeakKeyDictionary()


def get_fanout() -> FanOut:
    """This process's fan-out, as ``HUB_FANOUT`` and ``REDIS_URL`` say."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None:
        fanout = _fanouts[loop] = _make_fanout()
    return fanout


def _make_fanout() -> FanOut:
    if settings.HUB_FANOUT == "channel-layer":
        return ChannelLayerFanOut()
    if settings.REDIS_URL:
        return RedisFanOut(settings.REDIS_URL, prefix=settings.CHANNEL_LAYER_PREFIX)
    return LocalFanOut()


def reset_fanouts() -> None:
    """Forget every fan-out (tests change settings between runs)."""
    _fanouts.clear()
