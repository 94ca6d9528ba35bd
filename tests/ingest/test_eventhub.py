"""The Event Hub batch handler on real EventData objects, and the settings it reads."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.eventhub import EventData
from azure.eventhub.amqp import AmqpAnnotatedMessage
from django.test import override_settings

from tests import support
from tests.conftest import event_body
from tests.eventhub_stub import EventHubStub
from tracking.ingest.pipeline import Pipeline
from tracking.ingest.sources import RawEvent
from tracking.ingest.sources.eventhub import (
    BatchHandler,
    EventHubConfig,
    EventHubConfigError,
    EventHubSource,
    raw_events,
)
from tracking.ingest.store import BatchResult
from tracking.models import EventHubCheckpoint, Position, RejectedEvent
from tracking.positions import Crossing, LatestPosition

ENQUEUED = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


def received(body: bytes, *, sequence: int) -> EventData:
    """An event as the consumer hands it over, its system properties set."""
    event = EventData(body)
    event.raw_amqp_message.annotations = {
        b"x-opt-sequence-number": sequence,
        b"x-opt-offset": str(sequence * 100).encode(),
        b"x-opt-enqueued-time": int((ENQUEUED + timedelta(seconds=sequence)).timestamp() * 1000),
    }
    return event


class RecordingContext:
    """The parts of the SDK's PartitionContext the handler uses, recording checkpoints."""

    def __init__(self, partition_id: str, journal: list[str], *, fail: bool = False) -> None:
        self.partition_id = partition_id
        self.journal = journal
        self.checkpoints: list[tuple[str | None, int | None]] = []
        self.last_enqueued_event_properties: dict[str, Any] | None = None
        self.fail = fail

    async def update_checkpoint(self, event: EventData) -> None:
        if self.fail:
            raise ConnectionError("database is down")
        self.journal.append(f"checkpoint {event.offset}")
        self.checkpoints.append((event.offset, event.sequence_number))


class RecordingDelivery:
    def __init__(self, journal: list[str], *, error: Exception | None = None) -> None:
        self.journal = journal
        self.batches: list[list[RawEvent]] = []
        self.error = error

    async def __call__(self, events: Sequence[RawEvent]) -> BatchResult:
        self.journal.append(f"deliver {len(events)}")
        if self.error is not None:
            raise self.error
        self.batches.append(list(events))
        return BatchResult(accepted=len(events))


def bodies(count: int, start: int = 0) -> list[EventData]:
    now = datetime.now(UTC)
    return [
        received(
            event_body(tracker_id=uuid.uuid4(), latitude=60.0, longitude=24.0, at=now),
            sequence=start + n,
        )
        for n in range(count)
    ]


async def test_a_batch_is_delivered_then_its_last_event_checkpointed() -> None:
    journal: list[str] = []
    deliver = RecordingDelivery(journal)
    context = RecordingContext("2", journal)
    events = bodies(3, start=7)

    await BatchHandler(deliver=deliver, stop=asyncio.Event())(context, events)  # type: ignore[arg-type]

    assert journal == ["deliver 3", "checkpoint 900"]
    assert context.checkpoints == [("900", 9)]
    [batch] = deliver.batches
    assert [raw.body for raw in batch] == [event.body_as_str().encode() for event in events]
    assert batch[0].origin == "eventhub partition 2 offset 700 seq 7"
    # The hub's enqueued time stands for when each body was received.
    assert [raw.received_at for raw in batch] == [
        ENQUEUED + timedelta(seconds=n) for n in (7, 8, 9)
    ]


async def test_a_batch_that_fails_to_store_is_not_checkpointed() -> None:
    journal: list[str] = []
    handler = BatchHandler(
        deliver=RecordingDelivery(journal, error=RuntimeError("boom")), stop=asyncio.Event()
    )
    context = RecordingContext("0", journal)
    with pytest.raises(RuntimeError):
        await handler(context, bodies(2))  # type: ignore[arg-type]
    assert context.checkpoints == []
    await asyncio.wait_for(handler.drain(), timeout=1)  # nothing left in flight


async def test_malformed_bodies_go_to_the_pipeline_and_the_stream_moves_on() -> None:
    journal: list[str] = []
    deliver = RecordingDelivery(journal)
    context = RecordingContext("1", journal)
    events = [
        received(b"{not json", sequence=1),
        *bodies(1, start=2),
        received(b"\xff\xfe", sequence=3),
    ]
    await BatchHandler(deliver=deliver, stop=asyncio.Event())(context, events)  # type: ignore[arg-type]
    assert [raw.body for raw in deliver.batches[0]][0::2] == [b"{not json", b"\xff\xfe"]
    assert context.checkpoints == [("300", 3)]


async def test_after_stop_new_batches_are_left_for_the_next_owner() -> None:
    journal: list[str] = []
    stop = asyncio.Event()
    stop.set()
    context = RecordingContext("0", journal)
    await BatchHandler(deliver=RecordingDelivery(journal), stop=stop)(context, bodies(2))  # type: ignore[arg-type]
    assert journal == []


async def test_an_empty_batch_delivers_and_checkpoints_nothing() -> None:
    journal: list[str] = []
    await BatchHandler(deliver=RecordingDelivery(journal), stop=asyncio.Event())(
        RecordingContext("0", journal),  # type: ignore[arg-type]
        [],
    )
    assert journal == []


async def test_a_failed_checkpoint_is_logged_and_the_handler_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    deliver = RecordingDelivery(journal)
    handler = BatchHandler(deliver=deliver, stop=asyncio.Event())
    await handler(RecordingContext("0", journal, fail=True), bodies(1))  # type: ignore[arg-type]
    assert len(deliver.batches) == 1
    assert "could not checkpoint offset 0" in caplog.text


async def test_the_progress_line_says_how_far_each_partition_is_behind() -> None:
    journal: list[str] = []
    handler = BatchHandler(deliver=RecordingDelivery(journal), stop=asyncio.Event())
    context = RecordingContext("3", journal)
    context.last_enqueued_event_properties = {
        "sequence_number": 109,
        "enqueued_time": ENQUEUED + timedelta(seconds=109),
    }
    await handler(context, bodies(4, start=96))  # type: ignore[arg-type]
    line = handler.progress_line(seconds=2.0)
    assert line == "p3 2/s behind 10 (10.0 s)"
    assert handler.progress_line(seconds=2.0).startswith("p3 0/s")


async def test_drain_waits_for_the_batch_in_hand() -> None:
    journal: list[str] = []
    delivering, release = asyncio.Event(), asyncio.Event()

    async def slow_deliver(events: Sequence[RawEvent]) -> BatchResult:
        delivering.set()
        await release.wait()
        return BatchResult(accepted=len(events))

    handler = BatchHandler(deliver=slow_deliver, stop=asyncio.Event())
    context = RecordingContext("0", journal)
    task = asyncio.create_task(handler(context, bodies(1)))  # type: ignore[arg-type]
    await asyncio.wait_for(delivering.wait(), timeout=5)
    drained = asyncio.create_task(handler.drain())
    await asyncio.sleep(0)  # drain runs up to its wait
    assert not drained.done()
    release.set()
    await asyncio.wait_for(drained, timeout=1)
    await task
    assert context.checkpoints == [("0", 0)]


def as_received(message: AmqpAnnotatedMessage) -> EventData:
    # The SDK wraps what it receives the same way; EventData has no public
    # constructor taking a whole AMQP message.
    event = EventData(b"")
    event._raw_amqp_message = message
    return event


def test_a_body_of_several_data_sections_is_joined() -> None:
    message = AmqpAnnotatedMessage(
        data_body=[b'{"Id":', b'"x"}'], annotations={b"x-opt-sequence-number": 1}
    )
    [raw] = raw_events("0", [as_received(message)])
    assert raw.body == b'{"Id":"x"}' and raw.problem is None


def test_a_value_body_is_rejected_with_a_reason() -> None:
    message = AmqpAnnotatedMessage(
        value_body={"Id": "x"}, annotations={b"x-opt-sequence-number": 1}
    )
    [raw] = raw_events("0", [as_received(message)])
    assert raw.problem == "the event body is an AMQP value, not data"


def test_a_message_whose_body_or_enqueued_time_cannot_be_read_is_a_body_with_a_problem() -> None:
    sections = AmqpAnnotatedMessage(
        data_body=["text", 5], annotations={b"x-opt-sequence-number": 1}
    )
    far = AmqpAnnotatedMessage(
        data_body=[b"{}"],
        annotations={b"x-opt-sequence-number": 2, b"x-opt-enqueued-time": 10**20},
    )
    unreadable, far_off = raw_events("0", [as_received(sections), as_received(far)])
    assert unreadable.problem is not None
    assert unreadable.problem.startswith("the event body cannot be read: TypeError")
    assert (far_off.body, far_off.problem, far_off.received_at) == (b"{}", None, None)


# --- Settings ----------------------------------------------------------------------


@override_settings(EVENTHUB_CONNECTION_STRING="", EVENTHUB_NAMESPACE="")
def test_without_a_connection_string_or_namespace_the_error_names_both() -> None:
    with pytest.raises(
        EventHubConfigError, match="EVENTHUB_CONNECTION_STRING, or EVENTHUB_NAMESPACE"
    ):
        EventHubConfig.from_settings()


@override_settings(
    EVENTHUB_CONNECTION_STRING="Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s;EntityPath=fleet",
    EVENTHUB_NAME="",
)
def test_the_hub_name_may_come_from_the_connection_strings_entity_path() -> None:
    config = EventHubConfig.from_settings(consumer_group="replay")
    assert config.eventhub == "fleet" and config.consumer_group == "replay"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"EVENTHUB_CONNECTION_STRING": "hello"}, "not an Event Hubs connection string"),
        ({"EVENTHUB_NAME": ""}, "Set EVENTHUB_NAME"),
        ({"EVENTHUB_STARTING_POSITION": "yesterday"}, "EVENTHUB_STARTING_POSITION must be"),
        ({"EVENTHUB_OWNERSHIP_EXPIRY_SECONDS": 5, "EVENTHUB_LOAD_BALANCING_SECONDS": 10}, "EXPIRY"),
    ],
)
def test_wrong_event_hub_settings_name_the_setting(overrides: dict[str, Any], message: str) -> None:
    base = {
        "EVENTHUB_CONNECTION_STRING": "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s",
        "EVENTHUB_NAME": "fleet",
    }
    with (
        override_settings(**{**base, **overrides}),
        pytest.raises(EventHubConfigError, match=message),
    ):
        EventHubConfig.from_settings()


def link_stolen() -> Exception:
    """What the SDK reports when another consumer's receiver takes a partition over."""
    from azure.eventhub._pyamqp.error import AMQPLinkError, ErrorCondition
    from azure.eventhub.exceptions import ConnectionLostError

    detail = AMQPLinkError(
        ErrorCondition.LinkStolen,
        description="New receiver with higher epoch of '2' is created hence current receiver "
        "with epoch '1' is getting disconnected.",
    )
    return ConnectionLostError(str(detail), detail)  # type: ignore[arg-type]  # as the SDK does


def unstarted_source() -> EventHubSource:
    async def no_database(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")

    config = EventHubConfig(eventhub="fleet", connection_string="Endpoint=sb://x/")
    return EventHubSource(config=config, run_in_db=no_database)


def partition(partition_id: str) -> Any:
    return type("PartitionContext", (), {"partition_id": partition_id})()


async def test_a_partition_handed_over_to_another_consumer_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await unstarted_source()._on_error(partition("3"), link_stolen())
    # The SDK's own warning about the same error, with its whole text.
    logging.getLogger("azure.eventhub.aio._eventprocessor.event_processor").warning(
        "EventProcessor instance %r of eventhub %r partition %r consumer group %r. "
        "An error occurred while receiving. The exception is %r.",
        "id",
        "fleet",
        "3",
        "$Default",
        link_stolen(),
    )
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "partition 3: another consumer took it over" in caplog.text


async def test_other_errors_of_a_partition_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    await unstarted_source()._on_error(partition("1"), ConnectionResetError("reset by peer"))
    [record] = caplog.records
    assert record.levelname == "WARNING" and "reset by peer" in record.getMessage()


# --- A partition through the whole pipeline ---------------------------------------


async def nothing_published(
    positions: Sequence[LatestPosition], crossings: Sequence[Crossing] = ()
) -> None:
    return None


@pytest.mark.django_db(transaction=True)
async def test_hostile_bodies_ahead_of_valid_ones_are_rejected_and_the_checkpoint_moves_past(
    now: datetime,
) -> None:
    trackers = [uuid.uuid4() for _ in range(3)]
    hostile = [
        b'{"Id": "bus\x00 42", "Lat": 1, "Lng": 2, "Ts": "2026-11-26T11:12:40Z"}',
        b"\x00",
        b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "0001-01-01T00:00:00+01:00"}'
        % str(trackers[0]).encode(),
        '{"Id": "\ud800"}'.encode("utf-8", errors="surrogatepass"),
        b"\xff\xfe{",
        b'{"Id": "%s", "Lat": 1e400}' % str(trackers[1]).encode(),
    ]
    valid = [
        event_body(tracker_id=tracker, latitude=60.1, longitude=24.9, at=now)
        for tracker in trackers
    ]
    with EventHubStub(hub="fleet", partitions=2) as hub:
        hub.inject("0", *hostile)
        *_, last = hub.inject("0", *valid)
        config = EventHubConfig(
            eventhub="fleet",
            connection_string=hub.connection_string,
            max_wait_seconds=0.2,
            load_balancing_seconds=0.5,
            ownership_expiry_seconds=3,
        )
        pipeline = Pipeline(publish=nothing_published)
        source = EventHubSource(config=config, run_in_db=pipeline.run_in_db)
        stop = asyncio.Event()
        consuming = asyncio.create_task(source.run(pipeline.process, stop))
        try:
            await support.eventually(
                lambda: asyncio.to_thread(
                    lambda: EventHubCheckpoint.objects.filter(
                        partition_id="0", sequence_number=last.sequence_number
                    ).exists()
                ),
                timeout=30,
                what="partition 0 checkpointed at its last event",
            )
        finally:
            stop.set()
            await consuming
            await pipeline.close()

    stored = await asyncio.to_thread(
        lambda: set(Position.objects.values_list("tracker_id", flat=True))
    )
    assert stored == set(trackers)
    sources = await asyncio.to_thread(
        lambda: list(RejectedEvent.objects.values_list("source", flat=True))
    )
    assert len(sources) == len(hostile)
    assert all(source.startswith("eventhub partition 0 ") for source in sources)
