"""The one place that sends hub records to map connections.

Called after a batch has committed. Each cell gets one message per batch
holding the ``locationUpdated`` records of every tracker that moved into or
within it; the fan-out carries it to every web process and each hands the
same text to its connections watching the cell, so a record is encoded once
per cell, never once per connection. The cell a tracker left gets its
departure, so what web processes keep of that cell forgets it
(``tracking/hub/fanout/cells.py``).

A tracker's geofence crossings of the batch (``geofenceEntered`` and
``geofenceExited``, in the order they happened) follow its ``locationUpdated``
record in the same message, to the cell it is in now: a viewer always has the
tracker where it is before it reads what it crossed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from tracking.events import unix_ms
from tracking.geofences import Box
from tracking.grid import Cell, Grid
from tracking.hub.fanout import FanOut, get_fanout
from tracking.hub.fanout.cells import cell_message
from tracking.hub.protocol import (
    geofence_entered,
    geofence_exited,
    geofences_changed,
    location_record,
)
from tracking.models import configured_grid
from tracking.positions import Crossing, LatestPosition

logger = logging.getLogger(__name__)

# The most cells one change of geofences is sent to (the whole world is 64,800
# one-degree cells), and how many go to the fan-out at a time.
MAX_CELLS_PER_CHANGE = 100_000
_CELLS_PER_PUBLISH = 5_000


async def publish_locations(
    positions: Sequence[LatestPosition], crossings: Sequence[Crossing] = ()
) -> int:
    """Send ``locationUpdated`` for each position to its cell, each followed by
    the tracker's ``crossings``; return the cells sent to.

    A tracker that moved out of a cell is listed in that cell's message as a
    departure, which web processes apply to the snapshots they keep and never
    send to a viewer. A cell that cannot be reached is logged by the fan-out
    and skipped: the positions are committed, and a viewer that missed one
    sees the next. A crossing of a tracker that is not among ``positions``
    has no cell to go to and is not sent (ingestion never makes one).
    """
    if not positions:
        return 0
    crossed: dict[str, list[str]] = defaultdict(list)
    for crossing in crossings:
        tracker, fence = str(crossing.tracker_id), str(crossing.geofence_id)
        crossed[tracker].append(
            geofence_entered(tracker_id=tracker, geofence_id=fence)
            if crossing.entered
            else geofence_exited(tracker_id=tracker, geofence_id=fence)
        )
    records: dict[Cell, list[str]] = defaultdict(list)
    departures: dict[Cell, list[tuple[str, int]]] = defaultdict(list)
    for position in positions:
        records[position.cell].append(location_record(position))
        records[position.cell] += crossed.get(str(position.tracker_id), ())
        if (left := position.left_cell) is not None:
            departures[left].append((str(position.tracker_id), unix_ms(position.timestamp)))
    failed = await get_fanout().publish(
        {
            cell: cell_message("".join(records.get(cell, ())), departures.get(cell, ()))
            for cell in records.keys() | departures.keys()
        }
    )
    return len(records.keys() | departures.keys()) - failed


def geofence_change_messages(
    extents: Mapping[int, Iterable[Box]], *, grid: Grid
) -> dict[Cell, str]:
    """Each cell's ``geofencesChanged`` message for the fences ``extents`` names,
    by pk with their lon/lat boxes before and after the change: the cells the
    boxes cover, each listing the fences that cover it. Past
    ``MAX_CELLS_PER_CHANGE`` cells the rest are left out, and logged."""
    fences_by_cell: dict[Cell, set[int]] = defaultdict(set)
    for pk, boxes in extents.items():
        for west, south, east, north in boxes:
            for cell in grid.cells_covering(west=west, south=south, east=east, north=north):
                fences_by_cell[cell].add(pk)
    cells = sorted(fences_by_cell)
    if len(cells) > MAX_CELLS_PER_CHANGE:
        logger.warning(
            "Geofences %s changed over %d map cells; only the first %d are told",
            ", ".join(str(pk) for pk in sorted(extents)),
            len(cells),
            MAX_CELLS_PER_CHANGE,
        )
        cells = cells[:MAX_CELLS_PER_CHANGE]
    return {
        cell: cell_message(
            geofences_changed(geofence_ids=[str(pk) for pk in sorted(fences_by_cell[cell])])
        )
        for cell in cells
    }


async def publish_geofences_changed(
    extents: Mapping[int, Iterable[Box]],
    *,
    grid: Grid | None = None,
    fanout: FanOut | None = None,
) -> int:
    """Tell the viewers of every cell that a changed fence covered or covers
    (``geofence_change_messages``) to fetch the fences again; return the cells
    sent to. Call it after the change has committed; ``fanout`` is this
    loop's (``get_fanout``) unless given. A cell that cannot be reached is
    logged by the fan-out and skipped."""
    messages = list(geofence_change_messages(extents, grid=grid or configured_grid()).items())
    fanout = fanout or get_fanout()
    sent = 0
    for start in range(0, len(messages), _CELLS_PER_PUBLISH):
        chunk = dict(messages[start : start + _CELLS_PER_PUBLISH])
        sent += len(chunk) - await fanout.publish(chunk)
    return sent
