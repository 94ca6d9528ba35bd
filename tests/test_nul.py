"""A NUL character in a request: a clear 400, never a database error."""

from __future__ import annotations

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking.models import RejectedEvent, Tracker

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "/admin/tracking/tracker/",
    "/admin/tracking/position/",
    "/admin/tracking/rejectedevent/",
    "/admin/tracking/apitoken/",
    "/admin/tracking/geofence/",
    "/admin/tracking/visit/",
]


@pytest.mark.parametrize("path", CHANGELISTS)
@pytest.mark.parametrize("query", ["q=bus%00", "name=%00", "bus%00=1"])
def test_an_admin_list_asked_with_a_nul_says_what_is_wrong(
    admin_client: Client, path: str, query: str
) -> None:
    Tracker.objects.create(name="Bus 1")
    response = admin_client.get(f"{path}?{query}")
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


def test_the_api_answers_a_nul_in_its_query_with_a_json_error(client: Client) -> None:
    Tracker.objects.create(name="Bus 1")
    response = client.get("/api/trackers?q=bus%00")
    assert response.status_code == 400
    assert "NUL character" in response.json()["error"]


def test_a_session_cookie_holding_a_nul_is_ignored(admin_client: Client) -> None:
    admin_client.cookies["sessionid"] = "abcdefgh\x00ijkl"
    response = admin_client.get("/admin/tracking/tracker/")
    # Not signed in by that cookie: sent to sign in, no database error.
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(search=st.text(max_size=20))
def test_any_search_of_rejected_events_gets_a_page_or_a_refusal(
    admin_client: Client, search: str
) -> None:
    if not RejectedEvent.objects.exists():
        RejectedEvent.objects.create(source="file", reason="Id is missing", body="{}", body_bytes=2)
    response = admin_client.get("/admin/tracking/rejectedevent/", {"q": search})
    assert response.status_code == (400 if "\x00" in search else 200)
