"""Positions as they travel between stages, no Django import: the one the map
is told about (made by ingestion, read by the hub), and a stored one as the
history readers (trips, export) take it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from tracking.events import LocationEvent
from tracking.grid import Cell


class PositionRow(NamedTuple):
    """One stored position as the history readers take it: no model instance
    (``selectors.position_pages`` reads them)."""

    timestamp: datetime
    latitude: float
    longitude: float
    speed: float | None  # km/h
    heading: float | None  # degrees
    accuracy: float | None  # metres


@dataclass(frozen=True, slots=True)
class LatestPosition:
    """A tracker's latest position and the map cell it lies in.

    ``previous_cell`` is the cell of the position this one replaced, when
    ingestion knows it (None: the tracker's first position, or unknown), so
    the hub can tell a cell that a tracker left it.
    """

    tracker_id: uuid.UUID
    latitude: float
    longitude: float
    timestamp: datetime
    cell: Cell
    previous_cell: Cell | None = None

    @classmethod
    def of(
        cls, event: LocationEvent, *, cell: Cell, previous_cell: Cell | None = None
    ) -> LatestPosition:
        """The position an event reports, which lies in ``cell``."""
        return cls(
            tracker_id=event.tracker_id,
            latitude=event.latitude,
            longitude=event.longitude,
            timestamp=event.timestamp,
            cell=cell,
            previous_cell=previous_cell,
        )

    @property
    def left_cell(self) -> Cell | None:
        """The cell this move took the tracker out of, if it changed cells."""
        return self.previous_cell if self.previous_cell != self.cell else None


@dataclass(frozen=True, slots=True)
class Crossing:
    """A tracker entering (``entered``) or leaving a geofence, at the time of
    the position that did it. Made by ingestion after its batch's visits are
    stored, published after the commit as ``geofenceEntered``/``geofenceExited``."""

    tracker_id: uuid.UUID
    geofence_id: int
    entered: bool
    at: datetime


def newest_per_tracker(events: Iterable[LocationEvent]) -> list[LocationEvent]:
    """Each tracker's latest event, the one that may move its latest position:
    the latest by ``ordered_at`` (the earlier of ``Ts`` and its receipt), then
    by ``Ts``; of two alike, the first."""
    newest: dict[uuid.UUID, LocationEvent] = {}
    for event in events:
        seen = newest.get(event.tracker_id)
        if seen is None or (event.ordered_at, event.timestamp) > (seen.ordered_at, seen.timestamp):
            newest[event.tracker_id] = event
    return list(newest.values())
