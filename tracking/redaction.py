"""Secrets out of log lines and messages: service URLs without their
passwords, connection strings without their keys.

Pure Python: the settings use it for their error messages, the fan-out to
name Redis, and the logging filter below runs it over every log line, so a
password that reaches a message by any road (an exception's text, a URL an
operator mistyped) is not printed.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

REDACTED = "REDACTED"

# Query parameters and connection-string fields whose value is a secret:
# ?password=, ?sslpassword=, ?token=, SharedAccessKey=, SharedAccessSignature=, ...
# (SharedAccessKeyName, a key's name, is not secret.)
_SECRET_NAME = re.compile(
    r"(pass|secret|token|key|signature|sig|credential|auth)(?!.*name$)", re.IGNORECASE
)
# A URL with a scheme, up to whitespace or a quote; its user info may hold ':' and '@'.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
# NAME=value in a connection string or a query, ended by ';', '&', whitespace or a quote.
_FIELD = re.compile(r"(?P<name>\b[A-Za-z][A-Za-z0-9_.-]*)=(?P<value>[^;&\s'\"]+)")


def _is_secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redacted_url(url: str) -> str:
    """A service URL to name in a log line: without its user info (the
    password), and with the values of secret query parameters replaced."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:  # an unparseable URL: say nothing of it but its scheme
        return f"{url.partition(':')[0]}://{REDACTED}"
    host = parts.netloc.rpartition("@")[2]
    if query:
        cleaned = [(name, REDACTED if _is_secret(name) else value) for name, value in query]
        parts = parts._replace(query=urlencode(cleaned, safe=REDACTED))
    return parts._replace(netloc=host).geturl()


def redacted(text: str) -> str:
    """``text`` with every URL in it redacted, and the value of every
    secret-looking ``NAME=value`` field (connection strings, queries)."""
    text = _URL.sub(lambda match: redacted_url(match[0]), text)
    return _FIELD.sub(
        lambda match: f"{match['name']}={REDACTED}" if _is_secret(match["name"]) else match[0],
        text,
    )


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message and traceback
    (attached to the handlers in ``LOGGING``)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redacted(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redacted(record.exc_text)
        return True
