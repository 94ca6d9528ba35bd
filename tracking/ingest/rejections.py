"""Refused events at volume: how many are stored, and how the rest are counted.

A stream that is half junk must not cost a row and a log line per body. The
pipeline stores refused bodies only up to ``TRACKING_REJECTED_STORE_PER_MINUTE``
(``StoreAllowance``); every refusal, stored or not, is counted per category
(``RejectionCounts``) and the counts go into the progress and summary lines.
Pure Python: the clock is passed in, no Django import.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

# How each category reads in a progress line. The keys are the categories
# ``InvalidEvent`` carries, plus those the store and the sources give; a key
# missing here is shown as it is.
CATEGORY_LABELS = {
    "too-long": "too long",
    "not-json": "not JSON",
    "not-object": "not a JSON object",
    "bad-id": "bad Id",
    "bad-lat": "bad Lat",
    "bad-lng": "bad Lng",
    "bad-ts": "bad Ts",
    "future-ts": "Ts in the future",
    "too-old": "Ts older than TRACKING_HISTORY_DAYS allows",
    "bad-speed": "bad Speed",
    "bad-heading": "bad Heading",
    "bad-accuracy": "bad Accuracy",
    "not-data": "not a data body",
    "unknown-tracker": "unknown tracker",
    "inactive-tracker": "inactive tracker",
    "refused-by-database": "refused by the database",
    "parser-failed": "parser failed",
}

STORE_SETTING = "TRACKING_REJECTED_STORE_PER_MINUTE"
WINDOW_SECONDS = 60.0


class StoreAllowance:
    """At most ``per_minute`` refused bodies stored per minute; 0 stores none.

    A minute starts with the first refusal after the last one ended, so a
    quiet stream stores its first refusals at once and a flood stores
    ``per_minute`` of them, then only counts the rest until the minute is over.
    """

    def __init__(self, *, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_started = -float("inf")
        self._stored_in_window = 0

    def take(self, wanted: int) -> int:
        """How many of ``wanted`` refused bodies may be stored now; counts them as stored."""
        now = self._clock()
        if now - self._window_started >= WINDOW_SECONDS:
            self._window_started = now
            self._stored_in_window = 0
        granted = max(0, min(wanted, self.per_minute - self._stored_in_window))
        self._stored_in_window += granted
        return granted


class RejectionCounts:
    """Refusals per category, and how many of them were not stored."""

    def __init__(self) -> None:
        self.by_category: Counter[str] = Counter()
        self.not_stored = 0

    @property
    def total(self) -> int:
        return sum(self.by_category.values())

    def add(self, by_category: Counter[str] | dict[str, int], *, not_stored: int) -> None:
        self.by_category.update(by_category)
        self.not_stored += not_stored

    def describe(self) -> str:
        """``rejected 5000: 3100 not JSON, 1900 Ts in the future (4990 not stored: over ...)``,
        the largest category first; empty when nothing was refused."""
        if not self.by_category:
            return ""
        ranked = sorted(self.by_category.items(), key=lambda item: (-item[1], item[0]))
        parts = ", ".join(f"{count} {CATEGORY_LABELS.get(key, key)}" for key, count in ranked)
        line = f"rejected {self.total}: {parts}"
        if self.not_stored:
            line += f" ({self.not_stored} not stored: over {STORE_SETTING})"
        return line
