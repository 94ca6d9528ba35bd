from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import override_settings

from tests import support


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with support.running_redis() as url:
        if url is None:
            support.unavailable(
                "no Redis answers and no redis-server binary was found to start one"
            )
        assert url is not None
        yield url


@pytest.fixture(scope="session")
def postgres_binaries() -> Path:
    """The folder of ``initdb`` and ``postgres``, to start a private cluster with."""
    bindir = support.postgres_bindir()
    if bindir is None:
        support.unavailable("no PostgreSQL server binaries were found to start a cluster with")
    assert bindir is not None
    return bindir


# Every way updates can travel between processes over Redis (HUB_FANOUT and the layer).
REDIS_FANOUTS = {
    "cells": ("cells", "channels_redis.pubsub.RedisPubSubChannelLayer", {}),
    "channel-layer-core": (
        "channel-layer",
        "channels_redis.core.RedisChannelLayer",
        {"capacity": 1000},
    ),
    "channel-layer-pubsub": ("channel-layer", "channels_redis.pubsub.RedisPubSubChannelLayer", {}),
}


@pytest.fixture(params=sorted(REDIS_FANOUTS))
def redis_fanout(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """Each fan-out over Redis in turn, under a key prefix of its own."""
    from channels.layers import channel_layers

    fanout, backend, extra = REDIS_FANOUTS[request.param]
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    layers = {
        "default": {"BACKEND": backend, "CONFIG": {"hosts": [redis_url], "prefix": prefix, **extra}}
    }
    with override_settings(
        REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT=fanout, CHANNEL_LAYERS=layers
    ):
        channel_layers.backends.clear()
        yield request.param
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_channel_layers() -> Iterator[None]:
    """Each test gets new channel layer instances (the in-memory one keeps state)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def event_body(
    *,
    tracker_id: uuid.UUID | str,
    latitude: float,
    longitude: float,
    at: datetime,
    **extra: object,
) -> bytes:
    """An event body (docs/protocol.md §1.1), written as a device would (7 fractional digits, Z)."""
    import orjson

    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return orjson.dumps(
        {"Id": str(tracker_id), "Lat": latitude, "Lng": longitude, "Ts": stamp, **extra}
    )


@pytest.fixture
def make_body():
    return event_body


@pytest.fixture
def minutes_ago(now: datetime):
    return lambda minutes: now - timedelta(minutes=minutes)
