from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

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


REDIS_LAYERS = {
    "core": ("channels_redis.core.RedisChannelLayer", {"capacity": 1000}),
    "pubsub": ("channels_redis.pubsub.RedisPubSubChannelLayer", {}),
}


@pytest.fixture(params=sorted(REDIS_LAYERS))
def redis_layer(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """Each Redis channel layer in turn (core and pub/sub), under a prefix of its own."""
    from channels.layers import channel_layers

    backend, extra = REDIS_LAYERS[request.param]
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    layers = {
        "default": {"BACKEND": backend, "CONFIG": {"hosts": [redis_url], "prefix": prefix, **extra}}
    }
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        yield redis_url
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
    """A PROTOCOL 1 body, written as a device would (7 fractional digits, Z)."""
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
