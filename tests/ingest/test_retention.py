"""Retention at ingest: events older than TRACKING_HISTORY_DAYS are refused as
too old, late ones inside the window are stored in their day, and
consume_events' pipeline prunes by itself between batches."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import hypothesis
import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests import support
from tests.conftest import event_body
from tracking import retention
from tracking.ingest import pipeline as pipeline_module
from tracking.ingest.pipeline import Pipeline
from tracking.ingest.rejections import CATEGORY_LABELS
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import TOO_OLD, ingest_batch
from tracking.models import Position, RejectedEvent
from tracking.positions import Crossing, LatestPosition

T = TypeVar("T")


def body_at(tracker_id: uuid.UUID, moment: datetime) -> RawEvent:
    return RawEvent(
        body=event_body(tracker_id=tracker_id, latitude=60.17, longitude=24.94, at=moment),
        origin="test",
    )


@pytest.mark.django_db
@override_settings(TRACKING_HISTORY_DAYS=30)
def test_an_event_older_than_the_history_kept_is_refused_as_too_old(now: datetime) -> None:
    tracker_id = uuid.uuid4()
    old = now - timedelta(days=30, seconds=1)

    result = ingest_batch(events=[body_at(tracker_id, old)], now=now)

    assert (result.accepted, result.rejected) == (0, 1)
    assert result.rejected_by_category == {TOO_OLD: 1}
    assert CATEGORY_LABELS[TOO_OLD] == "Ts older than TRACKING_HISTORY_DAYS allows"
    [rejected] = RejectedEvent.objects.all()
    assert rejected.reason.startswith(
        f"Ts {old.isoformat()} is older than TRACKING_HISTORY_DAYS (30) allows"
    )
    assert not Position.objects.exists()


@pytest.mark.django_db
@override_settings(TRACKING_HISTORY_DAYS=30)
def test_a_late_event_of_an_old_day_inside_the_window_is_stored_in_its_day(
    now: datetime,
) -> None:
    tracker_id = uuid.uuid4()
    late = now - timedelta(days=29, hours=23)
    ingest_batch(events=[body_at(tracker_id, now)], now=now)

    result = ingest_batch(events=[body_at(tracker_id, late)], now=now)

    assert (result.accepted, result.new, result.rejected) == (1, 1, 0)
    assert sorted(Position.objects.values_list("timestamp", flat=True)) == [late, now]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                'SELECT tableoid::regclass::text FROM tracking_position WHERE "timestamp" = %s',
                [late],
            )
            assert cursor.fetchall() == [(retention.partition_name(retention.day_of(late)),)]


@pytest.mark.django_db
@hypothesis.settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    days=st.integers(min_value=0, max_value=400),
    seconds_back=st.integers(min_value=0, max_value=500 * 86_400),
)
def test_an_event_is_stored_or_refused_as_too_old_by_its_age_alone(
    days: int, seconds_back: int
) -> None:
    now = timezone.now()
    moment = now - timedelta(seconds=seconds_back)
    with override_settings(TRACKING_HISTORY_DAYS=days):
        result = ingest_batch(events=[body_at(uuid.uuid4(), moment)], now=now)
    too_old = days > 0 and moment < now - timedelta(days=days)
    assert (result.accepted, result.rejected) == ((0, 1) if too_old else (1, 0))
    assert result.rejected_by_category == ({TOO_OLD: 1} if too_old else {})


def in_thread(function: Callable[[], T]) -> Awaitable[T]:
    """``function`` on a worker thread, whose connection is closed after it."""

    def run() -> T:
        try:
            return function()
        finally:
            connection.close()

    return asyncio.to_thread(run)


class RecordingPublisher:
    async def __call__(
        self, moved: Sequence[LatestPosition], crossings: Sequence[Crossing] = ()
    ) -> None:
        pass


@pytest.mark.django_db(transaction=True)
@override_settings(TRACKING_HISTORY_DAYS=3)
async def test_the_pipeline_prunes_between_batches_and_logs_one_line_a_pass(
    now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    def add_rejected() -> None:
        RejectedEvent.objects.bulk_create(
            RejectedEvent(
                received_at=now - timedelta(days=4), source="old", reason="r", body="", body_bytes=0
            )
            for _ in range(3)
        )

    await in_thread(add_rejected)
    pipeline = Pipeline(publish=RecordingPublisher())
    tracker_id = uuid.uuid4()
    caplog.set_level(logging.INFO, logger="tracking.ingest.pipeline")

    # A batch handed over while the pass runs is stored all the same.
    report, result = await asyncio.gather(
        pipeline.prune_history(), pipeline.process([body_at(tracker_id, now)])
    )
    await pipeline.close()

    assert report is not None and report.deleted[retention.REJECTED] == 3
    assert result.accepted == 1
    assert await in_thread(Position.objects.count) == 1
    assert await in_thread(RejectedEvent.objects.count) == 0
    lines = [r.getMessage() for r in caplog.records if "history pruned" in r.getMessage()]
    assert len(lines) == 1 and "delete 3 rejected events" in lines[0]
    if connection.vendor == "postgresql":
        # Today and the days ahead have their partitions.
        names = {part.name for part in await in_thread(retention.partitions)}
        today = datetime.now(UTC).date()
        assert {retention.partition_name(today + timedelta(days=n)) for n in range(4)} <= names


class CountingPipeline:
    """Stands in for a pipeline: counts the passes it is asked for."""

    def __init__(self) -> None:
        self.passes = 0

    async def prune_history(self) -> None:
        self.passes += 1


@override_settings(TRACKING_HISTORY_PRUNE_SECONDS=0.01)
async def test_consume_events_prunes_soon_after_the_start_then_every_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline_module, "HISTORY_FIRST_PRUNE_SECONDS", 0.0)
    counting = CountingPipeline()
    task = asyncio.create_task(pipeline_module._prune_history(counting))  # type: ignore[arg-type]
    try:
        await support.eventually(lambda: counting.passes >= 3, what="three passes")
    finally:
        task.cancel()


@override_settings(TRACKING_HISTORY_DAYS=0)
async def test_with_history_kept_whole_consume_events_never_prunes() -> None:
    counting = CountingPipeline()
    await pipeline_module._prune_history(counting)  # type: ignore[arg-type]
    assert counting.passes == 0
