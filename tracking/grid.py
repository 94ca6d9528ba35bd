"""The map grid (docs/protocol.md §2): pure functions, no Django import.

A cell is numbered ``(x, y) = (floor(lng / size), floor(lat / size))``,
longitude first. Every connection watches the cells that cover its viewport,
and every update goes to the cell its tracker is in now. By default each web
process subscribes to one Redis pub/sub channel per watched cell and hands
what arrives to its own connections (``tracking.hub.fanout``); ``group_name``
names a cell for that channel and for the channels group used instead with
``HUB_FANOUT=channel-layer``.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Cell(NamedTuple):
    """A grid cell; ``x`` counts longitude, ``y`` latitude (longitude first)."""

    x: int
    y: int


class Grid(NamedTuple):
    """A grid of square cells of ``size`` degrees; ``size`` divides 180 and 360."""

    size: float

    @property
    def columns(self) -> int:
        return round(360 / self.size)

    @property
    def rows(self) -> int:
        return round(180 / self.size)

    @property
    def min_x(self) -> int:
        return -self.columns // 2

    @property
    def min_y(self) -> int:
        return -self.rows // 2

    def contains(self, cell: Cell) -> bool:
        """Whether ``cell`` is a valid cell number of this grid."""
        return (
            self.min_x <= cell.x < self.min_x + self.columns
            and self.min_y <= cell.y < self.min_y + self.rows
        )

    def cell_of(self, *, latitude: float, longitude: float) -> Cell:
        """The cell holding a point. Longitude 180 is -180; latitude 90 is the top row."""
        x = math.floor(normalize_longitude(longitude) / self.size)
        y = math.floor(latitude / self.size)
        return Cell(self.wrap_x(x), min(max(y, self.min_y), self.min_y + self.rows - 1))

    def wrap_x(self, x: int) -> int:
        """Fold a column number into the grid, across the antimeridian."""
        return (x - self.min_x) % self.columns + self.min_x

    def cells_covering(self, *, west: float, south: float, east: float, north: float) -> list[Cell]:
        """The cells that cover a viewport, as the browser computes them.

        West and south round down, east and north round up, the ends are
        excluded; ``east`` may exceed 180 (or ``west`` fall below -180) when a
        viewport crosses the antimeridian, and the columns wrap. A viewport
        wider than the world covers every column once.
        """
        south, north = max(south, -90.0), min(north, 90.0)
        first_x = math.floor(west / self.size)
        last_x = math.ceil(east / self.size)
        if last_x - first_x >= self.columns:
            first_x, last_x = self.min_x, self.min_x + self.columns
        first_y = max(math.floor(south / self.size), self.min_y)
        last_y = min(math.ceil(north / self.size), self.min_y + self.rows)
        return [
            Cell(self.wrap_x(x), y) for x in range(first_x, last_x) for y in range(first_y, last_y)
        ]


def normalize_longitude(longitude: float) -> float:
    """Fold a longitude into [-180, 180): 180 becomes -180, 190 becomes -170."""
    if -180.0 <= longitude < 180.0:
        return longitude
    return (longitude + 180.0) % 360.0 - 180.0


def group_name(cell: Cell) -> str:
    """The name of a cell, for its Redis pub/sub channel (after the
    ``CHANNEL_LAYER_PREFIX``) and its channels group: letters, digits and ``.``
    only (docs/protocol.md §2.4).

    A negative number is written with an ``m`` (``cell.m12.60``) so the name is
    valid for every channel layer and cannot be mistaken for a separator.
    """
    return f"cell.{_signed(cell.x)}.{_signed(cell.y)}"


def _signed(number: int) -> str:
    return f"m{-number}" if number < 0 else str(number)


class InvalidCells(ValueError):
    """Grid numbers from a client that are not a list of valid cells."""


class TooManyCells(InvalidCells):
    """More cells than one connection may join."""


def parse_cells(value: object, *, grid: Grid, name: str, max_count: int) -> list[Cell]:
    """Read ``[[x, y], ...]`` from a client: integer pairs inside the grid.

    Duplicates are dropped, order kept. More than ``max_count`` distinct cells
    is refused as a whole, so a client never holds part of what it asked for.
    """
    if not isinstance(value, list):
        raise InvalidCells(f"{name} must be an array of [longitude, latitude] cell pairs")
    cells: dict[Cell, None] = {}
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in item)
        ):
            raise InvalidCells(f"{name} must hold [longitude, latitude] pairs of integers")
        cell = Cell(item[0], item[1])
        if not grid.contains(cell):
            raise InvalidCells(f"{name} holds [{cell.x}, {cell.y}], which is outside the grid")
        cells[cell] = None
    if len(cells) > max_count:
        raise TooManyCells(
            f"{name} asks for {len(cells)} cells, more than the {max_count} "
            "a connection may join; zoom in"
        )
    return list(cells)
