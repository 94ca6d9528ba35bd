"""A real hub connection hears of fences saved in the admin of the same process.

The admin's views are sync: under an ASGI server they run in asgiref's
``sync_to_async`` thread, and the change is published from there after the
commit. It must reach the fan-out of the server's event loop, where the
connections are: with the in-process ``LocalFanOut`` (the demo, and these
tests without Redis) nothing else would carry it.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import Client as Browser
from django.urls import reverse

from tests.hub.test_consumer import connected_client
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
