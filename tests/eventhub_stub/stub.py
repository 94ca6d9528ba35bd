"""``EventHubStub``: the stand-in as a Python object, served from a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from .server import Broker, LinkFault, drop_connections, listen
from .store import Hub, StoredEvent

T = TypeVar("T")
_CALL_TIMEOUT = 10.0


def connection_string(*, host: str, port: int, hub: str, key_name: str, key: str) -> str:
    """A connection string the azure-eventhub SDK uses without TLS, on ``port``.

    ``UseDevelopmentEmulator=true`` (lower-case value) is what makes the SDK
    speak plain AMQP and honour the port in the endpoint.
    """
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName={key_name};"
        f"SharedAccessKey={key};EntityPath={hub};UseDevelopmentEmulator=true"
    )


@dataclass(frozen=True)
class StubEndpoint:
    port: int
    connection_string: str


class EventHubStub:
    """A local Event Hubs namespace with one hub, for tests and benchmarks.

    ``start()`` serves it from a daemon thread with its own event loop and
    returns the port and connection string; ``stop()`` drops every connection
    and ends the thread. It is also a context manager. Every other method is
    safe to call from any thread, before or after ``start()``.

    Credentials: clients must sign with ``key_name``/``key`` (the connection
    string's); any other key is answered 401, like the service. Events are kept
    in memory for the stub's lifetime.
    """

    def __init__(
        self,
        *,
        hub: str = "events",
        partitions: int = 4,
        host: str = "127.0.0.1",
        port: int = 0,
        key_name: str = "stub",
        key: str = "stub",
    ) -> None:
        self.host = host
        self._requested_port = port
        self._broker = Broker(Hub(hub, partitions), key_name=key_name, key=key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._endpoint: StubEndpoint | None = None

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> StubEndpoint:
        """Start serving; return once the port is bound. Raises if binding fails."""
        if self._endpoint is not None:
            return self._endpoint
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="eventhub-stub", daemon=True
        )
        self._thread.start()
        port = ready.result(timeout=_CALL_TIMEOUT)
        self._endpoint = StubEndpoint(port, self.connection_string_for())
        return self._endpoint

    def stop(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_CALL_TIMEOUT)
        self._loop = self._thread = self._endpoint = None

    def __enter__(self) -> EventHubStub:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(listen(self._broker, self.host, self._requested_port))
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        self._loop = loop
        ready.set_result(server.sockets[0].getsockname()[1])
        try:
            loop.run_forever()
        finally:
            server.close()
            drop_connections(self._broker)
            # Let the aborted transports report connection_lost before closing.
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    # --- addresses -------------------------------------------------------------

    @property
    def hub(self) -> str:
        return self._broker.hub.name

    @property
    def port(self) -> int:
        return self._require_endpoint().port

    @property
    def connection_string(self) -> str:
        return self._require_endpoint().connection_string

    def connection_string_for(
        self, *, hub: str | None = None, key: str | None = None, key_name: str | None = None
    ) -> str:
        """This stub's connection string, optionally naming another hub or key."""
        if self._loop is None:
            raise RuntimeError("the stub is not started")
        return connection_string(
            host=self.host,
            port=int(self._broker.namespace.rsplit(":", 1)[1]),
            hub=hub if hub is not None else self.hub,
            key_name=key_name if key_name is not None else self._broker.key_name,
            key=key if key is not None else self._broker.key,
        )

    def _require_endpoint(self) -> StubEndpoint:
        if self._endpoint is None:
            raise RuntimeError("the stub is not started")
        return self._endpoint

    # --- inspection and injection ----------------------------------------------

    @property
    def partition_ids(self) -> list[str]:
        return list(self._broker.hub.partitions)

    def events(self, partition_id: str) -> list[StoredEvent]:
        """A snapshot of one partition's events, oldest first."""
        return self._call(lambda: list(self._broker.hub.partitions[partition_id].events))

    def event_counts(self) -> dict[str, int]:
        """Number of events per partition id."""
        return self._call(
            lambda: {pid: len(p.events) for pid, p in self._broker.hub.partitions.items()}
        )

    def inject(
        self,
        partition_id: str,
        *bodies: bytes,
        partition_key: str | None = None,
        application_properties: dict[str, Any] | None = None,
    ) -> list[StoredEvent]:
        """Append events with these exact body bytes (malformed ones welcome).

        Attached consumers receive them as if a producer had sent them.
        """

        def inject() -> list[StoredEvent]:
            events = self._broker.hub.inject(
                partition_id,
                list(bodies),
                partition_key=partition_key,
                application_properties=application_properties,
            )
            self._broker.events_added(partition_id)
            return events

        return self._call(inject)

    def wait_for_events(self, total: int, *, timeout: float) -> None:
        """Block until the hub holds at least ``total`` events; ``TimeoutError`` if not."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the stub is not started")
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._broker.wait_for_total(total), timeout), loop
        )
        future.result()

    @property
    def connection_attempts(self) -> int:
        """TCP connections accepted so far, dropped ones included."""
        return self._broker.connection_attempts

    @property
    def open_consumers(self) -> int:
        """Consumer links attached right now, over all partitions."""
        return self._call(self._broker.consumer_count)

    # --- faults ------------------------------------------------------------------

    @property
    def reject_credentials(self) -> bool:
        return self._broker.reject_credentials

    @reject_credentials.setter
    def reject_credentials(self, reject: bool) -> None:
        """While true, every put-token (and management request) is answered 401."""
        self._broker.reject_credentials = reject

    def fail_next_connections(self, count: int) -> None:
        """Drop the next ``count`` TCP connections as soon as they are accepted."""

        def arm() -> None:
            self._broker.failing_connections = count

        self._call(arm)

    def fail_next_links(
        self,
        count: int,
        *,
        condition: str = "amqp:link:detach-forced",
        description: str = "The link was detached by the stub to test retries.",
    ) -> None:
        """Detach the next ``count`` producer/consumer links with this AMQP error."""

        def arm() -> None:
            self._broker.link_fault = LinkFault(count, condition, description)

        self._call(arm)

    # --- threading ---------------------------------------------------------------

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the stub's loop (its state's only owner) and return its result."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or threading.current_thread() is thread:
            return function()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=_CALL_TIMEOUT)
