"""The ingestion pipeline every source feeds: store a batch, then publish it.

A source hands ``Pipeline.process`` one batch at a time. The batch is stored in
one transaction on a dedicated database thread (so the event loop keeps
serving sockets), then what moved goes to the publisher the pipeline was
given (the hub's ``publish_locations``, wired in by the commands). A database
that is down is waited out with backoff: the batch is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.utils import timezone

from tracking import retention
from tracking.ingest.geofencing import FenceSet
from tracking.ingest.rejections import RejectionCounts, StoreAllowance
from tracking.ingest.sources import EventSource, RawEvent, first_line
from tracking.ingest.store import (
    REFUSED_BY_DATABASE,
    BatchResult,
    ParsedBatch,
    parse_batch,
    prune_rejected,
    rejected_prune_point,
    store_batch,
)
from tracking.logsafe import one_line, quoted
from tracking.positions import Crossing, LatestPosition

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Sends the positions that moved, and the geofence crossings, to the map after
# the batch has committed.
Publisher = Callable[[Sequence[LatestPosition], Sequence[Crossing]], Awaitable[object]]

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# Batches waiting together are stored as one while they hold at most this many events.
GROUP_MAX_EVENTS = 20_000
# Rejected events beyond TRACKING_REJECTED_KEEP are deleted at most this often,
PRUNE_EVERY_SECONDS = 60.0
# at most this many after each batch, so a big backlog never holds the batches up.
PRUNE_CHUNK = 5_000
# The first pass of retention waits this long after the start, for the first batches.
HISTORY_FIRST_PRUNE_SECONDS = 5.0
# Lag figures are kept for at most this many events per progress interval.
MAX_LAG_SAMPLES = 200_000
# What storing a batch raises when the database refuses a value in it, as
# opposed to an outage (OperationalError, InterfaceError) or a bug: the driver
# refusing to send a value (ValueError, OverflowError) or the database
# refusing a row (DataError, IntegrityError). Such a batch is split until the
# rows refused are found.
ROW_ERRORS = (DataError, IntegrityError, ValueError, OverflowError)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass
class Progress:
    """Counts for the whole run and for the current progress interval."""

    accepted: int = 0
    new: int = 0
    rejected: int = 0
    started: float = field(default_factory=time.monotonic)
    interval_started: float = field(default_factory=time.monotonic)
    interval_accepted: int = 0
    interval_rejected: int = 0
    lags: list[float] = field(default_factory=list)
    # Why events were rejected, in the whole run and in this interval.
    rejections: RejectionCounts = field(default_factory=RejectionCounts)
    interval_rejections: RejectionCounts = field(default_factory=RejectionCounts)

    def record(self, result: BatchResult, *, now: datetime) -> None:
        self.accepted += result.accepted
        self.new += result.new
        self.rejected += result.rejected
        self.interval_accepted += result.accepted
        self.interval_rejected += result.rejected
        for counts in (self.rejections, self.interval_rejections):
            counts.add(result.rejected_by_category, not_stored=result.not_stored)
        room = MAX_LAG_SAMPLES - len(self.lags)
        if room > 0:
            self.lags.extend((now - moment).total_seconds() for moment in result.event_times[:room])

    def interval_line(self) -> str:
        """One progress line for the interval just ended; starts the next interval."""
        now = time.monotonic()
        seconds = max(now - self.interval_started, 1e-9)
        events = self.interval_accepted + self.interval_rejected
        line = (
            f"{events / seconds:.0f} events/s ({self.interval_accepted} accepted, "
            f"{self.interval_rejected} rejected in {seconds:.1f} s); "
            f"lag median {_seconds(percentile(self.lags, 0.5))}, "
            f"p99 {_seconds(percentile(self.lags, 0.99))}; "
            f"total {self._accepted_and_new()}, {self.rejected} rejected"
            f"{_clause(self.interval_rejections.describe())}"
        )
        self.interval_started = now
        self.interval_accepted = self.interval_rejected = 0
        self.interval_rejections = RejectionCounts()
        self.lags = []
        return line

    def summary_line(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        total = self.accepted + self.rejected
        return (
            f"{self._accepted_and_new()}, {self.rejected} rejected "
            f"({total} events in {seconds:.1f} s, {total / seconds:.0f} events/s)"
            f"{_clause(self.rejections.describe())}"
        )

    def _accepted_and_new(self) -> str:
        """Accepted events, and how many of them history did not hold yet: a file
        read twice is accepted twice but stored once."""
        repeats = self.accepted - self.new
        return f"{self.accepted} accepted ({self.new} new, {repeats} already stored)"


def _clause(text: str) -> str:
    return f"; {text}" if text else ""


def _seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f} s"


class Pipeline:
    """Store batches on one database thread, publish after each commit.

    Batches handed over while another is being stored (several Event Hub
    partitions at once, say) wait, then are stored together in one
    transaction: a commit, and the statements around it, cost the same for
    a hundred events as for thousands.
    """

    def __init__(self, *, publish: Publisher) -> None:
        self._publish = publish
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-db")
        self.progress = Progress()
        self._allowance = StoreAllowance(per_minute=settings.TRACKING_REJECTED_STORE_PER_MINUTE)
        self._fences = FenceSet(reload_seconds=settings.GEOFENCE_RELOAD_SECONDS)
        self._pruned_at = -math.inf
        self._pruning: _Pruning | None = None
        self._waiting: list[tuple[ParsedBatch, asyncio.Future[BatchResult]]] = []
        self._worker: asyncio.Task[None] | None = None
        # Events of the batch being retried while the database is down (else 0).
        self.waiting_for_database = 0

    async def process(self, events: Sequence[RawEvent]) -> BatchResult:
        """Store and publish a batch; return once it is committed and published.

        The result counts every batch committed together with this one.
        """
        # Parsed here, on the event loop, while the database thread may be
        # busy storing the batch before: the two overlap.
        parsed = parse_batch(events=events, now=timezone.now())
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((parsed, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def _work(self) -> None:
        while self._waiting:
            group = self._next_group()
            try:
                batch = ParsedBatch()
                for parsed, _ in group:
                    batch.extend(parsed)
                result = await self._store(batch)
                await self._publish(result.moved, result.crossings)
                self.progress.record(result, now=timezone.now())
                await self._prune_now_and_then(result)
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(result)

    def _next_group(self) -> list[tuple[ParsedBatch, asyncio.Future[BatchResult]]]:
        """The waiting batches to store together: at least one, about a batch's worth."""
        group: list[tuple[ParsedBatch, asyncio.Future[BatchResult]]] = []
        size = 0
        while self._waiting and (not group or size + len(self._waiting[0][0]) <= GROUP_MAX_EVENTS):
            parsed, future = self._waiting.pop(0)
            group.append((parsed, future))
            size += len(parsed)
        return group

    async def _store(self, batch: ParsedBatch, *, split: bool = False) -> BatchResult:
        """Store a batch; if the database refuses a row of it, store the rest.

        A refused batch is stored in halves, each half again, until the rows
        the database refuses are alone; each of those is rejected with the
        database's message. Halves already stored stay stored.
        """
        try:
            return await self._store_through_outages(batch)
        except ROW_ERRORS as exc:
            if len(batch) == 1:
                return await self._reject_refused(batch, exc)
            if not split:
                logger.warning(
                    "the database refused a row of a batch of %d events (%s): "
                    "storing it in parts to keep every other event",
                    len(batch),
                    first_line(exc),
                )
            first, second = batch.halves()
            stored = await self._store(first, split=True)
            return stored.merged(await self._store(second, split=True))

    async def _reject_refused(self, entry: ParsedBatch, error: Exception) -> BatchResult:
        """Store one event the database refused as a rejected event saying why."""
        try:
            return await self._store_through_outages(entry.refused_by_database(first_line(error)))
        except ROW_ERRORS as exc:
            [raw] = entry.bodies()
            logger.error(
                "could not store the rejection of the event from %s either: %s",
                quoted(raw.origin),
                first_line(exc),
            )
            return BatchResult(
                rejected=1, rejected_by_category=Counter({REFUSED_BY_DATABASE: 1}), not_stored=1
            )

    async def _store_through_outages(self, batch: ParsedBatch) -> BatchResult:
        """Ingest on the database thread; a database that is down is waited out."""
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                result = await loop.run_in_executor(
                    self._executor, _ingest, batch, self._allowance, self._fences
                )
            except (OperationalError, InterfaceError) as exc:
                self.waiting_for_database = len(batch)
                logger.error(
                    "database unavailable, retrying the batch of %d events in %.1f s: %s",
                    len(batch),
                    delay,
                    one_line(str(exc)),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            else:
                self.waiting_for_database = 0
                return result

    async def _prune_now_and_then(self, result: BatchResult) -> None:
        """Every ``PRUNE_EVERY_SECONDS`` with rejected events stored, delete the
        ones beyond ``TRACKING_REJECTED_KEEP``: one chunk after each batch until
        none is left, so batches go on between chunks."""
        loop = asyncio.get_running_loop()
        if self._pruning is None:
            stored = result.rejected - result.not_stored
            if not stored or time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
                return
            self._pruned_at = time.monotonic()
            # Where to stop is found once, here; the chunks follow the next batches.
            up_to = await loop.run_in_executor(self._executor, _prune_point)
            if up_to is not None:
                self._pruning = _Pruning(up_to=up_to)
            return
        pruning = self._pruning
        deleted = await loop.run_in_executor(self._executor, _prune_chunk, pruning.up_to)
        pruning.deleted += deleted
        if deleted < PRUNE_CHUNK:
            if pruning.deleted:
                logger.info(
                    "pruned %d old rejected events (TRACKING_REJECTED_KEEP)", pruning.deleted
                )
            self._pruning = None

    async def prune_history(self) -> retention.PruneReport | None:
        """One pass of retention (``tracking.retention``), a step at a time on
        the database thread: each step waits behind the batch in hand and the
        next batch waits behind at most one step. Logs one line; returns the
        report (None if the database failed, logged too)."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        steps = retention.pruning(now=timezone.now())
        report: retention.PruneReport | None = None
        while True:
            try:
                step = await loop.run_in_executor(
                    self._executor, functools.partial(_with_connection, _next_step, steps=steps)
                )
            except DatabaseError as exc:
                logger.warning("history pruning stopped: %s", one_line(str(exc)))
                return None
            if step is None:
                break
            report = step
        if report is not None:
            logger.info(
                "history pruned in %.1f s (TRACKING_HISTORY_DAYS): %s",
                time.monotonic() - started,
                report.summary(),
            )
        return report

    async def prepare(self) -> None:
        """Load what storing needs before the first batch (the geofences), so
        the first batch and the run's rate do not pay for it; a database that
        does not answer yet is left to the first batch to wait out."""
        try:
            await self.run_in_db(self._fences.refresh)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("could not load the geofences yet: %s", one_line(str(exc)))
        self.progress = Progress()

    async def run_in_db(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        """Run ``function`` on the pipeline's database thread, after any batch in hand."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(_with_connection, function, **kwargs)
        )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, _close_connection)
        self._executor.shutdown(wait=True)


def _with_connection(function: Callable[..., T], **kwargs: Any) -> T:
    close_old_connections()
    try:
        return function(**kwargs)
    except (OperationalError, InterfaceError):
        connection.close()  # reconnect on the next call
        raise


def _close_connection() -> None:
    # Looked up here, on the database thread: each thread has its own connection.
    connection.close()


@dataclass
class _Pruning:
    """A pruning under way: rejected events up to this id go, a chunk at a time."""

    up_to: int
    deleted: int = 0


def _prune_point() -> int | None:
    try:
        return rejected_prune_point(keep=settings.TRACKING_REJECTED_KEEP)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("could not prune rejected events: %s", one_line(str(exc)))
        return None


def _prune_chunk(up_to: int) -> int:
    """One chunk of pruning; 0 (the rest waits for the next pruning) if the database fails."""
    try:
        return prune_rejected(up_to=up_to, chunk=PRUNE_CHUNK)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("could not prune rejected events: %s", one_line(str(exc)))
        return 0


def _next_step(*, steps: Iterator[retention.PruneReport]) -> retention.PruneReport | None:
    return next(steps, None)


def _ingest(batch: ParsedBatch, allowance: StoreAllowance, fences: FenceSet) -> BatchResult:
    return _with_connection(_refresh_and_store, batch=batch, allowance=allowance, fences=fences)


def _refresh_and_store(
    *, batch: ParsedBatch, allowance: StoreAllowance, fences: FenceSet
) -> BatchResult:
    fences.refresh()
    return store_batch(parsed=batch, now=timezone.now(), allowance=allowance, fences=fences)


async def consume(
    *,
    source: EventSource,
    pipeline: Pipeline,
    stop: asyncio.Event,
    progress_seconds: float,
) -> Progress:
    """Feed ``source`` through ``pipeline`` until it ends or ``stop`` is set.

    Logs a progress line every ``progress_seconds``. Returns the run's counts.
    """
    await pipeline.prepare()
    reporter = asyncio.create_task(_report_progress(pipeline.progress, progress_seconds, source))
    pruner = asyncio.create_task(_prune_history(pipeline))
    try:
        await source.run(pipeline.process, stop)
    finally:
        reporter.cancel()
        pruner.cancel()
    return pipeline.progress


async def _prune_history(pipeline: Pipeline) -> None:
    """Retention soon after the start, then every TRACKING_HISTORY_PRUNE_SECONDS."""
    if settings.TRACKING_HISTORY_DAYS <= 0:
        return
    await asyncio.sleep(HISTORY_FIRST_PRUNE_SECONDS)
    while True:
        await pipeline.prune_history()
        await asyncio.sleep(settings.TRACKING_HISTORY_PRUNE_SECONDS)


async def _report_progress(progress: Progress, every: float, source: EventSource) -> None:
    while True:
        await asyncio.sleep(every)
        # Rejections are summed up here, once an interval, never a line per
        # body: at WARNING, so they show at the level refusals always had.
        level = logging.WARNING if progress.interval_rejected else logging.INFO
        logger.log(level, "progress: %s", progress.interval_line())
        details = source.progress_line()
        if details:
            logger.info("progress: %s", details)
