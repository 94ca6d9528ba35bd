"""What every fan-out offers, and the bookkeeping of the per-process ones.

A fan-out carries each cell's encoded records from the pipeline (``publish``)
to the connections watching that cell (``watch``/``unwatch``). A connection
is a ``Viewer``: anything with a ``deliver`` that queues text without
blocking. A joining viewer's ``snapshot`` comes from the database, or, in the
per-process fan-outs, from what the process keeps of each watched cell
(``cells.CellSnapshots``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from tracking.events import unix_ms
from tracking.grid import Cell
from tracking.hub.fanout.cells import CellSnapshots, Reading, split_cell_message
from tracking.hub.protocol import location_record
from tracking.logsafe import one_line, quoted
from tracking.positions import LatestPosition
from tracking.redaction import redacted

logger = logging.getLogger("tracking.hub.fanout")

# While publishing fails, how often the outage is logged again.
OUTAGE_REPORT_SECONDS = 30.0
# While malformed messages keep arriving, how often they are summarised.
SKIPPED_REPORT_SECONDS = 60.0

# Reads the latest positions in some cells from the database.
ReadPositions = Callable[[Sequence[Cell]], Awaitable[Sequence[LatestPosition]]]


class Viewer(Protocol):
    """A connection that watches cells."""

    def deliver(self, records: str) -> None:
        """Queue encoded records for sending; must not block."""


class FanOut:
    """Delivery of cell updates to the viewers watching those cells."""

    async def watch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        """Start delivering the updates of ``cells`` to ``viewer``.

        Returns once updates published from now on will reach it; on failure
        it watches none of ``cells``.
        """
        raise NotImplementedError

    async def unwatch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        """Stop delivering the updates of ``cells`` to ``viewer``; never raises."""
        raise NotImplementedError

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        """Send each cell's message (``cells.cell_message``) to whoever watches
        it; return how many cells failed."""
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of the connections it holds (a fan-out made for one publish)."""

    async def snapshot(
        self, cells: Sequence[Cell], *, read: ReadPositions, heard_since_ms: int | None = None
    ) -> list[str]:
        """The ``locationUpdated`` record of every tracker in ``cells``, which
        the caller watches already; ``read`` reads them from the database.
        With ``heard_since_ms`` (Unix ms), only the records stamped that late
        or later: the caller's "not offline now"."""
        return [
            location_record(position)
            for position in await read(cells)
            if heard_since_ms is None or unix_ms(position.timestamp) >= heard_since_ms
        ]


class ProcessFanOut(FanOut):
    """A fan-out that knows this process's viewers of each cell and delivers to them itself.

    Subclasses learn when a cell gets its first local viewer and loses its
    last (to subscribe and unsubscribe), and call ``_deliver`` with what
    arrives for a cell.
    """

    def __init__(self) -> None:
        self._viewers: dict[Cell, set[Viewer]] = defaultdict(set)
        self.snapshots = CellSnapshots()
        # Database reads under way, by cell: a joiner of the cell waits for it.
        self._reads: dict[Cell, asyncio.Future[None]] = {}

    async def watch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        cells = list(cells)
        first = []
        for cell in cells:
            if not self._viewers[cell]:
                first.append(cell)
            self._viewers[cell].add(viewer)
        self.snapshots.keep(first)
        try:
            if first:
                await self._watch_cells(first)
            await self._settled(cells)
        except BaseException:
            await self.unwatch(viewer, cells)
            raise

    async def unwatch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        last = []
        for cell in cells:
            viewers = self._viewers.get(cell)
            if viewers is None:
                continue
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[cell]
                last.append(cell)
        self.snapshots.forget(last)
        if last:
            await self._unwatch_cells(last)

    async def snapshot(
        self, cells: Sequence[Cell], *, read: ReadPositions, heard_since_ms: int | None = None
    ) -> list[str]:
        """From what this process keeps of ``cells``; a cell not read yet (or
        due again) is read from the database first, once for all its joiners.
        ``heard_since_ms`` is applied to each kept record as the join is answered."""
        unkept = [cell for cell in cells if not self.snapshots.kept(cell)]
        fresh = self.snapshots.to_read(cells, now=time.monotonic())
        if fresh:
            reading = self.snapshots.start_reading(fresh)
            done = asyncio.ensure_future(self._read_cells(reading, read))
            for cell in fresh:
                self._reads[cell] = done
        waits = {self._reads[cell] for cell in cells if cell in self._reads}
        if waits:
            # Shielded: a joiner that goes away does not cancel the read for the others.
            await asyncio.shield(asyncio.gather(*waits))
        records = self.snapshots.records(cells, heard_since_ms=heard_since_ms)
        if unkept:  # no longer watched here (the viewer left meanwhile): nothing to keep
            records += await super().snapshot(unkept, read=read, heard_since_ms=heard_since_ms)
        return records

    async def _read_cells(self, reading: Reading, read: ReadPositions) -> None:
        try:
            positions = await read(reading.cells)
        except BaseException:
            self.snapshots.abandon(reading)
            raise
        else:
            self.snapshots.finish(
                reading,
                (
                    (position.cell, str(position.tracker_id), *_stamp_and_record(position))
                    for position in positions
                ),
                now=time.monotonic(),
            )
        finally:
            for cell in reading.cells:
                if self.snapshots.reading(cell) is None:
                    self._reads.pop(cell, None)

    def watched_cells(self) -> list[Cell]:
        """The cells some viewer of this process watches."""
        return list(self._viewers)

    def _deliver(self, cell: Cell, message: str) -> None:
        records = self.snapshots.apply(cell, message)
        if records:
            for viewer in tuple(self._viewers.get(cell, ())):
                viewer.deliver(records)

    async def _watch_cells(self, cells: list[Cell]) -> None:
        """The first local viewer of each of ``cells`` arrived."""

    async def _unwatch_cells(self, cells: list[Cell]) -> None:
        """The last local viewer of each of ``cells`` left; must not raise."""

    async def _settled(self, cells: list[Cell]) -> None:
        """Wait until updates of ``cells`` published from now on will arrive."""


class LocalFanOut(ProcessFanOut):
    """Publisher and viewers in one process (the demo, and tests)."""

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        for cell, records in records_by_cell.items():
            self._deliver(cell, records)
        return 0


def _stamp_and_record(position: LatestPosition) -> tuple[int, str]:
    return unix_ms(position.timestamp), location_record(position)


def records_of(message: str) -> str:
    """What the viewers of a cell get of its message (without its departures)."""
    return split_cell_message(message)[0]


def describe_error(exc: BaseException) -> str:
    """An exception for a log line: its class and message (redis-py's repr
    names only the class), without the passwords a message may quote."""
    message = redacted(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


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


class SkippedMessages:
    """Says when a malformed message arrives from ``source`` (skipped: the
    messages after it are delivered as usual), then, while more keep coming,
    at most one line every ``SKIPPED_REPORT_SECONDS`` counting them, so that
    whoever writes junk to Redis cannot flood the log."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0
        self._reported: float | None = None
        self._unreported = 0

    def skipped(self, problem: str, message: object = None) -> None:
        """Count a skipped message; ``message`` (if known) is quoted in the line."""
        now = time.monotonic()
        self.count += 1
        self._unreported += 1
        what = one_line(problem) if message is None else f"{one_line(problem)}: {quoted(message)}"
        if self._reported is None:
            logger.warning(
                "skipped a malformed message from %s (%s); the messages after it are "
                "delivered as usual",
                self.source,
                what,
            )
        elif now - self._reported >= SKIPPED_REPORT_SECONDS:
            logger.warning(
                "skipped %d more malformed messages from %s in the last %.0f s, the latest: %s",
                self._unreported,
                self.source,
                now - self._reported,
                what,
            )
        else:
            return
        self._reported = now
        self._unreported = 0
