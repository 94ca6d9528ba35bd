"""A production-shaped stack for end-to-end tests: daphne over real Redis and
PostgreSQL, and a pysignalr client that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage

from tests import support

HELSINKI_CELL = [24, 60]
NEW_YORK_CELL = [-75, 40]
# What the hub sends about a tracker, each with the tracker's id first.
TRACKER_TARGETS = ("locationUpdated", "geofenceEntered", "geofenceExited")


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    logs: Path

    def consume(self, *args: str, timeout: float = 60) -> str:
        result = support.manage(["consume_events", *args], env=self.env, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr


@contextlib.contextmanager
def running_stack(redis_url: str, logs: Path, **settings: str) -> Iterator[Stack]:
    """A fresh PostgreSQL database, migrated, and daphne serving it over Redis."""
    with support.scratch_postgres_database() as database_url:
        env = support.base_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            CHANNEL_LAYER_PREFIX=f"e2e{uuid.uuid4().hex[:8]}",
            TRACKING_BATCH_WAIT_MS="50",
            **settings,
        )
        migrated = support.manage(["migrate", "-v0"], env=env, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        port = support.free_port()
        with support.background(
            support.daphne_command(port), env=env, log=logs / "daphne.log"
        ) as server:
            support.wait_for_port("127.0.0.1", port, timeout=30, process=server)
            yield Stack(url=f"http://127.0.0.1:{port}", env=env, logs=logs)


class Watcher:
    """A pysignalr client joined to some cells, recording what it receives:
    ``updates`` the ``locationUpdated`` arguments, ``received`` every tracker
    message as ``(target, arguments)``, both in the order they arrived."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None) -> None:
        self.client = SignalRClient(f"{url}/api/signalr", headers=headers)
        self.updates: list[list[Any]] = []
        self.received: list[tuple[str, list[Any]]] = []
        self.completion: asyncio.Future[CompletionMessage] = (
            asyncio.get_running_loop().create_future()
        )
        self.client.on("locationUpdated", self._on_location)
        for target in TRACKER_TARGETS[1:]:
            self.client.on(target, functools.partial(self._on_tracker_message, target))

    async def _on_location(self, arguments: list[Any]) -> None:
        self.updates.append(arguments)
        self.received.append(("locationUpdated", arguments))

    async def _on_tracker_message(self, target: str, arguments: list[Any]) -> None:
        self.received.append((target, arguments))

    async def _on_completion(self, message: Any) -> None:
        if not self.completion.done():
            self.completion.set_result(message)

    async def join(self, cells: list[list[int]]) -> CompletionMessage:
        opened = asyncio.Event()

        async def on_open() -> None:
            opened.set()

        self.client.on_open(on_open)
        self.task = asyncio.create_task(self.client.run())
        await asyncio.wait_for(opened.wait(), timeout=10)
        # pysignalr types arguments as dicts; the hub takes two arrays.
        arguments: Any = [cells, []]
        await self.client.send("updateMapGridGroups", arguments, on_invocation=self._on_completion)
        return await asyncio.wait_for(self.completion, timeout=10)

    async def wait_for(self, tracker_id: str, timeout: float = 5) -> list[Any]:
        return await support.eventually(
            lambda: next((u for u in self.updates if u[0] == tracker_id), None),
            timeout=timeout,
            what=f"a locationUpdated for {tracker_id}",
        )

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


@contextlib.asynccontextmanager
async def watching(
    url: str, cells: list[list[int]], *, headers: dict[str, str] | None = None
) -> AsyncIterator[Watcher]:
    watcher = Watcher(url, headers=headers)
    completion = await watcher.join(cells)
    assert completion.error is None and completion.result is not None
    assert completion.result["cells"] == sorted(cells)
    try:
        yield watcher
    finally:
        await watcher.close()
