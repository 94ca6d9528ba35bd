"""The AMQP 1.0 server: connections, sessions, links, and the Event Hubs nodes.

One asyncio event loop runs everything: each TCP connection is an
``asyncio.Protocol`` that parses frames as bytes arrive and answers at once, so
an event a producer sends is pushed to attached consumers in the same loop turn.

Nodes, by link address (a full ``amqps://host/...`` URL or a bare path):

- ``$cbs``: put-token requests, answered 202 (or 401 / 404 as the service does);
- ``$management``: READ of ``com.microsoft:eventhub`` / ``com.microsoft:partition``;
- ``HUB`` and ``HUB/Partitions/N``: producers (the client sends, the stub stores);
- ``HUB/ConsumerGroups/G/Partitions/N``: consumers, started from the link's
  selector filter, fed as link credit allows.

Entity links need a put-token for the hub on the same connection first, as on
the real service.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, quote_plus, urlsplit

from . import amqp
from .amqp import (
    ACCEPTED_STATE,
    Described,
    Frame,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
    described_list,
    error,
)
from .store import (
    PARTITION_KEY,
    Hub,
    Partition,
    StartPosition,
    StoredEvent,
)

log = logging.getLogger("tests.eventhub_stub")

MAX_FRAME_SIZE: Final = 65536  # what the service offers
MAX_MESSAGE_SIZE: Final = 1024 * 1024  # the Standard tier's limit
SESSION_WINDOW: Final = 5000
PRODUCER_CREDIT: Final = 1000
HANDLE_MAX: Final = 255
SELECTOR_FILTER: Final = "apache.org:selector-filter:string"
RUNTIME_METRIC: Final = "com.microsoft:enable-receiver-runtime-metric"
EPOCH: Final = "com.microsoft:epoch"
SAS_TOKEN_TYPE: Final = "servicebus.windows.net:sastoken"
SENDER, RECEIVER = False, True  # AMQP link roles
SETTLE_SETTLED, SETTLE_MIXED = 1, 2
_TAG = struct.Struct(">I")
_U32_MASK: Final = 0xFFFFFFFF


class LinkRefused(Exception):
    """Raised while routing an attach: the link is attached, then detached with this error."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(description)
        self.condition = condition
        self.description = description


@dataclass
class LinkFault:
    """Refuse the next ``remaining`` entity links with this error (to test retries)."""

    remaining: int = 0
    condition: str = "amqp:link:detach-forced"
    description: str = "The link was detached by the stub to test retries."


class Broker:
    """State shared by every connection: the hub, credentials, fault switches."""

    def __init__(self, hub: Hub, *, key_name: str, key: str) -> None:
        self.hub = hub
        self.key_name = key_name
        self.key = key
        self.namespace = "sb://127.0.0.1"  # replaced by the listening address
        self.reject_credentials = False
        self.failing_connections = 0
        self.link_fault = LinkFault()
        self.connection_attempts = 0
        self.connections: set[AmqpConnection] = set()
        self._consumers: dict[str, set[ConsumerLink]] = {pid: set() for pid in hub.partitions}
        self._event_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- events ----------------------------------------------------------------

    def append(
        self, partition: Partition, messages: Iterable[amqp.ParsedMessage], key: str | None
    ) -> list[StoredEvent]:
        """Store events, then push them to the partition's attached consumers."""
        events = [partition.append(message, partition_key=key) for message in messages]
        self.events_added(partition.id)
        return events

    def events_added(self, partition_id: str) -> None:
        for link in list(self._consumers[partition_id]):
            link.pump()
        total = self.total_events()
        for count, waiter in list(self._event_waiters):
            if total >= count and not waiter.done():
                waiter.set_result(None)
        self._event_waiters = [(c, w) for c, w in self._event_waiters if not w.done()]

    def total_events(self) -> int:
        return sum(len(p.events) for p in self.hub.partitions.values())

    async def wait_for_total(self, count: int) -> None:
        if self.total_events() >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._event_waiters.append((count, waiter))
        await waiter

    # --- credentials ---------------------------------------------------------

    def check_token(
        self, token_type: str | None, token: Any, audience: str | None
    ) -> tuple[int, str]:
        """Status code and description for a put-token (202 when accepted)."""
        if self.reject_credentials:
            return 401, "InvalidSignature: The token has an invalid signature."
        if token_type == SAS_TOKEN_TYPE:
            problem = self._sas_problem(token)
            if problem:
                return 401, problem
        if audience:
            path = urlsplit(audience).path.strip("/")
            name = path.split("/")[0] if path else ""
            if name and not self.is_hub(name):
                return 404, self.not_found(name)
        return 202, "Accepted"

    def _sas_problem(self, token: Any) -> str | None:
        if not isinstance(token, str) or not token.startswith("SharedAccessSignature "):
            return "InvalidSignature: The token is not a shared access signature."
        fields = {
            k: v[0] for k, v in parse_qs(token.removeprefix("SharedAccessSignature ")).items()
        }
        resource, signature, expiry = (
            fields.get("sr", ""),
            fields.get("sig", ""),
            fields.get("se", ""),
        )
        if fields.get("skn") != self.key_name:
            return f"InvalidSignature: Unknown shared access policy {fields.get('skn')!r}."
        expected = base64.b64encode(
            hmac.new(
                self.key.encode("utf-8"),
                f"{quote_plus(resource)}\n{expiry}".encode(),
                hashlib.sha256,
            ).digest()
        ).decode("ascii")
        if not hmac.compare_digest(expected, signature):
            return "InvalidSignature: The token has an invalid signature."
        if not expiry.isdigit() or int(expiry) < time.time():
            return "ExpiredToken: The token is expired."
        return None

    def is_hub(self, name: str) -> bool:
        # Entity names are case-insensitive on the service.
        return name.lower() == self.hub.name.lower()

    def not_found(self, name: str) -> str:
        return (
            f"The messaging entity '{self.namespace}/{name}' could not be found. "
            "To know more visit https://aka.ms/sbResourceMgrExceptions."
        )

    def take_link_fault(self) -> LinkFault | None:
        if self.link_fault.remaining <= 0:
            return None
        self.link_fault.remaining -= 1
        return self.link_fault

    # --- consumers -----------------------------------------------------------

    def add_consumer(self, link: ConsumerLink) -> None:
        """Register a consumer, applying owner-level (epoch) exclusivity."""
        peers = [
            other
            for other in self._consumers[link.partition.id]
            if other.group.lower() == link.group.lower()
        ]
        if link.epoch is None:
            owner = next((p for p in peers if p.epoch is not None), None)
            if owner is not None:
                raise LinkRefused(
                    "amqp:link:stolen",
                    f"At least one receiver for the endpoint is created with epoch of "
                    f"'{owner.epoch}', and so non-epoch receiver is not allowed.",
                )
        else:
            higher = next((p for p in peers if p.epoch is not None and p.epoch > link.epoch), None)
            if higher is not None:
                raise LinkRefused(
                    "amqp:link:stolen",
                    f"Receiver with a higher epoch of '{higher.epoch}' already exists; "
                    f"a receiver with epoch '{link.epoch}' cannot be created.",
                )
            for peer in peers:
                peer.refuse(
                    "amqp:link:stolen",
                    f"New receiver with higher epoch of '{link.epoch}' is created hence current "
                    f"receiver with epoch '{peer.epoch}' is getting disconnected.",
                )
        self._consumers[link.partition.id].add(link)

    def remove_consumer(self, link: ConsumerLink) -> None:
        self._consumers[link.partition.id].discard(link)

    def consumer_count(self) -> int:
        return sum(len(links) for links in self._consumers.values())


# --- links -------------------------------------------------------------------------


class Link:
    """One attached link, seen from the stub's side."""

    def __init__(self, session: Session, name: str, remote_handle: int, local_handle: int) -> None:
        self.session = session
        self.name = name
        self.remote_handle = remote_handle
        self.local_handle = local_handle
        self.detach_sent = False

    def refuse(self, condition: str, description: str) -> None:
        """Detach (closing) with an error; the client sees it as a link error."""
        if self.detach_sent:
            return
        self.detach_sent = True
        self.closed()
        self.session.send(
            described_list(
                amqp.DETACH, UInt(self.local_handle), True, error(condition, description)
            )
        )

    def closed(self) -> None:
        """Hook: the link is going away (detached either way, or connection lost)."""


class ReceiverLink(Link):
    """The client sends on this link; the stub grants credit and settles."""

    def __init__(self, session: Session, name: str, remote_handle: int, local_handle: int) -> None:
        super().__init__(session, name, remote_handle, local_handle)
        self.delivery_count = 0
        self.credit = 0
        self._partial: bytearray | None = None
        self._first: Frame | None = None

    def grant_credit(self) -> None:
        self.credit = PRODUCER_CREDIT
        self.session.send_flow(self, delivery_count=self.delivery_count, credit=self.credit)

    def on_transfer(self, transfer: Frame) -> None:
        if self.detach_sent:
            return  # sent before the client saw the detach of a refused link
        fields = transfer.fields
        if self._first is None:
            self._first, self._partial = transfer, bytearray()
        assert self._partial is not None
        self._partial += transfer.payload
        if fields[9]:  # aborted
            self._first = self._partial = None
            return
        if fields[5]:  # more
            return
        first, payload = self._first, bytes(self._partial)
        self._first = self._partial = None
        self.delivery_count = (self.delivery_count + 1) & _U32_MASK
        self.credit -= 1
        state = self.on_message(payload, first.fields[3] or 0)
        if not first.fields[4]:  # not settled by the sender: settle with our outcome
            self.session.send(
                described_list(
                    amqp.DISPOSITION, RECEIVER, UInt(first.fields[1]), None, True, state, None
                )
            )
        if self.credit <= PRODUCER_CREDIT // 2 and not self.detach_sent:
            self.grant_credit()

    def on_message(self, payload: bytes, message_format: int) -> Described:
        raise NotImplementedError


class SenderLink(Link):
    """The stub sends on this link, within the client's link credit."""

    settled = True

    def __init__(self, session: Session, name: str, remote_handle: int, local_handle: int) -> None:
        super().__init__(session, name, remote_handle, local_handle)
        self.delivery_count = 0
        self.credit = 0
        self.drain = False

    def on_flow(self, fields: list[Any]) -> None:
        delivery_count = fields[5] if fields[5] is not None else 0
        link_credit = fields[6] or 0
        self.credit = (delivery_count + link_credit - self.delivery_count) & _U32_MASK
        if self.credit > 1 << 31:  # the client's count lags ours: no credit
            self.credit = 0
        self.drain = bool(fields[8])
        self.pump()
        if fields[9]:  # echo
            self.session.send_flow(self, delivery_count=self.delivery_count, credit=self.credit)

    def pump(self) -> None:
        """Send what is ready while link credit and the session window allow."""
        if self.detach_sent or self.session.ended:
            return
        while self.credit > 0 and self.session.remote_incoming_window > 0:
            payload = self.next_payload()
            if payload is None:
                break
            self.session.send_delivery(self, payload)
            self.credit -= 1
            self.delivery_count = (self.delivery_count + 1) & _U32_MASK
        if self.drain and self.credit > 0:
            # Nothing left to send: use up the credit, as draining asks.
            self.delivery_count = (self.delivery_count + self.credit) & _U32_MASK
            self.credit, self.drain = 0, False
            self.session.send_flow(self, delivery_count=self.delivery_count, credit=0, drain=True)

    def next_payload(self) -> bytes | None:
        raise NotImplementedError


class ReplyLink(SenderLink):
    """The response side of a request/response pair ($cbs, $management)."""

    def __init__(
        self, session: Session, name: str, remote_handle: int, local_handle: int, node: str
    ):
        super().__init__(session, name, remote_handle, local_handle)
        self.node = node
        self.outbox: deque[bytes] = deque()

    def next_payload(self) -> bytes | None:
        return self.outbox.popleft() if self.outbox else None


class RequestLink(ReceiverLink):
    """The request side of $cbs / $management: each message gets a reply."""

    def __init__(
        self,
        session: Session,
        name: str,
        remote_handle: int,
        local_handle: int,
        node: str,
        handler: Callable[[amqp.ParsedMessage], tuple[int, str, Any]],
    ) -> None:
        super().__init__(session, name, remote_handle, local_handle)
        self.node = node
        self.handler = handler

    def on_message(self, payload: bytes, message_format: int) -> Described:
        request = amqp.parse_message(payload)
        status, description, body = self.handler(request)
        log.debug("%s %s -> %s %s", self.node, request.application_properties, status, description)
        reply = b"".join(
            [
                amqp.properties_section(
                    message_id=uuid.uuid4(), correlation_id=request.property(0)
                ),
                amqp.section(
                    amqp.APPLICATION_PROPERTIES,
                    {"status-code": amqp.Int(status), "status-description": description},
                ),
                amqp.section(amqp.AMQP_VALUE, body),
            ]
        )
        self.session.reply(self.node, request.property(4), reply)
        return ACCEPTED_STATE


class ProducerLink(ReceiverLink):
    """Events sent to the hub (the service picks the partition) or to one partition."""

    def __init__(
        self,
        session: Session,
        name: str,
        remote_handle: int,
        local_handle: int,
        partition: Partition | None,
    ) -> None:
        super().__init__(session, name, remote_handle, local_handle)
        self.partition = partition

    def on_message(self, payload: bytes, message_format: int) -> Described:
        try:
            outer = amqp.parse_message(payload)
            if message_format == amqp.BATCH_MESSAGE_FORMAT:
                # Each data section of a batch holds one whole encoded message.
                messages = [amqp.parse_message(data) for data in outer.data]
            else:
                messages = [outer]
        except amqp.DecodeError as exc:
            return described_list(amqp.REJECTED, error("amqp:decode-error", str(exc)))
        key = next(
            (
                str(m.message_annotations[PARTITION_KEY])
                for m in [*messages, outer]
                if m.message_annotations.get(PARTITION_KEY) is not None
            ),
            None,
        )
        broker, hub = self.session.connection.broker, self.session.connection.broker.hub
        # One transfer lands on one partition, as a batch does on the service.
        partition = self.partition or (hub.partition_for_key(key) if key else hub.next_partition())
        broker.append(partition, messages, key)
        return ACCEPTED_STATE


class ConsumerLink(SenderLink):
    """Events of one partition, from a start position onwards, pushed as they arrive."""

    def __init__(
        self,
        session: Session,
        name: str,
        remote_handle: int,
        local_handle: int,
        *,
        partition: Partition,
        group: str,
        start: StartPosition,
        epoch: int | None,
        runtime_metric: bool,
    ) -> None:
        super().__init__(session, name, remote_handle, local_handle)
        self.partition = partition
        self.group = group
        self.start = start
        self.epoch = epoch
        self.runtime_metric = runtime_metric
        self.cursor = start.first_index(partition.events)
        # Past the end of the log the position may still lie ahead (a future
        # sequence number or time), so later events are checked one by one.
        self.reached = self.cursor < len(partition.events)

    def next_payload(self) -> bytes | None:
        events = self.partition.events
        while self.cursor < len(events):
            event = events[self.cursor]
            self.cursor += 1
            if self.reached or self.start.matches(event):
                self.reached = True
                return self.encode(event)
        return None

    def encode(self, event: StoredEvent) -> bytes:
        if not self.runtime_metric:
            return event.header + event.wire
        last = self.partition.last
        assert last is not None
        metrics = amqp.section(
            amqp.DELIVERY_ANNOTATIONS,
            {
                Symbol("last_enqueued_sequence_number"): last.sequence_number,
                Symbol("last_enqueued_offset"): str(last.offset),
                Symbol("last_enqueued_time_utc"): Timestamp(last.enqueued_ms),
                Symbol("runtime_info_retrieval_time_utc"): Timestamp(round(time.time() * 1000)),
            },
        )
        return event.header + metrics + event.wire

    def closed(self) -> None:
        self.session.connection.broker.remove_consumer(self)


# --- sessions ----------------------------------------------------------------------


class Session:
    """One session: transfer ids and windows, and its links by handle."""

    def __init__(self, connection: AmqpConnection, channel: int, begin: list[Any]) -> None:
        self.connection = connection
        self.channel = channel  # the stub answers on the channel the client chose
        self.ended = False
        self.next_outgoing_id = 0  # transfer-id of the stub's next transfer frame
        self.next_delivery_id = 0
        self.next_incoming_id = begin[1] or 0
        self.incoming_left = SESSION_WINDOW
        self.remote_incoming_window = begin[2] or 0
        self.links: dict[int, Link] = {}  # by the client's handle
        self._pending_replies: dict[str, deque[bytes]] = {}

    def send(self, performative: Described | bytes, payload: bytes = b"") -> None:
        self.connection.write(amqp.frame(self.channel, performative, payload))

    def send_flow(
        self,
        link: Link | None = None,
        *,
        delivery_count: int = 0,
        credit: int = 0,
        drain: bool = False,
    ) -> None:
        link_fields: list[Any] = [None, None, None, None]
        if link is not None:
            link_fields = [UInt(link.local_handle), UInt(delivery_count), UInt(credit), None]
        self.send(
            described_list(
                amqp.FLOW,
                UInt(self.next_incoming_id & _U32_MASK),
                UInt(SESSION_WINDOW),
                UInt(self.next_outgoing_id & _U32_MASK),
                UInt(SESSION_WINDOW),
                *link_fields,
                drain,
                False,
                None,
            )
        )

    def send_delivery(self, link: SenderLink, payload: bytes) -> None:
        """Send one message, split over frames no larger than the client accepts."""
        delivery_id = self.next_delivery_id
        self.next_delivery_id = (delivery_id + 1) & _U32_MASK
        tag = _TAG.pack(delivery_id)

        def transfer(more: bool) -> Described:
            return described_list(
                amqp.TRANSFER,
                UInt(link.local_handle),
                UInt(delivery_id),
                tag,
                UInt(0),
                link.settled,
                more,
                None,
                None,
                None,
                None,
                None,
            )

        # Encode the performative once: only the ``more`` flag differs between
        # frames, and most events fit in one frame.
        last = amqp.encode(transfer(False))
        room = self.connection.remote_max_frame_size - amqp.FRAME_HEADER_SIZE - len(last)
        more = amqp.encode(transfer(True)) if len(payload) > room else last
        start = 0
        while len(payload) - start > room:
            self.send(more, payload[start : start + room])
            self.next_outgoing_id = (self.next_outgoing_id + 1) & _U32_MASK
            self.remote_incoming_window -= 1
            start += room
        self.send(last, payload[start:])
        self.next_outgoing_id = (self.next_outgoing_id + 1) & _U32_MASK
        self.remote_incoming_window -= 1

    def reply(self, node: str, reply_to: Any, payload: bytes) -> None:
        """Queue a management reply on this session's reply link for ``node``."""
        link = self._reply_link(node, reply_to)
        if link is None:  # the reply link is still attaching
            self._pending_replies.setdefault(node, deque()).append(payload)
            return
        link.outbox.append(payload)
        link.pump()

    def _reply_link(self, node: str, reply_to: Any) -> ReplyLink | None:
        candidates = [
            link
            for link in self.links.values()
            if isinstance(link, ReplyLink) and link.node == node
        ]
        if reply_to is not None:
            named = [link for link in candidates if link.name == reply_to]
            candidates = named or candidates
        return candidates[0] if candidates else None

    # --- incoming performatives ----------------------------------------------

    def on_flow(self, fields: list[Any]) -> None:
        next_incoming_id = fields[0] if fields[0] is not None else 0
        self.remote_incoming_window = next_incoming_id + (fields[1] or 0) - self.next_outgoing_id
        if fields[4] is not None:
            link = self.links.get(fields[4])
            if isinstance(link, SenderLink):
                link.on_flow(fields)
        elif fields[9]:  # echo
            self.send_flow()
        # A wider window may let every sender link go on.
        for link in list(self.links.values()):
            if isinstance(link, SenderLink):
                link.pump()

    def on_transfer(self, transfer: Frame) -> None:
        self.next_incoming_id = (self.next_incoming_id + 1) & _U32_MASK
        self.incoming_left -= 1
        link = self.links.get(transfer.fields[0])
        if isinstance(link, ReceiverLink):
            link.on_transfer(transfer)
        if self.incoming_left <= SESSION_WINDOW // 2:
            self.incoming_left = SESSION_WINDOW
            self.send_flow()

    def on_detach(self, fields: list[Any]) -> None:
        link = self.links.pop(fields[0], None)
        if link is None:
            return
        link.closed()
        if not link.detach_sent:
            link.detach_sent = True
            self.send(described_list(amqp.DETACH, UInt(link.local_handle), bool(fields[1]), None))

    def on_attach(self, fields: list[Any]) -> None:
        name, remote_handle, client_role = fields[0], fields[1], fields[2]
        source = amqp.fields_of(fields[5], amqp.SOURCE) if fields[5] is not None else None
        target = amqp.fields_of(fields[6], amqp.TARGET) if fields[6] is not None else None
        local_handle = next(h for h in range(HANDLE_MAX + 1) if h not in self._local_handles())
        client_sends = client_role == SENDER
        terminus = target if client_sends else source
        address = str(terminus[0]) if terminus and terminus[0] is not None else ""
        desired = {str(c) for c in _as_list(fields[12])}
        problem: LinkRefused | None = None
        try:
            link = self.connection.route(
                self, fields, address, source, local_handle, client_sends=client_sends
            )
        except LinkRefused as refused:
            problem = refused
            link = (ReceiverLink if client_sends else _NothingToSend)(
                self, name, remote_handle, local_handle
            )
        self.links[remote_handle] = link
        offered = (
            amqp.symbol_array([RUNTIME_METRIC])
            if RUNTIME_METRIC in desired and isinstance(link, ConsumerLink)
            else None
        )
        # The sender's attach decides how it settles (the stub settles all it
        # sends) and the receiver's how it settles what it gets (the stub: first).
        if client_sends:
            snd_mode = fields[3] if fields[3] is not None else SETTLE_MIXED
            rcv_mode = 0
        else:
            snd_mode, rcv_mode = SETTLE_SETTLED, fields[4] or 0
        filters = source[7] if source else None
        self.send(
            described_list(
                amqp.ATTACH,
                name,
                UInt(local_handle),
                not client_role,
                UByte(snd_mode),
                UByte(rcv_mode),
                described_list(
                    amqp.SOURCE, (source or [None])[0], *[None] * 6, filters, None, None, None
                ),
                described_list(amqp.TARGET, (target or [None])[0], *[None] * 6),
                None,
                None,
                None if client_sends else UInt(0),
                ULong(MAX_MESSAGE_SIZE),
                offered,
                None,
                None,
            )
        )
        if problem is not None:
            log.info("refusing link %r: %s %s", address, problem.condition, problem.description)
            link.refuse(problem.condition, problem.description)
            return
        if isinstance(link, ReceiverLink):
            link.grant_credit()
        if isinstance(link, ReplyLink):
            link.outbox.extend(self._pending_replies.pop(link.node, ()))

    def _local_handles(self) -> set[int]:
        return {link.local_handle for link in self.links.values()}

    def end(self) -> None:
        self.ended = True
        for link in self.links.values():
            link.closed()
        self.links.clear()


class _NothingToSend(SenderLink):
    """Stands for a refused outgoing link between its attach and its detach."""

    def next_payload(self) -> bytes | None:
        return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# --- connections -------------------------------------------------------------------


class AmqpConnection(asyncio.Protocol):
    """One client connection: protocol headers, SASL, then AMQP frames."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.remote_max_frame_size = MAX_FRAME_SIZE
        self.sessions: dict[int, Session] = {}
        self.authorized = False  # a put-token for the hub succeeded
        self._buffer = bytearray()
        self._expect_header = True
        self._sasl_done = False
        self._closing = False

    # --- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.broker.connection_attempts += 1
        if self.broker.failing_connections > 0:
            self.broker.failing_connections -= 1
            log.info("dropping a connection to test retries")
            transport.abort()
            return
        self.broker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.broker.connections.discard(self)
        for session in self.sessions.values():
            session.end()
        self.sessions.clear()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._process()
        except amqp.DecodeError as exc:
            log.warning("closing a connection that sent a malformed frame: %s", exc)
            self.close(error("amqp:decode-error", str(exc)))
        except Exception as exc:
            log.exception("closing a connection after an internal error")
            self.close(error("amqp:internal-error", f"eventhub stub: {exc!r}"))

    # --- frames --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self, close_error: Described | None = None) -> None:
        if not self._closing:
            self._closing = True
            self.write(amqp.frame(0, described_list(amqp.CLOSE, close_error)))
        if self.transport is not None:
            self.transport.close()

    def _process(self) -> None:
        buffer, pos = self._buffer, 0
        try:
            while not self._closing:
                if len(buffer) - pos < amqp.FRAME_HEADER_SIZE:
                    return
                if self._expect_header:
                    self._on_protocol_header(bytes(buffer[pos : pos + 8]))
                    pos += 8
                    continue
                size = amqp.frame_size(buffer[pos : pos + 8])
                if size < amqp.FRAME_HEADER_SIZE or size > MAX_FRAME_SIZE:
                    raise amqp.DecodeError(f"frame size {size} is out of range")
                if len(buffer) - pos < size:
                    return
                received = amqp.parse_frame(memoryview(buffer)[pos : pos + size])
                pos += size
                if received.code is not None:
                    self._on_frame(received)
        finally:
            del buffer[:pos]

    def _on_protocol_header(self, header: bytes) -> None:
        self._expect_header = False
        if header == amqp.SASL_HEADER and not self._sasl_done:
            self.write(amqp.SASL_HEADER)
            # The SDK authenticates with SASL ANONYMOUS, then with a CBS token.
            mechanisms = amqp.symbol_array(["ANONYMOUS", "PLAIN", "MSSBCBS"])
            self.write(
                amqp.frame(
                    0, described_list(amqp.SASL_MECHANISMS, mechanisms), kind=amqp.FRAME_SASL
                )
            )
        elif header == amqp.AMQP_HEADER:
            self.write(amqp.AMQP_HEADER)
        else:
            self.write(amqp.AMQP_HEADER)
            if self.transport is not None:
                self.transport.close()
            self._closing = True

    def _on_frame(self, received: Frame) -> None:
        code, fields = received.code, received.fields
        if received.kind == amqp.FRAME_SASL:
            if code == amqp.SASL_INIT:
                self.write(
                    amqp.frame(
                        0, described_list(amqp.SASL_OUTCOME, UByte(0), None), kind=amqp.FRAME_SASL
                    )
                )
                self._sasl_done = True
                self._expect_header = True
            return
        if code == amqp.OPEN:
            self.remote_max_frame_size = min(fields[2] or _U32_MASK, _U32_MASK)
            self.write(
                amqp.frame(
                    0,
                    described_list(
                        amqp.OPEN,
                        f"eventhub-stub-{uuid.uuid4().hex[:8]}",
                        None,
                        UInt(MAX_FRAME_SIZE),
                        UShort(4999),
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                    ),
                )
            )
        elif code == amqp.BEGIN:
            session = Session(self, received.channel, fields)
            self.sessions[received.channel] = session
            session.send(
                described_list(
                    amqp.BEGIN,
                    UShort(received.channel),
                    UInt(0),
                    UInt(SESSION_WINDOW),
                    UInt(SESSION_WINDOW),
                    UInt(HANDLE_MAX),
                    None,
                    None,
                    None,
                )
            )
        elif code == amqp.CLOSE:
            self.close()
        else:
            self._on_session_frame(received)

    def _on_session_frame(self, received: Frame) -> None:
        session = self.sessions.get(received.channel)
        if session is None:
            # The SDK's Session.end() sends its links' detach frames after the
            # end frame; the service lets that pass, and so does the stub.
            log.debug("ignoring frame 0x%02x on ended channel %d", received.code, received.channel)
            return
        code, fields = received.code, received.fields
        if code == amqp.TRANSFER:
            session.on_transfer(received)
        elif code == amqp.FLOW:
            session.on_flow(fields)
        elif code == amqp.ATTACH:
            session.on_attach(fields)
        elif code == amqp.DETACH:
            session.on_detach(fields)
        elif code == amqp.END:
            session.end()
            del self.sessions[received.channel]
            session.send(described_list(amqp.END, None))
        # Dispositions need no answer: the stub settles everything it sends.

    # --- nodes -----------------------------------------------------------------

    def route(
        self,
        session: Session,
        attach: list[Any],
        address: str,
        source: list[Any] | None,
        local_handle: int,
        *,
        client_sends: bool,
    ) -> Link:
        """The link for an attach to ``address``; raise ``LinkRefused`` to refuse it."""
        name, remote_handle = attach[0], attach[1]
        path = urlsplit(address).path if "://" in address else address
        segments = path.strip("/").split("/")
        if segments in (["$cbs"], ["$management"]):
            node = segments[0]
            if client_sends:
                handler = self.put_token if node == "$cbs" else self.management_read
                return RequestLink(session, name, remote_handle, local_handle, node, handler)
            return ReplyLink(session, name, remote_handle, local_handle, node)
        broker = self.broker
        if not broker.is_hub(segments[0]):
            raise LinkRefused("amqp:not-found", broker.not_found(segments[0]))
        if not self.authorized:
            claim = "Send" if client_sends else "Listen"
            raise LinkRefused(
                "amqp:unauthorized-access",
                f"Unauthorized access. '{claim}' claim(s) are required to perform this operation.",
            )
        fault = broker.take_link_fault()
        if fault is not None:
            raise LinkRefused(fault.condition, fault.description)
        lowered = [s.lower() for s in segments]
        if client_sends and len(segments) == 1:
            return ProducerLink(session, name, remote_handle, local_handle, None)
        if client_sends and len(segments) == 3 and lowered[1] == "partitions":
            partition = self._partition(segments[2])
            return ProducerLink(session, name, remote_handle, local_handle, partition)
        if (
            not client_sends
            and len(segments) == 5
            and (lowered[1], lowered[3]) == ("consumergroups", "partitions")
        ):
            return self._consumer(session, attach, segments, source, local_handle)
        raise LinkRefused("amqp:not-found", f"The address '{address}' is not an Event Hubs entity.")

    def _partition(self, partition_id: str) -> Partition:
        partition = self.broker.hub.partition(partition_id)
        if partition is None:
            raise LinkRefused(
                "com.microsoft:argument-out-of-range",
                "The specified partition is invalid for an EventHub partition sender or "
                f"receiver. It should be between 0 and {len(self.broker.hub.partitions) - 1}.",
            )
        return partition

    def _consumer(
        self,
        session: Session,
        attach: list[Any],
        segments: list[str],
        source: list[Any] | None,
        local_handle: int,
    ) -> ConsumerLink:
        partition = self._partition(segments[4])
        selector = None
        filters = (source[7] if source else None) or {}
        for value in filters.values():
            described = value if isinstance(value, Described) else None
            if described is not None and str(described.descriptor) == SELECTOR_FILTER:
                selector = str(described.value)
        try:
            start = StartPosition.parse(selector)
        except ValueError as exc:
            raise LinkRefused("amqp:invalid-field", str(exc)) from None
        properties = attach[13] or {}
        epoch = properties.get(EPOCH)
        link = ConsumerLink(
            session,
            attach[0],
            attach[1],
            local_handle,
            partition=partition,
            group=segments[2],
            start=start,
            epoch=int(epoch) if epoch is not None else None,
            runtime_metric=RUNTIME_METRIC in {str(c) for c in _as_list(attach[12])},
        )
        self.broker.add_consumer(link)
        return link

    def put_token(self, request: amqp.ParsedMessage) -> tuple[int, str, Any]:
        props = request.application_properties
        if props.get("operation") != "put-token":
            return 400, f"Unsupported $cbs operation {props.get('operation')!r}.", None
        status, description = self.broker.check_token(
            props.get("type"), request.value, props.get("name")
        )
        if status == 202:
            self.authorized = True
        return status, description, None

    def management_read(self, request: amqp.ParsedMessage) -> tuple[int, str, Any]:
        props = request.application_properties
        broker, hub = self.broker, self.broker.hub
        token = props.get("security_token")
        # The SDK repeats its token on each request; only a SAS token can be checked.
        if broker.reject_credentials or (
            isinstance(token, str) and token.startswith("SharedAccessSignature ")
        ):
            status, description = broker.check_token(SAS_TOKEN_TYPE, token, None)
            if status != 202:
                return status, description, None
        if props.get("operation") != "READ":
            return 400, f"Unsupported $management operation {props.get('operation')!r}.", None
        name = str(props.get("name") or "")
        if not broker.is_hub(name):
            return 404, broker.not_found(name), None
        if props.get("type") == "com.microsoft:eventhub":
            return (
                200,
                "OK",
                {
                    "name": hub.name,
                    "type": "com.microsoft:eventhub",
                    "created_at": Timestamp(round(hub.created_at.timestamp() * 1000)),
                    "partition_count": amqp.Int(len(hub.partitions)),
                    "partition_ids": amqp.Array("string", tuple(hub.partitions)),
                },
            )
        if props.get("type") == "com.microsoft:partition":
            partition = hub.partition(str(props.get("partition")))
            if partition is None:
                return 400, f"The partition '{props.get('partition')}' does not exist.", None
            last = partition.last
            return (
                200,
                "OK",
                {
                    "name": hub.name,
                    "type": "com.microsoft:partition",
                    "partition": partition.id,
                    "begin_sequence_number": 0 if last else -1,
                    "last_enqueued_sequence_number": last.sequence_number if last else -1,
                    "last_enqueued_offset": str(last.offset) if last else "-1",
                    "last_enqueued_time_utc": Timestamp(last.enqueued_ms if last else 0),
                    "is_partition_empty": last is None,
                },
            )
        return 400, f"Unsupported $management type {props.get('type')!r}.", None


async def listen(broker: Broker, host: str, port: int) -> asyncio.Server:
    """Serve ``broker`` on ``host:port`` (0 picks a free port) in the running loop."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: AmqpConnection(broker), host, port)
    bound = server.sockets[0].getsockname()[1]
    broker.namespace = f"sb://{host}:{bound}"
    return server


def drop_connections(broker: Broker) -> None:
    """Abort every open connection (on shutdown; clients see a lost connection)."""
    for connection in list(broker.connections):
        if connection.transport is not None:
            connection.transport.abort()
