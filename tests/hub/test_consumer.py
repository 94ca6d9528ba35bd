from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from tests.conftest import event_body
from tracker_site.asgi import application
from tracking.grid import Cell
from tracking.hub.publishing import publish_locations
from tracking.hub.tokens import new_connection
from tracking.ingest.pipeline import Pipeline
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.positions import LatestPosition

pytestmark = pytest.mark.django_db(transaction=True)

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
ORIGIN = (b"origin", b"http://localhost")


class Client:
    """A hub connection driven record by record."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.next_id = 0
        # The records that came after a completion in its message (a snapshot).
        self.held = ""

    async def send(self, *records: dict[str, Any] | str) -> None:
        text = "".join(r if isinstance(r, str) else orjson.dumps(r).decode() + RS for r in records)
        await self.communicator.send_to(text_data=text)

    async def receive_text(self, timeout: float = 2) -> str:
        """The text of the next WebSocket message, or what was left of the last
        one after the completion ``invoke`` returned."""
        text, self.held = self.held, ""
        return text or await self.communicator.receive_from(timeout=timeout)

    async def receive_message(self, timeout: float = 2) -> list[dict[str, Any]]:
        """The records of the next WebSocket message (or of what is left of one)."""
        text = await self.receive_text(timeout)
        assert text.endswith(RS), text
        return [orjson.loads(part) for part in text.split(RS)[:-1]]

    async def receive_records(self, count: int, timeout: float = 2) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        while len(records) < count:
            records += [r for r in await self.receive_message(timeout) if r.get("type") != 6]
        return records

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        # receive_nothing, unlike a receive that times out, leaves the app running.
        return not self.held and bool(await self.communicator.receive_nothing(timeout))

    async def invoke(self, target: str, *arguments: Any) -> dict[str, Any]:
        """Call ``target`` and return its completion; what follows the completion
        in its message waits for the next receive."""
        self.next_id += 1
        invocation_id = str(self.next_id)
        await self.send(
            {
                "type": 1,
                "invocationId": invocation_id,
                "target": target,
                "arguments": list(arguments),
            }
        )
        while True:
            parts = (await self.receive_text()).split(RS)[:-1]
            for index, part in enumerate(parts):
                record = orjson.loads(part)
                if record.get("type") == 3 and record["invocationId"] == invocation_id:
                    self.held = "".join(p + RS for p in parts[index + 1 :])
                    return record

    async def join(
        self, new: list[list[int]], previous: list[list[int]] | None = None
    ) -> dict[str, Any]:
        return await self.invoke("updateMapGridGroups", new, previous or [])


async def open_hub(
    path: str = "/api/signalr", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(
        application, path, headers=[ORIGIN] if headers is None else headers
    )
    connected, _ = await communicator.connect()
    return communicator, connected


@contextlib.asynccontextmanager
async def connected_client() -> AsyncIterator[Client]:
    """A connection past its handshake; its limits are the settings in force now."""
    communicator, connected = await open_hub()
    assert connected
    hub = Client(communicator)
    await hub.send(HANDSHAKE)
    assert await hub.receive_message() == [{}]
    try:
        yield hub
    finally:
        await communicator.disconnect()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with connected_client() as hub:
        yield hub


def position(
    cell: Cell, *, latitude: float, longitude: float, tracker_id: uuid.UUID | None = None
) -> LatestPosition:
    return LatestPosition(
        tracker_id=tracker_id or uuid.uuid4(),
        latitude=latitude,
        longitude=longitude,
        timestamp=datetime(2026, 11, 26, 11, 0, tzinfo=__import__("datetime").UTC),
        cell=cell,
    )


# --- Handshake --------------------------------------------------------------------


async def test_a_client_completes_the_handshake(client: Client) -> None:
    assert await client.nothing_more()


async def test_a_bad_handshake_gets_an_error_and_the_connection_closes() -> None:
    communicator, _ = await open_hub()
    await communicator.send_to(text_data='{"protocol":"messagepack","version":1}' + RS)
    assert orjson.loads((await communicator.receive_from()).rstrip(RS)) == {
        "error": "Requested protocol 'messagepack' is not available."
    }
    assert (await communicator.receive_output())["type"] == "websocket.close"


async def test_a_handshake_that_is_not_json_gets_an_error() -> None:
    communicator, _ = await open_hub()
    await communicator.send_to(text_data="hello" + RS)
    assert "error" in orjson.loads((await communicator.receive_from()).rstrip(RS))
    assert (await communicator.receive_output())["type"] == "websocket.close"


async def test_the_handshake_and_an_invocation_may_share_one_message() -> None:
    communicator, _ = await open_hub()
    hub = Client(communicator)
    invocation = {
        "type": 1,
        "invocationId": "1",
        "target": "updateMapGridGroups",
        "arguments": [[[24, 60]], []],
    }
    await hub.send(HANDSHAKE, invocation)
    records = await hub.receive_records(2)
    assert records[0] == {}
    assert records[1]["invocationId"] == "1" and "result" in records[1]
    await communicator.disconnect()


async def test_a_client_that_never_shakes_hands_is_closed() -> None:
    with override_settings(HUB_HANDSHAKE_TIMEOUT_SECONDS=0.2):
        communicator, _ = await open_hub()
        assert (await communicator.receive_output(timeout=2))["type"] == "websocket.close"


# --- Malformed and hostile input ----------------------------------------------------------


async def test_a_malformed_record_closes_with_an_error(client: Client) -> None:
    await client.send("{not json" + RS)
    [close] = await client.receive_message()
    assert close["type"] == 7 and "not valid JSON" in close["error"]
    assert (await client.communicator.receive_output())["type"] == "websocket.close"


async def test_a_binary_message_closes_with_an_error(client: Client) -> None:
    await client.communicator.send_to(bytes_data=b"\x91\x01")
    [close] = await client.receive_message()
    assert close["type"] == 7 and "Binary" in close["error"]


async def test_an_oversized_message_closes_with_an_error() -> None:
    with override_settings(HUB_MAX_MESSAGE_BYTES=1024):
        async with connected_client() as client:
            await client.send(
                {"type": 1, "target": "updateMapGridGroups", "arguments": [[[0, 0]] * 300, []]}
            )
            [close] = await client.receive_message()
    assert close["type"] == 7 and "larger than the maximum" in close["error"]


async def test_an_unknown_target_gets_an_error_completion(client: Client) -> None:
    completion = await client.invoke("sendToEveryone", "hi")
    assert completion["error"] == "Unknown hub method 'sendToEveryone'."
    # The connection goes on.
    assert "result" in await client.join([[24, 60]])


async def test_an_unknown_target_without_an_invocation_id_is_ignored(client: Client) -> None:
    await client.send({"type": 1, "target": "nope", "arguments": []})
    assert await client.nothing_more()


async def test_a_streaming_invocation_is_refused_with_a_completion(client: Client) -> None:
    await client.send(
        {"type": 4, "invocationId": "s1", "target": "updateMapGridGroups", "arguments": []}
    )
    [completion] = await client.receive_records(1)
    assert completion["invocationId"] == "s1" and "not supported" in completion["error"]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ([], "takes 2 arguments"),
        ([[[24, 60]]], "takes 2 arguments"),
        (["24,60", []], "newGridNumbers must be an array"),
        ([[[24.5, 60]], []], "pairs of integers"),
        ([[[24, 60, 1]], []], "pairs of integers"),
        ([[[180, 60]], []], "outside the grid"),
        ([[[0, 90]], []], "outside the grid"),
        ([[[24, 60]], "x"], "previousGridNumbers must be an array"),
        ([[[x, 0] for x in range(51)], []], "51 cells, more than the 50"),
    ],
)
async def test_bad_grid_numbers_get_an_error_completion_and_join_nothing(
    client: Client, arguments: list[Any], error: str
) -> None:
    completion = await client.invoke("updateMapGridGroups", *arguments)
    assert error in completion["error"]
    assert (await client.join([]))["result"]["cells"] == []


async def test_every_invocation_with_an_id_gets_exactly_one_completion(client: Client) -> None:
    invocations: list[dict[str, Any]] = [
        {
            "type": 1,
            "invocationId": "a",
            "target": "updateMapGridGroups",
            "arguments": [[[24, 60]], []],
        },
        {"type": 1, "invocationId": "b", "target": "unknown", "arguments": []},
        {
            "type": 1,
            "invocationId": "c",
            "target": "updateMapGridGroups",
            "arguments": [[[999, 0]], []],
        },
        {"type": 1, "target": "updateMapGridGroups", "arguments": [[[25, 60]], []]},
        {"type": 6},
        {
            "type": 1,
            "invocationId": "d",
            "target": "UpdateMapGridGroups",
            "arguments": [[], [[24, 60]]],
        },
    ]
    await client.send(*invocations)
    records = await client.receive_records(4)
    assert await client.nothing_more()
    completions = {r["invocationId"]: r for r in records}
    assert sorted(completions) == ["a", "b", "c", "d"] and len(records) == 4
    assert "Unknown hub method" in completions["b"]["error"]
    # Each view change replaced the one before it while that one waited to run
    # (the call without an id too, silently): only the last one ran.
    for replaced in ("a", "c"):
        assert completions[replaced]["error"] == (
            "Replaced by a later updateMapGridGroups call before it ran."
        )
    assert completions["d"]["result"] == {"joined": [], "left": [], "cells": []}


# --- Limits ------------------------------------------------------------------------------


@pytest.fixture
def snapshot_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The database reads of join snapshots, as they happen."""
    from tracking.hub import consumer

    reads: list[object] = []
    read = consumer.latest_positions_in_cells

    def counted(*, cells: Any, **more: Any) -> Any:
        reads.append(cells)
        return read(cells=cells, **more)

    monkeypatch.setattr(consumer, "latest_positions_in_cells", counted)
    return reads


def join_and_leave_pairs(count: int) -> list[dict[str, Any]]:
    """``count`` pairs of invocations, each joining a cell and leaving it again."""
    return [
        {
            "type": 1,
            "invocationId": f"{kind}{x}",
            "target": "updateMapGridGroups",
            "arguments": [[[x, 0]], []] if kind == "j" else [[], [[x, 0]]],
        }
        for x in range(count)
        for kind in ("j", "l")
    ]


async def test_one_message_of_hundreds_of_joins_and_leaves_reads_a_handful_and_is_closed(
    client: Client, snapshot_reads: list[object]
) -> None:
    await client.send(*join_and_leave_pairs(150))  # 27 KiB, within HUB_MAX_MESSAGE_BYTES
    said: list[dict[str, Any]] = []
    while not said or said[-1].get("type") != 7:
        said += await client.receive_message()
    assert (await client.communicator.receive_output())["type"] == "websocket.close"
    assert said[-1]["error"] == (
        "Connection closed with an error. Too many invocations: at most 5 a second are allowed."
    )
    assert len(snapshot_reads) <= 5
    refused = [r for r in said if "at most 5 invocations" in r.get("error", "")]
    assert refused and all(r["type"] == 3 for r in refused)


async def test_connections_past_the_cap_of_a_process_are_closed_saying_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tracking.hub.consumer import connections

    async with connected_client():
        with override_settings(HUB_MAX_CONNECTIONS=len(connections.open)):
            communicator, connected = await open_hub()
            assert connected
            closed = await communicator.receive_output()
    assert closed["type"] == "websocket.close" and closed["code"] == 1013
    assert "limit of" in closed["reason"] and "try again later" in closed["reason"]
    assert "HUB_MAX_CONNECTIONS" in caplog.text
    # Below the cap again, a connection is served.
    async with connected_client() as served:
        assert "result" in await served.join([[24, 60]])


# --- Groups ------------------------------------------------------------------------------


async def test_joining_reports_what_was_joined_and_left(client: Client) -> None:
    first = await client.join([[24, 60], [25, 60]])
    assert first["result"] == {
        "joined": [[24, 60], [25, 60]],
        "left": [],
        "cells": [[24, 60], [25, 60]],
    }
    second = await client.join([[25, 60], [26, 60]], [[24, 60], [25, 60]])
    assert second["result"] == {
        "joined": [[26, 60]],
        "left": [[24, 60]],
        "cells": [[25, 60], [26, 60]],
    }


async def test_a_cell_listed_as_previous_but_never_joined_is_joined(client: Client) -> None:
    # After a reconnect a client may list its old cells as previous.
    completion = await client.join([[24, 60]], [[24, 60]])
    assert completion["result"]["joined"] == [[24, 60]]


async def test_more_cells_than_allowed_in_all_is_refused() -> None:
    with override_settings(TRACKING_MAX_CELLS_PER_CONNECTION=2):
        async with connected_client() as client:
            await client.join([[0, 0], [1, 0]])
            completion = await client.join([[2, 0]])
            assert "3 cells" in completion["error"]
            assert (await client.join([]))["result"]["cells"] == [[0, 0], [1, 0]]


async def test_updates_reach_the_cells_joined_and_no_others(client: Client) -> None:
    await client.join([[24, 60]])
    inside = position(Cell(24, 60), latitude=60.17, longitude=24.94)
    outside = position(Cell(-75, 40), latitude=40.7, longitude=-74.01)
    await publish_locations([outside, inside])

    [record] = await client.receive_records(1)
    assert record == {
        "type": 1,
        "target": "locationUpdated",
        "arguments": [str(inside.tracker_id), 60.17, 24.94, 1795690800000],
    }
    assert await client.nothing_more()


async def test_a_cell_left_receives_nothing_more(client: Client) -> None:
    await client.join([[24, 60]])
    await client.join([], [[24, 60]])
    await publish_locations([position(Cell(24, 60), latitude=60.17, longitude=24.94)])
    assert await client.nothing_more()


async def test_updates_arriving_together_go_out_in_one_message(client: Client) -> None:
    await client.join([[24, 60], [25, 60]])
    await publish_locations([position(Cell(24, 60), latitude=60.1, longitude=24.1)])
    await publish_locations([position(Cell(25, 60), latitude=60.2, longitude=25.2)])
    records = await client.receive_message()
    assert [r["target"] for r in records] == ["locationUpdated", "locationUpdated"]


async def test_every_tracker_that_moved_in_a_batch_reaches_the_viewers_of_its_cell(
    client: Client, now: datetime
) -> None:
    """Three trackers move in one cell in one batch: the viewer sees all three,
    each at its own newest position of the batch."""
    await client.join([[24, 60]])
    trackers = [uuid.uuid4() for _ in range(3)]
    bodies = [
        event_body(tracker_id=tracker, latitude=latitude, longitude=24.9, at=now)
        for tracker, latitude in zip(trackers, [60.1, 60.11, 60.12], strict=True)
    ]
    bodies.append(
        event_body(
            tracker_id=trackers[0], latitude=60.5, longitude=24.5, at=now - timedelta(seconds=1)
        )
    )
    pipeline = Pipeline(publish=publish_locations)
    try:
        await pipeline.process([RawEvent(body=body, origin="t") for body in bodies])
    finally:
        await pipeline.close()
    records = await client.receive_records(3)
    assert {r["arguments"][0]: r["arguments"][1] for r in records} == {
        str(trackers[0]): 60.1,
        str(trackers[1]): 60.11,
        str(trackers[2]): 60.12,
    }
    assert await client.nothing_more()


async def test_joining_sends_the_latest_positions_in_the_new_cells(
    client: Client, now: datetime
) -> None:
    helsinki, tampere, sydney = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [
        event_body(
            tracker_id=helsinki, latitude=60.17, longitude=24.94, at=now - timedelta(seconds=5)
        ),
        event_body(tracker_id=helsinki, latitude=60.18, longitude=24.95, at=now),
        event_body(tracker_id=tampere, latitude=61.49, longitude=23.76, at=now),
        event_body(tracker_id=sydney, latitude=-33.86, longitude=151.21, at=now),
    ]
    await database_sync_to_async(ingest_batch)(
        events=[RawEvent(body=b, origin="t") for b in events], now=now
    )

    completion = await client.join([[24, 60], [23, 61]])
    assert "result" in completion
    snapshot = await client.receive_records(2)
    by_tracker = {r["arguments"][0]: r["arguments"][1:] for r in snapshot}
    assert by_tracker == {
        str(helsinki): [60.18, 24.95, int(now.timestamp() * 1000)],
        str(tampere): [61.49, 23.76, int(now.timestamp() * 1000)],
    }
    # Joining a cell already held sends no second snapshot.
    await client.join([[24, 60], [23, 61]], [[24, 60], [23, 61]])
    assert await client.nothing_more()


async def test_joining_leaves_out_the_trackers_offline_when_it_answers(
    now: datetime, snapshot_reads: list[object]
) -> None:
    """No ghosts: a tracker whose latest position is older than
    TRACKING_OFFLINE_SECONDS is not in a joiner's snapshot, whether the cell
    is read from the database or answered from what the process keeps (by
    each record's age when the join is answered); a stale one is; and an
    offline one that reports again is back."""
    online, stale, offline = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    offline_seconds = 900
    ages = {online: 0, stale: offline_seconds - 60, offline: offline_seconds + 1}
    events = [
        event_body(
            tracker_id=tracker, latitude=60.17, longitude=24.94, at=now - timedelta(seconds=age)
        )
        for tracker, age in ages.items()
    ]
    await database_sync_to_async(ingest_batch)(
        events=[RawEvent(body=b, origin="t") for b in events], now=now
    )

    async def snapshot(hub: Client) -> set[str]:
        assert "result" in await hub.join([[24, 60]])
        records: list[dict[str, Any]] = []
        while not await hub.nothing_more():
            records += await hub.receive_records(1)
        return {r["arguments"][0] for r in records}

    async def a_new_viewers_snapshot() -> set[str]:
        async with connected_client() as viewer:
            return await snapshot(viewer)

    async with connected_client() as watcher:  # keeps the cell watched, so its snapshot is kept
        with override_settings(TRACKING_OFFLINE_SECONDS=offline_seconds):
            assert await snapshot(watcher) == {str(online), str(stale)}
            assert await a_new_viewers_snapshot() == {str(online), str(stale)}
        # The stale tracker's age passes the threshold after the cell was read.
        with override_settings(TRACKING_OFFLINE_SECONDS=offline_seconds - 120):
            assert await a_new_viewers_snapshot() == {str(online)}
        assert len(snapshot_reads) == 1  # the later joins were answered from memory

        later = datetime.now(UTC)
        body = event_body(tracker_id=offline, latitude=60.18, longitude=24.95, at=later)
        stored = await database_sync_to_async(ingest_batch)(
            events=[RawEvent(body=body, origin="t")], now=later
        )
        await publish_locations(stored.moved)
        [update] = await watcher.receive_records(1)
        assert update["arguments"][0] == str(offline)
        with override_settings(TRACKING_OFFLINE_SECONDS=offline_seconds):
            assert await a_new_viewers_snapshot() == {str(online), str(stale), str(offline)}


# --- Keep-alive ----------------------------------------------------------------------------


async def test_the_server_pings_an_idle_client() -> None:
    with override_settings(HUB_PING_SECONDS=0.2):
        communicator, _ = await open_hub()
        hub = Client(communicator)
        await hub.send(HANDSHAKE)
        assert await hub.receive_message() == [{}]
        assert await hub.receive_message(timeout=2) == [{"type": 6}]
        await communicator.disconnect()


async def test_a_silent_client_is_closed_with_an_error() -> None:
    with override_settings(HUB_CLIENT_TIMEOUT_SECONDS=1, HUB_PING_SECONDS=5):
        communicator, _ = await open_hub()
        hub = Client(communicator)
        await hub.send(HANDSHAKE)
        assert await hub.receive_message() == [{}]
        [close] = await hub.receive_message(timeout=3)
    assert close["type"] == 7 and "timeout" in close["error"]


async def test_a_close_message_from_the_client_closes_the_connection(client: Client) -> None:
    await client.send({"type": 7})
    assert (await client.communicator.receive_output())["type"] == "websocket.close"


# --- Who may connect --------------------------------------------------------------------------


async def test_a_negotiated_connection_token_is_accepted() -> None:
    _, token = new_connection()
    communicator, connected = await open_hub(f"/api/signalr?id={token}")
    assert connected
    await communicator.disconnect()


async def test_a_forged_connection_token_is_refused() -> None:
    _, connected = await open_hub("/api/signalr?id=forged:token")
    assert not connected


async def test_a_page_from_another_site_is_refused() -> None:
    _, connected = await open_hub(headers=[(b"origin", b"https://evil.example")])
    assert not connected


async def test_a_client_outside_a_browser_sends_no_origin_and_is_accepted() -> None:
    communicator, connected = await open_hub(headers=[])
    assert connected
    await communicator.disconnect()


async def test_a_signed_out_client_is_refused_when_the_map_is_not_public() -> None:
    with override_settings(MAP_PUBLIC=False):
        _, connected = await open_hub()
    assert not connected


# --- Over Redis --------------------------------------------------------------------------------


@pytest.mark.redis
async def test_updates_reach_a_client_through_redis(redis_fanout: str) -> None:
    communicator, connected = await open_hub()
    assert connected
    hub = Client(communicator)
    await hub.send(HANDSHAKE)
    await hub.receive_message()
    await hub.join([[-75, 40]])
    inside = position(Cell(-75, 40), latitude=40.7, longitude=-74.01)
    await publish_locations([inside, position(Cell(24, 60), latitude=60.1, longitude=24.1)])
    [record] = await hub.receive_records(1, timeout=5)
    assert record["arguments"][:3] == [str(inside.tracker_id), 40.7, -74.01]
    assert await hub.nothing_more()
    await communicator.disconnect()


# What someone else writing to the Redis channels of the map might put there.
JUNK_BYTES = [b"\xff\xfe not UTF-8", b"not a record", b'{"type":1}\x1e', b"[1]\x1e", b"\x1e"]
JUNK_LAYER_MESSAGES = [
    {"type": "hub.records", "records": 5},
    {"type": "hub.records", "records": "junk"},
    {"type": "something.else"},
]


@pytest.mark.redis
async def test_junk_on_redis_is_skipped_and_the_next_update_still_arrives(
    redis_fanout: str, redis_url: str
) -> None:
    import redis.asyncio as aioredis
    from channels.layers import get_channel_layer

    from tracking.hub.fanout import get_fanout

    sent = 0
    async with connected_client() as hub:
        await hub.join([[24, 60]])
        fanout = get_fanout()
        server = aioredis.Redis.from_url(redis_url)
        if redis_fanout == "cells":
            for junk in JUNK_BYTES:
                sent += await server.publish(fanout.channel(Cell(24, 60)), junk)  # type: ignore[attr-defined]
        else:
            layer = get_channel_layer()
            for message in JUNK_LAYER_MESSAGES:
                await layer.group_send("cell.24.60", message)
                sent += 1
            if redis_fanout == "channel-layer-pubsub":
                for junk in JUNK_BYTES:
                    channel = layer._get_group_channel_name("cell.24.60")
                    sent += await server.publish(channel, junk)
        await server.aclose()
        inside = position(Cell(24, 60), latitude=60.1, longitude=24.9)
        await publish_locations([inside])
        [record] = await hub.receive_records(1, timeout=5)
        assert record["arguments"][0] == str(inside.tracker_id)
        assert await hub.nothing_more()
        assert sent >= len(JUNK_LAYER_MESSAGES)
        assert fanout.skipped.count == sent  # type: ignore[attr-defined]


async def test_viewers_of_the_default_fan_out_hold_one_redis_subscription_per_cell(
    redis_url: str,
) -> None:
    """30 viewers of two cells: two Redis channels, and none per connection (as
    channels would make for each consumer that names a channel layer)."""
    import redis.asyncio as aioredis

    prefix = f"test-{uuid.uuid4().hex[:10]}"
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    server = aioredis.Redis.from_url(redis_url, decode_responses=True)
    with override_settings(
        REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT="cells", CHANNEL_LAYERS=layers
    ):
        async with contextlib.AsyncExitStack() as stack:
            viewers = [await stack.enter_async_context(connected_client()) for _ in range(30)]
            for number, viewer in enumerate(viewers):
                assert "result" in await viewer.join([[24, 60]] if number % 2 else [[-75, 40]])
            channels = sorted(await server.pubsub_channels(f"{prefix}*"))
            subscribers = dict(await server.pubsub_numsub(*channels))
            assert channels == [f"{prefix}.cell.24.60", f"{prefix}.cell.m75.40"]
            assert set(subscribers.values()) == {1}
            # The viewers do receive through those two subscriptions.
            await publish_locations([position(Cell(24, 60), latitude=60.1, longitude=24.9)])
            for viewer in viewers[1::2]:
                [record] = await viewer.receive_records(1, timeout=5)
                assert record["target"] == "locationUpdated"
        assert await server.pubsub_channels(f"{prefix}*") == []
    await server.aclose()


# (The test communicator cannot send an empty frame.)
hostile_messages = st.one_of(
    st.text(min_size=1, max_size=200),
    st.binary(min_size=1, max_size=64),
    st.lists(
        st.fixed_dictionaries(
            {"type": st.integers(0, 10)},
            optional={
                "invocationId": st.text(max_size=4) | st.integers(),
                "target": st.sampled_from(["updateMapGridGroups", "x"]) | st.text(max_size=8),
                "arguments": st.lists(
                    st.lists(st.lists(st.integers(-400, 400), max_size=3), max_size=4)
                    | st.text(max_size=4),
                    max_size=3,
                ),
            },
        ).map(lambda record: json.dumps(record) + RS),  # stdlib: any integer
        min_size=1,
        max_size=3,
    ).map("".join),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(hostile_messages, min_size=1, max_size=4))
async def test_whatever_a_client_sends_the_hub_answers_or_closes_and_keeps_serving(
    messages: list[str | bytes],
) -> None:
    with support.logged_lines() as lines:
        async with connected_client() as hub:
            for message in messages:
                if isinstance(message, bytes):
                    await hub.communicator.send_to(bytes_data=message)
                else:
                    await hub.communicator.send_to(text_data=message)
            # Everything the hub said is hub protocol; a close, if any, came last.
            said: list[dict[str, Any]] = []
            while not await hub.communicator.receive_nothing(0.05):
                output = await hub.communicator.receive_output(1)
                if output["type"] == "websocket.close":
                    said.append({"type": "closed"})
                    break
                said += [orjson.loads(r) for r in output["text"].split(RS)[:-1]]
            assert all(record.get("type") in (1, 3, 6, 7, "closed") for record in said)
    # Whatever it sent, each thing the server logged about it is one line.
    assert all(len(line.splitlines()) == 1 for line in lines), lines
    # And the next client is served as if nothing had happened.
    async with connected_client() as next_client:
        assert "result" in await next_client.join([[24, 60]])


FORGED = "\n2026-11-29 12:00:00,000 WARNING tracking.hub: forged"


async def test_a_method_name_cannot_forge_a_log_line(client: Client) -> None:
    with support.logged_lines() as lines:
        completion = await client.invoke(f"x{FORGED}")
    assert completion["error"] == f"Unknown hub method 'x{FORGED}'."
    [line] = [line for line in lines if "forged" in line]
    assert "\n" not in line and "x\\n2026" in line, line


async def test_a_protocol_name_cannot_forge_a_log_line() -> None:
    communicator, connected = await open_hub()
    assert connected
    with support.logged_lines() as lines:
        handshake = {"protocol": f"json{FORGED}", "version": 1}
        await communicator.send_to(text_data=orjson.dumps(handshake).decode() + RS)
        await communicator.receive_from()
    [line] = [line for line in lines if "forged" in line]
    assert "\n" not in line, line
    await communicator.disconnect()


invocation_floods = st.lists(
    st.lists(
        st.builds(
            lambda x, leave, invocation_id: {
                "type": 1,
                "target": "updateMapGridGroups",
                "arguments": [[], [[x, 0]]] if leave else [[[x, 0]], []],
                **({"invocationId": invocation_id} if invocation_id else {}),
            },
            st.integers(-5, 5),
            st.booleans(),
            st.sampled_from(["", "1", "2"]),
        ),
        min_size=1,
        max_size=60,
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(floods=invocation_floods, patient=st.booleans())
async def test_floods_of_joins_and_leaves_cost_at_most_what_the_limits_allow(
    floods: list[list[dict[str, Any]]], patient: bool, snapshot_reads: list[object]
) -> None:
    snapshot_reads.clear()
    started = time.monotonic()
    with override_settings(HUB_INVOCATION_BURST=1, HUB_INVOCATIONS_PER_SECOND=0.2):
        async with connected_client() as hub:
            for flood in floods:
                await hub.send(*flood)
                if patient:  # the hub gets to answer before the next message
                    await hub.communicator.receive_nothing(0.05)
            # Everything said is hub protocol; a close, if any, comes last.
            said: list[str | int] = []
            while not await hub.communicator.receive_nothing(0.1):
                output = await hub.communicator.receive_output(1)
                if output["type"] == "websocket.close":
                    said.append("closed")
                    break
                said += [orjson.loads(r)["type"] for r in output["text"].split(RS)[:-1]]
    elapsed = time.monotonic() - started
    assert set(said) <= {1, 3, 7, "closed"} and (7 not in said or said[-2:] == [7, "closed"])
    assert len(snapshot_reads) <= 1 + 0.2 * elapsed
