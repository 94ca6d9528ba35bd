"""Outside text in a log line: escaped and capped, so it stays one line. Pure.

A log line is read by people and parsed by tools one line at a time, so a
device or client that gets a newline into one could write a line of its own
("... INFO tracking: progress ...") that looks like the server's. Every string
that came from outside (an event's Id or Ts, a hub method name or argument, a
header, a Redis message, a database or service error that may quote them)
goes into a log line through ``quoted`` or ``one_line``; both escape every
character that is not printable (line breaks, other control characters, the
Unicode line and paragraph separators) and cap the length.
"""

from __future__ import annotations

# A whole outside value rarely helps past this; the cap bounds a line however
# large the value (a 32 KiB hub message, a 1 MiB event body).
QUOTED_MAX_CHARS = 120
ONE_LINE_MAX_CHARS = 400


def quoted(value: object, *, limit: int = QUOTED_MAX_CHARS) -> str:
    """``value`` as a quoted literal (``'a\\nb'``) for a log line: at most
    ``limit`` characters, then how long it was if it was longer."""
    if isinstance(value, str | bytes):
        # Escaping only lengthens text, so what is past ``limit`` would be cut anyway.
        return _capped(_printable(repr(value[:limit])), limit, length=len(value))
    text = _printable(repr(value))
    return _capped(text, limit, length=len(text))


def one_line(text: str, *, limit: int = ONE_LINE_MAX_CHARS) -> str:
    """A message the server wrote that may embed outside text (a rejection
    reason, an exception's message): as it is, but escaped and capped like
    ``quoted``, without the quotes."""
    return _capped(_printable(text[:limit]), limit, length=len(text))


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _capped(text: str, limit: int, *, length: int) -> str:
    """``text``, the escaped head of a value ``length`` characters long, cut to ``limit``."""
    if len(text) <= limit and length <= limit:
        return text
    # A cut may split an escape such as \x1e; the note says the value goes on.
    return f"{text[:limit]}... ({length} characters)"
