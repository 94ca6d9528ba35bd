"""The production shape: daphne and consume_events as separate processes over
real Redis and PostgreSQL, watched by real Python SignalR clients."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.conftest import event_body
from tests.hub_stack import HELSINKI_CELL, NEW_YORK_CELL, Stack, running_stack, watching
from tracking.geofences import parse_geojson_text

HELSINKI_FENCES = support.ROOT / "tracking/geofence_samples/helsinki.geojson"

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("stack")) as running:
        yield running


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
        log = stack.logs / "simulator.log"
        with support.background(simulator, env=stack.env, log=log):
            support.wait_until(
                lambda: len({u[0] for u in received}) >= 3,
                timeout=15,
                what=f"updates of three trackers; the simulator said: {log.read_text()}",
            )
    finally:
        connection.stop()

    assert len({update[0] for update in received}) >= 3, (stack.logs / "simulator.log").read_text()
    # Everything received lies in the joined cell: Helsinki.
    for _tracker, latitude, longitude, _timestamp in received:
        assert 60 <= latitude < 61 and 24 <= longitude < 25


async def test_a_client_sees_a_simulated_tracker_enter_and_leave_a_helsinki_fence(
    stack: Stack,
) -> None:
    imported = support.manage(["import_geofences", str(HELSINKI_FENCES)], env=stack.env)
    assert imported.returncode == 0, imported.stderr
    shown = support.manage(
        ["shell", "-v0", "-c", "from tracking.models import Geofence; "
         "print(Geofence.objects.get(name='Helsinki Station').pk)"],
        env=stack.env,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    station_id = shown.stdout.strip()
    station = next(
        parsed.fence
        for parsed in parse_geojson_text(HELSINKI_FENCES.read_bytes())
        if parsed.name == "Helsinki Station"
    )
    # "Helsinki loop 2" runs 270 m of its 3.6 km through Helsinki Station: at
    # 600 km/h with a report every 0.2 s, one of eight trackers spread round it
    # drives in and out within seconds.
    simulator = [
        support.PYTHON, "manage.py", "consume_events", "--source", "simulator",
        "--routes", "loop 2", "--trackers", "8", "--speed", "600", "--interval", "0.2",
        "--seed", "3",
    ]  # fmt: skip
    log = stack.logs / "fence-simulator.log"

    def through_the_station() -> str | None:
        entered = {a[0] for t, a in watcher.received if t == "geofenceEntered"}
        return next(
            (a[0] for t, a in watcher.received if t == "geofenceExited" and a[0] in entered),
            None,
        )

    async with watching(stack.url, [HELSINKI_CELL]) as watcher:
        with support.background(simulator, env=stack.env, log=log):
            tracker_id = await support.eventually(
                through_the_station,
                timeout=60,
                interval=0.1,
                what=f"a tracker entering and leaving; the simulator said: {log.read_text()}",
            )
    received = list(watcher.received)

    crossings = [
        (index, target, arguments)
        for index, (target, arguments) in enumerate(received)
        if target != "locationUpdated" and arguments[0] == tracker_id
    ]
    first_in = next(n for n, (_, target, _) in enumerate(crossings) if target == "geofenceEntered")
    first_out = next(n for n, (_, target, _) in enumerate(crossings) if target == "geofenceExited")
    assert first_in < first_out
    for index, target, arguments in crossings[first_in : first_out + 1]:
        assert arguments == [tracker_id, station_id]
        # Right after the tracker's locationUpdated (the position that crossed) ...
        before_target, before = received[index - 1]
        assert before_target == "locationUpdated" and before[0] == tracker_id
        # ... which is inside the fence on entry and well outside it on exit.
        distance = station.signed_distance_m(latitude=before[1], longitude=before[2])
        assert distance <= 0 if target == "geofenceEntered" else distance > 40
    # Entered and exited alternate: no repeated entry, no exit without entry.
    targets = [target for _, target, _ in crossings]
    assert all(a != b for a, b in itertools.pairwise(targets)), targets
    assert targets[0] == "geofenceEntered", targets
