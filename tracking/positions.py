"""The position the map is told about: made by ingestion, read by the hub; no Django import."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tracking.events import LocationEvent
from tracking.grid import Cell


@dataclass(frozen=True, slots=True)
class LatestPosition:
    """A tracker's latest position and the map cell it lies in."""

    tracker_id: uuid.UUID
    latitude: float
    longitude: float
    timestamp: datetime
    cell: Cell

    @classmethod
    def of(cls, event: LocationEvent, *, cell: Cell) -> LatestPosition:
        """The position an event reports, which lies in ``cell``."""
        return cls(
            tracker_id=event.tracker_id,
            latitude=event.latitude,
            longitude=event.longitude,
            timestamp=event.timestamp,
            cell=cell,
        )


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
