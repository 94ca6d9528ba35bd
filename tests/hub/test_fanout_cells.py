"""The snapshots a web process keeps of the cells it watches, and answers joins with."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from tests.conftest import event_body
from tracking.grid import Cell
from tracking.hub.consumer import read_latest_positions
from tracking.hub.fanout import LocalFanOut, RedisFanOut, get_fanout, reset_fanouts
from tracking.hub.fanout.base import ProcessFanOut
from tracking.hub.fanout.cells import CellSnapshots, cell_message, split_cell_message
from tracking.hub.protocol import RECORD_SEPARATOR, location_record, location_records
from tracking.hub.publishing import publish_locations
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.models import Tracker
from tracking.positions import LatestPosition
from tracking.selectors import latest_positions_in_cells

WEST, MIDDLE, EAST = Cell(0, 0), Cell(1, 0), Cell(2, 0)
LINE = (WEST, MIDDLE, EAST)
START = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


def record(tracker: str, cell: Cell, seconds: int) -> str:
    return location_record(
        LatestPosition(
            tracker_id=uuid.UUID(tracker),
            latitude=cell.y + 0.5,
            longitude=cell.x + 0.5,
            timestamp=START + timedelta(seconds=seconds),
            cell=cell,
        )
    )


def ms(seconds: int) -> int:
    return int((START + timedelta(seconds=seconds)).timestamp() * 1000)


A, B = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))


@pytest.fixture(autouse=True)
def nothing_goes_offline() -> Iterator[None]:
    """Positions here are stamped on one fixed day (START), long offline by the
    clock, and a join leaves offline trackers out; these tests are about the
    order of the stream, so nothing goes offline (test_snapshot_ghosts.py is
    about leaving them out)."""
    with override_settings(TRACKING_OFFLINE_SECONDS=10**10):
        yield


class Viewer:
    """A connection as the fan-out sees it: what it was sent, newest per tracker."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, str]] = {}

    def deliver(self, records: str) -> None:
        for tracker, timestamp_ms, text in location_records(records):
            if tracker not in self.latest or self.latest[tracker][0] <= timestamp_ms:
                self.latest[tracker] = (timestamp_ms, text)


class Recorder:
    """A connection that keeps every text it is given."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    def deliver(self, records: str) -> None:
        self.delivered.append(records)


async def join(fanout: ProcessFanOut, viewer: Viewer, cells: Sequence[Cell], read=None) -> None:
    """Watch, then take the snapshot, as the map hub does."""
    await fanout.watch(viewer, cells)
    viewer.deliver("".join(await fanout.snapshot(cells, read=read or read_latest_positions)))


# --- A cell's message ----------------------------------------------------------------------


def test_a_message_without_departures_is_the_records_alone() -> None:
    records = record(A, WEST, 1)
    assert cell_message(records) == records
    assert split_cell_message(records) == (records, [])


async def test_departures_travel_ahead_of_the_records_and_never_reach_a_viewer() -> None:
    records = record(A, WEST, 1)
    message = cell_message(records, [(B, ms(2)), (A, ms(0))])
    assert split_cell_message(message) == (records, [(B, ms(2)), (A, ms(0))])
    fanout, viewer = LocalFanOut(), Recorder()
    await fanout.watch(viewer, [WEST, MIDDLE])
    await fanout.publish({WEST: message, MIDDLE: cell_message("", [(A, 1)])})
    assert viewer.delivered == [records]


@given(st.text())
def test_whatever_arrives_on_a_cell_the_kept_snapshot_takes_without_raising(text: str) -> None:
    snapshots = CellSnapshots()
    snapshots.keep([WEST])
    snapshots.apply(WEST, record(A, WEST, 1))
    records = snapshots.apply(WEST, text)
    assert isinstance(records, str)
    assert all(r.endswith(RECORD_SEPARATOR) for r in snapshots.records([WEST]))


# --- Keeping a cell ----------------------------------------------------------------------


def kept(*cells: Cell) -> CellSnapshots:
    snapshots = CellSnapshots()
    snapshots.keep(cells)
    snapshots.finish(snapshots.start_reading(list(cells)), [], now=0.0)
    return snapshots


def test_a_tracker_that_moves_to_another_watched_cell_leaves_the_first() -> None:
    snapshots = kept(WEST, MIDDLE)
    snapshots.apply(WEST, record(A, WEST, 1))
    snapshots.apply(MIDDLE, record(A, MIDDLE, 2))
    assert snapshots.records([WEST]) == []
    assert snapshots.records([MIDDLE]) == [record(A, MIDDLE, 2)]


def test_a_tracker_that_moves_to_a_cell_nobody_here_watches_leaves_by_its_departure() -> None:
    snapshots = kept(WEST)
    snapshots.apply(WEST, record(A, WEST, 1) + record(B, WEST, 1))
    snapshots.apply(WEST, cell_message("", [(A, ms(2))]))
    assert snapshots.records([WEST]) == [record(B, WEST, 1)]


def test_a_position_published_late_never_replaces_a_newer_one() -> None:
    snapshots = kept(WEST, MIDDLE)
    snapshots.apply(MIDDLE, record(A, MIDDLE, 5))
    snapshots.apply(WEST, record(A, WEST, 3))
    assert snapshots.records([WEST, MIDDLE]) == [record(A, MIDDLE, 5)]


def test_what_arrives_while_a_cell_is_read_wins_over_the_read() -> None:
    snapshots = CellSnapshots()
    snapshots.keep([WEST])
    reading = snapshots.start_reading([WEST])
    snapshots.apply(WEST, record(A, WEST, 5))
    snapshots.apply(WEST, cell_message("", [(B, ms(5))]))
    # The read began before both: it still has A's older position, and B.
    snapshots.finish(
        reading,
        [(WEST, A, ms(4), record(A, WEST, 4)), (WEST, B, ms(4), record(B, WEST, 4))],
        now=0.0,
    )
    assert snapshots.records([WEST]) == [record(A, WEST, 5)]


@given(ages=st.lists(st.integers(0, 100), min_size=1, max_size=8), since=st.integers(0, 101))
def test_a_join_is_answered_with_the_kept_records_heard_since_its_moment_only(
    ages: list[int], since: int
) -> None:
    """The records older than the joiner's moment (offline by then) are left
    out of the answer but stay kept: the next, older moment gets them."""
    snapshots = kept(WEST)
    trackers = [str(uuid.UUID(int=100 + index)) for index in range(len(ages))]
    snapshots.apply(
        WEST, "".join(record(t, WEST, age) for t, age in zip(trackers, ages, strict=True))
    )
    answered = snapshots.records([WEST], heard_since_ms=ms(since))
    assert sorted(answered) == sorted(
        record(t, WEST, age) for t, age in zip(trackers, ages, strict=True) if age >= since
    )
    assert len(snapshots.records([WEST], heard_since_ms=ms(0))) == len(snapshots) == len(ages)


def test_a_cell_nobody_watches_any_more_is_forgotten() -> None:
    snapshots = kept(WEST)
    snapshots.apply(WEST, record(A, WEST, 1))
    snapshots.forget([WEST])
    assert len(snapshots) == 0 and not snapshots.kept(WEST)


def test_a_read_again_drops_what_the_stream_could_not_tell() -> None:
    """A tracker deactivated in the admin sends nothing more: the next read drops it."""
    snapshots = kept(WEST)
    snapshots.apply(WEST, record(A, WEST, 1) + record(B, WEST, 1))
    assert snapshots.to_read([WEST], now=1.0) == []
    assert snapshots.to_read([WEST], now=snapshots.refresh_seconds) == [WEST]
    snapshots.finish(
        snapshots.start_reading([WEST]), [(WEST, B, ms(1), record(B, WEST, 1))], now=61.0
    )
    assert snapshots.records([WEST]) == [record(B, WEST, 1)]


# --- Reading from the database only when needed ---------------------------------------------


class CountingRead:
    def __init__(self, positions: Sequence[LatestPosition] = (), *, fail: bool = False) -> None:
        self.positions = list(positions)
        self.calls: list[list[Cell]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, cells: Sequence[Cell]) -> Sequence[LatestPosition]:
        self.calls.append(list(cells))
        await self.release.wait()
        if self.fail:
            raise ConnectionError("the database is down")
        return [p for p in self.positions if p.cell in cells]


def west_position(tracker: str = A, seconds: int = 1) -> LatestPosition:
    return LatestPosition(
        tracker_id=uuid.UUID(tracker),
        latitude=0.5,
        longitude=0.5,
        timestamp=START + timedelta(seconds=seconds),
        cell=WEST,
    )


async def test_a_cell_just_watched_is_read_from_the_database_once_for_all_its_joiners() -> None:
    fanout, read = LocalFanOut(), CountingRead([west_position()])
    read.release.clear()
    first, second, third = Viewer(), Viewer(), Viewer()
    joining = [asyncio.create_task(join(fanout, v, [WEST], read)) for v in (first, second)]
    await support.eventually(lambda: read.calls, what="the database read to start")
    read.release.set()
    await asyncio.gather(*joining)
    await join(fanout, third, [WEST], read)
    assert read.calls == [[WEST]]
    assert first.latest == second.latest == third.latest == {A: (ms(1), record(A, WEST, 1))}
    # Nobody watches it any more: the next joiner reads it again.
    for viewer in (first, second, third):
        await fanout.unwatch(viewer, [WEST])
    await join(fanout, Viewer(), [WEST], read)
    assert read.calls == [[WEST], [WEST]]


async def test_a_failed_read_fails_that_join_and_the_next_join_reads_again() -> None:
    fanout, read = LocalFanOut(), CountingRead([west_position()], fail=True)
    with pytest.raises(ConnectionError):
        await join(fanout, Viewer(), [WEST], read)
    read.fail = False
    viewer = Viewer()
    await join(fanout, viewer, [WEST], read)
    assert len(read.calls) == 2 and A in viewer.latest


# --- The kept snapshot against the database ----------------------------------------------------

pytest_db = pytest.mark.django_db(transaction=True)

# A move: (tracker, cell of LINE, seconds after its batch's start); EAST is
# watched by nobody. Batches start 10 s apart, so a move may be older than
# one of the batch before.
moves = st.lists(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 12)), min_size=1, max_size=5
    ),
    min_size=2,
    max_size=8,
)
TRACKERS = [uuid.UUID(int=index + 10) for index in range(3)]
WATCHED = [WEST, MIDDLE]


async def stream(batches: list[list[tuple[int, int, int]]], *, join_at: int, fanout, viewer):
    """Store and publish each batch; the viewer joins before batch ``join_at``."""
    await database_sync_to_async(lambda: Tracker.objects.all().delete())()
    for index, batch in enumerate(batches):
        if index == join_at:
            await join(fanout, viewer, WATCHED)
        bodies = [
            event_body(
                tracker_id=TRACKERS[tracker],
                latitude=0.5 + seconds / 1000,
                longitude=LINE[cell].x + 0.5,
                at=START + timedelta(seconds=10 * index + seconds),
            )
            for tracker, cell, seconds in batch
        ]
        result = await database_sync_to_async(ingest_batch)(
            events=[RawEvent(body=body, origin="t") for body in bodies],
            now=START + timedelta(seconds=100),
        )
        await publish_locations(result.moved)
    if join_at >= len(batches):
        await join(fanout, viewer, WATCHED)


async def database_records(cells: Sequence[Cell]) -> list[str]:
    positions = await database_sync_to_async(latest_positions_in_cells)(cells=cells)
    return sorted(location_record(p) for p in positions)


def never_read(cells: Sequence[Cell]):
    raise AssertionError(f"read {cells} from the database, not from what is kept")


@pytest_db
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=moves, join_at=st.integers(0, 8))
async def test_after_any_stream_of_moves_the_kept_snapshot_equals_the_database(
    batches: list[list[tuple[int, int, int]]], join_at: int
) -> None:
    """Trackers move between two watched cells and one nobody watches, in and
    out of order; a viewer joins somewhere in the stream. Then a join served
    from memory equals the database, and the viewer missed nothing."""
    reset_fanouts()
    fanout = get_fanout()
    assert isinstance(fanout, LocalFanOut)
    viewer = Viewer()
    await stream(batches, join_at=join_at, fanout=fanout, viewer=viewer)
    expected = await database_records(WATCHED)
    assert sorted(await fanout.snapshot(WATCHED, read=never_read)) == expected
    for text in expected:
        [(tracker, timestamp_ms, _)] = location_records(text)
        assert viewer.latest[tracker] == (timestamp_ms, text)


@pytest.fixture
async def redis_web(redis_url: str) -> AsyncIterator[RedisFanOut]:
    """A web process's fan-out; the test's own process publishes through Redis."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    with override_settings(REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT="cells"):
        reset_fanouts()
        web = RedisFanOut(redis_url, prefix=prefix)
        yield web
        for fanout in (web, get_fanout()):
            assert isinstance(fanout, RedisFanOut)
            if fanout._reader is not None:
                fanout._reader.cancel()
            await fanout._pubsub.aclose()
            await fanout._redis.aclose()
        reset_fanouts()


@pytest.mark.redis
@pytest_db
@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=moves, join_at=st.integers(0, 8))
async def test_over_redis_the_kept_snapshot_of_another_process_equals_the_database(
    redis_web: RedisFanOut, batches: list[list[tuple[int, int, int]]], join_at: int
) -> None:
    web = redis_web
    for cell in web.watched_cells():  # the last example's viewer
        web._viewers.pop(cell)
        web.snapshots.forget([cell])
    viewer = Viewer()
    await stream(batches, join_at=join_at, fanout=web, viewer=viewer)
    expected = await database_records(WATCHED)

    async def kept_equals_database() -> bool:
        return sorted(await web.snapshot(WATCHED, read=never_read)) == expected

    await support.eventually(kept_equals_database, what="the kept snapshot to equal the database")
    for text in expected:
        [(tracker, timestamp_ms, _)] = location_records(text)
        await support.eventually(
            lambda: viewer.latest.get(tracker) == (timestamp_ms, text),  # noqa: B023
            what=f"the viewer to have {text}",
        )


# --- Joining during a burst, through the hub ---------------------------------------------------


@pytest.mark.redis
@pytest_db
async def test_viewers_joining_during_a_burst_over_redis_miss_nothing(redis_url: str) -> None:
    """Trackers keep moving between two cells and a third while viewers join,
    one after each few batches: the first joiner of a cell is answered from
    the database, the later ones from memory. Afterwards every viewer holds
    the newest position of every tracker in its cells."""
    from tests.hub.test_consumer import HANDSHAKE, Client, open_hub
    from tracking.ingest.pipeline import Pipeline

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    with override_settings(REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT="cells"):
        reset_fanouts()
        pipeline = Pipeline(publish=publish_locations)
        trackers = [uuid.uuid4() for _ in range(20)]
        batches_done = 0

        async def burst() -> None:
            """One tracker a batch; each moves twice, to another cell the second time."""
            nonlocal batches_done
            for index in range(40):
                bodies = [
                    event_body(
                        tracker_id=trackers[index % 20],
                        latitude=0.5,
                        longitude=LINE[index % 3].x + 0.5,
                        at=START + timedelta(seconds=index),
                    )
                ]
                await pipeline.process([RawEvent(body=body, origin="t") for body in bodies])
                batches_done += 1

        clients: list[tuple[Client, dict[str, tuple[int, str]]]] = []
        with override_settings(TRACKING_MAX_FUTURE_SECONDS=10**9):
            running = asyncio.create_task(burst())
            try:
                for joiner in range(12):
                    wanted = 3 * joiner
                    await support.eventually(
                        lambda: batches_done >= wanted,  # noqa: B023
                        interval=0.001,
                        what="the burst",
                    )
                    communicator, connected = await open_hub()
                    assert connected
                    client = Client(communicator)
                    await client.send(HANDSHAKE)
                    await client.receive_message()
                    answer = await client.join([[0, 0], [1, 0]])
                    for _ in range(5):
                        if "database is unavailable" not in str(answer.get("error")):
                            break
                        # SQLite's in-memory test database refuses a read of a
                        # table a writer holds instead of waiting (a file in WAL
                        # mode, as the demo runs, does not): join again, as the
                        # page does after an error.
                        answer = await client.join([[0, 0], [1, 0]])
                    assert "result" in answer
                    clients.append((client, {}))
                await running
            finally:
                running.cancel()
                await pipeline.close()
        expected = await database_records(WATCHED)
        assert expected
        try:
            for client, latest in clients:

                async def holds_everything(client: Client = client, latest=latest) -> bool:
                    while client.held or not await client.communicator.receive_nothing(0.05):
                        message = await client.receive_text()
                        for tracker, timestamp_ms, text in location_records(message):
                            if latest.get(tracker, (timestamp_ms,))[0] <= timestamp_ms:
                                latest[tracker] = (timestamp_ms, text)
                    return all(
                        latest.get(tracker) == (timestamp_ms, text)
                        for tracker, timestamp_ms, text in location_records("".join(expected))
                    )

                await support.eventually(holds_everything, what="every newest position")
        finally:
            for client, _ in clients:
                await client.communicator.disconnect()
            fanout = get_fanout()
            assert isinstance(fanout, RedisFanOut)
            if fanout._reader is not None:
                fanout._reader.cancel()
            reset_fanouts()


@pytest.mark.redis
@pytest_db
async def test_an_update_committed_while_a_cell_is_read_reaches_its_first_viewer(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first viewer of a cell is answered from the database: an update
    published just after that read still reaches it, live, because the
    process subscribed before reading."""
    from tests.hub.test_consumer import HANDSHAKE, Client, open_hub
    from tracking.hub import consumer

    moved = west_position(str(uuid.uuid4()), seconds=9)

    async def read_then_move(cells: Sequence[Cell]) -> Sequence[LatestPosition]:
        positions = await read_latest_positions(cells)
        await publish_locations([moved])
        return positions

    monkeypatch.setattr(consumer, "read_latest_positions", read_then_move)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    with override_settings(REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT="cells"):
        reset_fanouts()
        communicator, connected = await open_hub()
        assert connected
        client = Client(communicator)
        try:
            await client.send(HANDSHAKE)
            await client.receive_message()
            assert "result" in await client.join([[0, 0]])
            [record] = await client.receive_records(1, timeout=5)
            assert record["arguments"][0] == str(moved.tracker_id)
        finally:
            await communicator.disconnect()
            fanout = get_fanout()
            assert isinstance(fanout, RedisFanOut)
            if fanout._reader is not None:
                fanout._reader.cancel()
            reset_fanouts()


@pytest_db
async def test_a_join_whose_snapshot_cannot_be_read_gets_an_error_and_joins_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.hub.test_consumer import connected_client
    from tracking.hub import consumer

    async def database_down(cells: Sequence[Cell]) -> Sequence[LatestPosition]:
        raise ConnectionError("the database is down")

    monkeypatch.setattr(consumer, "read_latest_positions", database_down)
    reset_fanouts()
    async with connected_client() as client:
        completion = await client.join([[0, 0]])
        assert "database" in completion["error"]
        assert get_fanout().watched_cells() == []  # type: ignore[attr-defined]
        monkeypatch.setattr(consumer, "read_latest_positions", read_latest_positions)
        assert (await client.join([[0, 0]]))["result"]["joined"] == [[0, 0]]


@pytest.mark.redis
@pytest_db
async def test_a_viewer_of_the_cell_a_tracker_left_receives_nothing_of_it_on_any_fan_out(
    redis_fanout: str,
) -> None:
    """The departure rides on the left cell's message; no fan-out hands it to a viewer."""
    from tests.hub.test_consumer import connected_client

    reset_fanouts()
    try:
        async with connected_client() as client:
            await client.join([[0, 0]])
            moved = LatestPosition(
                tracker_id=uuid.uuid4(),
                latitude=0.5,
                longitude=1.5,
                timestamp=START,
                cell=MIDDLE,
                previous_cell=WEST,
            )
            stayed = west_position(str(uuid.uuid4()))
            await publish_locations([moved])
            await publish_locations([stayed])
            [record] = await client.receive_records(1, timeout=5)
            assert record["arguments"][0] == str(stayed.tracker_id)
            assert await client.nothing_more()
    finally:
        reset_fanouts()
