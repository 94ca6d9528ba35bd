"""The one place that sends hub records to map connections.

Called after a batch has committed. Each cell gets one message per batch
holding the ``locationUpdated`` records of every tracker that moved into or
within it; the fan-out carries it to every web process and each hands the
same text to its connections watching the cell, so a record is encoded once
per cell, never once per connection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from tracking.grid import Cell
from tracking.hub.fanout import get_fanout
from tracking.hub.protocol import location_record
from tracking.positions import LatestPosition


async def publish_locations(positions: Sequence[LatestPosition]) -> int:
    """Send ``locationUpdated`` for each position to its cell; return the cells sent to.

    A cell that cannot be reached is logged by the fan-out and skipped: the
    positions are committed, and a viewer that missed one sees the next.
    """
    if not positions:
        return 0
    by_cell: dict[Cell, list[str]] = defaultdict(list)
    for position in positions:
        by_cell[position.cell].append(location_record(position))
    failed = await get_fanout().publish(
        {cell: "".join(records) for cell, records in by_cell.items()}
    )
    return len(by_cell) - failed
