"""The stand-in's event store: one hub, its partitions, and start positions.

Plain Python with no I/O. The broker's event loop is the only writer; other
threads read through ``EventHubStub``, which hops onto that loop first.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from .amqp import (
    MESSAGE_ANNOTATIONS,
    ParsedMessage,
    Symbol,
    Timestamp,
    data_message,
    parse_message,
    section,
)

PARTITION_KEY: Final = "x-opt-partition-key"
SEQUENCE_NUMBER: Final = "x-opt-sequence-number"
OFFSET: Final = "x-opt-offset"
ENQUEUED_TIME: Final = "x-opt-enqueued-time"
_SERVICE_ANNOTATIONS: Final = frozenset({PARTITION_KEY, SEQUENCE_NUMBER, OFFSET, ENQUEUED_TIME})


@dataclass(frozen=True)
class StoredEvent:
    """One event as a partition holds it.

    ``body`` joins the message's data sections (what ``EventData.body_as_str``
    reads); ``annotations`` are the producer's message annotations, without the
    ones the service sets; ``header`` and ``bare`` are the encoded header section
    and bare message, re-sent byte for byte on delivery.
    """

    partition_id: str
    sequence_number: int
    offset: int
    enqueued_time: datetime
    partition_key: str | None
    body: bytes
    application_properties: dict[Any, Any]
    annotations: dict[Any, Any] = field(repr=False)
    header: bytes = field(repr=False)
    bare: bytes = field(repr=False)
    wire: bytes = field(repr=False)
    """Message annotations section (service ones first) followed by ``bare``:
    what every consumer is sent after the header, encoded once."""

    @property
    def enqueued_ms(self) -> int:
        """The enqueued time in milliseconds since the epoch, as on the wire."""
        return round(self.enqueued_time.timestamp() * 1000)


class Partition:
    """An append-only log. Sequence numbers start at 0; offsets are byte positions."""

    def __init__(self, partition_id: str) -> None:
        self.id = partition_id
        self.events: list[StoredEvent] = []
        self._next_offset = 0
        self._last_ms = 0

    def append(self, message: ParsedMessage, *, partition_key: str | None) -> StoredEvent:
        # Enqueued times never go backwards within a partition, so a time-based
        # start position can binary-search like the offset and sequence ones.
        now_ms = max(round(datetime.now(UTC).timestamp() * 1000), self._last_ms)
        sequence_number, offset = len(self.events), self._next_offset
        annotations = {
            key: value
            for key, value in message.message_annotations.items()
            if key not in _SERVICE_ANNOTATIONS
        }
        delivered: dict[Any, Any] = {
            Symbol(SEQUENCE_NUMBER): sequence_number,
            Symbol(OFFSET): str(offset),
            Symbol(ENQUEUED_TIME): Timestamp(now_ms),
        }
        if partition_key is not None:
            delivered[Symbol(PARTITION_KEY)] = partition_key
        delivered.update(annotations)
        event = StoredEvent(
            partition_id=self.id,
            sequence_number=sequence_number,
            offset=offset,
            enqueued_time=datetime.fromtimestamp(now_ms / 1000, UTC),
            partition_key=partition_key,
            body=b"".join(message.data),
            application_properties=dict(message.application_properties),
            annotations=annotations,
            header=message.header,
            bare=message.bare,
            wire=section(MESSAGE_ANNOTATIONS, delivered) + message.bare,
        )
        self.events.append(event)
        # Offsets are positions in the partition's log, like the service's, so
        # tests notice if someone treats an offset as a sequence number.
        self._next_offset += len(message.bare)
        self._last_ms = now_ms
        return event

    @property
    def last(self) -> StoredEvent | None:
        return self.events[-1] if self.events else None


class Hub:
    """An event hub: a name, a creation time and a fixed set of partitions."""

    def __init__(self, name: str, partition_count: int) -> None:
        if partition_count < 1:
            raise ValueError("an event hub has at least one partition")
        self.name = name
        self.created_at = datetime.now(UTC)
        self.partitions = {str(i): Partition(str(i)) for i in range(partition_count)}
        self._round_robin = 0

    def partition(self, partition_id: str) -> Partition | None:
        return self.partitions.get(partition_id)

    def partition_for_key(self, key: str) -> Partition:
        """The partition a key maps to: the same key always maps to the same one."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return self.partitions[str(int.from_bytes(digest[:8], "big") % len(self.partitions))]

    def next_partition(self) -> Partition:
        """The partition for an event with neither partition id nor key (round robin)."""
        partition = self.partitions[str(self._round_robin % len(self.partitions))]
        self._round_robin += 1
        return partition

    def inject(
        self,
        partition_id: str,
        bodies: list[bytes],
        *,
        partition_key: str | None = None,
        application_properties: Mapping[str, Any] | None = None,
    ) -> list[StoredEvent]:
        """Append raw bodies (any bytes at all) as one-data-section events."""
        partition = self.partitions[partition_id]
        return [
            partition.append(
                parse_message(data_message(body, application_properties=application_properties)),
                partition_key=partition_key,
            )
            for body in bodies
        ]


# --- start positions ---------------------------------------------------------------

_SELECTOR = re.compile(
    r"""^\s*amqp\.annotation\.(?P<field>x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)
        \s*(?P<op>>=|>)\s*'?(?P<value>[^']*?)'?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_KEYS: Final[dict[str, Callable[[StoredEvent], int]]] = {
    "x-opt-offset": lambda event: event.offset,
    "x-opt-sequence-number": lambda event: event.sequence_number,
    "x-opt-enqueued-time": lambda event: event.enqueued_ms,
}


@dataclass(frozen=True)
class StartPosition:
    """Where a consumer starts, parsed from the link's selector filter.

    ``kind`` "latest" means only events enqueued after the link attaches;
    otherwise events whose ``field`` is greater than (or, if ``inclusive``, equal
    to) ``value``. Offset "-1" is the start of the stream.
    """

    kind: Literal["latest", "after"]
    field: str = "x-opt-offset"
    value: int = -1
    inclusive: bool = False

    @classmethod
    def parse(cls, selector: str | None) -> StartPosition:
        """Parse an ``apache.org:selector-filter:string`` value; ``None`` is the start.

        Raises ``ValueError`` for a selector the service would not accept.
        """
        if selector is None:
            return cls("after")
        match = _SELECTOR.match(selector)
        if match is None:
            raise ValueError(f"unsupported selector {selector!r}")
        name, value = match["field"].lower(), match["value"].strip()
        if name == "x-opt-offset" and value == "@latest":
            return cls("latest")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{name} must be an integer, not {value!r}") from None
        return cls("after", name, number, match["op"] == ">=")

    def matches(self, event: StoredEvent) -> bool:
        key = _KEYS[self.field](event)
        return key >= self.value if self.inclusive else key > self.value

    def first_index(self, events: list[StoredEvent]) -> int:
        """Index of the first stored event at or after this position (may be the end).

        Offsets, sequence numbers and enqueued times all grow along a partition,
        so a binary search finds it.
        """
        if self.kind == "latest":
            return len(events)
        key = _KEYS[self.field]
        search = bisect.bisect_left if self.inclusive else bisect.bisect_right
        return search(events, self.value, key=key)
