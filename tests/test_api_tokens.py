"""API tokens: made once, stored as a digest, signing a user in to the REST API
and negotiate with ``Authorization: Bearer`` until they expire or are revoked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking.api_tokens import (
    TOKEN_PREFIX,
    InvalidToken,
    bearer_token,
    find_token,
    issue_token,
    revoke,
)
from tracking.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def private() -> Iterator[None]:
    """The map for signed-in users only (both names the setting has had)."""
    with override_settings(MAP_PUBLIC=False):
        yield


@pytest.fixture
def user() -> User:
    return User.objects.create_user("fleet-script", password="not-used-here")


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


# --- Making and finding tokens ---------------------------------------------------------------


def test_a_token_is_stored_only_as_its_digest_and_finds_its_user(user: User) -> None:
    token, text = issue_token(user=user, name="depot screen")
    assert text.startswith(f"{TOKEN_PREFIX}{token.prefix}_") and len(text) == 57
    stored = ApiToken.objects.get()
    assert stored.digest == hashlib.sha256(text.encode()).hexdigest()
    assert text not in repr(stored.__dict__)
    assert find_token(text).user == user


def test_a_token_lasts_api_token_days_unless_told_otherwise(user: User) -> None:
    now = timezone.now()
    with override_settings(API_TOKEN_DAYS=7):
        default, _ = issue_token(user=user, now=now)
    short, _ = issue_token(user=user, expires_in=timedelta(hours=1), now=now)
    assert default.expires_at == now + timedelta(days=7)
    assert short.expires_at == now + timedelta(hours=1)


def test_two_tokens_of_one_user_are_different(user: User) -> None:
    assert issue_token(user=user)[1] != issue_token(user=user)[1]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda token: setattr(token, "revoked_at", timezone.now()), "revoked"),
        (lambda token: setattr(token, "expires_at", timezone.now()), "expired"),
    ],
)
def test_a_revoked_or_expired_token_signs_nobody_in(user: User, spoil, reason: str) -> None:
    token, text = issue_token(user=user)
    spoil(token)
    token.save()
    with pytest.raises(InvalidToken, match=reason):
        find_token(text)


def test_the_token_of_an_inactive_user_signs_nobody_in(user: User) -> None:
    _, text = issue_token(user=user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(InvalidToken, match="inactive"):
        find_token(text)


def test_a_token_with_a_known_prefix_but_another_secret_is_unknown(user: User) -> None:
    _, text = issue_token(user=user)
    forged = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidToken, match="unknown"):
        find_token(forged)


def test_revoking_twice_counts_once(user: User) -> None:
    token, _ = issue_token(user=user)
    assert revoke([token]) == 1
    assert revoke([token]) == 0


@pytest.mark.parametrize(
    ("header", "credential"),
    [
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer", ""),
        ("Bearerabc", None),
    ],
)
def test_a_bearer_credential_is_read_from_the_authorization_header(
    header: str | None, credential: str | None
) -> None:
    assert bearer_token(header) == credential


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=80)
    | st.from_regex(r"tmap_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", fullmatch=True)
    | st.builds(lambda tail: f"{TOKEN_PREFIX}0badcafe_{tail}", st.text(max_size=50))
)
def test_any_text_as_a_token_is_refused_with_a_reason_never_an_error(text: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        find_token(text)
    assert str(refused.value)


# --- The REST API and negotiate ---------------------------------------------------------------


def test_a_bearer_token_opens_the_private_api_and_negotiate(
    client: Client, user: User, private: None
) -> None:
    _, text = issue_token(user=user)
    assert client.get("/api/trackers").status_code == 401
    assert client.get("/api/trackers", headers=bearer(text)).status_code == 200
    negotiated = client.post("/api/signalr/negotiate?negotiateVersion=1", headers=bearer(text))
    assert negotiated.status_code == 200 and "connectionToken" in negotiated.json()


@pytest.mark.parametrize("state", ["revoked", "expired", "deleted"])
def test_a_token_that_ended_is_refused_with_401_saying_why(
    client: Client, user: User, state: str
) -> None:
    """Even while the map is public: a client that presents a token should learn it is bad."""
    token, text = issue_token(user=user)
    if state == "revoked":
        revoke([token])
    elif state == "expired":
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    else:
        token.delete()
    response = client.get("/api/trackers", headers=bearer(text))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert ("unknown" if state == "deleted" else state) in response.json()["error"]


def test_another_authorization_scheme_leaves_the_public_api_open(client: Client) -> None:
    assert (
        client.get("/api/trackers", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code
        == 200
    )


# Header values as HTTP carries them: latin-1 text without line breaks.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=header_text
    | header_text.map(lambda rest: f"Bearer {rest}")
    | st.from_regex(r"[Bb]earer +tmap_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", fullmatch=True),
    private_map=st.booleans(),
)
def test_any_authorization_header_gets_an_answer_or_a_json_401_never_an_error(
    client: Client, header: str, private_map: bool
) -> None:
    with override_settings(MAP_PUBLIC=not private_map):
        response = client.get("/api/trackers", headers={"Authorization": header})
    presents_a_token = bearer_token(header) is not None
    if presents_a_token or private_map:
        assert response.status_code == 401, response.content
        assert response.json()["error"]
    else:
        assert response.status_code == 200


# --- The commands -----------------------------------------------------------------------------


def test_create_token_prints_the_token_alone_and_it_signs_the_user_in(
    client: Client, user: User, private: None
) -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "create_token", "fleet-script", "--expires-in", "3", "--name", "ci", stdout=out, stderr=err
    )
    text = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert token.name == "ci" and token.prefix in err.getvalue()
    assert timedelta(days=3) - (token.expires_at - timezone.now()) < timedelta(minutes=1)
    assert client.get("/api/trackers", headers=bearer(text)).status_code == 200


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["nobody"], "no user"),
        (["fleet-script", "--expires-in", "0"], "--expires-in"),
        (["fleet-script", "--expires-in", "36500000"], "1 to 36500 days"),
    ],
)
def test_create_token_refuses_what_it_cannot_do(
    user: User, arguments: list[str], says: str
) -> None:
    with pytest.raises(CommandError, match=says):
        call_command("create_token", *arguments, stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


def test_revoke_token_by_prefix_or_whole_token_or_user_ends_those_tokens(
    client: Client, user: User
) -> None:
    first, first_text = issue_token(user=user)
    _, second_text = issue_token(user=user)
    other = User.objects.create_user("someone-else")
    _, kept_text = issue_token(user=other)
    call_command("revoke_token", first.prefix, stdout=StringIO())
    call_command("revoke_token", second_text, stdout=StringIO())
    for text in (first_text, second_text):
        assert client.get("/api/trackers", headers=bearer(text)).status_code == 401
    assert client.get("/api/trackers", headers=bearer(kept_text)).status_code == 200
    out = StringIO()
    call_command("revoke_token", "--user", "someone-else", stdout=out)
    assert "Revoked 1 token" in out.getvalue()
    assert client.get("/api/trackers", headers=bearer(kept_text)).status_code == 401


def test_revoke_token_names_a_prefix_it_does_not_know() -> None:
    with pytest.raises(CommandError, match="no token with the prefix 0badcafe"):
        call_command("revoke_token", "0badcafe", stdout=StringIO())
