"""One hub connection's conversation, apart from the socket it runs on; no Django or channels import.

A ``HubSession`` reads what a client sends (the handshake, then invocations,
pings and close, as the JSON hub protocol has them), calls the methods of its
``Hub``, and answers every invocation that carries an id with exactly one
completion. It queues what the fan-out delivers and sends it at most once per
coalescing window, pings a client that hears nothing, and gives up on one
that says nothing. The socket is two callables, ``send`` and ``close``: a
channels consumer in production, plain coroutines in tests.

A ``Hub`` is the set of methods clients may invoke; each is marked where it
is defined with ``hub_method``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tracking.hub import protocol
from tracking.hub.protocol import (
    Close,
    Ignored,
    Invocation,
    Ping,
    ProtocolError,
    RecordBuffer,
    StreamInvocation,
)
from tracking.logsafe import one_line, quoted

logger = logging.getLogger("tracking.hub")

# However close the next deadline, the keep-alive loop sleeps at least this long.
KEEPALIVE_MIN_SLEEP_SECONDS = 0.05


class HubError(Exception):
    """An invocation that fails in a way the caller should read: its text is the error."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What a hub method answers: the completion's ``result``, and ``then``, which
    gives the messages to send after the completion (a snapshot, say)."""

    result: Any = None
    then: Callable[[], Awaitable[Sequence[str]]] | None = None


@dataclass(frozen=True, slots=True)
class HubMethod:
    target: str
    arguments: tuple[str, ...]
    function: Callable[..., Awaitable[Reply]]


Method = TypeVar("Method", bound=Callable[..., Awaitable[Reply]])


def hub_method(target: str, *, arguments: Sequence[str]) -> Callable[[Method], Method]:
    """Make a coroutine method of a ``Hub`` invocable as ``target``, taking
    ``arguments`` (their names, as error messages give them)."""

    def mark(function: Method) -> Method:
        function.__hub_method__ = (target, tuple(arguments))  # type: ignore[attr-defined]
        return function

    return mark


class Hub:
    """A set of hub methods. Targets match without regard to case, as in ASP.NET Core."""

    methods: ClassVar[dict[str, HubMethod]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods = dict(cls.methods)
        for function in vars(cls).values():
            marked = getattr(function, "__hub_method__", None)
            if marked is not None:
                target, arguments = marked
                methods[target.lower()] = HubMethod(target, arguments, function)
        cls.methods = methods

    async def invoke(self, target: str, arguments: Sequence[Any]) -> Reply:
        method = self.methods.get(target.lower())
        if method is None:
            raise HubError(f"Unknown hub method '{target}'.")
        if len(arguments) != len(method.arguments):
            count = len(method.arguments)
            raise HubError(
                f"{method.target} takes {count} argument{'' if count == 1 else 's'} "
                f"({', '.join(method.arguments)}), got {len(arguments)}."
            )
        return await method.function(self, *arguments)

    async def close(self) -> None:
        """The connection has ended: let go of what it held."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_message_chars: int = 32768
    ping_seconds: float = 15.0
    client_timeout_seconds: float = 30.0
    handshake_timeout_seconds: float = 15.0
    coalesce_seconds: float = 0.02


class KeepAlive(enum.Enum):
    """What keeping a connection alive asks for at a given moment."""

    WAIT = "wait"
    PING = "ping"
    CLOSE_NO_HANDSHAKE = "close: no handshake"
    CLOSE_SILENT_CLIENT = "close: silent client"


class HubSession:
    """The protocol state of one connection: handshake, invocations, outbox, keep-alive."""

    def __init__(
        self,
        *,
        connection_id: str,
        hub: Hub,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        limits: SessionLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection_id = connection_id
        self.hub = hub
        self.limits = limits
        self.handshaken = False
        self.closing = False
        self._send_text = send
        self._close_socket = close
        self._clock = clock
        self._records = RecordBuffer(max_chars=limits.max_message_chars)
        self._outbox: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        # While an invocation is answered (its completion, then what follows it,
        # such as a snapshot), deliveries wait, so a client never sees an update
        # before the snapshot it belongs after.
        self._answering = False
        now = clock()
        self.opened_at = self.last_received = self.last_sent = now

    # --- Incoming -------------------------------------------------------------

    async def receive(self, text: str | None) -> None:
        """Handle one WebSocket message: its text, or None for a binary one."""
        if self.closing:
            return
        self.last_received = self._clock()
        if text is None:
            await self.close_with_error("Binary messages are not supported: this hub speaks JSON.")
            return
        if len(text) > self.limits.max_message_chars:
            await self.close_with_error(
                f"The message is larger than the maximum of {self.limits.max_message_chars} bytes."
            )
            return
        try:
            for record in self._records.feed(text):
                if self.closing:
                    return
                if self.handshaken:
                    await self._handle(protocol.parse_message(record))
                else:
                    await self._handshake(record)
        except ProtocolError as exc:
            logger.info("hub %s: protocol error: %s", self.connection_id, one_line(str(exc)))
            if self.handshaken:
                await self.close_with_error(f"Connection closed with an error. {exc}")
            else:
                await self._send(protocol.handshake_error(str(exc)))
                await self._close()

    async def _handshake(self, record: str) -> None:
        protocol.parse_handshake(record)
        self.handshaken = True
        await self._send(protocol.HANDSHAKE_OK)

    async def _handle(self, message: protocol.HubMessage) -> None:
        if isinstance(message, Invocation):
            await self._invoke(message)
        elif isinstance(message, StreamInvocation):
            await self._send(
                protocol.completion_error(
                    message.invocation_id, "Streaming hub methods are not supported."
                )
            )
        elif isinstance(message, Close):
            await self._close()
        else:
            assert isinstance(message, Ping | Ignored)

    async def _invoke(self, invocation: Invocation) -> None:
        self._answering = True
        try:
            await self._answer(invocation)
        finally:
            self._answering = False
            if self._outbox and self._flush_timer is None:
                self._schedule_flush()

    async def _answer(self, invocation: Invocation) -> None:
        answer = invocation.invocation_id
        try:
            if invocation.stream_ids:
                raise HubError("Client-to-server streaming is not supported.")
            reply = await self.hub.invoke(invocation.target, invocation.arguments)
        except HubError as exc:
            logger.info(
                "hub %s: %s failed: %s",
                self.connection_id,
                quoted(invocation.target),
                one_line(str(exc)),
            )
            if answer is not None:
                await self._send(protocol.completion_error(answer, str(exc)))
            return
        except Exception:
            logger.exception("hub %s: %s raised", self.connection_id, quoted(invocation.target))
            if answer is not None:
                await self._send(
                    protocol.completion_error(
                        answer,
                        f"An unexpected error occurred invoking '{invocation.target}' "
                        "on the server.",
                    )
                )
            return
        if answer is not None:
            await self._send(protocol.completion(answer, result=reply.result))
        if reply.then is None:
            return
        try:
            follow_up = await reply.then()
        except Exception:
            # The client holds a completion it cannot build on; reconnecting starts over.
            logger.exception(
                "hub %s: what follows %s failed", self.connection_id, quoted(invocation.target)
            )
            await self.close_with_error(
                f"The server could not finish '{invocation.target}'; reconnect to try again."
            )
            return
        for message in follow_up:
            await self._send(message)

    # --- Outgoing -------------------------------------------------------------

    def deliver(self, records: str) -> None:
        """Queue records from a watched cell; they go out within the coalescing
        window, several to a WebSocket message."""
        if self.closing or not self.handshaken:
            return
        self._outbox.append(records)
        if self._flush_timer is None and not self._answering:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        self._flush_timer = asyncio.get_running_loop().call_later(
            self.limits.coalesce_seconds, self._start_flush
        )

    @property
    def queued(self) -> int:
        """How many deliveries wait to go out."""
        return len(self._outbox)

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        if self._answering:
            return  # the invocation's end schedules the flush again
        if self._outbox and not self.closing:
            text = "".join(self._outbox)
            self._outbox.clear()
            await self._send(text)

    async def _send(self, text: str) -> None:
        self.last_sent = self._clock()
        try:
            await self._send_text(text)
        except OSError:
            # The client went away mid-send (uvicorn raises ClientDisconnected);
            # the disconnect that follows cleans up.
            self.closing = True

    async def close_with_error(self, error: str) -> None:
        """Tell the client why, then close."""
        logger.info("hub %s: closing: %s", self.connection_id, one_line(error))
        await self._send(protocol.close(error))
        await self._close()

    async def _close(self) -> None:
        if not self.closing:
            self.closing = True
            await self._close_socket()

    def end(self) -> None:
        """The socket is gone: send nothing more and drop what is queued."""
        self.closing = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._outbox.clear()

    # --- Keep-alive -----------------------------------------------------------

    def keepalive_step(self, now: float) -> tuple[KeepAlive, float]:
        """What keeping the connection alive asks for at ``now``, and how many
        seconds until it should be asked again."""
        limits = self.limits
        handshake_due = self.opened_at + limits.handshake_timeout_seconds
        if not self.handshaken and now >= handshake_due:
            return KeepAlive.CLOSE_NO_HANDSHAKE, 0.0
        if now - self.last_received >= limits.client_timeout_seconds:
            return KeepAlive.CLOSE_SILENT_CLIENT, 0.0
        ping_due = self.last_sent + limits.ping_seconds
        if self.handshaken and now >= ping_due:
            # After the ping, the next one is due a whole interval later.
            ping_due = now + limits.ping_seconds
            action = KeepAlive.PING
        else:
            action = KeepAlive.WAIT
        deadlines = [self.last_received + limits.client_timeout_seconds, ping_due]
        if not self.handshaken:
            deadlines.append(handshake_due)
        return action, max(min(deadlines) - now, KEEPALIVE_MIN_SLEEP_SECONDS)

    async def keep_alive(self) -> None:
        """Ping an idle client and close a silent one, until the session closes."""
        try:
            while not self.closing:
                action, wait = self.keepalive_step(self._clock())
                if action is KeepAlive.CLOSE_NO_HANDSHAKE:
                    logger.info("hub %s: no handshake in time; closing", self.connection_id)
                    await self._close()
                    return
                if action is KeepAlive.CLOSE_SILENT_CLIENT:
                    await self.close_with_error(
                        "Server timeout elapsed without receiving a message from the client."
                    )
                    return
                if action is KeepAlive.PING:
                    await self._send(protocol.PING)
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("hub %s: keep-alive failed", self.connection_id)
