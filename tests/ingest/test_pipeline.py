from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.conftest import event_body
from tests.event_bodies import TRACKERS, hostile_bodies, valid_bodies
from tracking.events import parse_event
from tracking.ingest import pipeline as pipeline_module
from tracking.ingest.pipeline import Pipeline, Progress, percentile
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import BatchResult
from tracking.models import Position, RejectedEvent
from tracking.positions import Crossing, LatestPosition


def test_percentile_uses_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_the_progress_line_states_rate_rejections_and_lag(now: datetime) -> None:
    progress = Progress()
    progress.record(
        BatchResult(
            accepted=3,
            new=3,
            rejected=1,
            event_times=[now - timedelta(seconds=s) for s in (1, 2, 3)],
        ),
        now=now,
    )
    line = progress.interval_line()
    assert "3 accepted, 1 rejected" in line
    assert "lag median 2.000 s, p99 3.000 s" in line
    # The next interval starts empty, the totals carry on.
    progress.record(BatchResult(accepted=2, new=1), now=now)
    assert "lag median n/a" in progress.interval_line()
    assert progress.summary_line().startswith(
        "5 accepted (4 new, 1 already stored), 1 rejected (6 events in"
    )


def test_the_progress_and_summary_lines_count_rejections_per_reason(now: datetime) -> None:
    progress = Progress()
    progress.record(
        BatchResult(
            accepted=2,
            new=2,
            rejected=5,
            rejected_by_category=Counter({"not-json": 3, "future-ts": 2}),
            not_stored=4,
        ),
        now=now,
    )
    assert progress.interval_line().endswith(
        "; rejected 5: 3 not JSON, 2 Ts in the future "
        "(4 not stored: over TRACKING_REJECTED_STORE_PER_MINUTE)"
    )
    progress.record(
        BatchResult(accepted=1, new=1, rejected=1, rejected_by_category=Counter({"bad-id": 1})),
        now=now,
    )
    # An interval counts its own; the summary the whole run's.
    assert progress.interval_line().endswith("; rejected 1: 1 bad Id")
    assert "not JSON" not in progress.interval_line()
    assert progress.summary_line().endswith(
        "; rejected 6: 3 not JSON, 2 Ts in the future, 1 bad Id "
        "(4 not stored: over TRACKING_REJECTED_STORE_PER_MINUTE)"
    )


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[list[LatestPosition]] = []

    async def __call__(
        self, positions: Sequence[LatestPosition], crossings: Sequence[Crossing] = ()
    ) -> None:
        # Whatever is published must already be committed and visible.
        ids = {position.tracker_id for position in positions}
        stored = await asyncio.to_thread(
            lambda: set(
                Position.objects.filter(tracker_id__in=ids).values_list("tracker_id", flat=True)
            )
        )
        assert stored == ids
        self.published.append(list(positions))


@pytest.mark.django_db(transaction=True)
async def test_a_batch_is_published_after_it_is_committed(now: datetime) -> None:
    publisher = RecordingPublisher()
    pipeline = Pipeline(publish=publisher)
    tracker = uuid.uuid4()
    body = event_body(tracker_id=tracker, latitude=60.1, longitude=24.9, at=now)
    result = await pipeline.process([RawEvent(body=body, origin="t")])
    await pipeline.close()

    assert result.accepted == 1
    assert [[p.tracker_id for p in batch] for batch in publisher.published] == [[tracker]]
    assert pipeline.progress.accepted == 1


@pytest.mark.django_db(transaction=True)
async def test_a_database_outage_is_retried_without_losing_the_batch(
    now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = pipeline_module.store_batch
    failures = iter(
        [OperationalError("server closed the connection"), OperationalError("still down")]
    )

    def flaky_store(**kwargs: object) -> BatchResult:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_store(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "store_batch", flaky_store)
    monkeypatch.setattr(pipeline_module, "RETRY_FIRST_SECONDS", 0.01)
    publisher = RecordingPublisher()
    pipeline = Pipeline(publish=publisher)
    body = event_body(tracker_id=uuid.uuid4(), latitude=60.1, longitude=24.9, at=now)
    result = await pipeline.process([RawEvent(body=body, origin="t")])
    await pipeline.close()

    assert result.accepted == 1
    assert await asyncio.to_thread(Position.objects.count) == 1
    assert len(publisher.published) == 1


@pytest.mark.django_db(transaction=True)
@override_settings(TRACKING_REJECTED_KEEP=2)
async def test_old_rejected_events_are_pruned_a_chunk_per_batch_to_the_configured_number(
    now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "PRUNE_CHUNK", 3)

    def count() -> int:
        return RejectedEvent.objects.count()

    pipeline = Pipeline(publish=RecordingPublisher())
    await pipeline.process([RawEvent(body=b"bad", origin=f"{n:02}") for n in range(10)])
    counts = [await asyncio.to_thread(count)]
    for _ in range(5):
        body = event_body(tracker_id=uuid.uuid4(), latitude=1, longitude=2, at=now)
        await pipeline.process([RawEvent(body=body, origin="valid")])
        counts.append(await asyncio.to_thread(count))
    await pipeline.close()

    # The batches went on while the surplus went, a chunk after each.
    assert counts == [10, 7, 4, 2, 2, 2]
    assert await asyncio.to_thread(
        lambda: sorted(RejectedEvent.objects.values_list("source", flat=True))
    ) == ["08", "09"]


@pytest.mark.django_db(transaction=True)
async def test_batches_handed_over_together_are_stored_in_one_transaction(
    now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = pipeline_module.store_batch
    stored: list[int] = []

    def counting_store(**kwargs: object) -> BatchResult:
        stored.append(len(kwargs["parsed"]))  # type: ignore[arg-type]
        return real_store(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "store_batch", counting_store)
    pipeline = Pipeline(publish=RecordingPublisher())
    partitions = [
        [
            RawEvent(
                body=event_body(tracker_id=uuid.uuid4(), latitude=1, longitude=2, at=now),
                origin=str(n),
            )
        ]
        for n in range(5)
    ]
    results = await asyncio.gather(*(pipeline.process(batch) for batch in partitions))
    await pipeline.close()

    assert stored == [5]
    assert all(result.accepted == 5 for result in results)
    assert await asyncio.to_thread(Position.objects.count) == 5


async def test_a_failure_reaches_every_batch_stored_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_store(**kwargs: object) -> BatchResult:
        raise RuntimeError("bug")

    monkeypatch.setattr(pipeline_module, "store_batch", broken_store)
    pipeline = Pipeline(publish=RecordingPublisher())
    outcomes = await asyncio.gather(
        *(pipeline.process([RawEvent(body=b"{}", origin="t")]) for _ in range(3)),
        return_exceptions=True,
    )
    await pipeline.close()
    assert [type(outcome) for outcome in outcomes] == [RuntimeError] * 3


@contextlib.asynccontextmanager
async def database_refusing(
    table: str, column: str, condition: str, value: object
) -> AsyncIterator[None]:
    """The database refuses rows of ``table`` whose ``column`` ``condition`` ``value``
    (a CHECK constraint on PostgreSQL, a trigger on SQLite) until the block ends."""
    quoted = connection.ops.quote_name(table)
    if connection.vendor == "postgresql":
        install = (
            f"ALTER TABLE {quoted} ADD CONSTRAINT test_refused "
            f"CHECK (NOT ({column} {condition} {value!r})) NOT VALID"
        )
        remove = f"ALTER TABLE {quoted} DROP CONSTRAINT test_refused"
    else:
        install = (
            f"CREATE TRIGGER test_refused BEFORE INSERT ON {quoted} "
            f"WHEN NEW.{column} {condition} {value!r} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        remove = "DROP TRIGGER test_refused"

    def execute(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)
        connection.close()

    await asyncio.to_thread(execute, install)
    try:
        yield
    finally:
        await asyncio.to_thread(execute, remove)


@pytest.mark.django_db(transaction=True)
async def test_rows_the_database_refuses_are_rejected_and_the_rest_of_the_batch_stored(
    now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    trackers = [uuid.uuid4() for _ in range(10)]
    latitudes = [13.5 if n in (3, 7) else 60.0 + n / 10 for n in range(10)]
    batch = [
        RawEvent(
            body=event_body(tracker_id=tracker, latitude=latitude, longitude=24.9, at=now),
            origin=f"line {n}",
        )
        for n, (tracker, latitude) in enumerate(zip(trackers, latitudes, strict=True))
    ]
    publisher = RecordingPublisher()
    pipeline = Pipeline(publish=publisher)
    async with database_refusing("tracking_position", "latitude", "=", 13.5):
        result = await pipeline.process(batch)
        after = await pipeline.process(
            [
                RawEvent(
                    body=event_body(
                        tracker_id=trackers[0],
                        latitude=1,
                        longitude=2,
                        at=now + timedelta(seconds=1),
                    ),
                    origin="next",
                )
            ]
        )
    await pipeline.close()

    assert (result.accepted, result.rejected) == (8, 2)
    assert after.accepted == 1
    stored = await asyncio.to_thread(
        lambda: set(Position.objects.values_list("tracker_id", flat=True))
    )
    assert stored == set(trackers) - {trackers[3], trackers[7]}
    rejected = await asyncio.to_thread(
        lambda: dict(RejectedEvent.objects.values_list("source", "reason"))
    )
    assert set(rejected) == {"line 3", "line 7"}
    assert all(reason.startswith("the database refused it: ") for reason in rejected.values())
    assert "storing it in parts to keep every other event" in caplog.text
    # The map hears of every tracker stored, and of no other.
    published = {p.tracker_id for batch in publisher.published for p in batch}
    assert published == stored


@pytest.mark.django_db(transaction=True)
async def test_a_rejected_body_the_database_refuses_is_kept_without_its_body(
    now: datetime,
) -> None:
    tracker = uuid.uuid4()
    batch = [
        RawEvent(body=b"poison " * 3, origin="bad"),
        RawEvent(body=event_body(tracker_id=tracker, latitude=1, longitude=2, at=now), origin="ok"),
    ]
    pipeline = Pipeline(publish=RecordingPublisher())
    async with database_refusing("tracking_rejectedevent", "body", "LIKE", "%poison%"):
        result = await pipeline.process(batch)
    await pipeline.close()

    assert (result.accepted, result.rejected) == (1, 1)
    assert await asyncio.to_thread(lambda: Position.objects.get().tracker_id) == tracker
    rejected = await asyncio.to_thread(RejectedEvent.objects.get)
    assert (rejected.source, rejected.body) == ("bad", "")
    assert rejected.reason.startswith("body is not UTF-8 JSON")
    assert "(body not kept: " in rejected.reason


@pytest.mark.django_db(transaction=True)
@hypothesis.settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_whatever_bodies_arrive_each_is_accepted_or_rejected_and_every_valid_one_stored(
    data: st.DataObject,
) -> None:
    now = datetime.now(UTC)
    valid = data.draw(st.lists(valid_bodies(now), max_size=6), label="valid")
    hostile = data.draw(st.lists(hostile_bodies(now), min_size=1, max_size=12), label="hostile")
    bodies = data.draw(st.permutations(valid + hostile), label="order")
    sent = [RawEvent(body=body, origin=f"body {n}") for n, body in enumerate(bodies)]
    rejected_before = await asyncio.to_thread(RejectedEvent.objects.count)

    pipeline = Pipeline(publish=RecordingPublisher())
    try:
        result = await pipeline.process(sent)
    finally:
        await pipeline.close()

    assert result.accepted + result.rejected == len(sent)
    assert result.accepted >= len(valid)
    rejected_after = await asyncio.to_thread(RejectedEvent.objects.count)
    assert rejected_after - rejected_before == result.rejected - result.not_stored
    expected = {
        (event.tracker_id, event.timestamp)
        for event in (parse_event(body, now=now, max_future=timedelta(0)) for body in valid)
    }
    stored = await asyncio.to_thread(
        lambda: set(
            Position.objects.filter(tracker_id__in=TRACKERS).values_list("tracker_id", "timestamp")
        )
    )
    assert expected <= stored


@pytest.mark.django_db(transaction=True)
async def test_after_a_report_stamped_ahead_the_real_ones_are_published(now: datetime) -> None:
    publisher = RecordingPublisher()
    pipeline = Pipeline(publish=publisher)
    tracker = uuid.uuid4()
    ahead = event_body(
        tracker_id=tracker,
        latitude=50.0,
        longitude=20.0,
        at=datetime.now(UTC) + timedelta(minutes=4),
    )
    await pipeline.process([RawEvent(body=ahead, origin="ahead")])
    for n in range(3):
        real = event_body(
            tracker_id=tracker, latitude=60.0 + n, longitude=24.0, at=datetime.now(UTC)
        )
        await pipeline.process([RawEvent(body=real, origin=f"real {n}")])
    await pipeline.close()

    assert [[p.latitude for p in batch] for batch in publisher.published] == [
        [50.0],
        [60.0],
        [61.0],
        [62.0],
    ]
