"""API tokens: how a client that is not a browser signs in as a user.

A token is ``tmap_`` + 8 hex characters (its prefix, shown in the admin and
used to find it) + ``_`` + 43 URL-safe characters (256 random bits). Only
its SHA-256 digest is stored: the token is shown once, when it is made. A
slow password hash would add nothing, since nobody can guess 256 random bits
from a digest, and it would cost every request and every connection.

``user_for_token`` is the one place that turns a presented token into a
user; ``access.py`` (the API and negotiate) and the hub both go through it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from tracking.models import ApiToken

TOKEN_PREFIX = "tmap_"
_PREFIX_HEX = 8
_SECRET_BYTES = 32
# The whole shape, so that nothing else (a NUL byte, megabytes of text) ever reaches a query.
_TOKEN = re.compile(rf"{TOKEN_PREFIX}([0-9a-f]{{{_PREFIX_HEX}}})_[A-Za-z0-9_-]{{43}}")
# A new prefix collides with an existing one about once in four billion; try again then.
_ISSUE_ATTEMPTS = 5


class InvalidToken(Exception):
    """A token was presented and it signs nobody in; the text says why, for the client."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret(token: ApiToken) -> str:
    """Give the unsaved ``token`` a fresh prefix and digest; return its text,
    which is not stored anywhere: give it to the client now."""
    prefix = secrets.token_hex(_PREFIX_HEX // 2)
    text = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    token.prefix, token.digest = prefix, digest(text)
    return text


# The longest a token may last (a hundred years): later dates overflow.
MAX_TOKEN_DAYS = 36_500


def default_expiry(now: datetime | None = None) -> datetime:
    """When a token made at ``now`` expires unless told otherwise: ``API_TOKEN_DAYS`` on."""
    return (now or timezone.now()) + timedelta(days=settings.API_TOKEN_DAYS)


def issue_token(
    *, user: Any, name: str = "", expires_in: timedelta | None = None, now: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``user``, saved, and its text (``new_secret``). It
    expires after ``expires_in``, by default ``API_TOKEN_DAYS``."""
    now = now or timezone.now()
    expires_at = now + expires_in if expires_in is not None else default_expiry(now)
    for _ in range(_ISSUE_ATTEMPTS):
        token = ApiToken(user=user, name=name, created_at=now, expires_at=expires_at)
        text = new_secret(token)
        try:
            with transaction.atomic():
                token.save()
        except IntegrityError:
            continue
        return token, text
    raise RuntimeError(f"no free token prefix in {_ISSUE_ATTEMPTS} attempts")


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer`` header (RFC 6750 §2.1: the
    scheme in any case, a space, the token); None when the header is absent or
    names another scheme, which is not this server's to judge."""
    scheme, _, credential = (authorization or "").strip(" ").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip(" ")


def find_token(text: str, *, now: datetime | None = None) -> ApiToken:
    """The usable token ``text`` is, with its user; ``InvalidToken`` if none."""
    shape = _TOKEN.fullmatch(text)
    if shape is None:
        raise InvalidToken("The token is not an API token of this server.")
    token = ApiToken.objects.select_related("user").filter(prefix=shape[1]).first()
    if token is None or not hmac.compare_digest(token.digest, digest(text)):
        raise InvalidToken("The token is unknown.")
    now = now or timezone.now()
    if token.revoked_at is not None:
        raise InvalidToken("The token has been revoked.")
    if token.expires_at <= now:
        raise InvalidToken("The token has expired.")
    if not token.user.is_active:
        raise InvalidToken("The token's user is inactive.")
    return token


def user_for_token(text: str) -> Any:
    """The user ``text`` signs in; ``InvalidToken`` if it signs nobody in."""
    return find_token(text).user


def usable_token_ids(ids: Collection[int], *, now: datetime | None = None) -> set[int]:
    """Which of the tokens ``ids`` still sign their user in."""
    if not ids:
        return set()
    return set(ApiToken.objects.usable(now=now).filter(id__in=ids).values_list("id", flat=True))


def revoke(tokens: Iterable[ApiToken], *, now: datetime | None = None) -> int:
    """Revoke ``tokens`` that are not revoked yet; how many were. Open hub
    connections signed in with them close within ``HUB_CREDENTIAL_CHECK_SECONDS``."""
    ids = [token.pk for token in tokens]
    return ApiToken.objects.filter(id__in=ids, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )
