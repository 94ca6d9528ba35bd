"""One hub connection's conversation, apart from the socket it runs on; no Django or channels import.

A ``HubSession`` reads what a client sends (the handshake, then invocations,
pings and close, as the JSON hub protocol has them), calls the methods of its
``Hub``, and answers every invocation that carries an id with exactly one
completion. It queues what the fan-out delivers and sends it at most once per
coalescing window, pings a client that hears nothing, and gives up on one
that says nothing. The socket is two callables, ``send`` and ``close``: a
channels consumer in production, plain coroutines in tests.

What a client costs is bounded whatever it does. Invocations run one at a
time, in a queue of their own: at most ``invocations_per_message`` of one
WebSocket message run and a token bucket limits their rate; the rest are
refused with an error completion, and a client that keeps calling past the
rate is closed. A hub method marked ``latest_wins`` (a new view replaces the
one before) replaces a call of it still waiting. Every send goes out one at a
time, each only once the server has written out the one before (as far as
``server_buffered`` can tell); meanwhile deliveries wait in an ``Outbox`` of
bounded size that keeps only the newest position of each tracker, and a send
stalled for ``send_stall_seconds`` cuts the connection off with ``abort``.

A ``Hub`` is the set of methods clients may invoke; each is marked where it
is defined with ``hub_method``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tracking.hub import protocol
from tracking.hub.outbox import Outbox
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
# How often a send waiting for the server to write out the one before looks again.
DRAIN_POLL_SECONDS = 0.05


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
    latest_wins: bool = False


Method = TypeVar("Method", bound=Callable[..., Awaitable[Reply]])


def hub_method(
    target: str, *, arguments: Sequence[str], latest_wins: bool = False
) -> Callable[[Method], Method]:
    """Make a coroutine method of a ``Hub`` invocable as ``target``, taking
    ``arguments`` (their names, as error messages give them). With
    ``latest_wins``, a call that arrives while an earlier one waits to run
    replaces it: the earlier one is answered with an error and never runs."""

    def mark(function: Method) -> Method:
        function.__hub_method__ = (target, tuple(arguments), latest_wins)  # type: ignore[attr-defined]
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
                target, arguments, latest_wins = marked
                methods[target.lower()] = HubMethod(target, arguments, function, latest_wins)
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
    # What may wait for a connection (its outbox), in characters.
    outbox_chars: int = 1_048_576
    # What one WebSocket message sent carries at most, cut between records:
    # below the 64 KiB that the servers' command lines set, which daphne
    # enforces on what it sends too.
    send_chars: int = 60_000
    # A send that has not gone out for this long cuts the connection off.
    send_stall_seconds: float = 30.0
    invocations_per_message: int = 5
    invocations_per_second: float = 5.0
    invocation_burst: int = 20


class KeepAlive(enum.Enum):
    """What keeping a connection alive asks for at a given moment."""

    WAIT = "wait"
    PING = "ping"
    CLOSE_NO_HANDSHAKE = "close: no handshake"
    CLOSE_SILENT_CLIENT = "close: silent client"
    ABORT_STALLED = "abort: sends stalled"


class InvocationBudget:
    """A token bucket of invocations: ``burst`` at once, then ``rate`` a second.

    A refused invocation costs a token too, so a client that keeps calling
    faster than the rate sinks into debt instead of being served whenever a
    token comes back; ``burst`` tokens of debt is abuse.
    """

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend a token; whether the invocation may run."""
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        self.tokens -= 1
        return self.tokens >= 0

    @property
    def abused(self) -> bool:
        return self.tokens <= -self.burst


class HubSession:
    """The protocol state of one connection: handshake, invocations, outbox, keep-alive.

    ``server_buffered``, when the server can tell, is how many bytes it still
    holds for the socket: a send waits until that is nothing, since some
    servers (daphne) accept whatever they are handed. ``abort`` drops the
    socket at once, for a client that no longer reads: a WebSocket close
    would wait behind what it has not read. Without it, ``close`` is used.
    """

    def __init__(
        self,
        *,
        connection_id: str,
        hub: Hub,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        limits: SessionLimits,
        clock: Callable[[], float] = time.monotonic,
        abort: Callable[[], Awaitable[None]] | None = None,
        server_buffered: Callable[[], int] | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.hub = hub
        self.limits = limits
        self.handshaken = False
        # Closing: no more deliveries or invocations; ended: the socket is gone.
        self.closing = False
        self.ended = False
        self._send_text = send
        self._close_socket = close
        self._abort_socket = abort
        self._server_buffered = server_buffered
        self._clock = clock
        self._records = RecordBuffer(max_chars=limits.max_message_chars)
        self._outbox = Outbox(max_chars=limits.outbox_chars)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        # One send at a time; since when the one under way has waited (None: none is).
        self._sending = asyncio.Lock()
        self.sending_since: float | None = None
        self._socket_closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Invocations waiting to run, and the task running them one by one.
        self._pending: deque[Invocation] = deque()
        self._worker: asyncio.Task[None] | None = None
        # While an invocation is answered (its completion, then what follows it,
        # such as a snapshot), deliveries wait, so a client never sees an update
        # before the snapshot it belongs after.
        self._answering = False
        now = clock()
        self._budget = InvocationBudget(
            rate=limits.invocations_per_second, burst=limits.invocation_burst, now=now
        )
        self.opened_at = self.last_received = self.last_sent = now

    # --- Incoming -------------------------------------------------------------

    async def receive(self, text: str | None) -> None:
        """Handle one WebSocket message: its text, or None for a binary one.

        Invocations are queued, not awaited: ``answered`` waits for them."""
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
        invocations = 0
        try:
            for record in self._records.feed(text):
                if self.closing:
                    return
                if not self.handshaken:
                    await self._handshake(record)
                    continue
                message = protocol.parse_message(record)
                if isinstance(message, Invocation | StreamInvocation):
                    invocations += 1
                    if not await self._admit(message, invocations):
                        continue
                await self._handle(message)
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

    async def _admit(self, message: Invocation | StreamInvocation, number: int) -> bool:
        """Whether the ``number``th invocation of a message may go on; a refused
        one is answered here, and a client that keeps being refused is closed."""
        limits = self.limits
        within_rate = self._budget.take(self._clock())
        if within_rate and number <= limits.invocations_per_message:
            return True
        if self._budget.abused:
            logger.warning(
                "hub %s: closing: invocations far past %g a second",
                self.connection_id,
                limits.invocations_per_second,
            )
            await self.close_with_error(
                f"Connection closed with an error. Too many invocations: at most "
                f"{limits.invocations_per_second:g} a second are allowed."
            )
        elif message.invocation_id is not None:
            error = (
                f"Too many invocations: at most {limits.invocations_per_second:g} a second "
                "are allowed; slow down."
                if not within_rate
                else f"A message may carry at most {limits.invocations_per_message} "
                "invocations; send the others in later messages."
            )
            await self._send(protocol.completion_error(message.invocation_id, error))
        return False

    async def _handle(self, message: protocol.HubMessage) -> None:
        if isinstance(message, Invocation):
            await self._queue_invocation(message)
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

    async def _queue_invocation(self, invocation: Invocation) -> None:
        method = self.hub.methods.get(invocation.target.lower())
        if method is not None and method.latest_wins:
            earlier = next(
                (p for p in self._pending if p.target.lower() == invocation.target.lower()), None
            )
            if earlier is not None:
                self._pending.remove(earlier)
                if earlier.invocation_id is not None:
                    await self._send(
                        protocol.completion_error(
                            earlier.invocation_id,
                            f"Replaced by a later {method.target} call before it ran.",
                        )
                    )
        if len(self._pending) >= self.limits.invocation_burst:
            if invocation.invocation_id is not None:
                await self._send(
                    protocol.completion_error(
                        invocation.invocation_id,
                        "The server is still answering this connection's earlier "
                        "invocations; try again.",
                    )
                )
            return
        self._pending.append(invocation)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._pending and not self.closing:
                await self._invoke(self._pending.popleft())
        except Exception:
            # Nobody awaits this task: a failure is logged here, not left for
            # asyncio to report when the task is collected.
            logger.exception("hub %s: answering invocations failed", self.connection_id)

    @property
    def waiting_invocations(self) -> int:
        return len(self._pending)

    async def answered(self) -> None:
        """Wait until every invocation received so far has been answered."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    async def _invoke(self, invocation: Invocation) -> None:
        self._answering = True
        try:
            await self._answer(invocation)
        finally:
            self._answering = False
            if self._outbox:
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
        completion = "" if answer is None else protocol.completion(answer, result=reply.result)
        if reply.then is None or self.closing:
            if completion:
                await self._send(completion)
            return
        try:
            follow_up = list(await reply.then())
        except Exception:
            # The client holds a completion it cannot build on; reconnecting starts over.
            logger.exception(
                "hub %s: what follows %s failed", self.connection_id, quoted(invocation.target)
            )
            if completion:
                await self._send(completion)
            await self.close_with_error(
                f"The server could not finish '{invocation.target}'; reconnect to try again."
            )
            return
        # The completion and the first message after it go out as one WebSocket
        # message (records are self-delimiting): one send less per join.
        if follow_up:
            follow_up[0] = completion + follow_up[0]
        elif completion:
            follow_up = [completion]
        for message in follow_up:
            await self._send(message)

    # --- Outgoing -------------------------------------------------------------

    def deliver(self, records: str) -> None:
        """Queue records from a watched cell; they go out within the coalescing
        window, several to a WebSocket message, or, while the client is behind,
        as the newest position of each tracker once it has caught up."""
        if self.closing or not self.handshaken:
            return
        behind = self.sending_since is not None or self._answering
        if not self._outbox.add(records, behind=behind):
            waiting = self._outbox.chars
            self._outbox.clear()
            logger.warning(
                "hub %s: closing: the client is not keeping up; %d characters waited for it, "
                "more than HUB_OUTBOX_BYTES (%d)",
                self.connection_id,
                waiting,
                self.limits.outbox_chars,
            )
            error = (
                "The connection could not keep up with the updates of its map cells; "
                "reconnect to start again from the latest positions."
            )
            self._stop(error)
            self._in_background(self._say_why(error))
            return
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self.closing:
            return
        if self._flush_timer is None and self._flushing is None and not self._answering:
            self._flush_timer = asyncio.get_running_loop().call_later(
                self.limits.coalesce_seconds, self._start_flush
            )

    @property
    def queued(self) -> int:
        """How many deliveries (or, while the client is behind, records) wait to go out."""
        return len(self._outbox)

    @property
    def queued_chars(self) -> int:
        return self._outbox.chars

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Send what waits: one flush at a time; what arrives meanwhile waits for the next."""
        try:
            if self._outbox and not self.closing and not self._answering:
                for text in protocol.split_records(self._outbox.take(), self.limits.send_chars):
                    await self._send(text)
        finally:
            self._flushing = None
            if self._outbox and not self.closing:
                self._schedule_flush()

    def _queue_ping(self) -> None:
        self.last_sent = self._clock()
        self._outbox.add(protocol.PING, behind=self.sending_since is not None)
        self._schedule_flush()

    async def _send(self, text: str) -> None:
        await self._one_at_a_time(self._send_text, text)

    async def _one_at_a_time(self, action: Callable[..., Awaitable[None]], *args: str) -> None:
        """Hand something to the server once whatever went before has gone out."""
        async with self._sending:
            if self.ended or (self._socket_closed and action != self._close_socket):
                return  # nothing goes out after the close (the server would raise)
            self.sending_since = self._clock()
            try:
                if self._server_buffered is not None:
                    # Polled: no server says when its buffer drains.
                    while self._server_buffered() > 0 and not self.ended:  # noqa: ASYNC110
                        await asyncio.sleep(DRAIN_POLL_SECONDS)
                    if self.ended:
                        return
                self.last_sent = self._clock()
                await action(*args)
            except OSError:
                # The client went away mid-send (uvicorn raises ClientDisconnected);
                # the disconnect that follows cleans up.
                self.closing = True
            finally:
                self.sending_since = None

    async def close_with_error(self, error: str) -> None:
        """Tell the client why, then close."""
        if self.closing:
            return
        self._stop(error)
        await self._say_why(error)

    def _stop(self, error: str) -> None:
        """Take nothing more in: the connection is closing, for ``error``."""
        logger.info("hub %s: closing: %s", self.connection_id, one_line(error))
        self.closing = True
        self._drop_queued()

    async def _say_why(self, error: str) -> None:
        await self._send(protocol.close(error))
        await self._close()

    async def _close(self) -> None:
        self.closing = True
        if not self._socket_closed:
            self._socket_closed = True
            self._drop_queued()
            await self._one_at_a_time(self._close_socket)

    async def _abort(self) -> None:
        self.closing = True
        self._drop_queued()
        abort = self._abort_socket or self._close_socket
        try:
            await abort()
        except Exception:
            logger.exception("hub %s: could not drop the connection", self.connection_id)

    def _drop_queued(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._outbox.clear()
        self._pending.clear()

    def _in_background(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def end(self) -> None:
        """The socket is gone: send nothing more and drop what is queued. The
        invocation under way, if any, runs to its end: see ``wound_down``."""
        self.closing = True
        self.ended = True
        self._drop_queued()
        for task in (self._flushing, *self._tasks):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()

    async def wound_down(self, *, patience: float) -> None:
        """Wait for the invocation under way to finish, after ``end``: cancelled
        half-way, a hub method could leave the fan-out holding what its hub
        never learnt it holds. After ``patience`` seconds it is cancelled all the same."""
        worker = self._worker
        if worker is None or worker.done() or worker is asyncio.current_task():
            return
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(worker), patience)
        if not worker.done():
            worker.cancel()

    # --- Keep-alive -----------------------------------------------------------

    def keepalive_step(self, now: float) -> tuple[KeepAlive, float]:
        """What keeping the connection alive asks for at ``now``, and how many
        seconds until it should be asked again."""
        limits = self.limits
        deadlines = []
        if self.sending_since is not None:
            stall_due = self.sending_since + limits.send_stall_seconds
            if now >= stall_due:
                return KeepAlive.ABORT_STALLED, 0.0
            deadlines.append(stall_due)
        if self.closing:
            deadlines.append(now + limits.send_stall_seconds)
            return KeepAlive.WAIT, max(min(deadlines) - now, KEEPALIVE_MIN_SLEEP_SECONDS)
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
        deadlines += [self.last_received + limits.client_timeout_seconds, ping_due]
        if not self.handshaken:
            deadlines.append(handshake_due)
        return action, max(min(deadlines) - now, KEEPALIVE_MIN_SLEEP_SECONDS)

    async def keep_alive(self) -> None:
        """Ping an idle client, close a silent one and cut off one that stopped
        reading, until the socket is gone. It never waits for a send itself:
        closes go out in the background, so a stalled one is still seen."""
        try:
            while not self.ended:
                action, wait = self.keepalive_step(self._clock())
                if action is KeepAlive.ABORT_STALLED:
                    assert self.sending_since is not None
                    logger.warning(
                        "hub %s: closing: nothing could be sent for %.0f s "
                        "(HUB_SEND_STALL_SECONDS); the client is not reading",
                        self.connection_id,
                        self._clock() - self.sending_since,
                    )
                    await self._abort()
                    return
                if action is KeepAlive.CLOSE_NO_HANDSHAKE:
                    logger.info("hub %s: no handshake in time; closing", self.connection_id)
                    self._in_background(self._close())
                elif action is KeepAlive.CLOSE_SILENT_CLIENT:
                    self._in_background(
                        self.close_with_error(
                            "Server timeout elapsed without receiving a message from the client."
                        )
                    )
                elif action is KeepAlive.PING:
                    self._queue_ping()
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("hub %s: keep-alive failed", self.connection_id)
