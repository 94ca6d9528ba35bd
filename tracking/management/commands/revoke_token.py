"""``manage.py revoke_token PREFIX``: end API tokens; hub connections using them close."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.api_tokens import TOKEN_PREFIX, revoke
from tracking.models import ApiToken


class Command(BaseCommand):
    help = (
        "Revoke API tokens, by their prefix (the 8 characters the admin shows, or the whole "
        "token) or every token of --user. Open hub connections signed in with them close "
        "within HUB_CREDENTIAL_CHECK_SECONDS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", nargs="*", help="a token's prefix, or the token")
        parser.add_argument("--user", metavar="USERNAME", help="revoke every token of this user")

    def handle(self, *args: Any, **options: Any) -> None:
        prefixes = [_prefix_of(text) for text in options["prefix"]]
        if not prefixes and not options["user"]:
            raise CommandError("name a token's prefix, or --user USERNAME")
        tokens = ApiToken.objects.none()
        if prefixes:
            tokens = ApiToken.objects.filter(prefix__in=prefixes)
            unknown = sorted(set(prefixes) - set(tokens.values_list("prefix", flat=True)))
            if unknown:
                raise CommandError(f"no token with the prefix {', '.join(unknown)}")
        if options["user"]:
            username = f"user__{get_user_model().USERNAME_FIELD}"
            tokens = tokens | ApiToken.objects.filter(**{username: options["user"]})
        revoked = revoke(tokens)
        self.stdout.write(
            f"Revoked {revoked} token{'' if revoked == 1 else 's'}; hub connections using "
            f"them close within {settings.HUB_CREDENTIAL_CHECK_SECONDS:g} s."
        )


def _prefix_of(text: str) -> str:
    """``tmap_1a2b3c4d_...``, ``tmap_1a2b3c4d`` or ``1a2b3c4d``: ``1a2b3c4d``."""
    return text.removeprefix(TOKEN_PREFIX).split("_", 1)[0]
