"""How long ago a moment was, in the words the admin and the map both show.

Pure: no Django import. The map's twin is ``maps/static/maps/ages.js``; both
are held to the cases in ``tests/cases/ages.json``.

The age is counted in whole units, rounded down (59 s is "59 s ago", 119 s is
"1 min ago"), in the largest unit that fits: s, min, h, d. Under a second
reads "just now", and so does a moment less than a second ahead, because
clocks disagree by that much; a moment a second or more ahead is "in the
future" (a device whose clock runs ahead).
"""

from __future__ import annotations

import math
from datetime import datetime

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def ago(moment: datetime, *, now: datetime) -> str:
    """How long before ``now`` ``moment`` was: "just now", "42 s ago", "3 min ago", "2 d ago"."""
    return age_in_words((now - moment).total_seconds())


def age_in_words(seconds: float) -> str:
    """An age of ``seconds`` (negative: ahead of now) in words; see the module's rule."""
    if seconds <= -1:
        return "in the future"
    whole = math.floor(seconds)
    for unit, size in _UNITS:
        if whole >= size:
            return f"{whole // size} {unit} ago"
    return "just now"
