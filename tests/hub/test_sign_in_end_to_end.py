"""A SignalR client outside a browser signs in with an API token, as its
``accessTokenFactory`` would send it: pysignalr against daphne, with the map
private, over real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pysignalr.client import SignalRClient
from pysignalr.exceptions import AuthorizationError, ServerError

from tests import support
from tests.conftest import event_body
from tests.hub_stack import HELSINKI_CELL, Stack, running_stack, watching
from tracking.hub.sign_in import SIGN_IN_ENDED

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        redis_url,
        tmp_path_factory.mktemp("stack"),
        MAP_LOGIN_REQUIRED="1",
        MAP_PUBLIC="0",
        HUB_CREDENTIAL_CHECK_SECONDS="0.5",
    ) as running:
        made = support.manage(
            [
                "shell",
                "-c",
                "from django.contrib.auth.models import User; User.objects.create_user('fleet-script')",
            ],
            env=running.env,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        yield running


def create_token(stack: Stack) -> str:
    made = support.manage(
        ["create_token", "fleet-script", "--name", "e2e"], env=stack.env, timeout=60
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_client_with_a_token_connects_to_the_private_hub_and_gets_updates(
    stack: Stack, tmp_path: Path
) -> None:
    token = await asyncio.to_thread(create_token, stack)
    tracker = str(uuid.uuid4())
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        event_body(tracker_id=tracker, latitude=60.1699, longitude=24.9384, at=datetime.now(UTC))
        + b"\n"
    )
    async with watching(stack.url, [HELSINKI_CELL], headers=bearer(token)) as watcher:
        await asyncio.to_thread(stack.consume, "--source", "jsonl", "--path", str(events))
        update = await watcher.wait_for(tracker)
    assert update[1:3] == [60.1699, 24.9384]


async def test_a_client_without_a_token_is_refused_at_negotiate(stack: Stack) -> None:
    client = SignalRClient(f"{stack.url}/api/signalr")
    with pytest.raises(AuthorizationError):
        await asyncio.wait_for(client.run(), timeout=30)


async def test_revoking_the_token_closes_the_open_connection_saying_why(stack: Stack) -> None:
    token = await asyncio.to_thread(create_token, stack)
    async with watching(stack.url, [HELSINKI_CELL], headers=bearer(token)) as watcher:
        revoked = await asyncio.to_thread(
            support.manage, ["revoke_token", token], env=stack.env, timeout=60
        )
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(ServerError) as closed:
            await asyncio.wait_for(watcher.task, timeout=30)
    assert SIGN_IN_ENDED in str(closed.value)
    # And the revoked token opens nothing any more.
    with pytest.raises(AuthorizationError):
        await asyncio.wait_for(
            SignalRClient(f"{stack.url}/api/signalr", headers=bearer(token)).run(), 30
        )
