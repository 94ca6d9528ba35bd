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

from collections import defaultdict
from collections.abc import Sequence

from tracking.events import unix_ms
from tracking.grid import Cell
from tracking.hub.fanout import get_fanout
from tracking.hub.fanout.cells import cell_message
from tracking.hub.protocol import geofence_entered, geofence_exited, location_record
from tracking.positions import Crossing, LatestPosition


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
