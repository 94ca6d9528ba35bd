from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from django.test import override_settings

# The ASGI application is built once, here, while DEBUG is on as it is for
# pytest (settings.py), as a web server builds it at start: pytest-django turns
# DEBUG off for the tests themselves, and a web server refuses the development
# key with DEBUG off. Built here, a test module that imports it lazily runs
# alone as it runs in the whole suite.
import tracker_site.asgi  # noqa: F401
from tests import support

# Property-based tests go through real requests and databases, whose speed
# varies with the machine: no per-example deadline, and no complaint that
# examples are slow to make.
hypothesis.settings.register_profile(
    "tracker",
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    print_blob=True,
)
hypothesis.settings.load_profile("tracker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of SQLite's own behaviour (marked ``sqlite``) are left out of a
    run on PostgreSQL, not skipped there: ``tests.run`` runs them in its
    SQLite pass, and a CI run skips nothing."""
    from django.db import connection

    if connection.vendor == "sqlite":
        return
    kept = [item for item in items if item.get_closest_marker("sqlite") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (one per test module: the
    sync API must not outlive the module's tests into the async ones)."""
    if not Path(support.CHROMIUM).exists():
        support.unavailable("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=support.CHROMIUM, args=support.CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser tab at 1280 x 800; ``page.errors`` collects uncaught script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "demo.log"


@pytest.fixture(scope="module")
def demo(demo_log: Path) -> Iterator[str]:
    """``manage.py demo`` on a fresh SQLite database (60 trackers): its URL."""
    port = support.free_port()
    env = support.base_env(
        DATABASE_URL=f"sqlite:///{demo_log.parent / 'db.sqlite3'}", TRACKING_BATCH_WAIT_MS="100"
    )
    del env["DEBUG"]  # as `make run` starts it: the demo turns DEBUG on by itself
    command = [
        *(support.PYTHON, "manage.py", "demo", "--port", str(port)),
        *("--trackers", "60", "--seed", "5"),
    ]
    with support.background(command, env=env, log=demo_log) as process:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def demo_admin_password(demo: str, demo_log: Path) -> str:
    """The password the demo printed for the admin user it created."""
    said = support.wait_until(
        lambda: re.search(r"created user 'admin' with password '([^']+)'", demo_log.read_text()),
        what="the demo's admin password",
    )
    return str(said[1])
