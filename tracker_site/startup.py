"""Wrong settings stop a process with one line, not a traceback.

``manage.py`` and ``asgi.py`` load the settings through here first. A wrong
value raises ``ImproperlyConfigured`` in ``settings.py`` with a message that
names the variable and what it takes; this prints that message alone, on one
line of standard error, and exits. A web server is also refused a secret key
that anyone could know while ``DEBUG`` is off.
"""

from __future__ import annotations

import sys

from django.core.exceptions import ImproperlyConfigured

# Exit codes: 2 as for a wrong command-line argument; 3 is uvicorn's "the
# worker could not start", on which its supervisor stops instead of starting
# the worker again and again.
WRONG_SETTING = 2
SERVER_CANNOT_START = 3

# What Django's deployment check asks of a key (security.W009).
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE_CHARACTERS = 5
_INSECURE_PREFIX = "django-insecure"


def settings_or_exit(*, exit_code: int = WRONG_SETTING, serving: bool = False) -> None:
    """Load the settings; on a wrong one, print it and exit with ``exit_code``.
    ``serving``: the process is a web server, which also needs a real key."""
    from django.conf import settings

    try:
        if serving:
            check_web_server_settings()
        else:
            settings.INSTALLED_APPS  # noqa: B018 - loading the settings is the point
    except ImproperlyConfigured as exc:
        message = " ".join(str(exc).splitlines())
        print(f"Cannot start: {message}", file=sys.stderr, flush=True)
        raise SystemExit(exit_code) from None


def check_web_server_settings() -> None:
    """Raise ``ImproperlyConfigured`` if a web server must not start with these settings."""
    from django.conf import settings

    key = settings.SECRET_KEY
    if not settings.DEBUG and (
        key.startswith(_INSECURE_PREFIX)
        or len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
    ):
        raise ImproperlyConfigured(
            f"SECRET_KEY must be {SECRET_KEY_MIN_LENGTH} or more random characters when DEBUG "
            "is off, e.g. the output of "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
