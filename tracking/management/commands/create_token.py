"""``manage.py create_token USERNAME``: an API token for a client that is not a browser."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracking.api_tokens import MAX_TOKEN_DAYS, issue_token


class Command(BaseCommand):
    help = (
        "Create an API token that signs USERNAME in (Authorization: Bearer TOKEN, or a "
        "SignalR client's accessTokenFactory). The token is printed once, alone on "
        "standard output, and stored only as a digest: keep it now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the token signs in")
        parser.add_argument(
            "--expires-in",
            type=int,
            metavar="DAYS",
            help="days until it expires (default: API_TOKEN_DAYS)",
        )
        parser.add_argument("--name", default="", help="what or who uses it, shown in the admin")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["expires_in"]
        if days is not None and not 1 <= days <= MAX_TOKEN_DAYS:
            raise CommandError(f"--expires-in must be 1 to {MAX_TOKEN_DAYS} days, got {days}")
        if len(options["name"]) > 100:
            raise CommandError("--name must be at most 100 characters")
        user_model = get_user_model()
        try:
            user = user_model.objects.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(f"no user {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive")
        token, text = issue_token(
            user=user,
            name=options["name"],
            expires_in=None if days is None else timedelta(days=days),
        )
        expires = timezone.localtime(token.expires_at).strftime("%Y-%m-%d %H:%M %Z")
        self.stderr.write(
            f"Token {token.prefix} for {user.get_username()}, expires {expires}. "
            "It is shown only now:"
        )
        self.stdout.write(text)
