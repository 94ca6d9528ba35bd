"""Outside text in a log line stays one line of bounded length."""

from __future__ import annotations

import ast

from hypothesis import given
from hypothesis import strategies as st

from tracking.logsafe import ONE_LINE_MAX_CHARS, QUOTED_MAX_CHARS, one_line, quoted

# "... (N characters)" after the cut, N at most a billion or so.
NOTE_MAX_CHARS = 30
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def is_one_line(text: str) -> bool:
    return len(text.splitlines()) <= 1 and not any(char in text for char in LINE_BREAKS)


@given(st.one_of(st.text(), st.binary(), st.lists(st.text())), st.integers(1, 500))
def test_any_value_quoted_is_one_line_no_longer_than_its_limit(value: object, limit: int) -> None:
    text = quoted(value, limit=limit)
    assert is_one_line(text)
    assert len(text) <= limit + NOTE_MAX_CHARS


@given(st.text(), st.integers(1, 500))
def test_any_message_on_one_line_is_one_line_no_longer_than_its_limit(
    message: str, limit: int
) -> None:
    text = one_line(message, limit=limit)
    assert is_one_line(text)
    assert len(text) <= limit + NOTE_MAX_CHARS


# Short enough that even escaped (up to 10 characters each, as \U0001f600) it fits the cap.
@given(st.text(st.characters(codec="utf-8"), max_size=(QUOTED_MAX_CHARS - 2) // 10))
def test_a_short_value_reads_back_exactly(value: str) -> None:
    assert ast.literal_eval(quoted(value)) == value


def test_a_value_longer_once_escaped_is_cut_and_says_how_long_it_was() -> None:
    value = "\U00011daa" * 20
    assert quoted(value).endswith("... (20 characters)")


def test_a_forged_line_stays_inside_the_quotes() -> None:
    forged = "x\n2026-11-29 12:00:00,000 INFO tracking: all is well"
    assert quoted(forged) == repr(forged) and "\n" not in quoted(forged)
    assert one_line(f"Ts {forged!r} is not a date") == f"Ts {forged!r} is not a date"
    assert one_line(f"Ts {forged} is not a date").count("\\x0a") == 1


def test_a_long_value_says_how_long_it_was() -> None:
    assert quoted("a" * 1000).endswith("... (1000 characters)")
    assert one_line("b" * 1000) == "b" * ONE_LINE_MAX_CHARS + "... (1000 characters)"
