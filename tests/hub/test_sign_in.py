"""Signing in to the hub: an API token as SignalR clients send it (the
``access_token`` query parameter, or ``Authorization: Bearer``), or the site's
session; and the connection closing once that sign-in ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Iterator
from datetime import timedelta
from urllib.parse import urlencode

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker_site.asgi import application
from tracking.access import Credential, ended_credentials
from tracking.api_tokens import issue_token, revoke
from tracking.hub.sign_in import SIGN_IN_ENDED, SignInWatch
from tracking.models import ApiToken

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


@pytest.fixture
def private() -> Iterator[None]:
    """The map for signed-in users only (both names the setting has had), and
    sign-ins re-checked often, so a test waits little for a close."""
    with override_settings(MAP_PUBLIC=False, HUB_CREDENTIAL_CHECK_SECONDS=0.1):
        yield


@sync_to_async
def new_token(**spoil: object) -> tuple[ApiToken, str]:
    user, _ = User.objects.get_or_create(username="fleet-script")
    token, text = issue_token(user=user)
    if spoil:
        ApiToken.objects.filter(pk=token.pk).update(**spoil)
    return token, text


async def open_hub(
    query: dict[str, str] | None = None, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[WebsocketCommunicator, bool]:
    path = "/api/signalr" + (f"?{urlencode(query)}" if query else "")
    communicator = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await communicator.connect()
    return communicator, connected


@contextlib.asynccontextmanager
async def shaken_hands(communicator: WebsocketCommunicator) -> AsyncIterator[None]:
    await communicator.send_to(text_data=HANDSHAKE)
    assert await communicator.receive_from() == "{}" + RS
    try:
        yield
    finally:
        await communicator.disconnect()


async def joins_a_cell(communicator: WebsocketCommunicator) -> bool:
    """Whether the connection, once it has shaken hands, is served: a join is answered."""
    async with shaken_hands(communicator):
        await communicator.send_to(
            text_data='{"type":1,"invocationId":"1","target":"updateMapGridGroups",'
            '"arguments":[[[24,60]],[]]}' + RS
        )
        completion = orjson.loads((await communicator.receive_from()).split(RS)[0])
    return bool(completion["result"]["joined"] == [[24, 60]])


async def closed_because_sign_in_ended(communicator: WebsocketCommunicator) -> None:
    """The next things the client hears are a Close record saying why, then the close."""
    close = orjson.loads((await communicator.receive_from(timeout=5)).rstrip(RS))
    assert close == {"type": 7, "error": SIGN_IN_ENDED}
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


# --- Connecting with a token ---------------------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
async def test_a_token_in_the_access_token_parameter_opens_the_private_hub(
    private: None,
) -> None:
    _, text = await new_token()
    communicator, connected = await open_hub({"access_token": text})
    assert connected
    assert await joins_a_cell(communicator)


@pytestmark_db
async def test_a_token_in_the_authorization_header_opens_the_private_hub(
    private: None,
) -> None:
    _, text = await new_token()
    communicator, connected = await open_hub(
        headers=[(b"authorization", f"Bearer {text}".encode())]
    )
    assert connected
    await communicator.disconnect()


@pytestmark_db
async def test_the_private_hub_refuses_a_client_without_a_token(private: None) -> None:
    _, connected = await open_hub()
    assert not connected


@pytestmark_db
@pytest.mark.parametrize("state", ["revoked", "expired"])
async def test_a_revoked_or_expired_token_is_refused_even_when_the_map_is_public(
    state: str,
) -> None:
    spoil = {"revoked_at" if state == "revoked" else "expires_at": timezone.now()}
    _, text = await new_token(**spoil)
    _, connected = await open_hub({"access_token": text})
    assert not connected


# --- Closing when the sign-in ends --------------------------------------------------------------


@pytestmark_db
async def test_revoking_a_token_closes_the_connections_opened_with_it(
    private: None,
) -> None:
    token, text = await new_token()
    _, other_text = await new_token()
    communicator, connected = await open_hub({"access_token": text})
    bystander, _ = await open_hub({"access_token": other_text})
    assert connected
    async with shaken_hands(communicator), shaken_hands(bystander):
        await sync_to_async(revoke)([token])
        await closed_because_sign_in_ended(communicator)
        # The connection of another token stays open and served.
        await bystander.send_to(text_data='{"type":6}' + RS)
        assert await bystander.receive_nothing(0.3)


@pytestmark_db
async def test_a_token_that_expires_while_connected_closes_its_connection(private: None) -> None:
    token, text = await new_token()
    communicator, connected = await open_hub({"access_token": text})
    assert connected
    async with shaken_hands(communicator):
        await sync_to_async(ApiToken.objects.filter(pk=token.pk).update)(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        await closed_because_sign_in_ended(communicator)


@pytestmark_db
async def test_signing_out_of_the_site_closes_the_browsers_hub_connections(
    private: None,
) -> None:
    # Staff, to sign out where the site has its sign-out: the admin.
    user = await sync_to_async(User.objects.create_user)("viewer", is_staff=True)
    browser = Client()
    await sync_to_async(browser.force_login)(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    communicator, connected = await open_hub(
        headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)]
    )
    assert connected
    async with shaken_hands(communicator):
        signed_out = await sync_to_async(browser.post)("/admin/logout/")
        assert signed_out.status_code == 200
        await closed_because_sign_in_ended(communicator)


# --- Connecting with the site's session -------------------------------------------------------

ORIGIN = (b"origin", b"http://localhost")


@sync_to_async
def signed_in_cookie() -> bytes:
    """The Cookie header of a browser signed in to the site (with another cookie beside it)."""
    user, _ = User.objects.get_or_create(username="viewer")
    browser = Client()
    browser.force_login(user)
    return f"csrftoken=abc; sessionid={browser.cookies['sessionid'].value}".encode()


@pytestmark_db
async def test_a_browser_with_cookies_but_no_session_is_refused_by_the_private_hub(
    private: None,
) -> None:
    _, connected = await open_hub(headers=[ORIGIN, (b"cookie", b"csrftoken=abc; theme=dark")])
    assert not connected
    with override_settings(MAP_PUBLIC=True):
        communicator, connected = await open_hub(headers=[ORIGIN, (b"cookie", b"csrftoken=abc")])
        assert connected
        await communicator.disconnect()


@pytestmark_db
async def test_a_browser_signed_in_to_the_site_is_served_by_the_private_hub(
    private: None,
) -> None:
    communicator, connected = await open_hub(
        headers=[ORIGIN, (b"cookie", await signed_in_cookie())]
    )
    assert connected
    assert await joins_a_cell(communicator)


@pytestmark_db
async def test_a_token_decides_whatever_session_cookie_comes_with_it(private: None) -> None:
    cookie = (b"cookie", await signed_in_cookie())
    _, revoked = await new_token(revoked_at=timezone.now())
    _, connected = await open_hub({"access_token": revoked}, headers=[ORIGIN, cookie])
    assert not connected
    # A live token beside a signed-in session: the connection is the token's.
    token, text = await new_token()
    communicator, connected = await open_hub({"access_token": text}, headers=[ORIGIN, cookie])
    assert connected
    async with shaken_hands(communicator):
        await sync_to_async(revoke)([token])
        await closed_because_sign_in_ended(communicator)


# Any latin-1 a client may put in its Cookie header, and session cookies of every shape.
hostile_cookie = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=120) | (
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(
        lambda key: f"csrftoken=abc; sessionid={key}"
    )
)


@pytestmark_db
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cookie=hostile_cookie, private_map=st.booleans())
async def test_any_cookie_a_client_presents_signs_nobody_in_never_a_crash(
    cookie: str, private_map: bool
) -> None:
    with override_settings(MAP_PUBLIC=not private_map):
        communicator, connected = await open_hub(
            headers=[ORIGIN, (b"cookie", cookie.encode("latin-1"))]
        )
        assert connected == (not private_map)
        if connected:
            await communicator.disconnect()


# --- Hostile tokens ----------------------------------------------------------------------------

# As a client may send them: any text in the query (URL-encoded), any latin-1 in a header.
hostile_token = (
    st.text(max_size=80)
    | st.from_regex(r"tmap_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", fullmatch=True)
    | st.text(max_size=20).map(lambda tail: f"tmap_0badcafe_{tail}")
)
hostile_header = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80).map(
    lambda text: f"Bearer {text}"
)


@pytestmark_db
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=hostile_token, header=st.none() | hostile_header, private_map=st.booleans())
async def test_any_token_a_client_presents_is_refused_never_a_crash(
    token: str, header: str | None, private_map: bool
) -> None:
    with override_settings(MAP_PUBLIC=not private_map):
        if header is None:
            _, connected = await open_hub({"access_token": token})
        else:
            _, connected = await open_hub(headers=[(b"authorization", header.encode("latin-1"))])
        assert not connected
        # And a client with a real token is served as if nothing had happened.
        _, text = await new_token()
        communicator, connected = await open_hub({"access_token": text})
        assert connected
        await communicator.disconnect()


# --- The re-check itself ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_credentials_that_ended_are_the_revoked_expired_and_deleted_tokens_and_gone_sessions() -> (
    None
):
    user = User.objects.create_user("fleet-script")
    live, revoked, expired, deleted = (issue_token(user=user)[0] for _ in range(4))
    revoke([revoked])
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    deleted_id = deleted.pk
    deleted.delete()
    session = Session.objects.create(
        session_key="k" * 32, session_data="", expire_date=timezone.now() + timedelta(hours=1)
    )
    credentials = {
        Credential(token_id=token_id) for token_id in (live.pk, revoked.pk, expired.pk, deleted_id)
    } | {Credential(session_key=session.session_key), Credential(session_key="gone" * 8)}
    assert ended_credentials(credentials) == {
        Credential(token_id=revoked.pk),
        Credential(token_id=expired.pk),
        Credential(token_id=deleted_id),
        Credential(session_key="gone" * 8),
    }
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        # A session kept in the browser cannot be seen to end: it is never closed for that.
        assert ended_credentials({Credential(session_key="gone" * 8)}) == set()


class Connection:
    def __init__(self) -> None:
        self.closed_with: str | None = None

    async def close_with_error(self, error: str) -> None:
        self.closed_with = error


async def test_a_re_check_that_fails_keeps_the_connections_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = True

    async def ended(credentials: Collection[Credential]) -> set[Credential]:
        if failing:
            raise ConnectionError("database is away")
        return {Credential(token_id=1)}

    watch = SignInWatch(ended=ended, interval=lambda: 0.01)
    kept, closed = Connection(), Connection()
    watch.add(kept, Credential(token_id=2))
    watch.add(closed, Credential(token_id=1))
    with caplog.at_level(logging.ERROR, logger="tracking.hub"):
        with pytest.raises(ConnectionError):
            await watch.check()
        assert len(watch) == 2 and closed.closed_with is None
        failing = False
        assert await watch.check() == 1
    assert closed.closed_with == SIGN_IN_ENDED and kept.closed_with is None
    assert len(watch) == 1
    watch.discard(kept)
