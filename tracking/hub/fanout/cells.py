"""What a web process knows of each cell it watches: a cell's message, and the snapshot it keeps.

**A cell's message.** Publishing sends each cell, per batch, the
``locationUpdated`` records of the trackers that moved into or within it,
and, ahead of them, the trackers that moved out of it ("departures"). Viewers
get only the records (a record goes to the cell the tracker is in now); the
departures are for the snapshots below. A message without departures is the
records alone, as before.

**The snapshot kept** (``CellSnapshots``, pure: no Django, no asyncio). A
process receives every message of a cell it watches, so it can keep each
tracker's latest record in that cell and answer a join from memory instead of
one database query per join, which is what a reconnect storm (every viewer of
a restarted process joining at once) needs. A cell is read from the database
once when it is first watched, after its subscription is confirmed, so
nothing falls between the read and the stream; what arrives while the read
is under way wins over the read. A tracker leaves a cell's snapshot when it
moves to another cell (its departure, or its record in another watched cell)
and the cell is forgotten when nobody here watches it any more, so memory is
one record per tracker in the watched cells. What the stream cannot tell (a
tracker deactivated in the admin, a message lost while Redis reconnected, a
departure sent to the wrong cell when two ``consume_events`` processes move
one tracker at the same moment) is mended by reading the cell again: after a
lost connection, and every ``REFRESH_SECONDS`` while it is watched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tracking.grid import Cell
from tracking.hub.protocol import check_server_records, location_records

# A watched cell is read from the database again after this long.
REFRESH_SECONDS = 60.0

# Starts a message's departures; a record never starts with it.
_DEPARTURES = "\x00"
_DEPARTURE_SEPARATOR = ";"


def cell_message(records: str, departures: Sequence[tuple[str, int]] = ()) -> str:
    """A cell's message: ``records`` for its viewers, and the ``(tracker id,
    timestamp ms)`` of each tracker that moved out of the cell."""
    if not departures:
        return records
    listed = _DEPARTURE_SEPARATOR.join(f"{tracker} {ms}" for tracker, ms in departures)
    return f"{_DEPARTURES}{listed}{_DEPARTURES}{records}"


def split_cell_message(text: str) -> tuple[str, list[tuple[str, int]]]:
    """``(records, departures)`` of a cell's message; the inverse of ``cell_message``."""
    if not text.startswith(_DEPARTURES):
        return text, []
    end = text.find(_DEPARTURES, 1)
    if end < 0:
        return "", []
    departures = []
    for item in text[1:end].split(_DEPARTURE_SEPARATOR):
        tracker, _, ms = item.partition(" ")
        try:
            departures.append((tracker, int(ms)))
        except ValueError:
            continue  # not a departure this code wrote: nothing to forget
    return text[end + 1 :], departures


def check_cell_message(text: str) -> None:
    """Raise ``ProtocolError`` unless ``text`` is a cell's message as
    publishing writes it: its records whole invocation records, or none
    beside some departures."""
    records, departures = split_cell_message(text)
    if records or not departures:
        check_server_records(records)


@dataclass(slots=True)
class _Entry:
    """A tracker's latest record, and the cell it is in."""

    cell: Cell
    timestamp_ms: int
    record: str


@dataclass(eq=False)
class Reading:
    """A database read of ``cells`` under way, and what the stream said meanwhile."""

    cells: tuple[Cell, ...]
    # Trackers whose record arrived during the read: newer than the read, or as new.
    updated: set[tuple[Cell, str]] = field(default_factory=set)
    # Trackers that left a cell during the read, and when.
    departed: dict[tuple[Cell, str], int] = field(default_factory=dict)


@dataclass(eq=False)
class _CellState:
    trackers: dict[str, _Entry] = field(default_factory=dict)
    read_at: float | None = None  # None: never read, or no longer to be trusted
    reading: Reading | None = None


class CellSnapshots:
    """The latest record of every tracker in the cells this process watches."""

    def __init__(self, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self._cells: dict[Cell, _CellState] = {}
        self._trackers: dict[str, _Entry] = {}

    # --- Which cells are kept --------------------------------------------------

    def keep(self, cells: Iterable[Cell]) -> None:
        """Start keeping ``cells`` (their first viewer here); read them before use."""
        for cell in cells:
            self._cells.setdefault(cell, _CellState())

    def forget(self, cells: Iterable[Cell]) -> None:
        """Stop keeping ``cells`` (their last viewer here left)."""
        for cell in cells:
            state = self._cells.pop(cell, None)
            if state is not None:
                for tracker in state.trackers:
                    del self._trackers[tracker]

    def distrust(self) -> None:
        """Read every cell again before its next use (messages may have been lost)."""
        for state in self._cells.values():
            state.read_at = None

    def kept(self, cell: Cell) -> bool:
        return cell in self._cells

    def __len__(self) -> int:
        """How many trackers are kept, in all cells."""
        return len(self._trackers)

    # --- The stream --------------------------------------------------------------

    def apply(self, cell: Cell, text: str) -> str:
        """Take in a message of ``cell``; return the records its viewers get."""
        records, departures = split_cell_message(text)
        state = self._cells.get(cell)
        if state is None:
            return records
        for tracker, timestamp_ms in departures:
            self._depart(cell, state, tracker, timestamp_ms)
        for tracker, timestamp_ms, record in location_records(records):
            self._update(cell, state, tracker, timestamp_ms, record)
        return records

    def _update(
        self, cell: Cell, state: _CellState, tracker: str, timestamp_ms: int, record: str
    ) -> None:
        entry = self._trackers.get(tracker)
        if entry is not None:
            if entry.timestamp_ms > timestamp_ms:
                return  # an older position, published late by another process
            if entry.cell != cell:
                self._cells[entry.cell].trackers.pop(tracker, None)
        entry = self._trackers[tracker] = _Entry(cell, timestamp_ms, record)
        state.trackers[tracker] = entry
        if state.reading is not None:
            state.reading.updated.add((cell, tracker))

    def _depart(self, cell: Cell, state: _CellState, tracker: str, timestamp_ms: int) -> None:
        entry = state.trackers.get(tracker)
        if entry is not None and entry.timestamp_ms <= timestamp_ms:
            del state.trackers[tracker]
            del self._trackers[tracker]
        if state.reading is not None:
            key = (cell, tracker)
            state.reading.departed[key] = max(timestamp_ms, state.reading.departed.get(key, 0))

    # --- Reading from the database ------------------------------------------------

    def to_read(self, cells: Iterable[Cell], *, now: float) -> list[Cell]:
        """The kept ones of ``cells`` that need a database read and have none under way."""
        wanted = []
        for cell in cells:
            state = self._cells.get(cell)
            if state is None or state.reading is not None:
                continue
            if state.read_at is None or now - state.read_at >= self.refresh_seconds:
                wanted.append(cell)
        return wanted

    def reading(self, cell: Cell) -> Reading | None:
        state = self._cells.get(cell)
        return None if state is None else state.reading

    def start_reading(self, cells: Sequence[Cell]) -> Reading:
        """A read of ``cells`` begins; call it only once their subscriptions are confirmed."""
        reading = Reading(cells=tuple(cells))
        for cell in cells:
            self._cells[cell].reading = reading
        return reading

    def abandon(self, reading: Reading) -> None:
        """The read failed: its cells stay unread."""
        for cell in reading.cells:
            state = self._cells.get(cell)
            if state is not None and state.reading is reading:
                state.reading = None

    def finish(
        self, reading: Reading, rows: Iterable[tuple[Cell, str, int, str]], *, now: float
    ) -> None:
        """The read returned ``(cell, tracker id, timestamp ms, record)`` rows:
        they replace the cells' records, except where the stream said more
        meanwhile. Cells forgotten (or read again) since the read began are left alone."""
        current = {
            cell
            for cell in reading.cells
            if (state := self._cells.get(cell)) is not None and state.reading is reading
        }
        found: set[tuple[Cell, str]] = set()
        for cell, tracker, timestamp_ms, record in rows:
            if cell not in current:
                continue
            if reading.departed.get((cell, tracker), timestamp_ms - 1) >= timestamp_ms:
                continue  # it left while the read was under way
            entry = self._trackers.get(tracker)
            if (
                entry is not None
                and entry.timestamp_ms >= timestamp_ms
                and (entry.cell != cell or (cell, tracker) in reading.updated)
            ):
                continue  # the stream's record is as new or newer
            if entry is not None and entry.cell != cell:
                self._cells[entry.cell].trackers.pop(tracker, None)
            entry = self._trackers[tracker] = _Entry(cell, timestamp_ms, record)
            self._cells[cell].trackers[tracker] = entry
            found.add((cell, tracker))
        for cell in current:
            state = self._cells[cell]
            for tracker in list(state.trackers):
                if (cell, tracker) not in found and (cell, tracker) not in reading.updated:
                    del state.trackers[tracker]  # gone from the cell, unseen by the stream
                    del self._trackers[tracker]
            state.reading = None
            state.read_at = now

    # --- Answering a join -------------------------------------------------------------

    def records(self, cells: Iterable[Cell], *, heard_since_ms: int | None = None) -> list[str]:
        """The latest record of every tracker kept in ``cells``; with
        ``heard_since_ms``, only those stamped that late or later (a tracker
        gone offline since the cell was read stays kept, but is not answered)."""
        return [
            entry.record
            for cell in cells
            if (state := self._cells.get(cell)) is not None
            for entry in state.trackers.values()
            if heard_since_ms is None or entry.timestamp_ms >= heard_since_ms
        ]
