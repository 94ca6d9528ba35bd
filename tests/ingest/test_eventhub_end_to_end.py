"""The real azure-eventhub SDK against the local stand-in, through
``consume_events --source eventhub`` processes, into PostgreSQL and out to a
SignalR client over Redis."""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from azure.eventhub import EventData, EventHubProducerClient
from django.conf import settings

from tests import support
from tests.conftest import event_body
from tests.eventhub_stub import EventHubStub
from tests.hub_stack import HELSINKI_CELL, Stack, running_stack, watching
from tracking.geofences import Fence, FenceIndex, crossings, parse_geojson_text

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

PARTITIONS = 4
# Fast load balancing, so a dead consumer's partitions move within seconds.
QUICK_BALANCING = {
    "EVENTHUB_LOAD_BALANCING_SECONDS": "0.5",
    "EVENTHUB_OWNERSHIP_EXPIRY_SECONDS": "3",
    "EVENTHUB_MAX_WAIT_SECONDS": "0.2",
    "TRACKING_PROGRESS_SECONDS": "1",
}


@pytest.fixture
def hub() -> Iterator[EventHubStub]:
    with EventHubStub(hub="fleet", partitions=PARTITIONS) as stub:
        yield stub


@pytest.fixture
def stack(redis_url: str, hub: EventHubStub, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        redis_url, tmp_path, EVENTHUB_CONNECTION_STRING=hub.connection_string, **QUICK_BALANCING
    ) as running:
        yield running


def publish(hub: EventHubStub, bodies: list[bytes], keys: list[str]) -> None:
    """Send bodies with the real producer, each keyed by its tracker."""
    producer = EventHubProducerClient.from_connection_string(hub.connection_string)
    with producer:
        by_key: dict[str, list[bytes]] = {}
        for body, key in zip(bodies, keys, strict=True):
            by_key.setdefault(key, []).append(body)
        for key, group in by_key.items():
            batch = producer.create_batch(partition_key=key)
            for body in group:
                batch.add(EventData(body))
            producer.send_batch(batch)


def fleet_events(
    trackers: int, per_tracker: int, *, start: datetime
) -> tuple[list[bytes], list[str]]:
    ids = [str(uuid.uuid4()) for _ in range(trackers)]
    bodies, keys = [], []
    for step in range(per_tracker):
        for n, tracker_id in enumerate(ids):
            at = start + timedelta(seconds=step)
            bodies.append(
                event_body(tracker_id=tracker_id, latitude=60.1 + n / 1000, longitude=24.9, at=at)
            )
            keys.append(tracker_id)
    return bodies, keys


# Each count() starts a Django process: the waits that use it poll gently.
GENTLY = 0.3


def count(stack: Stack, expression: str) -> int:
    result = support.manage(
        ["shell", "-v0", "-c", f"from tracking.models import *; print({expression})"], env=stack.env
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def consumer(stack: Stack, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [support.PYTHON, "manage.py", "consume_events", "--source", "eventhub"],
        cwd=support.ROOT,
        env=stack.env,
        stdout=(stack.logs / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_until_two_consumers_share_the_partitions(stack: Stack) -> None:
    support.wait_until(
        lambda: (
            count(stack, "EventHubOwnership.objects.values('owner_id').distinct().count()") == 2
            and count(stack, "EventHubOwnership.objects.count()") == PARTITIONS
        ),
        interval=GENTLY,
        timeout=30,
        what="both consumers to own partitions",
    )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


async def test_events_published_to_the_hub_reach_the_database_and_a_signalr_client(
    stack: Stack, hub: EventHubStub
) -> None:
    tracker_id = str(uuid.uuid4())
    process = consumer(stack, "consumer")
    try:
        async with watching(stack.url, [HELSINKI_CELL]) as watcher:
            body = event_body(
                tracker_id=tracker_id, latitude=60.17, longitude=24.94, at=datetime.now(UTC)
            )
            publish(hub, [body], [tracker_id])
            update = await watcher.wait_for(tracker_id, timeout=15)
    finally:
        assert stop(process) == 0
    assert update[1:3] == [60.17, 24.94]
    assert count(stack, "Position.objects.count()") == 1
    # Shutting down released the partitions and left a checkpoint behind.
    assert count(stack, "EventHubOwnership.objects.exclude(owner_id='').count()") == 0
    assert count(stack, "EventHubCheckpoint.objects.count()") == 1


def test_a_restarted_consumer_resumes_where_it_stopped_and_loses_nothing(
    stack: Stack, hub: EventHubStub
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=2)
    first, first_keys = fleet_events(20, 10, start=start)
    publish(hub, first, first_keys)
    process = consumer(stack, "first")
    support.wait_until(
        lambda: count(stack, "Position.objects.count()") == 200,
        interval=GENTLY,
        timeout=30,
        what="the first 200 events",
    )
    assert stop(process) == 0

    second, second_keys = fleet_events(20, 10, start=start + timedelta(seconds=30))
    publish(hub, second, second_keys)
    process = consumer(stack, "second")
    support.wait_until(
        lambda: count(stack, "Position.objects.count()") == 400,
        interval=GENTLY,
        timeout=30,
        what="all 400 events",
    )
    assert stop(process) == 0

    # The restart read on from the checkpoints: it did not start over.
    summary = (stack.logs / "second.log").read_text().splitlines()[-1]
    assert summary.startswith(
        "consume_events stopped: 200 accepted (200 new, 0 already stored), 0 rejected"
    ), summary
    assert count(stack, "RejectedEvent.objects.count()") == 0


def test_two_consumers_share_the_partitions_and_one_takes_over_when_the_other_dies(
    stack: Stack, hub: EventHubStub
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=3)
    a, b = consumer(stack, "a"), consumer(stack, "b")
    try:
        wait_until_two_consumers_share_the_partitions(stack)
        bodies, keys = fleet_events(40, 5, start=start)
        publish(hub, bodies, keys)
        support.wait_until(
            lambda: count(stack, "Position.objects.count()") == 200,
            interval=GENTLY,
            timeout=30,
            what="the first 200",
        )

        a.kill()  # no goodbye: its ownerships expire
        a.wait()
        more, more_keys = fleet_events(40, 5, start=start + timedelta(seconds=60))
        publish(hub, more, more_keys)
        support.wait_until(
            lambda: count(stack, "Position.objects.count()") == 400,
            interval=GENTLY,
            timeout=45,
            what="the survivor to take over every partition and store all 400",
        )
        survivor = count(stack, "EventHubOwnership.objects.values('owner_id').distinct().count()")
        assert survivor == 1
    finally:
        if a.poll() is None:
            a.kill()
        assert stop(b) == 0
    # Every event is in history exactly once (and nothing was refused).
    assert count(stack, "Position.objects.count()") == 400
    assert count(stack, "Tracker.objects.count()") == 80
    assert count(stack, "RejectedEvent.objects.count()") == 0


def test_malformed_bodies_in_the_hub_are_rejected_and_the_stream_goes_on(
    stack: Stack, hub: EventHubStub
) -> None:
    tracker_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    hostile = [
        b"{not json",
        b'{"Id": "x", "Lat": 1}',
        b'{"Id": "bus\x00 42", "Lat": 1, "Lng": 2}',
        b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "0001-01-01T00:00:00+01:00"}'
        % tracker_id.encode(),
    ]
    hub.inject("0", *hostile)
    [last] = hub.inject("0", event_body(tracker_id=tracker_id, latitude=1.5, longitude=2.5, at=now))
    process = consumer(stack, "consumer")
    try:
        support.wait_until(
            lambda: count(stack, "Position.objects.count()") == 1,
            interval=GENTLY,
            timeout=30,
            what="the valid event",
        )
    finally:
        assert stop(process) == 0
    assert count(stack, "RejectedEvent.objects.count()") == len(hostile)
    assert count(
        stack, "RejectedEvent.objects.filter(source__startswith='eventhub partition 0').count()"
    ) == len(hostile)
    # The partition's checkpoint is past every body, the hostile ones first.
    checkpoint = "EventHubCheckpoint.objects.get(partition_id='0').sequence_number"
    assert count(stack, checkpoint) == last.sequence_number


def test_wrong_credentials_and_a_missing_hub_stop_with_the_setting_to_fix(
    stack: Stack, hub: EventHubStub
) -> None:
    for connection_string, setting in (
        (hub.connection_string_for(key="wrong"), "EVENTHUB_CONNECTION_STRING"),
        (hub.connection_string_for(hub="nowhere"), "EVENTHUB_NAME"),
    ):
        env = {**stack.env, "EVENTHUB_CONNECTION_STRING": connection_string}
        result = support.manage(["consume_events", "--source", "eventhub"], env=env, timeout=120)
        assert result.returncode != 0
        assert setting in result.stderr, result.stderr


def test_a_database_outage_is_waited_out_without_losing_events(
    stack: Stack, hub: EventHubStub
) -> None:
    proxy, proxied = support.TcpProxy.in_front_of(stack.env["DATABASE_URL"], default_port=5432)
    process = subprocess.Popen(
        [support.PYTHON, "manage.py", "consume_events", "--source", "eventhub"],
        cwd=support.ROOT,
        env={**stack.env, "DATABASE_URL": proxied, "DATABASE_CONN_MAX_AGE": "600"},
        stdout=(stack.logs / "outage.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        start = datetime.now(UTC) - timedelta(minutes=2)
        before, before_keys = fleet_events(20, 5, start=start)
        publish(hub, before, before_keys)
        support.wait_until(
            lambda: count(stack, "Position.objects.count()") == 100,
            interval=GENTLY,
            timeout=30,
            what="the first 100",
        )

        proxy.cut()
        during, during_keys = fleet_events(20, 5, start=start + timedelta(seconds=30))
        publish(hub, during, during_keys)
        time.sleep(5)  # longer than the ownership expiry
        assert count(stack, "Position.objects.count()") == 100
        proxy.restore()

        support.wait_until(
            lambda: count(stack, "Position.objects.count()") == 200,
            interval=GENTLY,
            timeout=60,
            what="the events sent during the outage",
        )
    finally:
        assert stop(process) == 0
        proxy.stop()
    assert "database unavailable, retrying the batch" in (stack.logs / "outage.log").read_text()
    assert count(stack, "RejectedEvent.objects.count()") == 0


def test_an_unreachable_hub_at_start_is_retried_with_a_log_line(
    stack: Stack, hub: EventHubStub
) -> None:
    tracker_id = str(uuid.uuid4())
    publish(
        hub,
        [event_body(tracker_id=tracker_id, latitude=1, longitude=2, at=datetime.now(UTC))],
        [tracker_id],
    )
    hub.fail_next_connections(2)
    process = consumer(stack, "consumer")
    try:
        support.wait_until(
            lambda: count(stack, "Position.objects.count()") == 1, timeout=30, what="the event"
        )
    finally:
        assert stop(process) == 0
    assert "event hub unreachable (attempt 1)" in (stack.logs / "consumer.log").read_text()


# Fences crossed by the walks below: the two Helsinki sample fences, about 1.2 km apart.
HELSINKI_FENCES = support.ROOT / "tracking/geofence_samples/helsinki.geojson"
STATION, IGLOO = (24.94157, 60.17059), (24.92787, 60.17903)
# A visit: (tracker id, fence id, entered, exited or None while inside).
VisitRow = tuple[str, int, datetime, datetime | None]


def walks_through_the_fences(
    trackers: int, reports: int, *, start: datetime, seed: int
) -> dict[str, list[tuple[datetime, float, float]]]:
    """Each tracker's reports ``(at, latitude, longitude)``, one a second: back
    and forth on the line through both fences' centres, from 360 m beyond one
    to 360 m beyond the other, 30 to 50 m a report with a few metres of noise,
    each from its own place on the line; so every tracker enters, leaves and
    re-enters both fences several times."""
    rng = random.Random(seed)
    (east_lon, east_lat), (west_lon, west_lat) = STATION, IGLOO
    d_lon, d_lat = west_lon - east_lon, west_lat - east_lat
    walks: dict[str, list[tuple[datetime, float, float]]] = {}
    for _ in range(trackers):
        # Position on the line: 0 is 0.3 beyond the station, 1 is 0.3 beyond the fence.
        step, place = rng.uniform(30, 50) / 1935, rng.random()
        direction = rng.choice((-1, 1))
        walk = []
        for n in range(reports):
            place += direction * step
            if not 0 <= place <= 1:
                direction, place = -direction, min(max(place, 0.0), 1.0)
            along = place * 1.6 - 0.3
            walk.append(
                (
                    start + timedelta(seconds=n),
                    round(east_lat + along * d_lat + rng.gauss(0, 0.00003), 6),
                    round(east_lon + along * d_lon + rng.gauss(0, 0.00006), 6),
                )
            )
        walks[str(uuid.uuid4())] = walk
    return walks


def expected_visits(
    walks: dict[str, list[tuple[datetime, float, float]]], fences: dict[int, Fence]
) -> set[VisitRow]:
    """The visits ``tracking.geofences.crossings`` finds over each tracker's
    reports in order: ``(tracker, fence, entered, exited or None)``."""
    index = FenceIndex(fences)
    visits: set[VisitRow] = set()
    for tracker_id, walk in walks.items():
        inside: dict[int, datetime] = {}
        for at, latitude, longitude in sorted(walk):
            found = crossings(
                index, frozenset(inside), latitude=latitude, longitude=longitude,
                exit_margin_m=settings.GEOFENCE_EXIT_MARGIN_M,
            )  # fmt: skip
            for fence in found.exited:
                visits.add((tracker_id, fence, inside.pop(fence), at))
            inside.update((fence, at) for fence in found.entered)
        visits.update((tracker_id, fence, entered, None) for fence, entered in inside.items())
    return visits


def stored_visits(stack: Stack) -> set[VisitRow]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
        rows = connection.execute(
            "SELECT tracker_id, geofence_id, entered_at, exited_at, pending FROM tracking_visit"
        ).fetchall()
    assert not any(row[4] for row in rows), "no minimum dwell is set: no visit is pending"
    return {(str(row[0]), row[1], row[2], row[3]) for row in rows}


def stored_positions(stack: Stack) -> int:
    with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
        row = connection.execute("SELECT count(*) FROM tracking_position").fetchone()
    return int(row[0]) if row else 0


def test_crossings_are_neither_lost_nor_repeated_when_a_consumer_dies_mid_stream(
    stack: Stack, hub: EventHubStub
) -> None:
    imported = support.manage(["import_geofences", str(HELSINKI_FENCES)], env=stack.env)
    assert imported.returncode == 0, imported.stderr
    with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
        rows = connection.execute("SELECT id, geojson FROM tracking_geofence").fetchall()
    fences = {key: parse_geojson_text(text)[0].fence for key, text in rows}
    walks = walks_through_the_fences(12, 180, start=datetime.now(UTC) - timedelta(hours=1), seed=7)
    expected = expected_visits(walks, fences)
    # The walks do what the test is about: every tracker enters, leaves and re-enters.
    for tracker_id in walks:
        entries = sorted(visit for visit in expected if visit[0] == tracker_id)
        assert len(entries) >= 4 and {visit[1] for visit in entries} == set(fences)

    def round_of(third: int) -> tuple[list[bytes], list[str]]:
        bodies, keys = [], []
        for tracker_id, walk in walks.items():
            for at, latitude, longitude in walk[third * 60 : (third + 1) * 60]:
                bodies.append(
                    event_body(tracker_id=tracker_id, latitude=latitude, longitude=longitude, at=at)
                )
                keys.append(tracker_id)
        return bodies, keys

    env = {**stack.env, "EVENTHUB_BATCH_SIZE": "25"}  # many batches, many checkpoints
    small_batches = Stack(url=stack.url, env=env, logs=stack.logs)
    a, b = consumer(small_batches, "a"), consumer(small_batches, "b")
    c = None
    try:
        wait_until_two_consumers_share_the_partitions(stack)
        publish(hub, *round_of(0))
        support.wait_until(
            lambda: stored_positions(stack) == 720, timeout=30, what="the first 720 events"
        )
        publish(hub, *round_of(1))
        support.wait_until(
            lambda: stored_positions(stack) > 720, timeout=30, what="the second round to start"
        )
        a.kill()  # mid-stream, no goodbye: its partitions are taken over once its ownership expires
        a.wait()
        publish(hub, *round_of(2))
        c = consumer(small_batches, "c")  # a restarted consumer claims its share again
        support.wait_until(
            lambda: stored_positions(stack) == 2160,
            timeout=60,
            what="the survivors to store all 2,160 events",
        )
        support.wait_until(
            lambda: stored_visits(stack) == expected,
            timeout=15,
            what="the stored visits to be the crossings of each tracker's reports",
        )
    finally:
        for process in (a, b, c):
            if process is not None and process.poll() is None:
                assert stop(process) == 0
    visits = stored_visits(stack)
    assert visits == expected, (sorted(visits - expected), sorted(expected - visits))
    open_visits = [(tracker, fence) for tracker, fence, _, exited in visits if exited is None]
    assert len(open_visits) == len(set(open_visits))
    assert count(stack, "RejectedEvent.objects.count()") == 0
