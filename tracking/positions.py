"""The position the map is told about: made by ingestion, read by the hub; no Django import."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from tracking.grid import Cell


@dataclass(frozen=True, slots=True)
class LatestPosition:
    """A tracker's latest position and the map cell it lies in."""

    tracker_id: uuid.UUID
    latitude: float
    longitude: float
    timestamp: datetime
    cell: Cell
