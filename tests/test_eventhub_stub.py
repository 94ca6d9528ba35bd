"""The Event Hubs stand-in, driven by the real azure-eventhub SDK (pure-Python AMQP)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio import CheckpointStore
from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumerClient
from azure.eventhub.aio import EventHubProducerClient as AsyncProducerClient
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError

from tests import support
from tests.eventhub_stub import EventHubStub

# Failures surface at once: the SDK sleeps one backoff even before giving up.
FAST_RETRY: dict[str, Any] = {"retry_total": 0, "retry_backoff_factor": 0.01}


@pytest.fixture
def stub() -> Iterator[EventHubStub]:
    with EventHubStub(hub="tracker-events", partitions=4) as running:
        yield running


async def receive_async(
    connection_string: str,
    *,
    count: int,
    timeout: float = 10,
    client_kwargs: dict[str, Any] | None = None,
    **receive_kwargs: Any,
) -> list[EventData]:
    """Run an async consumer until ``count`` events arrive, then close it."""
    # receive_batch returns only after the processor's load-balancing sleep.
    client_kwargs = {"load_balancing_interval": 0.5, **(client_kwargs or {})}
    client = AsyncConsumerClient.from_connection_string(
        connection_string, consumer_group="$Default", **client_kwargs
    )
    received: list[EventData] = []
    enough = asyncio.Event()

    async def on_event_batch(context: Any, events: list[EventData]) -> None:
        received.extend(events)
        if len(received) >= count:
            enough.set()

    task = asyncio.create_task(client.receive_batch(on_event_batch, **receive_kwargs))
    try:
        await asyncio.wait_for(enough.wait(), timeout)
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)
    return received


def receive_sync(
    connection_string: str,
    *,
    count: int,
    timeout: float = 10,
    batch: bool = False,
    **receive_kwargs: Any,
) -> list[EventData]:
    """Run a sync consumer's ``receive`` (or ``receive_batch``) until ``count`` events arrive."""
    client = EventHubConsumerClient.from_connection_string(
        connection_string, consumer_group="$Default"
    )
    received: list[EventData] = []
    enough = threading.Event()

    def on_event(context: Any, event: EventData | None) -> None:
        if event is not None:
            received.append(event)
            if len(received) >= count:
                enough.set()

    def on_event_batch(context: Any, events: list[EventData]) -> None:
        for event in events:
            on_event(context, event)

    target: Callable[..., None]
    kwargs: dict[str, Any]
    if batch:
        target, kwargs = client.receive_batch, {"on_event_batch": on_event_batch}
    else:
        target, kwargs = client.receive, {"on_event": on_event}
    thread = threading.Thread(target=target, kwargs={**kwargs, **receive_kwargs}, daemon=True)
    thread.start()
    try:
        assert enough.wait(timeout), f"received {len(received)} of {count} events"
    finally:
        client.close()
        thread.join(5)
    return received


def bodies(events: list[EventData]) -> list[bytes]:
    """The raw bodies (``body_as_str`` would choke on malformed bytes)."""
    # A data body is an iterable of its data sections.
    return [b"".join(cast("Iterable[bytes]", event.body)) for event in events]


def enqueued_time(event: EventData) -> datetime:
    assert event.enqueued_time is not None
    return event.enqueued_time


def test_the_module_prints_a_connection_string_and_stops_on_sigterm() -> None:
    port = support.free_port()
    process = subprocess.Popen(
        [
            *(support.PYTHON, "-m", "tests.eventhub_stub"),
            *("--port", str(port), "--partitions", "2", "--hub", "cli-hub"),
        ],
        cwd=support.ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        assert line == (
            f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=stub;SharedAccessKey=stub;"
            "EntityPath=cli-hub;UseDevelopmentEmulator=true"
        )
        with EventHubProducerClient.from_connection_string(line) as producer:
            assert producer.get_partition_ids() == ["0", "1"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_it_reports_the_hub_and_its_partitions(stub: EventHubStub) -> None:
    stub.inject("1", b"one", b"two")
    async with AsyncProducerClient.from_connection_string(stub.connection_string) as producer:
        hub = await producer.get_eventhub_properties()
        empty = await producer.get_partition_properties("0")
        filled = await producer.get_partition_properties("1")

    assert hub["eventhub_name"] == "tracker-events"
    assert hub["partition_ids"] == ["0", "1", "2", "3"]
    assert abs(hub["created_at"] - datetime.now(UTC)) < timedelta(minutes=1)
    assert empty["is_empty"] is True
    assert empty["last_enqueued_sequence_number"] == -1
    assert filled["is_empty"] is False
    assert filled["id"] == "1"
    assert filled["last_enqueued_sequence_number"] == 1
    assert filled["last_enqueued_offset"] == str(stub.events("1")[1].offset)
    assert filled["last_enqueued_time_utc"] == stub.events("1")[1].enqueued_time


def test_a_partition_key_always_lands_on_one_partition(stub: EventHubStub) -> None:
    with EventHubProducerClient.from_connection_string(stub.connection_string) as producer:
        for round_number in range(3):
            for key in ("tracker-a", "tracker-b", "tracker-c", "tracker-d"):
                batch = producer.create_batch(partition_key=key)
                batch.add(EventData(f"{key} {round_number}"))
                producer.send_batch(batch)

    where: dict[str, set[str]] = {}
    for partition_id in stub.partition_ids:
        for event in stub.events(partition_id):
            assert event.partition_key is not None
            assert event.body.decode().startswith(event.partition_key)
            where.setdefault(event.partition_key, set()).add(partition_id)
    assert set(where) == {"tracker-a", "tracker-b", "tracker-c", "tracker-d"}
    assert all(len(partitions) == 1 for partitions in where.values())


async def test_an_async_producer_batch_comes_back_to_an_async_consumer_in_order(
    stub: EventHubStub,
) -> None:
    # The last body is larger than a frame, so it crosses the wire in pieces both ways.
    sent = [f'{{"n": {n}}}'.encode() for n in range(19)] + [b"x" * 200_000]
    async with AsyncProducerClient.from_connection_string(stub.connection_string) as producer:
        batch = await producer.create_batch(partition_id="2")
        for body in sent:
            batch.add(EventData(body))
        await producer.send_batch(batch)

    received = await receive_async(
        stub.connection_string, count=20, partition_id="2", starting_position="-1"
    )

    assert bodies(received) == sent
    assert [e.sequence_number for e in received] == list(range(20))
    offsets = [int(str(e.offset)) for e in received]
    assert offsets == sorted(set(offsets))
    times = [enqueued_time(e) for e in received]
    assert times == sorted(times)
    assert all(abs(t - datetime.now(UTC)) < timedelta(minutes=1) for t in times)
    assert stub.event_counts() == {"0": 0, "1": 0, "2": 20, "3": 0}


async def test_starting_from_an_offset_returns_only_later_events(stub: EventHubStub) -> None:
    stored = stub.inject("0", *[f"event {n}".encode() for n in range(5)])

    after, inclusive = await asyncio.gather(
        receive_async(
            stub.connection_string,
            count=2,
            partition_id="0",
            starting_position=str(stored[2].offset),
        ),
        receive_async(
            stub.connection_string,
            count=3,
            partition_id="0",
            starting_position=str(stored[2].offset),
            starting_position_inclusive=True,
        ),
    )

    assert bodies(after) == [b"event 3", b"event 4"]
    assert bodies(inclusive) == [b"event 2", b"event 3", b"event 4"]


async def test_starting_from_a_sequence_number_or_a_time_returns_only_later_events(
    stub: EventHubStub,
) -> None:
    [_, last_early] = stub.inject("3", b"early 0", b"early 1")
    # Enqueued times have millisecond resolution: the boundary lies strictly between.
    millisecond = timedelta(milliseconds=1)
    await support.eventually(
        lambda: datetime.now(UTC) > last_early.enqueued_time + millisecond,
        what="a millisecond after the early events",
    )
    boundary = datetime.now(UTC)
    await support.eventually(
        lambda: datetime.now(UTC) > boundary + millisecond, what="a millisecond after the boundary"
    )
    stub.inject("3", b"late 2", b"late 3")

    by_sequence, by_time = await asyncio.gather(
        receive_async(stub.connection_string, count=3, partition_id="3", starting_position=0),
        receive_async(
            stub.connection_string, count=2, partition_id="3", starting_position=boundary
        ),
    )

    assert bodies(by_sequence) == [b"early 1", b"late 2", b"late 3"]
    assert bodies(by_time) == [b"late 2", b"late 3"]


def test_latest_returns_only_events_sent_after_the_consumer_attached(stub: EventHubStub) -> None:
    stub.inject("1", b"old")

    def send_new_events_once_attached() -> None:
        support.wait_until(lambda: stub.open_consumers == 1, timeout=10)
        with EventHubProducerClient.from_connection_string(stub.connection_string) as producer:
            producer.send_batch([EventData(b"new 1"), EventData(b"new 2")], partition_id="1")

    sender = threading.Thread(target=send_new_events_once_attached, daemon=True)
    sender.start()
    received = receive_sync(
        stub.connection_string, count=2, partition_id="1", starting_position="@latest"
    )
    sender.join(5)

    assert bodies(received) == [b"new 1", b"new 2"]
    assert [e.sequence_number for e in received] == [1, 2]


def test_injected_malformed_bytes_are_delivered_as_is(stub: EventHubStub) -> None:
    malformed = b'\xff\xfe{"Id": not json\x00'
    stub.inject("2", malformed, b"", partition_key="broken")

    received = receive_sync(
        stub.connection_string, count=2, batch=True, partition_id="2", starting_position="-1"
    )

    assert bodies(received) == [malformed, b""]
    assert received[0].partition_key == b"broken"


def test_a_wrong_key_raises_an_authentication_error(stub: EventHubStub) -> None:
    wrong_key = stub.connection_string_for(key="not-the-key")
    with (
        EventHubProducerClient.from_connection_string(wrong_key, **FAST_RETRY) as producer,
        pytest.raises(AuthenticationError, match="401"),
    ):
        producer.send_batch([EventData(b"x")], partition_id="0")
    assert stub.event_counts()["0"] == 0


def test_rejecting_credentials_raises_an_authentication_error(stub: EventHubStub) -> None:
    stub.reject_credentials = True
    with (
        EventHubProducerClient.from_connection_string(
            stub.connection_string, **FAST_RETRY
        ) as producer,
        pytest.raises(AuthenticationError, match="InvalidSignature"),
    ):
        producer.get_eventhub_properties()

    stub.reject_credentials = False
    with EventHubProducerClient.from_connection_string(stub.connection_string) as producer:
        assert producer.get_partition_ids() == ["0", "1", "2", "3"]


async def test_an_unknown_hub_is_reported_as_not_found(stub: EventHubStub) -> None:
    # The service answers the put-token for a missing entity with 404, which
    # the SDK raises as an AuthenticationError carrying the service's message.
    missing = stub.connection_string_for(hub="no-such-hub")
    async with AsyncConsumerClient.from_connection_string(
        missing, consumer_group="$Default", **FAST_RETRY
    ) as consumer:
        with pytest.raises(AuthenticationError, match="no-such-hub' could not be found"):
            await consumer.get_partition_ids()


def test_the_sdk_retries_past_a_dropped_connection_and_a_detached_link(
    stub: EventHubStub,
) -> None:
    stub.fail_next_connections(1)
    stub.fail_next_links(1)
    with EventHubProducerClient.from_connection_string(
        stub.connection_string, retry_total=3, retry_backoff_factor=0.01
    ) as producer:
        producer.send_batch([EventData(b"made it")], partition_id="3")

    assert [e.body for e in stub.events("3")] == [b"made it"]


async def test_one_consumer_reads_four_partitions_concurrently(stub: EventHubStub) -> None:
    for partition_id in stub.partition_ids:
        stub.inject(partition_id, *[f"p{partition_id} e{n}".encode() for n in range(5)])

    received = await receive_async(
        stub.connection_string,
        count=20,
        starting_position="-1",
        client_kwargs={"load_balancing_strategy": "greedy", "load_balancing_interval": 0.5},
    )

    by_partition: dict[str, list[str]] = {}
    for event in received:
        text = event.body_as_str()
        by_partition.setdefault(text.split()[0], []).append(text)
    assert by_partition == {f"p{p}": [f"p{p} e{n}" for n in range(5)] for p in "0123"}


class RecordingCheckpointStore(CheckpointStore):
    """An in-memory checkpoint store that keeps what the SDK hands it."""

    def __init__(self) -> None:
        self.ownership: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[str, dict[str, Any]] = {}

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        return [dict(o) for o in self.ownership.values()]

    async def claim_ownership(self, ownership_list: Any, **kwargs: Any) -> list[dict[str, Any]]:
        claimed = []
        for ownership in ownership_list:
            current = self.ownership.get(ownership["partition_id"])
            if current is None or current.get("etag") == ownership.get("etag"):
                stamped = {
                    **ownership,
                    "etag": str(time.monotonic_ns()),
                    "last_modified_time": time.time(),
                }
                self.ownership[ownership["partition_id"]] = stamped
                claimed.append(dict(stamped))
        return claimed

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        self.checkpoints[checkpoint["partition_id"]] = dict(checkpoint)

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        return [dict(c) for c in self.checkpoints.values()]


async def test_a_consumer_with_a_checkpoint_store_resumes_after_its_checkpoints(
    stub: EventHubStub,
) -> None:
    store = RecordingCheckpointStore()
    client_kwargs: dict[str, Any] = {
        "checkpoint_store": store,
        "load_balancing_strategy": "greedy",
        "load_balancing_interval": 0.5,
    }
    for partition_id in ("0", "1"):
        stub.inject(partition_id, *[f"p{partition_id} first {n}".encode() for n in range(3)])

    client = AsyncConsumerClient.from_connection_string(
        stub.connection_string, consumer_group="$Default", **client_kwargs
    )
    seen = 0
    all_seen = asyncio.Event()

    async def checkpoint_each(context: Any, events: list[EventData]) -> None:
        nonlocal seen
        if events:
            await context.update_checkpoint(events[-1])
            seen += len(events)
            if seen >= 6:
                all_seen.set()

    task = asyncio.create_task(client.receive_batch(checkpoint_each, starting_position="-1"))
    try:
        await asyncio.wait_for(all_seen.wait(), 10)
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)

    assert store.checkpoints["0"]["offset"] == str(stub.events("0")[2].offset)
    assert store.checkpoints["1"]["sequence_number"] == 2
    for partition_id in ("0", "1"):
        stub.inject(partition_id, f"p{partition_id} second".encode())

    resumed = await receive_async(
        stub.connection_string, count=2, starting_position="-1", client_kwargs=client_kwargs
    )

    assert sorted(bodies(resumed)) == [b"p0 second", b"p1 second"]


async def test_a_consumer_can_track_the_last_enqueued_event(stub: EventHubStub) -> None:
    stub.inject("1", b"a", b"b", b"c")
    last = stub.events("1")[-1]
    client = AsyncConsumerClient.from_connection_string(
        stub.connection_string, consumer_group="$Default", load_balancing_interval=0.5
    )
    tracked: list[dict[str, Any] | None] = []
    seen = asyncio.Event()

    async def on_event(context: Any, event: EventData | None) -> None:
        tracked.append(context.last_enqueued_event_properties)
        seen.set()

    task = asyncio.create_task(
        client.receive(
            on_event,
            partition_id="1",
            starting_position="-1",
            track_last_enqueued_event_properties=True,
        )
    )
    try:
        await asyncio.wait_for(seen.wait(), 10)
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)

    assert tracked[0] is not None
    assert tracked[0]["sequence_number"] == last.sequence_number
    assert tracked[0]["offset"] == str(last.offset)
    assert tracked[0]["enqueued_time"] == last.enqueued_time


async def test_a_consumer_with_a_higher_owner_level_takes_the_partition_over(
    stub: EventHubStub,
) -> None:
    stub.inject("0", b"before")
    errors: dict[int, list[Exception]] = {0: [], 1: []}
    received: dict[int, list[bytes]] = {0: [], 1: []}

    async def start_consumer(level: int) -> tuple[AsyncConsumerClient, asyncio.Task[None]]:
        async def on_event(context: Any, event: EventData | None) -> None:
            if event is not None:
                received[level] += bodies([event])

        async def on_error(context: Any, error: Exception) -> None:
            errors[level].append(error)

        # Without retries the displaced consumer reports the service's error at once.
        client = AsyncConsumerClient.from_connection_string(
            stub.connection_string,
            consumer_group="$Default",
            load_balancing_interval=0.5,
            **FAST_RETRY,
        )
        task = asyncio.create_task(
            client.receive(
                on_event,
                on_error=on_error,
                partition_id="0",
                starting_position="-1",
                owner_level=level,
            )
        )
        await asyncio.to_thread(
            support.wait_until, lambda: received[level] == [b"before"], timeout=10
        )
        return client, task

    consumers = [await start_consumer(0), await start_consumer(1)]
    stub.inject("0", b"after")
    try:
        await asyncio.to_thread(
            support.wait_until,
            lambda: received[1] == [b"before", b"after"] and bool(errors[0]),
            timeout=10,
        )
    finally:
        await asyncio.gather(*(client.close() for client, _ in consumers))
        await asyncio.wait_for(asyncio.gather(*(task for _, task in consumers)), 5)

    assert received[0] == [b"before"]
    assert all(isinstance(error, ConnectionLostError) for error in errors[0])
    assert "amqp:link:stolen" in str(errors[0][0])
    assert errors[1] == []
