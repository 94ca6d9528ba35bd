"""A tracker's history thinned for the map: what the zoom can show, and never
more than the map can take.

A position is dropped only if replaying the kept ones, with the tracker
moving in a straight line at constant speed from each kept position to the
next, would draw it within the tolerance of where it really was *at that
moment* (the synchronised distance: space and time, not shape alone). So a
stop keeps its two ends, and the replayed tracker waits there instead of
creeping on towards where it went next; a turn keeps its corner; a change of
speed on a straight road keeps the point where the speed changed. Plain
Douglas-Peucker, which looks at the shape only, would keep none of these.

Distances are measured in Web Mercator pixels at the zoom asked for, the
units the map draws in, so one tolerance (a pixel) holds at every latitude.
Positions are read a page at a time and thinned page by page, each page
from the last position of the page before it (which is kept: one more
position every page), so a week at one report a second never needs more than
one page in memory besides what is kept.

Where no position came for longer than ``GAP_MS``, both ends of the silence
are kept and the silence is named in ``gaps``: a replay shows the tracker
waiting there, not driving a straight line nobody saw.

Pure: numpy, no Django.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# A position: (Unix ms, latitude, longitude, speed km/h or None, heading ° or None).
TrackRow = tuple[int, float, float, float | None, float | None]

# A silence longer than this between two positions is a gap in the data.
GAP_MS = 300_000
# How far (in screen pixels at the zoom asked for) a replayed position may be
# drawn from where the tracker really was when a position is dropped.
PIXEL_TOLERANCE = 1.0
# Web Mercator's tile size and the latitude where its square world ends.
_TILE_PIXELS = 256
_MAX_LATITUDE = 85.05112878
_EQUATOR_METRES = 40_075_016.686
# Each stretch is thinned in runs of at most this many positions: a pathological
# track then costs at most this much work per position, whatever its length.
_RUN = 4_096

FloatArray = npt.NDArray[np.float64]


def metres_per_pixel(*, zoom: float, latitude: float) -> float:
    """How many metres on the ground one Web Mercator pixel spans at ``zoom``."""
    return _EQUATOR_METRES * math.cos(math.radians(latitude)) / (_TILE_PIXELS * 2**zoom)


@dataclass
class ThinnedTrack:
    """What ``thin_track`` kept of a range of positions."""

    # How many positions the range held.
    stored: int = 0
    # The positions kept, oldest first; always the first and the last.
    rows: list[TrackRow] = field(default_factory=list)
    # Silences longer than GAP_MS, as (last position before, first after) in Unix ms.
    gaps: list[tuple[int, int]] = field(default_factory=list)
    # How far a dropped position may be from its replayed place, at most, in
    # pixels at the zoom.
    pixel_tolerance: float = PIXEL_TOLERANCE

    @property
    def thinned(self) -> bool:
        return len(self.rows) < self.stored

    def tolerance_metres(self, *, zoom: float) -> float:
        """The tolerance on the ground, at the mean latitude of what was kept."""
        if not self.rows:
            return 0.0
        latitude = sum(row[1] for row in self.rows) / len(self.rows)
        return self.pixel_tolerance * metres_per_pixel(zoom=zoom, latitude=latitude)


def thin_track(
    pages: Iterable[Sequence[TrackRow]], *, zoom: float, max_points: int
) -> ThinnedTrack:
    """Thin positions read a page at a time (oldest first, each time once) for
    drawing at ``zoom``, keeping at most ``max_points`` of them (and every gap's
    ends, however many).

    Each position a pixel's tolerance keeps is kept with its importance: the
    widest tolerance that would still keep it. When there are more than
    ``max_points``, the tolerance becomes the importance of the first one too
    many, and only those more important stay: exactly what thinning with that
    tolerance keeps, found in one pass. ``pixel_tolerance`` says which.
    """
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    scale = _TILE_PIXELS * 2**zoom
    track = ThinnedTrack()
    kept: list[TrackRow] = []
    importance: list[float] = []
    # Where the last page ended: its last position (kept) and its longitude unwrapped.
    anchor: tuple[TrackRow, float] | None = None
    for page in pages:
        if not page:
            continue
        track.stored += len(page)
        rows = list(page) if anchor is None else [anchor[0], *page]
        times = np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))
        x, y = _project(rows, scale=scale, first_unwrapped=None if anchor is None else anchor[1])
        weights = _importance(times, x, y, floor=PIXEL_TOLERANCE)
        track.gaps += _gaps(times)
        start = 0 if anchor is None else 1
        chosen = np.flatnonzero(weights[start:] > PIXEL_TOLERANCE) + start
        kept += [rows[index] for index in chosen]
        importance += weights[chosen].tolist()
        last = len(rows) - 1
        anchor = (rows[last], float(x[last] / scale * 360.0 - 180.0))
    if len(kept) > max_points:
        ranked = np.sort(np.asarray(importance))[::-1]
        tolerance = float(ranked[max_points])
        if math.isfinite(tolerance):
            track.pixel_tolerance = tolerance
            kept = [row for row, weight in zip(kept, importance, strict=True) if weight > tolerance]
        else:  # the ends of gaps alone are more than the budget: they all stay
            track.pixel_tolerance = 4.0 * scale
            kept = [row for row, weight in zip(kept, importance, strict=True) if weight == math.inf]
    track.rows = kept
    return track


def _project(
    rows: Sequence[TrackRow], *, scale: float, first_unwrapped: float | None
) -> tuple[FloatArray, FloatArray]:
    """Web Mercator pixels of ``rows``; longitudes unwrapped so that a track
    across the antimeridian stays one line (continuing from ``first_unwrapped``,
    the previous page's last longitude, unwrapped)."""
    latitudes = np.clip(
        np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows)),
        -_MAX_LATITUDE,
        _MAX_LATITUDE,
    )
    longitudes = np.fromiter((row[2] for row in rows), dtype=np.float64, count=len(rows))
    longitudes = np.unwrap(longitudes, period=360.0)
    if first_unwrapped is not None:
        # np.unwrap keeps the first value; shift the page to follow on from the last.
        longitudes += first_unwrapped - longitudes[0]
    x = (longitudes + 180.0) / 360.0 * scale
    sine = np.sin(np.radians(latitudes))
    y = (0.5 - np.log((1 + sine) / (1 - sine)) / (4 * math.pi)) * scale
    return x, y


def _gaps(times: FloatArray) -> list[tuple[int, int]]:
    steps = np.flatnonzero(np.diff(times) > GAP_MS)
    return [(int(times[index]), int(times[index + 1])) for index in steps]


def _importance(times: FloatArray, x: FloatArray, y: FloatArray, *, floor: float) -> FloatArray:
    """Each position's importance in pixels: infinite for the ends of the
    whole, of every gap and of every run of ``_RUN``; for the rest, the widest
    tolerance at which the synchronised Douglas-Peucker between those ends
    keeps it (0 where even ``floor`` drops it)."""
    count = len(times)
    weights = np.zeros(count, dtype=np.float64)
    forced = np.zeros(count, dtype=np.bool_)
    forced[0] = forced[-1] = True
    gap_ends = np.flatnonzero(np.diff(times) > GAP_MS)
    forced[gap_ends] = True
    forced[gap_ends + 1] = True
    forced[:: _RUN - 1] = True
    weights[forced] = math.inf
    bounds = np.flatnonzero(forced)
    _split(times, x, y, bounds[:-1], bounds[1:], floor=floor, weights=weights)
    return weights


def _split(
    times: FloatArray,
    x: FloatArray,
    y: FloatArray,
    starts: npt.NDArray[np.intp],
    ends: npt.NDArray[np.intp],
    *,
    floor: float,
    weights: FloatArray,
) -> None:
    """Douglas-Peucker with the synchronised distance, on every stretch
    ``starts[i]..ends[i]`` at once, down to ``floor``.

    Each round finds, for every stretch still open, its position farthest from
    where straight motion in time between the stretch's ends puts it, and
    splits the stretch there if that is farther than ``floor``. A round is a
    few array operations over every open position, so a track where nearly
    every position stays costs rounds (about the log of a stretch's length),
    not a Python step per position.

    Which position splits a stretch does not depend on the tolerance, only
    whether it does: so thinning at a wider tolerance keeps exactly the
    positions whose distance, and every distance of the splits that made their
    stretch, is wider. That smallest distance is the position's weight.
    """
    ceilings = np.full(len(starts), math.inf)
    while True:
        open_ = ends - starts >= 2
        starts, ends, ceilings = starts[open_], ends[open_], ceilings[open_]
        if not len(starts):
            return
        lengths = ends - starts - 1
        offsets = np.cumsum(lengths) - lengths
        stretch = np.repeat(np.arange(len(starts)), lengths)
        inner = np.arange(int(lengths.sum())) - offsets[stretch] + starts[stretch] + 1
        first, last = starts[stretch], ends[stretch]
        span = times[last] - times[first]
        fraction = np.divide(
            times[inner] - times[first], span, out=np.zeros_like(span), where=span > 0
        )
        dx = x[inner] - (x[first] + fraction * (x[last] - x[first]))
        dy = y[inner] - (y[first] + fraction * (y[last] - y[first]))
        squared = dx * dx + dy * dy
        farthest = np.maximum.reduceat(squared, offsets)
        # The first position of each stretch at its farthest distance.
        at_farthest = np.flatnonzero(squared == farthest[stretch])
        _, first_of_each = np.unique(stretch[at_farthest], return_index=True)
        middles = inner[at_farthest[first_of_each]]
        split = farthest > floor * floor
        middles = middles[split]
        weight = np.minimum(np.sqrt(farthest[split]), ceilings[split])
        weights[middles] = weight
        starts, ends = (
            np.concatenate([starts[split], middles]),
            np.concatenate([middles, ends[split]]),
        )
        ceilings = np.concatenate([weight, weight])
