"""What waits to go out on one hub connection, within a bound; pure, no Django import.

While a connection keeps up, what the fan-out delivers is kept as it comes
and goes out whole at the next flush: an append per delivery, the cheap path
every viewer takes. While it does not keep up (a send is still in flight, or
the backlog has grown past a quarter of the bound), the records are kept by
tracker instead: a newer position replaces the older one still waiting (and a
newer overview the older one), so a slow viewer is sent the latest position
of each tracker rather than its history, and the backlog is bounded by the
trackers in the viewer's cells, not by how long the viewer has been slow. Past the bound even then, ``add``
says so and the connection gives up on the viewer.
"""

from __future__ import annotations

import itertools

from tracking.hub import protocol
from tracking.hub.protocol import RECORD_SEPARATOR

# A waiting ping is replaced by a newer one, as a position is, and so is a
# waiting overview: the newest holds every count the client needs.
_PING_KEY = ("ping",)
_OVERVIEW_KEY = ("overview",)


class Outbox:
    """Records waiting for a connection's next flush, at most ``max_chars`` of them
    (characters; the records the hub sends are ASCII, so bytes too)."""

    def __init__(self, *, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        # Kept up: texts as delivered, in order.
        self._texts: list[str] = []
        # Behind: records by tracker id, other records under a serial number of
        # their own; a dict keeps them in the order they last arrived.
        self._records: dict[object, str] = {}
        self._serial = itertools.count()

    def __bool__(self) -> bool:
        return self.chars > 0

    def __len__(self) -> int:
        """How many deliveries (kept up) or records (behind) wait."""
        return len(self._texts) + len(self._records)

    def add(self, text: str, *, behind: bool) -> bool:
        """Queue ``text``, whole records; ``behind`` says the connection is not
        keeping up. False when the backlog, even kept by tracker, is past the bound."""
        if not behind and not self._records and self.chars + len(text) <= self.max_chars // 4:
            self._texts.append(text)
            self.chars += len(text)
            return True
        if self._texts:
            texts, self._texts = self._texts, []
            for earlier in texts:
                self.chars -= len(earlier)
                self._merge(earlier)
        self._merge(text)
        return self.chars <= self.max_chars

    def _merge(self, text: str) -> None:
        for record in text.split(RECORD_SEPARATOR)[:-1]:
            record += RECORD_SEPARATOR
            key: object = protocol.location_tracker_id(record)
            if key is None:
                if record == protocol.PING:
                    key = _PING_KEY
                elif protocol.is_overview_record(record):
                    key = _OVERVIEW_KEY
                else:
                    key = next(self._serial)
            replaced = self._records.pop(key, None)
            if replaced is not None:
                self.chars -= len(replaced)
            self._records[key] = record
            self.chars += len(record)

    def take(self) -> str:
        """Everything waiting, as one text; the outbox is empty after."""
        text = "".join(self._texts) if self._texts else "".join(self._records.values())
        self.clear()
        return text

    def clear(self) -> None:
        self._texts.clear()
        self._records.clear()
        self.chars = 0
