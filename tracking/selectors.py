"""Database reads for the hub and the API."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from functools import reduce
from operator import or_
from typing import cast

from django.db.models import Q

from tracking.grid import Cell
from tracking.models import Tracker
from tracking.positions import LatestPosition


def latest_positions_in_cells(*, cells: Collection[Cell]) -> list[LatestPosition]:
    """The latest position of every active tracker whose cell is in ``cells``."""
    if not cells:
        return []
    in_cells = reduce(or_, (Q(cell_x=cell.x, cell_y=cell.y) for cell in cells))
    rows = (
        Tracker.objects.filter(in_cells, is_active=True, position_at__isnull=False)
        .values_list("id", "latitude", "longitude", "position_at", "cell_x", "cell_y")
        .order_by()
    )
    # position_at is set together with the other fields, so none is null here.
    return [
        LatestPosition(
            tracker_id=tracker_id,
            latitude=cast(float, latitude),
            longitude=cast(float, longitude),
            timestamp=cast(datetime, position_at),
            cell=Cell(cast(int, cell_x), cast(int, cell_y)),
        )
        for tracker_id, latitude, longitude, position_at, cell_x, cell_y in rows
    ]


def trackers_by_id(*, ids: Sequence[uuid.UUID]) -> list[Tracker]:
    return list(Tracker.objects.filter(id__in=ids))
