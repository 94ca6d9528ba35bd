"""The fan-out of cell updates: in one process, and between processes over Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from tracking.grid import Cell
from tracking.hub import protocol
from tracking.hub.fanout import LocalFanOut, RedisFanOut
from tracking.hub.fanout import base as fanout_base
from tracking.redaction import redacted_url

HELSINKI, NEW_YORK, FIJI = Cell(24, 60), Cell(-75, 40), Cell(-180, -17)


def records(name: str) -> str:
    """A cell's message, as publishing writes it (a fan-out over Redis checks the shape)."""
    return protocol.invocation("locationUpdated", [name])


class Viewer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[str] = []
        self.arrived = asyncio.Event()

    def deliver(self, records: str) -> None:
        self.received.append(records)
        self.arrived.set()

    async def next(self, timeout: float = 5) -> str:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        return self.received[-1]


async def test_an_update_reaches_the_viewers_of_its_cell_only() -> None:
    fanout = LocalFanOut()
    helsinki, elsewhere = Viewer("a"), Viewer("b")
    await fanout.watch(helsinki, [HELSINKI])
    await fanout.watch(elsewhere, [NEW_YORK])
    assert await fanout.publish({HELSINKI: "r1"}) == 0
    assert helsinki.received == ["r1"] and elsewhere.received == []


async def test_a_viewer_that_stops_watching_gets_nothing_more() -> None:
    fanout = LocalFanOut()
    viewer, other = Viewer("a"), Viewer("b")
    await fanout.watch(viewer, [HELSINKI, NEW_YORK])
    await fanout.watch(other, [HELSINKI])
    await fanout.unwatch(viewer, [HELSINKI])
    await fanout.publish({HELSINKI: "h", NEW_YORK: "n"})
    assert viewer.received == ["n"] and other.received == ["h"]


@pytest.fixture
async def redis_pair(redis_url: str) -> AsyncIterator[tuple[RedisFanOut, RedisFanOut]]:
    """A publishing process's fan-out and a web process's, on one Redis."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    publisher, web = RedisFanOut(redis_url, prefix=prefix), RedisFanOut(redis_url, prefix=prefix)
    yield publisher, web
    for fanout in (publisher, web):
        if fanout._reader is not None:
            fanout._reader.cancel()
        await fanout._pubsub.aclose()
        await fanout._redis.aclose()


@pytest.mark.redis
async def test_over_redis_an_update_published_right_after_watching_arrives(
    redis_pair: tuple[RedisFanOut, RedisFanOut],
) -> None:
    publisher, web = redis_pair
    viewer, other = Viewer("a"), Viewer("b")
    await web.watch(viewer, [HELSINKI, FIJI])
    await web.watch(other, [NEW_YORK])
    # watch() returned: the subscription is confirmed, nothing can be missed.
    await publisher.publish({FIJI: records("fiji"), NEW_YORK: records("ny")})
    assert await viewer.next() == records("fiji")
    assert await other.next() == records("ny")
    assert viewer.received == [records("fiji")]


@pytest.mark.redis
async def test_over_redis_a_cell_nobody_watches_any_more_is_unsubscribed(
    redis_pair: tuple[RedisFanOut, RedisFanOut], redis_url: str
) -> None:
    _publisher, web = redis_pair
    viewer = Viewer("a")
    await web.watch(viewer, [HELSINKI])
    client = aioredis.Redis.from_url(redis_url)
    channel = web.channel(HELSINKI)
    assert (await client.pubsub_numsub(channel))[0][1] == 1
    await web.unwatch(viewer, [HELSINKI])

    async def unsubscribed() -> bool:
        return (await client.pubsub_numsub(channel))[0][1] == 0

    await support.eventually(unsubscribed, what="the cell's subscription to go")
    await client.aclose()


@pytest.mark.redis
async def test_over_redis_a_lost_connection_is_subscribed_again(
    redis_pair: tuple[RedisFanOut, RedisFanOut], redis_url: str
) -> None:
    publisher, web = redis_pair
    viewer = Viewer("a")
    await web.watch(viewer, [HELSINKI])
    client = aioredis.Redis.from_url(redis_url)
    channel = web.channel(HELSINKI)
    # Only this fan-out's subscriber: a shared Redis serves other processes too.
    connection = web._pubsub.connection
    assert connection is not None and connection._writer is not None
    host, port = connection._writer.get_extra_info("sockname")[:2]
    assert await client.client_kill_filter(_type="pubsub", addr=f"{host}:{port}") == 1
    # Updates after the subscription is back are delivered again.
    for _ in range(100):
        await publisher.publish({HELSINKI: records("again")})
        try:
            assert await viewer.next(timeout=0.2) == records("again")
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("the subscription did not come back")
    assert (await client.pubsub_numsub(channel))[0][1] == 1
    await client.aclose()


@pytest.mark.redis
async def test_a_redis_outage_is_logged_when_it_starts_while_it_lasts_and_when_it_ends(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, url = support.TcpProxy.in_front_of(redis_url, default_port=6379)
    publisher = RedisFanOut(url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    caplog.set_level(logging.INFO, logger="tracking.hub.fanout")
    try:
        assert await publisher.publish({HELSINKI: "before"}) == 0
        proxy.cut()
        # Every batch of the outage fails, but only its start is logged...
        for _ in range(3):
            assert await publisher.publish({HELSINKI: "h", NEW_YORK: "n"}) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert f"Redis at {redacted_url(url)} (REDIS_URL)" in errors[0]
        assert "ConnectionError" in errors[0]
        # ...then again once a report interval has passed.
        monkeypatch.setattr(fanout_base, "OUTAGE_REPORT_SECONDS", 0.0)
        assert await publisher.publish({HELSINKI: "h"}) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and "4 batches (7 cells) not sent" in errors[1]
        proxy.restore()

        async def published() -> bool:
            return await publisher.publish({HELSINKI: "after"}) == 0

        await support.eventually(published, interval=0.1, what="publishing to come back")
        recovered = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(recovered) == 1 and "again after" in recovered[0]
        # A healthy batch after that logs nothing.
        assert await publisher.publish({HELSINKI: "more"}) == 0
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 3
    finally:
        await publisher._redis.aclose()
        proxy.stop()


@pytest.mark.redis
@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.binary(max_size=40) | st.text(max_size=40).map(str.encode), max_size=6))
async def test_over_redis_junk_on_a_cell_is_skipped_and_the_next_update_arrives(
    redis_pair: tuple[RedisFanOut, RedisFanOut], redis_url: str, junk: list[bytes]
) -> None:
    publisher, web = redis_pair
    viewer, other = Viewer("a"), Viewer("b")
    await web.watch(viewer, [HELSINKI])
    await web.watch(other, [HELSINKI])
    client = aioredis.Redis.from_url(redis_url)
    for message in junk:
        await client.publish(web.channel(HELSINKI), message)
    await client.aclose()
    update = records(str(uuid.uuid4()))
    await publisher.publish({HELSINKI: update})
    assert await viewer.next() == update and await other.next() == update
    assert viewer.received == [update]


@pytest.mark.redis
async def test_junk_on_redis_is_logged_once_then_summarised(
    redis_pair: tuple[RedisFanOut, RedisFanOut],
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publisher, web = redis_pair
    viewer = Viewer("a")
    await web.watch(viewer, [HELSINKI])
    caplog.set_level(logging.INFO, logger="tracking.hub.fanout")
    client = aioredis.Redis.from_url(redis_url)
    for number in range(50):
        await client.publish(web.channel(HELSINKI), f"junk {number}\n2026 ERROR forged")
    await publisher.publish({HELSINKI: records("valid")})
    assert await viewer.next() == records("valid")
    [first] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped a malformed message from Redis" in first and "'junk 0\\n2026" in first
    # Once the report interval has passed, the next one says how many there were.
    monkeypatch.setattr(fanout_base, "SKIPPED_REPORT_SECONDS", 0.0)
    await client.publish(web.channel(HELSINKI), b"\xff")
    await publisher.publish({HELSINKI: records("again")})
    assert await viewer.next() == records("again")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2 and "skipped 50 more malformed messages" in lines[1], lines
    assert all("\n" not in line for line in lines)
    await client.aclose()
