"""Who may see the map: with the map not public, a signed-in user sees the
page, the API and the hub, and a signed-out visitor none of them."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from tracker_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")


def signed_in_client() -> Client:
    user = get_user_model().objects.create_user("viewer", password="a long enough password")
    client = Client()
    client.force_login(user)
    return client


async def hub_admits(client: Client | None) -> bool:
    headers = [ORIGIN]
    if client is not None:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, "/api/signalr", headers=headers)
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return bool(connected)


def answers(client: Client) -> tuple[int, int, int]:
    return (
        client.get("/").status_code,
        client.get("/api/trackers").status_code,
        client.post("/api/signalr/negotiate?negotiateVersion=1").status_code,
    )


@override_settings(MAP_PUBLIC=False)
async def test_a_private_map_is_shown_to_a_signed_in_user_only() -> None:
    signed_in = await database_sync_to_async(signed_in_client)()
    assert await database_sync_to_async(answers)(signed_in) == (200, 200, 200)
    assert await hub_admits(signed_in)

    signed_out = Client()
    assert await database_sync_to_async(answers)(signed_out) == (302, 401, 401)
    assert not await hub_admits(None)


@override_settings(MAP_PUBLIC=True)
async def test_a_public_map_is_shown_to_anyone() -> None:
    assert await database_sync_to_async(answers)(Client()) == (200, 200, 200)
    assert await hub_admits(None)
