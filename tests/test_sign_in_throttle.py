"""Admin sign-in is throttled (django-axes): wrong passwords lock the address out."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "the right password, long enough"


@pytest.fixture
def admin_user() -> None:
    get_user_model().objects.create_superuser("admin", password=PASSWORD)


def sign_in(client: Client, password: str) -> int:
    response = client.post("/admin/login/", {"username": "admin", "password": password})
    return response.status_code


@override_settings(AXES_FAILURE_LIMIT=3)
def test_wrong_passwords_lock_the_address_out_and_the_admin_says_so(admin_user: None) -> None:
    client = Client()
    # A wrong password shows the form again (200), until the limit.
    assert [sign_in(client, f"guess {n}") for n in range(2)] == [200, 200]
    response = client.post("/admin/login/", {"username": "admin", "password": "guess 3"})
    assert response.status_code == 429
    assert "Account locked: too many login attempts" in response.content.decode()
    # Now even the right password is refused, from this address.
    response = client.post("/admin/login/", {"username": "admin", "password": PASSWORD})
    assert response.status_code == 429 and "_auth_user_id" not in client.session
    # Another address may still sign in.
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert sign_in(other, PASSWORD) == 302 and "_auth_user_id" in other.session


def test_a_right_password_before_the_limit_signs_in_and_starts_the_count_again(
    admin_user: None,
) -> None:
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, f"guess {n}") == 200
    assert sign_in(client, PASSWORD) == 302
    client.logout()
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, f"guess {n}") == 200
    assert sign_in(client, PASSWORD) == 302


@override_settings(AXES_FAILURE_LIMIT=2)
def test_a_lockout_is_logged_with_the_address_but_not_the_username(
    admin_user: None, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(REMOTE_ADDR="198.51.100.23")
    for guess in ("guess 1", "guess 2"):
        client.post("/admin/login/", {"username": "night-shift", "password": guess})
    [lockout] = [r.getMessage() for r in caplog.records if "Locking out" in r.getMessage()]
    assert "198.51.100.23" in lockout and "night-shift" not in lockout
