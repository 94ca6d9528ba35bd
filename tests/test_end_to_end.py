"""The production shape: daphne and consume_events as separate processes over
real Redis and PostgreSQL, watched by real Python SignalR clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage

from tests import support
from tests.conftest import event_body

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

HELSINKI_CELL = [24, 60]
NEW_YORK_CELL = [-75, 40]


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    logs: Path

    def consume(self, *args: str, timeout: float = 60) -> str:
        result = support.manage(["consume_events", *args], env=self.env, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    with support.scratch_postgres_database() as database_url:
        env = support.base_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            CHANNEL_LAYER_PREFIX=f"e2e{uuid.uuid4().hex[:8]}",
            TRACKING_BATCH_WAIT_MS="50",
        )
        migrated = support.manage(["migrate", "-v0"], env=env, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        port = support.free_port()
        daphne = [
            support.PYTHON,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "tracker_site.asgi:application",
        ]
        with support.background(daphne, env=env, log=logs / "daphne.log") as server:
            support.wait_for_port("127.0.0.1", port, timeout=30, process=server)
            yield Stack(url=f"http://127.0.0.1:{port}", env=env, logs=logs)


class Watcher:
    """A pysignalr client joined to some cells, recording what it receives."""

    def __init__(self, url: str) -> None:
        self.client = SignalRClient(f"{url}/api/signalr")
        self.updates: list[list[Any]] = []
        self.completion: asyncio.Future[CompletionMessage] = (
            asyncio.get_running_loop().create_future()
        )
        self.client.on("locationUpdated", self._on_location)

    async def _on_location(self, arguments: list[Any]) -> None:
        self.updates.append(arguments)

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for update in self.updates:
                if update[0] == tracker_id:
                    return update
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"no locationUpdated for {tracker_id} within {timeout} s; got {self.updates}"
        )

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


@contextlib.asynccontextmanager
async def watching(url: str, cells: list[list[int]]) -> AsyncIterator[Watcher]:
    watcher = Watcher(url)
    completion = await watcher.join(cells)
    assert completion.error is None and completion.result is not None
    assert completion.result["cells"] == sorted(cells)
    try:
        yield watcher
    finally:
        await watcher.close()


async def test_a_client_gets_updates_for_its_cells_and_none_for_others(
    stack: Stack, tmp_path: Path
) -> None:
    helsinki, new_york = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        event_body(tracker_id=helsinki, latitude=60.1699, longitude=24.9384, at=now)
        + b"\n"
        + event_body(tracker_id=new_york, latitude=40.7128, longitude=-74.006, at=now)
        + b"\n"
    )

    async with watching(stack.url, [HELSINKI_CELL]) as watcher:
        await asyncio.to_thread(stack.consume, "--source", "jsonl", "--path", str(path))
        update = await watcher.wait_for(helsinki)
        await asyncio.sleep(0.5)  # room for a stray update to arrive

    tracker_id, latitude, longitude, timestamp = update
    assert (
        isinstance(tracker_id, str) and isinstance(latitude, float) and isinstance(longitude, float)
    )
    assert isinstance(timestamp, int) and not isinstance(timestamp, bool)
    assert (latitude, longitude) == (60.1699, 24.9384)
    assert timestamp == int(now.timestamp() * 1000)
    assert all(update[0] != new_york for update in watcher.updates)

    # A client joining New York later starts with the snapshot of its cell.
    async with watching(stack.url, [NEW_YORK_CELL]) as late:
        snapshot = await late.wait_for(new_york)
    assert snapshot[1:3] == [40.7128, -74.006]
    assert all(update[0] != helsinki for update in late.updates)


def test_a_signalrcore_client_follows_the_live_simulator(stack: Stack) -> None:
    from signalrcore.hub_connection_builder import HubConnectionBuilder

    received: list[list[Any]] = []
    joined = threading.Event()
    opened = threading.Event()
    connection = HubConnectionBuilder().with_url(f"{stack.url}/api/signalr").build()
    connection.on_open(opened.set)
    connection.on("locationUpdated", received.append)
    connection.start()
    try:
        assert opened.wait(10)
        connection.send(
            "updateMapGridGroups", [[HELSINKI_CELL], []], on_invocation=lambda _: joined.set()
        )
        assert joined.wait(10)
        simulator = [
            support.PYTHON, "manage.py", "consume_events", "--source", "simulator",
            "--trackers", "40", "--seed", "11", "--interval", "0.5",
        ]  # fmt: skip
        with support.background(simulator, env=stack.env, log=stack.logs / "simulator.log"):
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and len({u[0] for u in received}) < 3:
                time.sleep(0.1)
    finally:
        connection.stop()

    assert len({update[0] for update in received}) >= 3, (stack.logs / "simulator.log").read_text()
    # Everything received lies in the joined cell: Helsinki.
    for _tracker, latitude, longitude, _timestamp in received:
        assert 60 <= latitude < 61 and 24 <= longitude < 25
