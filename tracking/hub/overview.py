"""The overview's updates in one web process: one aggregate for every connection watching it.

While at least one connection of the process watches the overview
(``updateOverview``), the process reads the counted trackers by area once
every ``TRACKING_OVERVIEW_SECONDS`` (one query, on a database thread, never
two at once) and hands each watching connection the areas of its level that
meet its view, through the connection's outbox like any update. Connections
watching the same areas share one encoded message, and an area in many
views is encoded once per update (``Encoder``). A connection that starts
watching is sent the newest aggregate at once if it is younger than the
period, else one read for it (and for whoever else asks meanwhile). With
nobody watching, nothing is read. No Django or channels import: the read is
handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from tracking.areas import Overview, OverviewRequest
from tracking.grid import Cell
from tracking.hub import protocol

logger = logging.getLogger("tracking.hub")

ReadOverview = Callable[[], Awaitable[Overview]]


class Viewer(Protocol):
    """A connection that watches the overview (a ``HubSession``)."""

    def deliver(self, records: str) -> None:
        """Queue encoded records for sending; must not block."""


class OverviewWatch:
    """The connections of one event loop that watch the overview, and the aggregate they share."""

    def __init__(
        self,
        *,
        read: ReadOverview,
        period: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._period = period
        self._clock = clock
        self._viewers: dict[Viewer, OverviewRequest] = {}
        self._latest: Overview | None = None
        self._read_at = -math.inf
        self._reading: asyncio.Future[Overview] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._failing = False
        self.reads = 0

    def __len__(self) -> int:
        return len(self._viewers)

    @property
    def ticking(self) -> bool:
        """Whether updates are being sent every period (while anyone watches)."""
        return self._ticker is not None and not self._ticker.done()

    async def watch(self, viewer: Viewer, request: OverviewRequest) -> None:
        """Send ``viewer`` the overview of ``request`` now, and every period
        from now on instead of what it watched before. Raises what reading
        the aggregate raises; the viewer then watches what it watched before."""
        # Out while the aggregate is read, so no update of what it watched
        # before can be queued after the answer to what it watches now.
        previous = self._viewers.pop(viewer, None)
        try:
            overview = await self.current()
        except BaseException:
            if previous is not None:
                self._watching(viewer, previous)
            raise
        self._watching(viewer, request)
        viewer.deliver(Encoder(overview).record(request))

    def _watching(self, viewer: Viewer, request: OverviewRequest) -> None:
        self._viewers[viewer] = request
        if not self.ticking:
            self._ticker = asyncio.create_task(self._tick_while_watched())

    def unwatch(self, viewer: Viewer) -> None:
        """Send ``viewer`` no more updates; once nobody watches, stop reading."""
        self._viewers.pop(viewer, None)
        if not self._viewers and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def current(self) -> Overview:
        """The newest aggregate if it is younger than the period, else a fresh one."""
        if self._latest is not None and self._clock() - self._read_at < self._period():
            return self._latest
        return await self.fresh()

    async def fresh(self) -> Overview:
        """Read the aggregate, or wait for the read under way: never two at once."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read_once())
        # Shielded: a caller that goes away does not cancel the read for the others.
        return await asyncio.shield(self._reading)

    async def _read_once(self) -> Overview:
        started = self._clock()
        try:
            overview = await self._read()
        finally:
            self._reading = None
        self.reads += 1
        self._latest, self._read_at = overview, started
        return overview

    def send(self, overview: Overview) -> int:
        """Hand every watching connection its areas of ``overview``; how many
        distinct messages were encoded."""
        encoder = Encoder(overview)
        messages: dict[OverviewRequest, str] = {}
        for viewer, request in tuple(self._viewers.items()):
            text = messages.get(request)
            if text is None:
                text = messages[request] = encoder.record(request)
            viewer.deliver(text)
        return len(messages)

    async def _tick_while_watched(self) -> None:
        while self._viewers:
            await asyncio.sleep(self._period())
            if not self._viewers:
                return
            try:
                overview = await self.fresh()
            except Exception:
                if not self._failing:
                    logger.exception("hub: could not read the overview; trying again every period")
                self._failing = True
                continue
            if self._failing:
                logger.warning("hub: reading the overview again")
                self._failing = False
            self.send(overview)


class Encoder:
    """The ``overviewUpdated`` records of one aggregate: each area is encoded
    once, the first time a view holds it, however many views hold it."""

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self._areas: dict[int, dict[Cell, str]] = {}

    def record(self, request: OverviewRequest) -> str:
        """What ``protocol.overview_updated(overview=overview.payload(request))`` writes."""
        level = request.level
        areas = self._areas.get(level)
        if areas is None:
            areas = self._areas[level] = {
                area: protocol.json_text(summary.payload(area))
                for area, summary in self.overview.areas.get(level, {}).items()
            }
        return protocol.overview_updated_of(
            area_degrees=level,
            total=self.overview.total,
            areas=[areas[area] for area in request.covering if area in areas],
        )


def encoded(overview: Overview, request: OverviewRequest) -> str:
    """The ``overviewUpdated`` record of ``request``'s areas."""
    return Encoder(overview).record(request)


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OverviewWatch] = (
    weakref.WeakKeyDictionary()
)


def get_overview_watch(*, read: ReadOverview, period: Callable[[], float]) -> OverviewWatch:
    """This event loop's watch, made with ``read`` and ``period`` the first time."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = OverviewWatch(read=read, period=period)
    return watch


async def stop_all() -> None:
    """Stop every watch's updates of this loop (tests, between runs)."""
    watch = _watches.pop(asyncio.get_running_loop(), None)
    if watch is not None and watch._ticker is not None:
        watch._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch._ticker
