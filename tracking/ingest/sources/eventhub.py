"""Azure Event Hubs: the one module that imports the ``azure-eventhub`` SDK.

``EventHubSource`` feeds ``consume_events --source eventhub``: the SDK's
async consumer client, on its pure-Python AMQP transport, balances the
partitions among every process of the consumer group through
``DatabaseCheckpointStore``, and hands each partition's batches to the same
pipeline as every other source. A partition is checkpointed once per batch,
after the batch has committed, so a restart replays at most the batch that
was in hand, which the pipeline makes harmless.

``send_events`` is the producer side, for ``simulate --to eventhub``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from azure.eventhub import EventData
from azure.eventhub.aio import (
    CheckpointStore,
    EventHubConsumerClient,
    EventHubProducerClient,
    PartitionContext,
)
from azure.eventhub.amqp import AmqpMessageBodyType
from azure.eventhub.exceptions import AuthenticationError, ConnectError, EventHubError
from django.conf import settings

from tracking.ingest.sources import Deliver, RawEvent, SourceConfigurationError, first_line
from tracking.ingest.sources import eventhub_checkpoints as checkpoints
from tracking.logsafe import one_line

logger = logging.getLogger(__name__)

RunInDatabase = Callable[..., Awaitable[Any]]

STARTING_POSITIONS = {"earliest": "-1", "latest": "@latest"}
PREFLIGHT_ATTEMPTS = 5


class EventHubConfigError(SourceConfigurationError):
    """The Event Hub settings are wrong; the message names the setting to fix."""


@dataclass(frozen=True)
class EventHubConfig:
    """Where the Event Hub is and how to read it, from settings and the command line."""

    eventhub: str
    consumer_group: str = "$Default"
    connection_string: str = ""
    namespace: str = ""
    starting_position: str = "earliest"
    batch_size: int = 500
    max_wait_seconds: float = 1.0
    prefetch: int = 1000
    load_balancing_seconds: float = 5.0
    ownership_expiry_seconds: float = 20.0

    @classmethod
    def from_settings(cls, **overrides: Any) -> EventHubConfig:
        values: dict[str, Any] = {
            "connection_string": settings.EVENTHUB_CONNECTION_STRING,
            "namespace": settings.EVENTHUB_NAMESPACE,
            "eventhub": settings.EVENTHUB_NAME or _entity_path(settings.EVENTHUB_CONNECTION_STRING),
            "consumer_group": settings.EVENTHUB_CONSUMER_GROUP,
            "starting_position": settings.EVENTHUB_STARTING_POSITION,
            "batch_size": settings.EVENTHUB_BATCH_SIZE,
            "max_wait_seconds": settings.EVENTHUB_MAX_WAIT_SECONDS,
            "prefetch": settings.EVENTHUB_PREFETCH,
            "load_balancing_seconds": settings.EVENTHUB_LOAD_BALANCING_SECONDS,
            "ownership_expiry_seconds": settings.EVENTHUB_OWNERSHIP_EXPIRY_SECONDS,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.connection_string and not self.namespace:
            raise EventHubConfigError(
                "Set EVENTHUB_CONNECTION_STRING, or EVENTHUB_NAMESPACE "
                "(like mynamespace.servicebus.windows.net) to sign in with azure-identity."
            )
        if self.connection_string and "Endpoint=" not in self.connection_string:
            raise EventHubConfigError(
                "EVENTHUB_CONNECTION_STRING is not an Event Hubs connection string "
                "(Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...)"
            )
        if not self.eventhub:
            raise EventHubConfigError(
                "Set EVENTHUB_NAME (or EntityPath= in EVENTHUB_CONNECTION_STRING)."
            )
        if not self.consumer_group:
            raise EventHubConfigError("The consumer group must not be empty.")
        if self.starting_position not in STARTING_POSITIONS:
            raise EventHubConfigError(
                f"EVENTHUB_STARTING_POSITION must be 'earliest' or 'latest', "
                f"got {self.starting_position!r}"
            )
        if self.ownership_expiry_seconds <= self.load_balancing_seconds:
            raise EventHubConfigError(
                "EVENTHUB_OWNERSHIP_EXPIRY_SECONDS must be longer than "
                "EVENTHUB_LOAD_BALANCING_SECONDS, or owners lose partitions between renewals."
            )

    @property
    def credential_setting(self) -> str:
        return "EVENTHUB_CONNECTION_STRING" if self.connection_string else "EVENTHUB_NAMESPACE"


def _entity_path(connection_string: str) -> str:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "entitypath":
            return value.strip()
    return ""


def _client_arguments(config: EventHubConfig) -> dict[str, Any]:
    """How every client reaches the hub: a connection string, or the namespace
    and azure-identity's default credential (a managed identity in Azure)."""
    if config.connection_string:
        return {"conn_str": config.connection_string, "eventhub_name": config.eventhub}
    from azure.identity.aio import DefaultAzureCredential

    return {
        "fully_qualified_namespace": config.namespace,
        "eventhub_name": config.eventhub,
        "credential": DefaultAzureCredential(),
    }


def consumer_client(
    config: EventHubConfig, *, checkpoint_store: CheckpointStore | None, **extra: Any
) -> EventHubConsumerClient:
    arguments = _client_arguments(config)
    options: dict[str, Any] = {
        **extra,
        "consumer_group": config.consumer_group,
        "checkpoint_store": checkpoint_store,
        "load_balancing_interval": config.load_balancing_seconds,
        "partition_ownership_expiration_interval": config.ownership_expiry_seconds,
        # Greedy takes every free partition in one pass, so a dead process's
        # partitions move at once instead of one per balancing interval.
        "load_balancing_strategy": "greedy",
    }
    if "conn_str" in arguments:
        return EventHubConsumerClient.from_connection_string(**arguments, **options)
    return EventHubConsumerClient(**arguments, **options)


def producer_client(config: EventHubConfig, **options: Any) -> EventHubProducerClient:
    arguments = _client_arguments(config)
    if "conn_str" in arguments:
        return EventHubProducerClient.from_connection_string(**arguments, **options)
    return EventHubProducerClient(**arguments, **options)


async def check_hub(config: EventHubConfig) -> list[str]:
    """The hub's partition ids, or ``EventHubConfigError`` naming the setting to fix.

    Asked on a client of its own that does not retry, so refused credentials
    and a missing hub are reported at once; an unreachable namespace is tried
    a few times with backoff (a network blip at start should not stop a
    deployment).
    """
    client = consumer_client(config, checkpoint_store=None, retry_total=0)
    async with client:
        return await _partition_ids(client, config)


async def _partition_ids(client: EventHubConsumerClient, config: EventHubConfig) -> list[str]:
    delay = 1.0
    for attempt in range(1, PREFLIGHT_ATTEMPTS + 1):
        try:
            properties = await client.get_eventhub_properties()
            return [str(partition) for partition in properties["partition_ids"]]
        except AuthenticationError as exc:
            # The service answers a token for a hub that does not exist with "not found".
            if _is_not_found(exc):
                raise _missing_hub(config, exc) from None
            raise EventHubConfigError(
                f"Event Hubs refused the credentials of {config.credential_setting}: {first_line(exc)}"
            ) from None
        except ConnectError as exc:
            if _is_not_found(exc):
                raise _missing_hub(config, exc) from None
            if attempt == PREFLIGHT_ATTEMPTS:
                raise EventHubConfigError(
                    f"Could not reach the Event Hubs namespace of {config.credential_setting} "
                    f"after {attempt} attempts: {first_line(exc)}"
                ) from None
            logger.warning(
                "event hub unreachable (attempt %d): %s; retrying in %.0f s",
                attempt,
                first_line(exc),
                delay,
            )
            await asyncio.sleep(delay)
            delay *= 2
        except EventHubError as exc:
            if _is_not_found(exc):
                raise _missing_hub(config, exc) from None
            raise
    raise AssertionError("unreachable")


def _is_not_found(error: Exception) -> bool:
    text = f"{error} {getattr(error, 'error', '')}".lower()
    return any(
        marker in text for marker in ("not-found", "not found", "notfound", "could not be found")
    )


def _missing_hub(config: EventHubConfig, error: Exception) -> EventHubConfigError:
    return EventHubConfigError(
        f"Event hub {config.eventhub!r} was not found in the namespace: check EVENTHUB_NAME "
        f"(or EntityPath in EVENTHUB_CONNECTION_STRING). {first_line(error)}"
    )


# --- Checkpoints -----------------------------------------------------------------


class DatabaseCheckpointStore(CheckpointStore):
    """The SDK's ``CheckpointStore`` on the Django database (see ``checkpoints``).

    Every call runs on the pipeline's database thread through ``run_in_db``.
    """

    def __init__(self, run_in_db: RunInDatabase) -> None:
        self._run = run_in_db

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(
            checkpoints.list_ownership,
            namespace=fully_qualified_namespace,
            eventhub=eventhub_name,
            consumer_group=consumer_group,
        )
        return result

    async def claim_ownership(self, ownership_list: Any, **kwargs: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(
            checkpoints.claim_ownership, claims=list(ownership_list)
        )
        return result

    async def update_checkpoint(self, checkpoint: Any, **kwargs: Any) -> None:
        await self._run(checkpoints.update_checkpoint, checkpoint=checkpoint)

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(
            checkpoints.list_checkpoints,
            namespace=fully_qualified_namespace,
            eventhub=eventhub_name,
            consumer_group=consumer_group,
        )
        return result


# --- Consuming ---------------------------------------------------------------------


def raw_events(partition_id: str, events: Sequence[EventData]) -> list[RawEvent]:
    """The bodies of received events, each with where it came from."""
    return [_raw_event(partition_id, event) for event in events]


def _raw_event(partition_id: str, event: EventData) -> RawEvent:
    """The body of one event; whatever the message holds, this raises nothing,
    so no message can hold back its partition's checkpoint."""
    origin = f"eventhub partition {partition_id} offset {event.offset} seq {event.sequence_number}"
    received_at = _enqueued_time(event)
    try:
        if event.body_type != AmqpMessageBodyType.DATA:
            return RawEvent(
                body=repr(event.body).encode()[:1000],
                origin=origin,
                problem=f"the event body is an AMQP {event.body_type.name.lower()}, not data",
                received_at=received_at,
            )
        body = event.body
        # A data body is one section or several.
        data = body if isinstance(body, bytes) else b"".join(cast(Iterable[bytes], body))
    except Exception as exc:
        return RawEvent(
            body=b"",
            origin=origin,
            problem=f"the event body cannot be read: {type(exc).__name__}: {first_line(exc)}",
            received_at=received_at,
        )
    return RawEvent(body=data, origin=origin, received_at=received_at)


def _enqueued_time(event: EventData) -> datetime | None:
    """When the hub took the event in; None (the consumer's clock stands in)
    if the service's annotation cannot be read as a time."""
    try:
        enqueued: datetime | None = event.enqueued_time
    except (ValueError, OverflowError, OSError, TypeError):
        return None
    return enqueued


@dataclass
class PartitionProgress:
    """What one partition has done since the last progress line."""

    events: int = 0
    last_sequence_number: int | None = None
    last_enqueued_time: datetime | None = None
    behind_events: int | None = None
    behind_seconds: float | None = None


@dataclass
class BatchHandler:
    """``on_event_batch`` for the SDK: deliver, then checkpoint the last event.

    Once ``stop`` is set, new batches are left unprocessed and unchecked, for
    the next owner of the partition to read again.
    """

    deliver: Deliver
    stop: asyncio.Event
    partitions: dict[str, PartitionProgress] = field(default_factory=dict)
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    async def __call__(self, context: PartitionContext, events: list[EventData]) -> None:
        if self.stop.is_set():
            return
        progress = self.partitions.setdefault(context.partition_id, PartitionProgress())
        if events:
            self.in_flight += 1
            self._idle.clear()
            try:
                await self.deliver(raw_events(context.partition_id, events))
                await self._checkpoint(context, events[-1])
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()
            progress.events += len(events)
            progress.last_sequence_number = events[-1].sequence_number
            progress.last_enqueued_time = events[-1].enqueued_time
        self._note_backlog(context, progress)

    async def _checkpoint(self, context: PartitionContext, event: EventData) -> None:
        try:
            await context.update_checkpoint(event)
        except Exception as exc:
            # The batch is stored; a missed checkpoint only means it is read
            # again after a restart, which the pipeline makes harmless.
            logger.warning(
                "partition %s: could not checkpoint offset %s: %s",
                one_line(context.partition_id),
                one_line(str(event.offset)),
                one_line(str(exc)),
            )

    @staticmethod
    def _note_backlog(context: PartitionContext, progress: PartitionProgress) -> None:
        last = context.last_enqueued_event_properties or {}
        enqueued_sequence = last.get("sequence_number")
        if enqueued_sequence is not None and progress.last_sequence_number is not None:
            progress.behind_events = max(0, int(enqueued_sequence) - progress.last_sequence_number)
        enqueued_time = last.get("enqueued_time")
        if isinstance(enqueued_time, datetime) and progress.last_enqueued_time is not None:
            progress.behind_seconds = max(
                0.0, (enqueued_time - progress.last_enqueued_time).total_seconds()
            )

    async def drain(self) -> None:
        """Wait until no batch is being processed."""
        await self._idle.wait()

    def progress_line(self, seconds: float) -> str:
        parts = []
        for partition_id in sorted(self.partitions, key=_partition_order):
            progress = self.partitions[partition_id]
            behind = "?" if progress.behind_events is None else str(progress.behind_events)
            if progress.behind_seconds is not None:
                behind += f" ({progress.behind_seconds:.1f} s)"
            parts.append(f"p{partition_id} {progress.events / seconds:.0f}/s behind {behind}")
            progress.events = 0
        return "; ".join(parts) or "no partition owned yet"


def _partition_order(partition_id: str) -> tuple[int, str]:
    return (int(partition_id), "") if partition_id.isdigit() else (1 << 30, partition_id)


def is_handover(error: BaseException) -> bool:
    """Whether ``error`` says another consumer now reads the partition: its
    receiver, with a higher owner level, detached ours (the link was "stolen")."""
    condition = str(getattr(error, "error", "") or "")
    return condition.endswith("link:stolen") or "LinkStolen" in str(error)


class _QuietHandovers(logging.Filter):
    """Drops the SDK's WARNING, with the whole exception, for a hand-over:
    ``_on_error`` says it in one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        arguments = record.args if isinstance(record.args, tuple) else ()
        return not any(
            isinstance(argument, BaseException) and is_handover(argument) for argument in arguments
        )


_SDK_PROCESSOR_LOGGER = logging.getLogger("azure.eventhub.aio._eventprocessor.event_processor")
_SDK_PROCESSOR_LOGGER.addFilter(_QuietHandovers())


class EventHubSource:
    """``consume_events --source eventhub``: every owned partition, until stopped."""

    finite = False

    def __init__(self, *, config: EventHubConfig, run_in_db: RunInDatabase) -> None:
        self.config = config
        self.run_in_db = run_in_db
        self.description = (
            f"event hub {config.eventhub!r}, consumer group {config.consumer_group!r}"
        )
        self.handler: BatchHandler | None = None
        self._progress_at = time.monotonic()

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        client = consumer_client(
            self.config, checkpoint_store=DatabaseCheckpointStore(self.run_in_db)
        )
        self.handler = handler = BatchHandler(deliver=deliver, stop=stop)
        async with client:
            partition_ids = await check_hub(self.config)
            logger.info(
                "event hub %r has partitions %s",
                self.config.eventhub,
                one_line(", ".join(partition_ids)),
            )
            receiving = asyncio.create_task(
                client.receive_batch(
                    handler,
                    max_batch_size=self.config.batch_size,
                    max_wait_time=self.config.max_wait_seconds,
                    prefetch=self.config.prefetch,
                    starting_position=STARTING_POSITIONS[self.config.starting_position],
                    track_last_enqueued_event_properties=True,
                    on_error=self._on_error,
                    on_partition_initialize=self._on_partition_initialize,
                    on_partition_close=self._on_partition_close,
                )
            )
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if receiving.done():
                    receiving.result()  # raises whatever ended it
                    return
                # Let the batches in hand commit and checkpoint, then close:
                # closing releases this process's partitions to the others.
                await handler.drain()
            finally:
                stopping.cancel()
                await client.close()
                await asyncio.gather(receiving, return_exceptions=True)

    def progress_line(self) -> str | None:
        if self.handler is None:
            return None
        now = time.monotonic()
        seconds, self._progress_at = max(now - self._progress_at, 1e-9), now
        return self.handler.progress_line(seconds)

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        where = f"partition {one_line(context.partition_id)}" if context else "load balancing"
        if is_handover(error):
            logger.info(
                "event hub %s: another consumer took it over (a normal hand-over when "
                "consumers start or stop); this process stops reading it",
                where,
            )
            return
        logger.warning(
            "event hub %s: %s: %s (the client retries)",
            where,
            type(error).__name__,
            first_line(error),
        )

    async def _on_partition_initialize(self, context: PartitionContext) -> None:
        logger.info("event hub: now reading partition %s", one_line(context.partition_id))

    async def _on_partition_close(self, context: PartitionContext, reason: Any) -> None:
        logger.info(
            "event hub: stopped reading partition %s (%s)",
            one_line(context.partition_id),
            getattr(reason, "name", reason),
        )


# --- Producing -----------------------------------------------------------------------


async def send_events(
    config: EventHubConfig,
    batches: AsyncIterable[Sequence[Mapping[str, Any]]],
    *,
    encode: Callable[[Mapping[str, Any]], bytes],
) -> int:
    """Send event bodies, each keyed by its tracker id so one tracker's events
    stay in one partition, in order. Returns how many were sent."""
    failures: list[BaseException] = []

    async def on_error(events: list[EventData], partition_id: str | None, error: Exception) -> None:
        failures.append(error)
        logger.error(
            "event hub: %d events for partition %s failed: %s",
            len(events),
            partition_id,
            first_line(error),
        )

    async def on_success(events: list[EventData], partition_id: str | None) -> None:
        return None

    producer = producer_client(
        config, buffered_mode=True, on_success=on_success, on_error=on_error, max_wait_time=0.2
    )
    sent = 0
    async with producer:
        await check_hub(config)
        async for batch in batches:
            for body in batch:
                await producer.send_event(EventData(encode(body)), partition_key=str(body["Id"]))
            sent += len(batch)
        await producer.flush()
    if failures:
        raise EventHubError(f"{len(failures)} sends failed; the first: {first_line(failures[0])}")
    return sent
