"""The overview through the hub: updateOverview, overviewUpdated, and one aggregate per process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async
from django.test import override_settings
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from tests.hub.test_consumer import connected_client
from tests.hub.test_session import HANDSHAKE, RS, Ports, invocation, json_values, make_session, say
from tests.support import eventually
from tracking.areas import (
    LEVELS,
    Overview,
    OverviewRequest,
    parse_overview_request,
)
from tracking.grid import Grid
from tracking.hub import overview as overview_module
from tracking.hub import protocol
from tracking.hub.map_hub import MapHub
from tracking.hub.overview import OverviewWatch
from tracking.hub.session import HubError, SessionLimits
from tracking.models import Tracker

WORLD = [-180, -90, 180, 90]


class Viewer:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def deliver(self, records: str) -> None:
        for record in records.split(RS)[:-1]:
            self.received.append(orjson.loads(record)["arguments"][0])


class Database:
    """The aggregate query, counted, with a gate to hold it under way."""

    def __init__(self, *points: tuple[float, float]) -> None:
        self.points = list(points)
        self.reads = 0
        self.under_way = 0
        self.most_at_once = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def read(self) -> Overview:
        self.reads += 1
        self.under_way += 1
        self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            await self.gate.wait()
            if self.fail:
                raise OSError("the database went away")
            return Overview.counting(self.points)
        finally:
            self.under_way -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def world(level: int = 45) -> OverviewRequest:
    return requested(level, WORLD)


def requested(level: int, view: Sequence[float]) -> OverviewRequest:
    request = parse_overview_request(level, view)
    assert request is not None
    return request


# --- One aggregate per process ----------------------------------------------------------


async def test_a_new_viewer_is_answered_from_an_aggregate_younger_than_the_period() -> None:
    database, clock = Database((60.1, 24.9)), Clock()
    watch = OverviewWatch(read=database.read, period=lambda: 5.0, clock=clock)
    first, second = Viewer(), Viewer()
    await watch.watch(first, world())
    clock.now += 4.0
    await watch.watch(second, world())
    assert database.reads == 1
    assert first.received == second.received and second.received[0]["total"] == 1
    clock.now += 1.5
    await watch.watch(Viewer(), world())
    assert database.reads == 2
    for viewer in (first, second):
        watch.unwatch(viewer)


async def test_viewers_asking_at_once_share_one_query_never_two_at_once() -> None:
    database = Database((60.1, 24.9), (40.7, -74.0))
    database.gate.clear()
    watch = OverviewWatch(read=database.read, period=lambda: 5.0)
    viewers = [Viewer() for _ in range(5)]
    asking = [asyncio.create_task(watch.watch(v, world())) for v in viewers]
    await eventually(lambda: database.under_way == 1, what="the query under way")
    database.gate.set()
    await asyncio.gather(*asking)
    assert database.reads == 1 and database.most_at_once == 1
    assert all(v.received[0]["total"] == 2 for v in viewers)
    for viewer in viewers:
        watch.unwatch(viewer)


async def test_every_period_each_viewer_is_sent_the_areas_of_its_level_in_its_view() -> None:
    database = Database((60.1, 24.9), (-33.9, 151.2))
    watch = OverviewWatch(read=database.read, period=lambda: 0.05)
    europe, everywhere = Viewer(), Viewer()
    await watch.watch(europe, requested(15, [0, 30, 45, 75]))
    await watch.watch(everywhere, world())
    database.points.append((60.2, 25.0))
    await eventually(lambda: europe.received[-1]["total"] == 3, what="the new tracker counted")
    assert [a["area"] for a in europe.received[-1]["areas"]] == [[1, 4]]
    assert europe.received[-1]["areas"][0]["count"] == 2
    assert {a["count"] for a in everywhere.received[-1]["areas"]} == {2, 1}
    watch.unwatch(europe)
    watch.unwatch(everywhere)


async def test_nothing_is_read_once_nobody_watches() -> None:
    database = Database((60.1, 24.9))
    watch = OverviewWatch(read=database.read, period=lambda: 0.02)
    viewer = Viewer()
    await watch.watch(viewer, world())
    await eventually(lambda: database.reads >= 3, what="a few periodic reads")
    watch.unwatch(viewer)
    assert not watch.ticking
    reads = database.reads
    await asyncio.sleep(0.1)
    assert database.reads == reads


async def test_a_failed_read_keeps_what_the_viewer_watched_and_the_updates_resume() -> None:
    database, clock = Database((60.1, 24.9)), Clock()
    watch = OverviewWatch(read=database.read, period=lambda: 0.02, clock=clock)
    viewer = Viewer()
    await watch.watch(viewer, world())
    database.fail = True
    clock.now += 1  # the aggregate is out of date: the next viewer's read is fresh
    with pytest.raises(OSError):
        await watch.watch(viewer, requested(15, [0, 30, 45, 75]))
    assert len(watch) == 1
    database.fail = False
    database.points.append((1.0, 1.0))
    await eventually(lambda: viewer.received[-1]["total"] == 2, what="updates again")
    assert {v["areaDegrees"] for v in viewer.received} == {45}
    watch.unwatch(viewer)


# --- Through a hub session ----------------------------------------------------------------


class OverviewPorts:
    """What the consumer does, with the watch of a fake database."""

    def __init__(self, watch: OverviewWatch) -> None:
        self.watch = watch
        self.viewer: Any = None
        self.refuse = False

    async def watch_overview(self, request: OverviewRequest) -> None:
        if self.refuse:
            raise HubError("Could not read the overview.")
        await self.watch.watch(self.viewer, request)

    async def unwatch_overview(self) -> None:
        self.watch.unwatch(self.viewer)


def overview_session(
    database: Database, *, period: float = 60.0, limits: SessionLimits | None = None
) -> tuple[Any, Any, MapHub, OverviewWatch]:
    watch = OverviewWatch(read=database.read, period=lambda: period)
    ports = OverviewPorts(watch)
    hub = MapHub(grid=Grid(1.0), max_cells=3, ports=Ports(), overview=ports)
    session, socket, _ = make_session(hub, limits=limits or SessionLimits(coalesce_seconds=0))
    ports.viewer = session
    return session, socket, hub, watch


def overviews(socket: Any) -> list[dict[str, Any]]:
    return [r["arguments"][0] for r in socket.records() if r.get("target") == "overviewUpdated"]


async def test_update_overview_answers_its_level_then_the_overview_in_the_documented_shape() -> (
    None
):
    database = Database((60.17, 24.94), (60.16, 24.93), (40.71, -74.0))
    session, socket, hub, watch = overview_session(database)
    await say(session, HANDSHAKE)
    await say(session, invocation("updateOverview", 45, WORLD))
    await eventually(lambda: overviews(socket), what="the overview after the completion")
    records = socket.records()
    assert records[1] == {"type": 3, "invocationId": "1", "result": {"areaDegrees": 45}}
    assert records[2]["target"] == "overviewUpdated"
    (overview,) = overviews(socket)
    assert overview["areaDegrees"] == 45 and overview["total"] == 3
    assert sum(area["count"] for area in overview["areas"]) == 3
    assert set(overview) == {"areaDegrees", "total", "areas"}
    for area in overview["areas"]:
        assert set(area) == {"area", "count", "latitude", "longitude", "bounds"}
        west, south, east, north = area["bounds"]
        assert west <= area["longitude"] <= east and south <= area["latitude"] <= north
    assert [a["area"] for a in overview["areas"]] == [[-2, 0], [0, 1]]
    assert hub.overview is not None
    await hub.close()
    assert len(watch) == 0


async def test_stopping_with_null_sends_no_more_overviews() -> None:
    database = Database((60.17, 24.94))
    session, socket, hub, watch = overview_session(database, period=0.02)
    await say(session, HANDSHAKE)
    await say(session, invocation("updateOverview", 45, WORLD))
    await eventually(lambda: len(overviews(socket)) >= 2, what="periodic overviews")
    await say(session, invocation("updateOverview", None, None, invocation_id="2"))
    completion = next(r for r in socket.records() if r.get("invocationId") == "2")
    assert completion["result"] == {"areaDegrees": None}
    assert len(watch) == 0 and not watch.ticking and hub.overview is None
    await asyncio.sleep(0.05)
    sent = len(overviews(socket))
    await asyncio.sleep(0.1)
    assert len(overviews(socket)) == sent


async def test_a_view_change_waiting_to_run_is_replaced_by_a_newer_one() -> None:
    database = Database((60.17, 24.94))
    database.gate.clear()
    session, socket, _, watch = overview_session(database)
    await say(session, HANDSHAKE)
    await session.receive(invocation("updateOverview", 45, WORLD, invocation_id="1"))
    await eventually(lambda: database.under_way == 1, what="the first call under way")
    await session.receive(invocation("updateOverview", 15, [0, 30, 45, 75], invocation_id="2"))
    await session.receive(invocation("updateOverview", 3, [20, 55, 30, 65], invocation_id="3"))
    database.gate.set()
    await session.answered()
    await eventually(lambda: overviews(socket), what="the overview")
    answers = {r["invocationId"]: r for r in socket.records() if r.get("type") == 3}
    assert answers["2"]["error"] == "Replaced by a later updateOverview call before it ran."
    assert answers["3"]["result"] == {"areaDegrees": 3}
    # The first call's overview, if it still waited, was replaced by the newer one.
    assert [o["areaDegrees"] for o in overviews(socket)] in ([45, 3], [3])
    watch.unwatch(session)


async def test_an_overview_that_cannot_be_read_is_an_error_completion() -> None:
    database = Database()
    session, socket, hub, _ = overview_session(database)
    hub._overview_ports.refuse = True  # type: ignore[union-attr]
    await say(session, HANDSHAKE)
    await say(session, invocation("updateOverview", 45, WORLD))
    assert socket.records()[-1] == {
        "type": 3,
        "invocationId": "1",
        "error": "Could not read the overview.",
    }
    assert hub.overview is None and not socket.closed


async def test_a_slow_client_is_sent_only_the_newest_overview() -> None:
    database = Database((60.17, 24.94))
    session, socket, _, watch = overview_session(database)
    await say(session, HANDSHAKE)
    await say(session, invocation("updateOverview", 45, WORLD))
    await eventually(lambda: overviews(socket), what="the first overview")
    socket.gate.clear()
    session.deliver(protocol.PING)  # a send under way that does not go out: the client is behind
    await eventually(lambda: session.sending_since is not None, what="a stuck send")
    for points in range(2, 6):
        database.points.append((float(points), 0.0))
        watch.send(await watch.fresh())
    assert session.queued == 1
    socket.gate.set()
    await eventually(lambda: overviews(socket)[-1]["total"] == 5, what="the newest overview")
    assert [o["total"] for o in overviews(socket)] == [1, 5]
    watch.unwatch(session)


@given(
    area_degrees=st.sampled_from([*LEVELS, None, 7]) | json_values,
    view=st.lists(st.integers(-200, 200) | st.floats(-200, 200), max_size=5) | json_values,
    target=st.sampled_from(["updateOverview", "updateoverview"]),
)
async def test_any_arguments_get_exactly_one_completion_never_a_crash(
    area_degrees: Any, view: Any, target: str
) -> None:
    database = Database((60.17, 24.94), (-16.8, 179.5))
    session, socket, hub, watch = overview_session(database)
    await say(session, HANDSHAKE)
    await say(session, invocation(target, area_degrees, view, invocation_id="7"))
    completions = [r for r in socket.records() if r.get("type") == 3]
    assert len(completions) == 1 and completions[0]["invocationId"] == "7"
    (completion,) = completions
    if "error" in completion:
        assert completion["error"]
        assert hub.overview is None and len(watch) == 0
    else:
        assert completion["result"] == {"areaDegrees": area_degrees}
        assert (hub.overview is None) == (area_degrees is None)
    assert not socket.closed
    await hub.close()
    assert len(watch) == 0


# --- Through the real consumer and database ------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


def place(latitude: float, longitude: float, *, seen: datetime, active: bool = True) -> Tracker:
    grid = Grid(1.0)
    cell = grid.cell_of(latitude=latitude, longitude=longitude)
    return Tracker.objects.create(
        id=uuid.uuid4(),
        latitude=latitude,
        longitude=longitude,
        position_at=seen,
        ordered_at=seen,
        cell_x=cell.x,
        cell_y=cell.y,
        is_active=active,
    )


@pytestmark_db
async def test_the_server_counts_active_trackers_that_are_not_offline() -> None:
    now = timezone.now()
    await database_sync_to_async(
        lambda: [
            place(60.17, 24.94, seen=now),  # online
            place(60.18, 24.95, seen=now - timedelta(minutes=5)),  # stale
            place(60.19, 24.96, seen=now - timedelta(hours=1)),  # offline: not counted
            place(60.20, 24.97, seen=now, active=False),  # inactive: not counted
            place(-16.8, 179.5, seen=now),
            place(-16.9, -179.8, seen=now),
            Tracker.objects.create(id=uuid.uuid4()),  # never seen: not counted
        ]
    )()
    async with connected_client() as client:
        completion = await client.invoke("updateOverview", 3, [175, -20, -175, -10])
        assert completion["result"] == {"areaDegrees": 3}
        (record,) = await client.receive_records(1)
        fiji = record["arguments"][0]
        assert fiji["total"] == 4
        assert [(a["area"], a["count"]) for a in fiji["areas"]] == [([-60, -6], 1), ([59, -6], 1)]
        await client.invoke("updateOverview", 45, WORLD)
        (record,) = await client.receive_records(1)
        world_view = record["arguments"][0]
        assert sum(a["count"] for a in world_view["areas"]) == world_view["total"] == 4
        helsinki = next(a for a in world_view["areas"] if a["area"] == [0, 1])
        assert helsinki["count"] == 2
        assert helsinki["bounds"] == [24.94, 60.17, 24.95, 60.18]


@pytestmark_db
async def test_a_watching_connection_is_sent_the_overview_every_period_until_it_stops() -> None:
    now = timezone.now()
    await database_sync_to_async(place)(60.17, 24.94, seen=now)
    with override_settings(TRACKING_OVERVIEW_SECONDS=0.1):
        await overview_module.stop_all()
        async with connected_client() as client:
            await client.invoke("updateOverview", 45, WORLD)
            (first,) = await client.receive_records(1)
            assert first["arguments"][0]["total"] == 1
            await database_sync_to_async(place)(40.71, -74.0, seen=now)
            while True:
                (record,) = await client.receive_records(1)
                if record["arguments"][0]["total"] == 2:
                    break
            stop = await client.invoke("updateOverview", None, None)
            assert stop["result"] == {"areaDegrees": None}
            # What may have been under way before the stop arrives; then nothing more.
            await client.nothing_more(0.3)
            assert await client.nothing_more(0.3)
        await overview_module.stop_all()


@pytestmark_db
async def test_a_hostile_request_is_refused_with_a_sentence_and_the_connection_goes_on() -> None:
    async with connected_client() as client:
        refused = await client.invoke("updateOverview", 3, WORLD)
        assert refused["error"] == (
            "This view covers 7200 areas of 3°, more than the 200 an overview may send; "
            "use larger areas."
        )
        refused = await client.invoke("updateOverview", 45, [0, 10, 10])
        assert refused["error"] == (
            "view must be an array of four numbers [west, south, east, north]"
        )
        answered = await client.invoke("updateMapGridGroups", [[24, 60]], [])
        assert answered["result"]["cells"] == [[24, 60]]


@given(
    points=st.lists(
        st.tuples(st.floats(-90, 90), st.floats(-180, 180, exclude_max=True)), max_size=40
    ),
    level=st.sampled_from(LEVELS),
    west=st.floats(-180, 180),
    width=st.floats(0, 30),
)
def test_an_overview_encoded_area_by_area_is_the_record_the_protocol_writes(
    points: list[tuple[float, float]], level: int, west: float, width: float
) -> None:
    east = west + width if west + width <= 180 else west + width - 360
    half_height = {45: 90, 15: 60, 3: 10}[level]
    request = requested(level, [west, -half_height, east, half_height])
    overview = Overview.counting(points)
    assert overview_module.Encoder(overview).record(request) == protocol.overview_updated(
        overview=overview.payload(request)
    )
