"""A hub connection's conversation and the map's hub methods, without a server or a database."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import eventually
from tracking.grid import Cell, Grid
from tracking.hub import protocol
from tracking.hub.map_hub import SNAPSHOT_RECORDS_PER_MESSAGE, MapHub
from tracking.hub.protocol import location_record
from tracking.hub.session import (
    Hub,
    HubError,
    HubSession,
    KeepAlive,
    Reply,
    SessionLimits,
    hub_method,
)
from tracking.positions import LatestPosition

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
HELSINKI, TAMPERE, NEW_YORK = Cell(24, 60), Cell(23, 61), Cell(-75, 40)


class Socket:
    """What a session sends, record by record, and whether it closed the socket."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.closed = False
        self.aborted = False
        self.fail_sends = False
        # Closed: sends wait, as they do for a client that stopped reading.
        self.gate = asyncio.Event()
        self.gate.set()
        self.sends_started = 0

    async def send(self, text: str) -> None:
        self.sends_started += 1
        await self.gate.wait()
        if self.closed:  # as uvicorn and daphne refuse it
            raise RuntimeError("Unexpected ASGI message 'websocket.send' after 'websocket.close'")
        if self.fail_sends:
            raise ConnectionResetError("the client went away")
        self.messages.append(text)

    async def close(self) -> None:
        self.closed = True

    async def abort(self) -> None:
        self.aborted = True

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(r) for m in self.messages for r in m.split(RS)[:-1]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ports:
    """The fan-out and the database, as the map hub sees them."""

    def __init__(self, positions: Sequence[LatestPosition] = ()) -> None:
        self.watching: set[Cell] = set()
        self.positions = list(positions)
        self.refuse = False
        self.reads = 0

    async def watch(self, cells: Sequence[Cell]) -> None:
        if self.refuse:
            raise HubError("Could not join the map cells.")
        self.watching.update(cells)

    async def unwatch(self, cells: Collection[Cell]) -> None:
        self.watching.difference_update(cells)

    async def snapshot(self, cells: Sequence[Cell]) -> Sequence[str]:
        self.reads += 1
        return [location_record(p) for p in self.positions if p.cell in cells]


def make_session(
    hub: Hub | None = None,
    *,
    limits: SessionLimits | None = None,
    clock: Callable[[], float] | None = None,
    server_buffered: Callable[[], int] | None = None,
) -> tuple[HubSession, Socket, Clock]:
    socket, fake_clock = Socket(), Clock()
    session = HubSession(
        connection_id="c1",
        hub=hub or MapHub(grid=Grid(1.0), max_cells=3, ports=Ports()),
        send=socket.send,
        close=socket.close,
        abort=socket.abort,
        limits=limits or SessionLimits(),
        clock=clock or fake_clock,
        server_buffered=server_buffered,
    )
    return session, socket, fake_clock


async def say(session: HubSession, text: str | None) -> None:
    """Hand the session a message and wait until its invocations are answered."""
    await session.receive(text)
    await session.answered()


def invocation(target: str, *arguments: Any, invocation_id: str | None = "1") -> str:
    record: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
    if invocation_id is not None:
        record["invocationId"] = invocation_id
    return orjson.dumps(record).decode() + RS


def position(cell: Cell, latitude: float, longitude: float) -> LatestPosition:
    return LatestPosition(
        tracker_id=uuid.uuid4(),
        latitude=latitude,
        longitude=longitude,
        timestamp=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        cell=cell,
    )


# --- Handshake and invocations ---------------------------------------------------------


async def test_the_handshake_is_answered_with_an_empty_record() -> None:
    session, socket, _ = make_session()
    await say(session, HANDSHAKE)
    assert socket.messages == ["{}" + RS] and session.handshaken and not socket.closed


async def test_a_handshake_for_another_protocol_gets_an_error_and_a_close() -> None:
    session, socket, _ = make_session()
    await say(session, '{"protocol":"messagepack","version":1}' + RS)
    assert socket.records() == [{"error": "Requested protocol 'messagepack' is not available."}]
    assert socket.closed


async def test_an_invocation_with_an_id_gets_exactly_one_completion() -> None:
    session, socket, _ = make_session()
    await say(session, HANDSHAKE + invocation("updateMapGridGroups", [[24, 60]], []))
    completions = [r for r in socket.records() if r.get("type") == 3]
    assert completions == [
        {
            "type": 3,
            "invocationId": "1",
            "result": {"joined": [[24, 60]], "left": [], "cells": [[24, 60]]},
        }
    ]


async def test_targets_match_without_regard_to_case() -> None:
    session, socket, _ = make_session()
    await say(session, HANDSHAKE + invocation("UPDATEMAPGRIDGROUPS", [[24, 60]], []))
    assert "result" in socket.records()[-1]


async def test_an_invocation_without_an_id_gets_no_completion_but_still_acts() -> None:
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=Ports())
    session, socket, _ = make_session(hub)
    await say(
        session, HANDSHAKE + invocation("updateMapGridGroups", [[24, 60]], [], invocation_id=None)
    )
    assert socket.records() == [{}]
    assert hub.cells == {HELSINKI}


async def test_a_wrong_number_of_arguments_names_the_arguments() -> None:
    session, socket, _ = make_session()
    await say(session, HANDSHAKE + invocation("updateMapGridGroups", [[24, 60]]))
    assert socket.records()[-1]["error"] == (
        "updateMapGridGroups takes 2 arguments (newGridNumbers, previousGridNumbers), got 1."
    )


async def test_a_hub_method_that_raises_gets_a_generic_error_and_the_connection_goes_on() -> None:
    class Broken(Hub):
        @hub_method("explode", arguments=())
        async def explode(self) -> Reply:
            raise RuntimeError("secret detail")

    session, socket, _ = make_session(Broken())
    await say(session, HANDSHAKE + invocation("explode"))
    error = socket.records()[-1]["error"]
    assert "unexpected error" in error and "secret" not in error
    assert not socket.closed


async def test_hub_methods_are_registered_per_class() -> None:
    class Echo(Hub):
        @hub_method("echo", arguments=("text",))
        async def echo(self, text: object) -> Reply:
            return Reply(text)

    assert set(Echo.methods) == {"echo"}
    assert set(MapHub.methods) == {"updatemapgridgroups", "updateoverview"}
    session, socket, _ = make_session(Echo())
    await say(session, HANDSHAKE + invocation("echo", "hello"))
    assert socket.records()[-1]["result"] == "hello"


async def test_what_follows_a_completion_is_sent_after_it() -> None:
    class Later(Hub):
        @hub_method("later", arguments=())
        async def later(self) -> Reply:
            async def then() -> list[str]:
                return ['{"type":1,"target":"next","arguments":[]}' + RS]

            return Reply("now", then=then)

    session, socket, _ = make_session(Later())
    await say(session, HANDSHAKE + invocation("later"))
    assert [r.get("result", r.get("target")) for r in socket.records()[1:]] == ["now", "next"]


async def test_when_what_follows_a_completion_fails_the_client_is_told_and_closed() -> None:
    class Failing(Hub):
        @hub_method("join", arguments=())
        async def join(self) -> Reply:
            async def then() -> list[str]:
                raise OSError("the database is down")

            return Reply("ok", then=then)

    session, socket, _ = make_session(Failing())
    await say(session, HANDSHAKE + invocation("join"))
    close = socket.records()[-1]
    assert close["type"] == 7 and "reconnect" in close["error"] and socket.closed


async def test_a_send_to_a_client_that_went_away_ends_the_session_quietly() -> None:
    session, socket, _ = make_session()
    await say(session, HANDSHAKE)
    socket.fail_sends = True
    await say(session, invocation("updateMapGridGroups", [[24, 60]], []))
    assert session.closing


# --- Outbox ------------------------------------------------------------------------------------


async def test_updates_within_the_window_go_out_as_one_message() -> None:
    session, socket, _ = make_session(limits=SessionLimits(coalesce_seconds=0.01))
    await say(session, HANDSHAKE)
    session.deliver("a" + RS)
    session.deliver("b" + RS)
    await eventually(lambda: len(socket.messages) == 2, what="the coalesced message")
    assert socket.messages[1] == "a" + RS + "b" + RS


async def test_a_flush_larger_than_a_message_may_be_goes_out_as_several_whole_ones() -> None:
    """Thousands of records in one window (a fleet in view, a burst of geofence
    crossings) are cut between records into messages a server will send."""
    session, socket, _ = make_session(limits=SessionLimits(coalesce_seconds=0.01, send_chars=1_000))
    await say(session, HANDSHAKE)
    records = [
        orjson.dumps({"type": 1, "target": "t", "arguments": [n]}).decode() + RS for n in range(300)
    ]
    for record in records:
        session.deliver(record)
    await eventually(lambda: "".join(socket.messages[1:]) == "".join(records), what="every record")
    assert len(socket.messages) > 2
    assert all(len(message) <= 1_000 and message.endswith(RS) for message in socket.messages[1:])


async def test_updates_before_the_handshake_are_dropped() -> None:
    session, socket, _ = make_session(limits=SessionLimits(coalesce_seconds=0.0))
    session.deliver("early" + RS)
    await say(session, HANDSHAKE)
    session.deliver("on time" + RS)
    await eventually(lambda: len(socket.messages) == 2, what="the update after the handshake")
    assert socket.messages == ["{}" + RS, "on time" + RS]


async def test_updates_after_the_end_are_not_queued() -> None:
    session, _, _ = make_session()
    await say(session, HANDSHAKE)
    session.deliver("queued" + RS)
    assert session.queued == 1
    session.end()
    session.deliver("late" + RS)
    assert session.queued == 0


# --- A client that does not keep up -------------------------------------------------------------


def located(tracker: str, step: int) -> str:
    return protocol.location_updated(
        tracker_id=tracker, latitude=60 + step / 1000, longitude=24.9, timestamp_ms=step
    )


async def test_one_flush_at_a_time_and_meanwhile_only_the_newest_position_of_each_tracker_waits() -> (
    None
):
    session, socket, _ = make_session(limits=SessionLimits(coalesce_seconds=0))
    await say(session, HANDSHAKE)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    socket.gate.clear()
    session.deliver(located(a, 1))
    await eventually(lambda: socket.sends_started == 2, what="the first flush")
    for step in (2, 3, 4):
        session.deliver(located(a, step) + located(b, step))
        await asyncio.sleep(0.01)  # windows pass; no second flush may start
    assert socket.sends_started == 2 and session.queued == 2
    socket.gate.set()
    await eventually(lambda: len(socket.messages) == 3, what="the flush after the stalled one")
    assert socket.messages[1:] == [located(a, 1), located(a, 4) + located(b, 4)]


async def test_a_client_more_behind_than_the_outbox_holds_is_closed_and_told_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    size = len(located(str(uuid.uuid4()), 1))
    limits = SessionLimits(coalesce_seconds=0, outbox_chars=20 * size)
    session, socket, _ = make_session(limits=limits)
    await say(session, HANDSHAKE)
    socket.gate.clear()
    session.deliver(located(str(uuid.uuid4()), 0))
    await eventually(lambda: socket.sends_started == 2, what="a stalled flush")
    with caplog.at_level(logging.WARNING, logger="tracking.hub"):
        for _ in range(21):
            session.deliver(located(str(uuid.uuid4()), 1))
    assert session.closing and session.queued == 0
    assert "not keeping up" in caplog.text and "HUB_OUTBOX_BYTES" in caplog.text
    socket.gate.set()
    await eventually(lambda: socket.closed, what="the close")
    close = socket.records()[-1]
    assert close["type"] == 7 and "could not keep up" in close["error"]


async def test_a_send_waits_until_the_server_has_written_out_what_it_holds() -> None:
    held = [1000]
    session, socket, _ = make_session(
        limits=SessionLimits(coalesce_seconds=0), server_buffered=lambda: held[0]
    )
    answering = asyncio.create_task(session.receive(HANDSHAKE))  # the answer waits too
    tracker = str(uuid.uuid4())
    await eventually(lambda: session.sending_since is not None, what="the answer waiting")
    session.deliver(located(tracker, 1))
    for _ in range(5):  # loop turns enough for a send, were one allowed, to go out
        await asyncio.sleep(0.01)
    assert socket.messages == [] and socket.sends_started == 0
    held[0] = 0
    await answering
    await eventually(lambda: len(socket.messages) == 2, what="the sends once drained")
    assert socket.messages == ["{}" + RS, located(tracker, 1)]


def test_a_send_stalled_for_the_stall_setting_asks_for_the_connection_to_be_cut_off() -> None:
    limits = SessionLimits(send_stall_seconds=30, ping_seconds=100, client_timeout_seconds=100)
    session, _, clock = make_session(limits=limits)
    session.handshaken = True
    session.sending_since = clock.now
    assert session.keepalive_step(clock.now + 29) == (KeepAlive.WAIT, 1)
    assert session.keepalive_step(clock.now + 30)[0] is KeepAlive.ABORT_STALLED
    # Even while a close is under way: the close itself may be what is stalled.
    session.closing = True
    assert session.keepalive_step(clock.now + 30)[0] is KeepAlive.ABORT_STALLED


async def test_a_client_that_stops_reading_is_cut_off_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = SessionLimits(coalesce_seconds=0, send_stall_seconds=0.2, ping_seconds=0.05)
    session, socket, _ = make_session(limits=limits, clock=time.monotonic)
    await say(session, HANDSHAKE)
    socket.gate.clear()
    with caplog.at_level(logging.WARNING, logger="tracking.hub"):
        keeping = asyncio.create_task(session.keep_alive())
        session.deliver(located(str(uuid.uuid4()), 1))
        await eventually(lambda: socket.aborted, what="the connection cut off")
        await asyncio.wait_for(keeping, timeout=5)
    assert session.closing and "the client is not reading" in caplog.text
    # The keep-alive's pings waited in the outbox instead of piling up behind the send.
    assert socket.sends_started == 2


# --- Invocation limits ------------------------------------------------------------------------------


class Counting(Hub):
    """Counts its calls; ``view`` waits for ``release`` when asked to."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.release = asyncio.Event()
        self.release.set()

    @hub_method("count", arguments=("n",))
    async def count(self, n: object) -> Reply:
        self.calls.append(n)
        await self.release.wait()
        return Reply(n)

    @hub_method("view", arguments=("n",), latest_wins=True)
    async def view(self, n: object) -> Reply:
        self.calls.append(n)
        await self.release.wait()
        return Reply(n)


def completions(socket: Socket) -> dict[str, dict[str, Any]]:
    return {r["invocationId"]: r for r in socket.records() if r.get("type") == 3}


async def test_at_most_a_handful_of_invocations_of_one_message_run() -> None:
    hub = Counting()
    session, socket, _ = make_session(hub, limits=SessionLimits(invocations_per_message=2))
    await say(
        session, HANDSHAKE + "".join(invocation("count", n, invocation_id=str(n)) for n in range(4))
    )
    assert hub.calls == [0, 1]
    answers = completions(socket)
    assert [answers[str(n)].get("result") for n in (0, 1)] == [0, 1]
    assert (
        answers["2"]["error"]
        == answers["3"]["error"]
        == ("A message may carry at most 2 invocations; send the others in later messages.")
    )
    assert not socket.closed


async def test_invocations_past_the_rate_are_refused_until_tokens_come_back() -> None:
    hub = Counting()
    limits = SessionLimits(invocations_per_second=1, invocation_burst=2)
    session, socket, clock = make_session(hub, limits=limits)
    await say(session, HANDSHAKE)
    for n in range(3):
        await say(session, invocation("count", n, invocation_id=str(n)))
    assert hub.calls == [0, 1]
    assert completions(socket)["2"]["error"] == (
        "Too many invocations: at most 1 a second are allowed; slow down."
    )
    clock.now += 5
    await say(session, invocation("count", 3, invocation_id="3"))
    assert hub.calls == [0, 1, 3] and not socket.closed


async def test_a_client_that_keeps_calling_past_the_rate_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Counting()
    limits = SessionLimits(invocations_per_second=1, invocation_burst=3)
    session, socket, _ = make_session(hub, limits=limits)
    await say(session, HANDSHAKE)
    with caplog.at_level(logging.WARNING, logger="tracking.hub"):
        for n in range(20):
            await say(session, invocation("count", n, invocation_id=str(n)))
    assert hub.calls == [0, 1, 2]
    close = socket.records()[-1]
    assert close == {
        "type": 7,
        "error": "Connection closed with an error. Too many invocations: "
        "at most 1 a second are allowed.",
    }
    assert socket.closed and "invocations far past" in caplog.text
    # Three ran, two were refused with an error, and the next one, with the
    # client a whole burst in debt, was answered by the close.
    assert len(completions(socket)) == 5


async def test_a_view_change_waiting_to_run_is_replaced_by_a_newer_one() -> None:
    hub = Counting()
    hub.release.clear()
    session, socket, _ = make_session(hub)
    await session.receive(HANDSHAKE + invocation("view", 1, invocation_id="1"))
    await eventually(lambda: hub.calls == [1], what="the first view running")
    await session.receive(invocation("view", 2, invocation_id="2"))
    await session.receive(invocation("count", 0, invocation_id="c"))
    await session.receive(invocation("view", 3, invocation_id="3"))
    hub.release.set()
    await session.answered()
    # The second view never ran; the count, not latest-wins, did, in its turn.
    assert hub.calls == [1, 0, 3]
    answers = completions(socket)
    assert answers["2"]["error"] == "Replaced by a later view call before it ran."
    assert [answers[i]["result"] for i in ("1", "c", "3")] == [1, 0, 3]


# --- Keep-alive ----------------------------------------------------------------------------------


def test_an_idle_connection_is_pinged_once_the_ping_interval_has_passed() -> None:
    session, _, clock = make_session(limits=SessionLimits(ping_seconds=15))
    session.handshaken = True
    assert session.keepalive_step(clock.now + 14)[0] is KeepAlive.WAIT
    action, wait = session.keepalive_step(clock.now + 15)
    assert action is KeepAlive.PING and 0 < wait <= 15


def test_a_client_without_a_handshake_in_time_is_closed() -> None:
    session, _, clock = make_session(limits=SessionLimits(handshake_timeout_seconds=5))
    assert session.keepalive_step(clock.now + 4.9)[0] is KeepAlive.WAIT
    assert session.keepalive_step(clock.now + 5)[0] is KeepAlive.CLOSE_NO_HANDSHAKE


def test_a_client_silent_past_the_timeout_is_closed_even_while_the_server_talks() -> None:
    session, _, clock = make_session(limits=SessionLimits(client_timeout_seconds=30))
    session.handshaken = True
    session.last_sent = clock.now + 29  # the server sent something lately
    assert session.keepalive_step(clock.now + 30)[0] is KeepAlive.CLOSE_SILENT_CLIENT


def test_the_keep_alive_sleeps_until_the_next_deadline() -> None:
    session, _, clock = make_session(
        limits=SessionLimits(ping_seconds=15, client_timeout_seconds=30)
    )
    session.handshaken = True
    assert session.keepalive_step(clock.now + 10) == (KeepAlive.WAIT, 5)


# --- The map hub ---------------------------------------------------------------------------------


async def test_joining_cells_watches_them_then_sends_their_latest_positions() -> None:
    ports = Ports([position(HELSINKI, 60.17, 24.94), position(NEW_YORK, 40.7, -74.0)])
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    reply = await hub.update_map_grid_groups([[24, 60]], [])
    assert ports.watching == {HELSINKI}
    assert reply.then is not None
    [message] = await reply.then()
    [record] = [orjson.loads(r) for r in message.split(RS)[:-1]]
    assert record["target"] == "locationUpdated" and record["arguments"][1:3] == [60.17, 24.94]


async def test_a_join_is_answered_in_one_message_the_completion_ahead_of_the_snapshot() -> None:
    ports = Ports([position(HELSINKI, 60.17, 24.94), position(HELSINKI, 60.2, 24.9)])
    session, socket, _ = make_session(MapHub(grid=Grid(1.0), max_cells=3, ports=ports))
    await say(session, HANDSHAKE)
    await say(session, invocation("updateMapGridGroups", [[24, 60]], []))
    [answer] = socket.messages[1:]
    records = [orjson.loads(r) for r in answer.split(RS)[:-1]]
    assert [r["type"] for r in records] == [3, 1, 1]
    assert records[0]["result"]["joined"] == [[24, 60]]


async def test_a_large_snapshot_goes_out_in_several_messages() -> None:
    count = SNAPSHOT_RECORDS_PER_MESSAGE + 1
    ports = Ports([position(HELSINKI, 60.1, 24.9) for _ in range(count)])
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    reply = await hub.update_map_grid_groups([[24, 60]], [])
    assert reply.then is not None
    messages = await reply.then()
    assert [m.count(RS) for m in messages] == [SNAPSHOT_RECORDS_PER_MESSAGE, 1]


async def test_leaving_and_joining_follow_what_the_connection_really_holds() -> None:
    ports = Ports()
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    await hub.update_map_grid_groups([[24, 60], [23, 61]], [])
    # The client names a cell it never joined as previous, and forgets Tampere.
    reply = await hub.update_map_grid_groups([[-75, 40]], [[24, 60], [0, 0]])
    assert reply.result == {
        "joined": [[-75, 40]],
        "left": [[24, 60]],
        "cells": [[-75, 40], [23, 61]],
    }
    assert ports.watching == {NEW_YORK, TAMPERE} == hub.cells


async def test_a_join_past_the_cell_limit_changes_nothing() -> None:
    ports = Ports()
    hub = MapHub(grid=Grid(1.0), max_cells=2, ports=ports)
    await hub.update_map_grid_groups([[24, 60], [23, 61]], [])
    with pytest.raises(HubError, match="3 cells"):
        await hub.update_map_grid_groups([[-75, 40]], [])
    assert hub.cells == ports.watching == {HELSINKI, TAMPERE}


async def test_a_join_the_fan_out_refuses_changes_nothing() -> None:
    ports = Ports()
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    ports.refuse = True
    with pytest.raises(HubError):
        await hub.update_map_grid_groups([[24, 60]], [])
    assert hub.cells == set() == ports.watching


async def test_closing_the_hub_stops_watching_every_cell() -> None:
    ports = Ports()
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    await hub.update_map_grid_groups([[24, 60], [-75, 40]], [])
    await hub.close()
    assert ports.watching == set() == hub.cells


# --- Whatever a client sends ---------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what JSON numbers the codec reads as integers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    arguments=st.lists(json_values, max_size=3),
    target=st.sampled_from(["updateMapGridGroups", "updatemapgridgroups", "nope", ""]),
)
async def test_any_invocation_with_an_id_gets_exactly_one_completion(
    arguments: list[Any], target: str
) -> None:
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=Ports())
    session, socket, _ = make_session(hub)
    await say(session, HANDSHAKE)
    await say(session, invocation(target, *arguments, invocation_id="7"))
    completions = [r for r in socket.records() if r.get("type") == 3]
    assert len(completions) == 1 and completions[0]["invocationId"] == "7"
    assert ("result" in completions[0]) != ("error" in completions[0])
    assert not socket.closed and len(hub.cells) <= 3


@given(
    texts=st.lists(
        st.text(max_size=60) | json_values.map(lambda v: orjson.dumps(v).decode() + RS), max_size=5
    )
)
async def test_any_text_after_the_handshake_is_answered_or_closed_never_raised(
    texts: list[str],
) -> None:
    session, socket, _ = make_session(limits=SessionLimits(max_message_chars=200))
    await say(session, HANDSHAKE)
    for text in texts:
        await say(session, text)
    # Whatever came, every record sent is valid hub protocol, and a close is the last one.
    records = socket.records()
    assert all(isinstance(r, dict) for r in records)
    closes = [n for n, r in enumerate(records) if r.get("type") == 7]
    assert closes in ([], [len(records) - 1])
    assert socket.closed == bool(closes)


async def test_updates_arriving_while_a_snapshot_is_read_go_out_after_it() -> None:
    reading, release = asyncio.Event(), asyncio.Event()

    class Snapshotting(Hub):
        @hub_method("join", arguments=())
        async def join(self) -> Reply:
            async def snapshot() -> list[str]:
                reading.set()
                await release.wait()
                return ["snapshot" + RS]

            return Reply("joined", then=snapshot)

    session, socket, _ = make_session(Snapshotting(), limits=SessionLimits(coalesce_seconds=0))
    await say(session, HANDSHAKE)
    answering = asyncio.create_task(say(session, invocation("join")))
    await asyncio.wait_for(reading.wait(), timeout=5)
    session.deliver("live" + RS)
    for _ in range(5):  # loop turns enough for a flush, were one scheduled, to send
        await asyncio.sleep(0)
    release.set()
    await answering
    await eventually(lambda: socket.messages[-1] == "live" + RS, what="the live update")
    records = [r[:12] for m in socket.messages for r in m.split(RS)[:-1]]
    assert records == ["{}", '{"type":3,"i', "snapshot", "live"]


hostile_records = st.one_of(
    st.builds(
        lambda x, y, invocation_id: invocation(
            "updateMapGridGroups", [[x, y]], [], invocation_id=invocation_id
        ),
        st.integers(-181, 180),
        st.integers(-91, 90),
        st.none() | st.sampled_from(["1", "2", "x"]),
    ),
    st.builds(lambda i: invocation("nope", invocation_id=i), st.none() | st.just("n")),
    st.just('{"type":6}' + RS),
    st.just('{"type":4,"invocationId":"s","target":"updateMapGridGroups","arguments":[]}' + RS),
    st.just('{"type":3,"invocationId":"z","result":null}' + RS),
)


@given(
    messages=st.lists(
        st.lists(hostile_records, min_size=1, max_size=40).map("".join), min_size=1, max_size=8
    ),
    busy=st.lists(st.integers(0, 50), max_size=8),
    patient=st.booleans(),
)
async def test_a_hostile_sequence_never_crashes_and_what_it_costs_stays_bounded(
    messages: list[str], busy: list[int], patient: bool
) -> None:
    """Floods of joins and leaves, other calls and pings, while a busy cell delivers:
    the session answers or closes, and runs no more invocations (each a database
    read) than its limits allow, holding no more than they allow meanwhile."""
    limits = SessionLimits(
        invocations_per_message=3,
        invocations_per_second=1,
        invocation_burst=2,
        outbox_chars=8192,
        coalesce_seconds=0,
    )
    ports = Ports([position(HELSINKI, 60.1, 24.9)])
    hub = MapHub(grid=Grid(1.0), max_cells=1000, ports=ports)
    session, socket, clock = make_session(hub, limits=limits)
    await say(session, HANDSHAKE)
    for number, message in enumerate(messages):
        await session.receive(message)
        for tracker in range(busy[number] if number < len(busy) else 0):
            session.deliver(located(f"00000000-0000-0000-0000-{tracker:012d}", number))
        assert session.waiting_invocations <= limits.invocation_burst
        assert session.queued_chars <= limits.outbox_chars
        clock.now += 0.1
        # A patient client lets each message be answered before the next.
        await (session.answered() if patient else asyncio.sleep(0))
    await session.answered()
    elapsed = 0.1 * len(messages)
    assert ports.reads <= limits.invocation_burst + limits.invocations_per_second * elapsed
    records = socket.records()
    closes = [n for n, r in enumerate(records) if r.get("type") == 7]
    assert closes in ([], [len(records) - 1]) and socket.closed == bool(closes)


async def test_a_connection_that_ends_while_a_join_is_under_way_lets_go_of_every_cell() -> None:
    class SlowToLeave(Ports):
        stuck = True

        async def unwatch(self, cells: Collection[Cell]) -> None:
            if cells and self.stuck:
                leaving.set()
                await asyncio.Event().wait()  # until cancelled
            await super().unwatch(cells)

    leaving = asyncio.Event()
    ports = SlowToLeave()
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    session, _, _ = make_session(hub)
    await say(session, HANDSHAKE + invocation("updateMapGridGroups", [[24, 60]], []))
    await session.receive(invocation("updateMapGridGroups", [[23, 61]], [[24, 60]]))
    await asyncio.wait_for(leaving.wait(), timeout=5)
    session.end()  # the socket is gone, and the call never ends: it is cancelled
    await session.wound_down(patience=0.05)
    ports.stuck = False
    await hub.close()
    assert ports.watching == set()


class SlowToJoin(Ports):
    """Ports whose watch says it has begun (``joining``), then waits for ``go_on``."""

    def __init__(self, positions: Sequence[LatestPosition] = ()) -> None:
        super().__init__(positions)
        self.joining, self.go_on = asyncio.Event(), asyncio.Event()

    async def watch(self, cells: Sequence[Cell]) -> None:
        self.joining.set()
        await self.go_on.wait()
        await super().watch(cells)


async def test_a_join_under_way_when_the_connection_ends_finishes_without_sending_its_snapshot() -> (
    None
):
    ports = SlowToJoin([position(HELSINKI, 60.1, 24.9)])
    joining, go_on = ports.joining, ports.go_on
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    session, socket, _ = make_session(hub)
    await say(session, HANDSHAKE)
    await session.receive(invocation("updateMapGridGroups", [[24, 60]], []))
    await asyncio.wait_for(joining.wait(), timeout=5)
    session.end()
    go_on.set()
    await session.wound_down(patience=5)
    # The snapshot is taken with the watch (so nothing falls between them),
    # but nothing goes to a connection that has ended.
    assert hub.cells == {HELSINKI} and ports.reads <= 1 and socket.records() == [{}]
    await hub.close()
    assert ports.watching == set()


async def test_an_answer_ready_after_the_session_closed_is_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ports = SlowToJoin([position(HELSINKI, 60.1, 24.9)])
    joining, go_on = ports.joining, ports.go_on
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=ports)
    session, socket, _ = make_session(hub)
    await say(session, HANDSHAKE)
    await session.receive(invocation("updateMapGridGroups", [[24, 60]], []))
    await asyncio.wait_for(joining.wait(), timeout=5)
    await session.close_with_error("Closed by the test.")
    go_on.set()
    await session.answered()
    assert socket.closed and socket.records()[-1] == {"type": 7, "error": "Closed by the test."}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
