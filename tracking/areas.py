"""The overview's areas (docs/protocol.md §3.11): pure functions, no Django import.

Where a view needs more cells than a connection may join, the map shows how
many trackers each area holds instead of the trackers. An area is a square of
one of ``LEVELS`` degrees, numbered like a grid cell of that size
(``tracking/grid.py``): ``[floor(lng / size), floor(lat / size)]``, longitude
first. The levels nest (each divides the one above it), so the counts of the
finest level, read from the database once, add up to those of every coarser
level (``Overview.rolled_up``). What one connection is sent is the non-empty
areas of its level that meet its view (``OverviewRequest``), at most
``MAX_AREAS`` of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from tracking.grid import Cell, Grid

# Areas' sizes in degrees, coarsest first; each divides the one before it.
LEVELS: tuple[int, ...] = (45, 15, 3)
FINEST = LEVELS[-1]
# The most areas one view may cover at its level (a world view at 45°: 32).
MAX_AREAS = 200
# Means and bounds are sent to 6 decimals: about 0.1 m.
_DECIMALS = 6


class InvalidOverviewRequest(ValueError):
    """``updateOverview`` arguments a client should not have sent; the text says why."""


@dataclass(frozen=True, slots=True)
class OverviewRequest:
    """What one connection watches: the areas of ``level`` degrees covering its
    view, ordered by x, then y.

    Hashed once: every update groups the viewers by what they watch."""

    level: int
    covering: tuple[Cell, ...]
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.level, self.covering)))

    def __hash__(self) -> int:
        return self._hash


def parse_overview_request(area_degrees: object, view: object) -> OverviewRequest | None:
    """Read ``updateOverview(areaDegrees, view)``; None for ``areaDegrees`` null (stop).

    ``view`` is ``[west, south, east, north]`` in degrees, longitudes within
    [-180, 180] (a view across the antimeridian has west > east; one as wide
    as the world is -180 to 180), latitudes within [-90, 90]. The view's
    areas are counted as the cells covering a viewport are (docs/protocol.md
    §2.2), at most ``MAX_AREAS``.
    """
    if area_degrees is None:
        return None
    levels = ", ".join(str(level) for level in LEVELS)
    if not _is_number(area_degrees) or area_degrees not in LEVELS:
        raise InvalidOverviewRequest(f"areaDegrees must be one of {levels}, or null to stop")
    level = int(area_degrees)
    if not isinstance(view, list) or len(view) != 4 or not all(_is_number(v) for v in view):
        raise InvalidOverviewRequest(
            "view must be an array of four numbers [west, south, east, north]"
        )
    west, south, east, north = (float(v) for v in view)
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise InvalidOverviewRequest("view must hold finite numbers")
    if not (
        -180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90
    ):
        raise InvalidOverviewRequest(
            "view's longitudes must be within [-180, 180] and its latitudes within [-90, 90]"
        )
    if south > north:
        raise InvalidOverviewRequest("view's south must not be north of its north")
    if west > east:  # across the antimeridian
        east += 360.0
    covering = Grid(level).cells_covering(west=west, south=south, east=east, north=north)
    if len(covering) > MAX_AREAS:
        raise InvalidOverviewRequest(
            f"This view covers {len(covering)} areas of {level}°, more than the {MAX_AREAS} "
            "an overview may send; use larger areas."
        )
    return OverviewRequest(level=level, covering=tuple(sorted(covering)))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(slots=True)
class AreaSummary:
    """The counted trackers of one area: how many, the sums of their
    coordinates (for the mean) and the box around them; above the finest
    level, also its busiest finest area (``busiest``: that area's number and
    its trackers), where its count is drawn."""

    trackers: int
    latitude_sum: float
    longitude_sum: float
    south: float
    north: float
    west: float
    east: float
    busiest: tuple[Cell, AreaSummary] | None = None

    @classmethod
    def at(cls, latitude: float, longitude: float) -> AreaSummary:
        """One tracker at a point."""
        return cls(1, latitude, longitude, latitude, latitude, longitude, longitude)

    def add(self, other: AreaSummary) -> None:
        self.trackers += other.trackers
        self.latitude_sum += other.latitude_sum
        self.longitude_sum += other.longitude_sum
        self.south = min(self.south, other.south)
        self.north = max(self.north, other.north)
        self.west = min(self.west, other.west)
        self.east = max(self.east, other.east)

    def hold(self, cell: Cell, child: AreaSummary) -> None:
        """Count ``child``, the finest area ``cell``, in this coarser one, and
        keep the busiest such (the most trackers; on a tie the lowest number,
        so the place does not change from one update to the next)."""
        self.add(child)
        if self.busiest is None:
            self.busiest = (cell, child)
            return
        busiest_cell, busiest = self.busiest
        if (-child.trackers, cell) < (-busiest.trackers, busiest_cell):
            self.busiest = (cell, child)

    def payload(self, area: Cell) -> dict[str, Any]:
        # Where most of its trackers are: the mean of its busiest finest area. The mean
        # of all of them would put the count of two far-apart places between them, at sea.
        place = self if self.busiest is None else self.busiest[1]
        return {
            "area": [area.x, area.y],
            "count": self.trackers,
            "latitude": round(place.latitude_sum / place.trackers, _DECIMALS),
            "longitude": round(place.longitude_sum / place.trackers, _DECIMALS),
            "bounds": [
                round(self.west, _DECIMALS),
                round(self.south, _DECIMALS),
                round(self.east, _DECIMALS),
                round(self.north, _DECIMALS),
            ],
        }


@dataclass(frozen=True, slots=True)
class Overview:
    """Every counted tracker, by area at every level; ``total`` counts them all."""

    total: int
    areas: dict[int, dict[Cell, AreaSummary]]

    @classmethod
    def rolled_up(cls, rows: Iterable[tuple[Cell, AreaSummary]]) -> Overview:
        """The overview of the finest level's areas (``rows``: an area's
        number and its trackers, as the database sums them), summed up to
        every coarser level, each keeping its busiest finest area.

        An area is folded into the grid first: a latitude of exactly 90 is in
        the top row, as a grid cell's is.
        """
        finest = Grid(FINEST)
        top = finest.min_y + finest.rows - 1
        by_level: dict[int, dict[Cell, AreaSummary]] = {level: {} for level in LEVELS}
        fine = by_level[FINEST]
        total = 0
        for (x, y), row in rows:
            if row.trackers <= 0:
                continue
            total += row.trackers
            cell = Cell(finest.wrap_x(x), min(max(y, finest.min_y), top))
            found = fine.get(cell)
            if found is None:
                fine[cell] = replace(row, busiest=None)
            else:
                found.add(row)
        for cell, summary in fine.items():
            for level in LEVELS[:-1]:
                ratio = level // FINEST
                area = Cell(cell.x // ratio, cell.y // ratio)
                found = by_level[level].get(area)
                if found is None:
                    found = by_level[level][area] = replace(
                        summary, trackers=0, latitude_sum=0.0, longitude_sum=0.0
                    )
                found.hold(cell, summary)
        return cls(total=total, areas=by_level)

    @classmethod
    def counting(cls, points: Iterable[tuple[float, float]]) -> Overview:
        """The overview of trackers at ``points`` (latitude, longitude), all
        counted: what the database sums for ``rolled_up``, summed here."""
        rows: dict[Cell, AreaSummary] = {}
        for latitude, longitude in points:
            area = Cell(math.floor(longitude / FINEST), math.floor(latitude / FINEST))
            found = rows.get(area)
            if found is None:
                rows[area] = AreaSummary.at(latitude, longitude)
            else:
                found.add(AreaSummary.at(latitude, longitude))
        return cls.rolled_up(rows.items())

    def payload(self, request: OverviewRequest) -> dict[str, Any]:
        """The ``overviewUpdated`` argument for ``request``: its non-empty
        areas, ordered by ``x`` then ``y``."""
        areas = self.areas.get(request.level, {})
        return {
            "areaDegrees": request.level,
            "total": self.total,
            "areas": [areas[area].payload(area) for area in request.covering if area in areas],
        }
