"""A real hub connection hears of fences saved in the admin of the same process.

The admin's views are sync: under an ASGI server they run in asgiref's
``sync_to_async`` thread, and the change is published from there after the
commit. It must reach the fan-out of the server's event loop, where the
connections are: with the in-process ``LocalFanOut`` (the demo, and these
tests without Redis) nothing else would carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import Client as Browser
from django.urls import reverse

from tests import support
from tests.hub.test_consumer import connected_client
from tests.hub_stack import Watcher
from tests.test_geofence_changes import square
from tracking.hub.fanout import LocalFanOut, running_fanout
from tracking.models import Geofence

pytestmark = pytest.mark.django_db(transaction=True)


def admin_posts(path: str, data: dict[str, object]) -> int:
    """What an operator's browser does: sign in to the admin and post a form."""
    user = User.objects.filter(username="operator").first() or User.objects.create_superuser(
        "operator", "operator@example.com", "pw"
    )
    browser = Browser()
    browser.force_login(user)
    return browser.post(path, data).status_code


async def test_a_viewer_hears_of_a_fence_saved_in_its_cell_in_the_admin() -> None:
    async with connected_client() as helsinki, connected_client() as new_york:
        await helsinki.join([[24, 60], [25, 60]])
        await new_york.join([[-75, 40]])
        assert isinstance(running_fanout(), LocalFanOut)

        status = await database_sync_to_async(admin_posts)(
            reverse("admin:tracking_geofence_add"),
            {"name": "Kamppi", "is_active": "on", "geojson": square(24.93, 60.16, 24.94, 60.17)},
        )

        assert status == 302
        fence = await Geofence.objects.aget(name="Kamppi")
        assert await helsinki.receive_records(1) == [
            {"type": 1, "target": "geofencesChanged", "arguments": [[str(fence.pk)]]}
        ]
        assert await new_york.nothing_more()

        # Moved to New York: both hear of it, the cell it left and the one it reached.
        status = await database_sync_to_async(admin_posts)(
            reverse("admin:tracking_geofence_change", args=[fence.pk]),
            {"name": "Kamppi", "is_active": "on", "geojson": square(-74.01, 40.70, -74.0, 40.71)},
        )
        assert status == 302
        changed = {"type": 1, "target": "geofencesChanged", "arguments": [[str(fence.pk)]]}
        assert await helsinki.receive_records(1) == [changed]
        assert await new_york.receive_records(1) == [changed]


async def test_a_viewer_far_away_hears_nothing_of_a_fence_saved_in_the_admin() -> None:
    async with connected_client() as new_york:
        await new_york.join([[-75, 40]])
        status = await database_sync_to_async(admin_posts)(
            reverse("admin:tracking_geofence_add"),
            {"name": "Kamppi", "is_active": "on", "geojson": square(24.93, 60.16, 24.94, 60.17)},
        )
        assert status == 302
        assert await new_york.nothing_more()


# --- The servers users run ------------------------------------------------------------------------


class Operator:
    """An operator's browser on a running server: signs in to the admin, posts its forms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def _csrf(self) -> str:
        return next(
            cookie.value or ""
            for cookie in self.cookies
            if cookie.name == "csrftoken" and cookie.value is not None
        )

    def post(self, path: str, data: dict[str, str]) -> int:
        self.opener.open(f"{self.url}{path}", timeout=30).read()  # the form, and its CSRF cookie
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self._csrf()}).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, headers={"Referer": f"{self.url}{path}"}
        )
        with self.opener.open(request, timeout=30) as response:
            return int(response.status)

    def sign_in(self, username: str, password: str) -> None:
        self.post("/admin/login/?next=/admin/", {"username": username, "password": password})
        assert any(cookie.name == "sessionid" for cookie in self.cookies), "not signed in"


class FenceWatcher(Watcher):
    """A pysignalr client that also records ``geofencesChanged``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.changed: list[list[str]] = []
        self.client.on("geofencesChanged", self._on_changed)

    async def _on_changed(self, arguments: list[Any]) -> None:
        self.changed.append(arguments[0])


@contextlib.asynccontextmanager
async def fence_watching(url: str, cells: list[list[int]]) -> AsyncIterator[FenceWatcher]:
    watcher = FenceWatcher(url)
    completion = await watcher.join(cells)
    assert completion.error is None
    try:
        yield watcher
    finally:
        await watcher.close()


SERVERS = {
    # The demo's way: one process, no Redis, updates stay in it (LocalFanOut).
    "uvicorn without Redis": [
        "-m",
        "tracker_site.serve",
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "--lifespan",
        "off",
    ],
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "tracker_site.asgi:application"],
}


@pytest.mark.slow
@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_a_fence_saved_in_a_running_servers_admin_reaches_the_viewers_of_its_cell(
    server: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    if server == "daphne":
        settings |= {
            "REDIS_URL": request.getfixturevalue("redis_url"),
            "CHANNEL_LAYER_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
        }
    env = support.base_env(
        **settings,
        DJANGO_SUPERUSER_PASSWORD="operator-password-1",
        HUB_CLIENT_TIMEOUT_SECONDS="300",
    )
    for command in (
        ["migrate", "-v0"],
        ["createsuperuser", "--noinput", "--username", "operator", "--email", "o@example.com"],
    ):
        done = support.manage(command, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    port = support.free_port()
    arguments = SERVERS[server] + (
        ["--port", str(port)] if server != "daphne" else ["-p", str(port)]
    )
    with support.background(
        [support.PYTHON, *arguments], env=env, log=tmp_path / "server.log"
    ) as process:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
        url = f"http://127.0.0.1:{port}"
        operator = Operator(url)
        await asyncio.to_thread(operator.sign_in, "operator", "operator-password-1")
        async with (
            fence_watching(url, [[24, 60]]) as helsinki,
            fence_watching(url, [[-75, 40]]) as new_york,
        ):
            add = reverse("admin:tracking_geofence_add")
            status = await asyncio.to_thread(
                operator.post,
                add,
                {
                    "name": "Kamppi",
                    "is_active": "on",
                    "geojson": square(24.93, 60.16, 24.94, 60.17),
                },
            )
            assert status == 200  # the redirect, followed
            (kamppi,) = await support.eventually(
                lambda: helsinki.changed or None, timeout=10, what="geofencesChanged in Helsinki"
            )
            status = await asyncio.to_thread(
                operator.post,
                add,
                {
                    "name": "Wall St",
                    "is_active": "on",
                    "geojson": square(-74.01, 40.70, -74.0, 40.71),
                },
            )
            assert status == 200
            await support.eventually(
                lambda: new_york.changed or None, timeout=10, what="geofencesChanged in New York"
            )
            # Published one after the other by one process: had New York been
            # told of Kamppi, it would have heard it first.
            assert len(kamppi) == 1 and len(new_york.changed) == 1
            assert new_york.changed[0] != kamppi and helsinki.changed == [kamppi]
