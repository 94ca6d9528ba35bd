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
    drawing at ``zoom``, keeping at most ``max_points`` of them.

    When a pixel's tolerance keeps more than ``max_points``, the kept positions
    are thinned again with twice the tolerance, then four times, until they
    fit; ``pixel_tolerance`` says how far that may have moved a dropped one.
    """
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    scale = _TILE_PIXELS * 2**zoom
    track = ThinnedTrack()
    kept: list[TrackRow] = []
    # Where the last page ended: its last position, kept, and projected.
    anchor: tuple[TrackRow, float, float, float] | None = None
    for page in pages:
        if not page:
            continue
        track.stored += len(page)
        rows = list(page) if anchor is None else [anchor[0], *page]
        times = np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))
        x, y = _project(rows, scale=scale, first_unwrapped=None if anchor is None else anchor[3])
        keep = _stretches_kept(times, x, y, tolerance=PIXEL_TOLERANCE)
        track.gaps += _gaps(times)
        start = 0 if anchor is None else 1
        kept += [rows[index] for index in np.flatnonzero(keep[start:]) + start]
        last = len(rows) - 1
        anchor = (rows[last], float(x[last]), float(y[last]), _unwrapped_longitude(rows, x, scale))
    # Thinning what is kept again adds its tolerance to what was already
    # allowed: ``pixel_tolerance`` is the sum, a bound on every dropped
    # position. Past the world's width in pixels only the ends of gaps are
    # left, and they stay however many they are: so the doubling ends.
    step = PIXEL_TOLERANCE
    while len(kept) > max_points and step < 4 * scale:
        step *= 2
        track.pixel_tolerance += step
        kept = _thin_again(kept, scale=scale, tolerance=step)
    track.rows = kept
    return track


def _thin_again(rows: list[TrackRow], *, scale: float, tolerance: float) -> list[TrackRow]:
    times = np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))
    x, y = _project(rows, scale=scale, first_unwrapped=None)
    keep = _stretches_kept(times, x, y, tolerance=tolerance)
    return [rows[index] for index in np.flatnonzero(keep)]


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


def _unwrapped_longitude(rows: Sequence[TrackRow], x: FloatArray, scale: float) -> float:
    """The last row's longitude as ``_project`` unwrapped it."""
    return float(x[len(rows) - 1] / scale * 360.0 - 180.0)


def _gaps(times: FloatArray) -> list[tuple[int, int]]:
    steps = np.flatnonzero(np.diff(times) > GAP_MS)
    return [(int(times[index]), int(times[index + 1])) for index in steps]


def _stretches_kept(
    times: FloatArray, x: FloatArray, y: FloatArray, *, tolerance: float
) -> npt.NDArray[np.bool_]:
    """Which positions to keep: the ends of the whole, the ends of every gap,
    the ends of every run of ``_RUN``, and within each stretch between them
    what the synchronised Douglas-Peucker keeps."""
    count = len(times)
    keep = np.zeros(count, dtype=np.bool_)
    keep[0] = keep[-1] = True
    gap_ends = np.flatnonzero(np.diff(times) > GAP_MS)
    keep[gap_ends] = True
    keep[gap_ends + 1] = True
    keep[:: _RUN - 1] = True
    bounds = np.flatnonzero(keep)
    _simplify(times, x, y, bounds[:-1], bounds[1:], tolerance * tolerance, keep)
    return keep


def _simplify(
    times: FloatArray,
    x: FloatArray,
    y: FloatArray,
    starts: npt.NDArray[np.intp],
    ends: npt.NDArray[np.intp],
    tolerance_squared: float,
    keep: npt.NDArray[np.bool_],
) -> None:
    """Douglas-Peucker with the synchronised distance, on every stretch
    ``starts[i]..ends[i]`` (both ends kept already) at once: each round finds,
    for every stretch still open, its position farthest from where straight
    motion in time between the stretch's ends puts it, keeps that one if it is
    farther than the tolerance, and splits the stretch there. A round is a few
    array operations over every open position, so a track where nearly every
    position stays costs rounds (about the log of a stretch's length), not a
    Python step per position."""
    while True:
        open_ = ends - starts >= 2
        starts, ends = starts[open_], ends[open_]
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
        distances = dx * dx + dy * dy
        farthest = np.maximum.reduceat(distances, offsets)
        # The first position of each stretch at its farthest distance.
        at_farthest = np.flatnonzero(distances == farthest[stretch])
        _, first_of_each = np.unique(stretch[at_farthest], return_index=True)
        middles = inner[at_farthest[first_of_each]]
        split = farthest > tolerance_squared
        middles = middles[split]
        keep[middles] = True
        starts, ends = (
            np.concatenate([starts[split], middles]),
            np.concatenate([middles, ends[split]]),
        )
