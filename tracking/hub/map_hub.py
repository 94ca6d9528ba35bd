"""The map's hub: the methods a map connection invokes; no Django or channels import.

A connection watches the grid cells that cover its viewport. Joining a cell
subscribes the connection to the cell's updates first and then sends the
latest position of every tracker in it, so no update can fall between the
snapshot and the stream. The fan-out and the database are reached through
``CellPorts``, which the consumer provides; the snapshot comes from what the
process keeps of each watched cell, or the database for a cell just watched.

Where a view needs more cells than a connection may join, the client watches
the overview instead (``updateOverview``): the counted trackers by area, sent
every few seconds through ``OverviewPorts``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Protocol

from tracking.areas import InvalidOverviewRequest, OverviewRequest, parse_overview_request
from tracking.grid import Cell, Grid, InvalidCells, parse_cells
from tracking.hub.session import Hub, HubError, Reply, hub_method

# A snapshot of many trackers goes out in messages of at most this many records.
SNAPSHOT_RECORDS_PER_MESSAGE = 500


class CellPorts(Protocol):
    """What the map hub needs from outside it."""

    async def watch(self, cells: Sequence[Cell]) -> None:
        """Receive the updates of ``cells`` from now on; raise ``HubError`` if that cannot be."""

    async def unwatch(self, cells: Collection[Cell]) -> None:
        """Stop receiving the updates of ``cells``; never raises."""

    async def snapshot(self, cells: Sequence[Cell]) -> Sequence[str]:
        """The ``locationUpdated`` record of every active tracker in ``cells``,
        which are watched already."""
        ...


class OverviewPorts(Protocol):
    """Where the overview comes from: the process's ``OverviewWatch``."""

    async def watch_overview(self, request: OverviewRequest) -> None:
        """Send the connection the overview of ``request`` (through its outbox:
        after the completion), then every period, instead of what it watched
        before; raise ``HubError`` if it cannot be read."""

    async def unwatch_overview(self) -> None:
        """Send the connection no more overviews; never raises."""


class MapHub(Hub):
    """The cells one connection watches, its overview, and the methods that change them."""

    def __init__(
        self,
        *,
        grid: Grid,
        max_cells: int,
        ports: CellPorts,
        overview: OverviewPorts | None = None,
    ) -> None:
        self.grid = grid
        self.max_cells = max_cells
        self.cells: set[Cell] = set()
        self.overview: OverviewRequest | None = None
        self._ports = ports
        self._overview_ports = overview

    # A view that changes again before the last change ran replaces it: the
    # client is sent the cells it looks at now, not each one it panned past.
    @hub_method(
        "updateMapGridGroups",
        arguments=("newGridNumbers", "previousGridNumbers"),
        latest_wins=True,
    )
    async def update_map_grid_groups(
        self, new_grid_numbers: object, previous_grid_numbers: object
    ) -> Reply:
        """Leave ``previous - new`` and join ``new - previous``, by what this
        connection really holds: a cell the connection is not in is joined even
        if the client lists it as previous (after a reconnect, say). The
        completion states the cells joined, left and held; the snapshot of the
        joined cells follows it."""
        try:
            new = parse_cells(
                new_grid_numbers, grid=self.grid, name="newGridNumbers", max_count=self.max_cells
            )
            previous = parse_cells(
                previous_grid_numbers,
                grid=self.grid,
                name="previousGridNumbers",
                max_count=self.grid.columns * self.grid.rows,
            )
        except InvalidCells as exc:
            raise HubError(str(exc)) from None
        leave = (set(previous) - set(new)) & self.cells
        join = [cell for cell in new if cell not in self.cells]
        holding = (self.cells - leave) | set(join)
        if len(holding) > self.max_cells:
            raise HubError(
                f"This would hold {len(holding)} cells, more than the "
                f"{self.max_cells} a connection may join; zoom in."
            )
        await self._ports.watch(join)
        # Held from here on, so that close() lets go of them even if the call
        # is cancelled (the connection ended) while reading or leaving.
        self.cells |= set(join)
        # Read right after watching: a snapshot kept in memory is then taken
        # with no update in between, so every update queued for this
        # connection is newer than it, and none is sent twice.
        try:
            snapshot = await self._ports.snapshot(join) if join else ()
        except Exception:
            self.cells -= set(join)
            await self._ports.unwatch(join)
            raise
        await self._ports.unwatch(leave)
        self.cells = holding
        result = {
            "joined": [list(cell) for cell in join],
            "left": [list(cell) for cell in sorted(leave)],
            "cells": [list(cell) for cell in sorted(holding)],
        }
        return Reply(result, then=functools.partial(_messages, snapshot))

    # As for cells: a view that changes again before the last change ran replaces it.
    @hub_method("updateOverview", arguments=("areaDegrees", "view"), latest_wins=True)
    async def update_overview(self, area_degrees: object, view: object) -> Reply:
        """Watch the counted trackers by area of ``area_degrees`` meeting
        ``view`` (``[west, south, east, north]``), or stop with null. The
        completion states the level watched; the current overview follows it."""
        try:
            request = parse_overview_request(area_degrees, view)
        except InvalidOverviewRequest as exc:
            raise HubError(str(exc)) from None
        ports = self._overview_ports
        if request is None:
            if self.overview is not None and ports is not None:
                self.overview = None
                await ports.unwatch_overview()
            return Reply({"areaDegrees": None})
        if ports is None:
            raise HubError("This server sends no overview.")
        await ports.watch_overview(request)
        self.overview = request
        return Reply({"areaDegrees": request.level})

    async def close(self) -> None:
        cells, self.cells = self.cells, set()
        if self._overview_ports is not None:
            self.overview = None
            await self._overview_ports.unwatch_overview()
        await self._ports.unwatch(cells)


async def _messages(records: Sequence[str]) -> list[str]:
    """A snapshot's records, as messages of at most ``SNAPSHOT_RECORDS_PER_MESSAGE``."""
    return [
        "".join(records[start : start + SNAPSHOT_RECORDS_PER_MESSAGE])
        for start in range(0, len(records), SNAPSHOT_RECORDS_PER_MESSAGE)
    ]
