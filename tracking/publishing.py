"""The one place that sends hub records to map connections.

Called after a batch has committed. Each group gets one channel-layer message
per batch holding the encoded records of every tracker that moved in its
cell; consumers forward the text as it is, so a record is encoded once per
group, never once per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from channels.layers import get_channel_layer

from tracking import hub_protocol
from tracking.events import unix_ms
from tracking.grid import Cell, group_name
from tracking.services import LatestPosition

logger = logging.getLogger(__name__)

# The channel-layer message type consumers handle (``HubConsumer.hub_records``).
RECORDS_MESSAGE = "hub.records"


def records_message(records: str) -> dict[str, Any]:
    return {"type": RECORDS_MESSAGE, "records": records}


async def publish_locations(positions: Sequence[LatestPosition], *, layer: Any = None) -> int:
    """Send ``locationUpdated`` for each position to its cell's group; return groups sent to."""
    if not positions:
        return 0
    by_cell: dict[Cell, list[str]] = defaultdict(list)
    for position in positions:
        by_cell[position.cell].append(
            hub_protocol.location_updated(
                tracker_id=str(position.tracker_id),
                latitude=position.latitude,
                longitude=position.longitude,
                timestamp_ms=unix_ms(position.timestamp),
            )
        )
    layer = layer or get_channel_layer()
    sends = [
        layer.group_send(group_name(cell), records_message("".join(records)))
        for cell, records in by_cell.items()
    ]
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        # The positions are committed; a viewer that missed one sees the next.
        logger.error(
            "could not publish to %d of %d groups: %r",
            len(failures),
            len(sends),
            failures[0],
        )
    return len(sends) - len(failures)
