"""What the map and its API let in: who (one rule for the page, the API and the
hub), and which HTTP methods an API endpoint takes; the API refuses in JSON,
like every other answer under ``/api/``.

A client signs in with the site's session cookie (a browser) or an API token
(``tracking.api_tokens``); a user signed in either way counts the same.
A hub connection stays open only while what signed it in still does
(``ended_credentials``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from tracking.api_tokens import InvalidToken, bearer_token, usable_token_ids, user_for_token

View = Callable[..., HttpResponseBase]


def may_view_map(user: Any) -> bool:
    """Whether ``user`` may see trackers: anyone when ``MAP_PUBLIC`` is on (the
    default under ``DEBUG``), else only a signed-in user. The page, the API and
    the hub (negotiate and connect) all ask this, and nothing else."""
    return settings.MAP_PUBLIC or bool(user.is_authenticated)


def request_user(request: HttpRequest) -> Any:
    """Who makes ``request``: the user of its ``Authorization: Bearer`` token
    if it has one, else its session's user (maybe anonymous). A bearer token
    that signs nobody in raises ``InvalidToken``, whatever the session says:
    the client meant that token."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return request.user
    return user_for_token(token)


def token_refused(error: InvalidToken) -> JsonResponse:
    """The answer to a request whose bearer token signs nobody in (RFC 6750 §3)."""
    response = JsonResponse({"error": f"{error} Create a new token, or sign in."}, status=401)
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def api_endpoint(*methods: str) -> Callable[[View], View]:
    """An API endpoint that takes only ``methods`` and answers only those who may
    see the map. Another method gets a JSON 405 naming the right ones (and the
    ``Allow`` header); a visitor who may not see the map, or whose bearer
    token signs nobody in, a JSON 401; ``request.user`` is who signed in,
    by session or by token (``request_user``). CSRF is
    not checked: the API changes nothing a browser session could be tricked
    into, and a client posting to a read-only endpoint should read that the
    method is wrong, not a CSRF page."""

    def wrap(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                allowed = ", ".join(methods)
                response = JsonResponse(
                    {"error": f"{request.path} answers {allowed}, not {request.method}."},
                    status=405,
                )
                response["Allow"] = allowed
                return response
            try:
                request.user = request_user(request)
            except InvalidToken as error:
                return token_refused(error)
            if not may_view_map(request.user):
                return JsonResponse({"error": "Sign in to see the map."}, status=401)
            return view(request, *args, **kwargs)

        return endpoint

    return wrap


# --- Open connections -------------------------------------------------------------------


_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Credential:
    """What signed a long-lived connection in: an API token (by id) or a session (by key)."""

    token_id: int | None = None
    session_key: str | None = None


def ended_credentials(
    credentials: Collection[Credential], *, now: datetime | None = None
) -> set[Credential]:
    """Those of ``credentials`` that sign nobody in any more: a token revoked,
    expired, deleted or of an inactive user; a session signed out of (Django's
    ``logout`` deletes it) or expired. One query per 500 tokens and, with the
    database session engines, one per 500 sessions, not one per connection.
    Sessions in signed cookies live only in the browser, so they never end here."""
    now = now or timezone.now()
    token_ids = sorted({c.token_id for c in credentials if c.token_id is not None})
    live_tokens = {
        token_id for chunk in _chunks(token_ids) for token_id in usable_token_ids(chunk, now=now)
    }
    session_keys = sorted({c.session_key for c in credentials if c.session_key is not None})
    live_sessions = {
        key for chunk in _chunks(session_keys) for key in _live_sessions(chunk, now=now)
    }
    return {
        c
        for c in credentials
        if (c.token_id is not None and c.token_id not in live_tokens)
        or (c.session_key is not None and c.session_key not in live_sessions)
    }


def _chunks(items: list[Any]) -> list[list[Any]]:
    """Bounded ``IN`` lists: SQLite refuses statements with too many parameters."""
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]


def _live_sessions(keys: Collection[str], *, now: datetime) -> Collection[str]:
    if not keys or settings.SESSION_ENGINE.endswith("signed_cookies"):
        return keys
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if hasattr(store, "get_model_class"):  # the db and cached_db engines
        model = store.get_model_class()
        return set(
            model.objects.filter(session_key__in=keys, expire_date__gt=now).values_list(
                "session_key", flat=True
            )
        )
    return {key for key in keys if store().exists(key)}
