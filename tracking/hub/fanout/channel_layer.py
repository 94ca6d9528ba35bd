"""The fan-out through a channels layer (``HUB_FANOUT=channel-layer``), kept to compare with.

A channels group per cell: publishing sends one layer message to each cell's
group and the layer copies it to every member, so each connection gets its
own message (BENCHMARKS.md measures what that costs next to one Redis
channel per cell). The channel each watching connection needs is made and
read here, not by the connection: with the default fan-out a connection
holds no channel at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer

from tracking.grid import Cell, group_name
from tracking.hub.fanout.base import (
    FanOut,
    PublishOutage,
    SkippedMessages,
    Viewer,
    describe_error,
    records_of,
)
from tracking.hub.fanout.cells import check_cell_message
from tracking.hub.protocol import ProtocolError

logger = logging.getLogger("tracking.hub.fanout")

# The layer message type of a cell's records.
RECORDS_MESSAGE = "hub.records"
# channels-redis forgets group members after a day (its group_expiry): renew well before.
GROUP_REFRESH_SECONDS = 6 * 3600


@dataclass(eq=False)
class _Membership:
    """One viewer's layer channel, the task reading it, and the groups it is in."""

    channel: str
    reader: asyncio.Task[None]
    cells: set[Cell] = field(default_factory=set)


class ChannelLayerFanOut(FanOut):
    """A channels group per cell; each watching viewer gets a layer channel of its own."""

    def __init__(self) -> None:
        self._layer: Any = get_channel_layer()
        self._outage = PublishOutage("the channel layer")
        self.skipped = SkippedMessages("the channel layer")
        self._members: dict[Viewer, _Membership] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def watch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        cells = list(cells)
        if not cells:
            return
        member = self._members.get(viewer)
        if member is None:
            channel = await self._layer.new_channel()
            reader = asyncio.create_task(self._read(channel, viewer))
            member = self._members[viewer] = _Membership(channel=channel, reader=reader)
        try:
            await asyncio.gather(
                *(self._layer.group_add(group_name(cell), member.channel) for cell in cells)
            )
        except BaseException:
            await self.unwatch(viewer, cells)
            raise
        member.cells.update(cells)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_groups())

    async def unwatch(self, viewer: Viewer, cells: Iterable[Cell]) -> None:
        member = self._members.get(viewer)
        if member is None:
            return
        cells = list(cells)
        outcomes = await asyncio.gather(
            *(self._layer.group_discard(group_name(cell), member.channel) for cell in cells),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            logger.warning(
                "could not leave %d groups: %s", len(failures), describe_error(failures[0])
            )
        member.cells.difference_update(cells)
        if not member.cells:
            del self._members[viewer]
            member.reader.cancel()

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        outcomes = await asyncio.gather(
            *(
                self._layer.group_send(
                    group_name(cell), {"type": RECORDS_MESSAGE, "records": records}
                )
                for cell, records in records_by_cell.items()
            ),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            self._outage.failed(cells=len(failures), error=describe_error(failures[0]))
        else:
            self._outage.succeeded()
        return len(failures)

    async def _read(self, channel: str, viewer: Viewer) -> None:
        while True:
            try:
                message = await self._layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except (ValueError, TypeError) as exc:
                # The layer read a message it could not decode (msgpack's errors are
                # ValueErrors); it is consumed, and the next one may be fine.
                self.skipped.skipped(f"undecodable: {describe_error(exc)}")
                continue
            except Exception as exc:
                logger.error("could not read channel %s: %s", channel, describe_error(exc))
                await asyncio.sleep(1.0)
                continue
            records = message.get("records") if isinstance(message, dict) else None
            try:
                if not isinstance(records, str) or message.get("type") != RECORDS_MESSAGE:
                    raise ProtocolError(f"not a {RECORDS_MESSAGE!r} message with text records")
                check_cell_message(records)
            except ProtocolError as exc:
                self.skipped.skipped(str(exc), message)
                continue
            if records := records_of(records):
                viewer.deliver(records)

    async def _refresh_groups(self) -> None:
        while self._members:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            for member in list(self._members.values()):
                with contextlib.suppress(Exception):
                    await asyncio.gather(
                        *(
                            self._layer.group_add(group_name(cell), member.channel)
                            for cell in member.cells
                        )
                    )
