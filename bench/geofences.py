"""Geofence detection: what one position costs against 1,000 fences of mixed sizes.

1,000 fences round Helsinki (circles of 30 m to 5 km, rectangles of 100 m to
20 km, some with a hole), 1,000 trackers each walking 10 to 40 m per report
from a random start, every report checked with ``tracking.geofences.crossings``
as the pipeline will. The figure is microseconds per event, from the first
check to the last, in this process alone (no database, no publishing); the
index is built beforehand, and its build time is reported beside it.
Not part of ``make bench`` yet.

    python -m bench.geofences [--quick]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from typing import Any

from pyproj import Geod

from bench.common import Row
from tracking.geofences import Fence, FenceIndex, circle, crossings, parse_geojson

FENCES = 1_000
TRACKERS = 1_000
# Helsinki and its surroundings: fences and trackers share about 60 x 55 km.
WEST, SOUTH, EAST, NORTH = 24.5, 60.0, 25.5, 60.5
GEOD = Geod(ellps="WGS84")


def make_fences(rng: random.Random) -> dict[int, Fence]:
    """``FENCES`` fences of mixed kinds and sizes, by id."""
    fences: dict[int, Fence] = {}
    for key in range(FENCES):
        lon, lat = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
        size = math.exp(rng.uniform(math.log(30), math.log(5_000)))
        if key % 2 == 0:
            fences[key] = circle(latitude=lat, longitude=lon, radius_m=size)
            continue
        half_lat = 2 * size / 111_000
        half_lon = half_lat / math.cos(math.radians(lat)) * rng.uniform(0.5, 2)
        ring = [(lon - half_lon, lat - half_lat), (lon + half_lon, lat - half_lat)]
        ring += [(lon + half_lon, lat + half_lat), (lon - half_lon, lat + half_lat)]
        rings = [[*map(list, ring), list(ring[0])]]
        if key % 3 == 0:
            hole = [
                (lon + dx * half_lon / 3, lat + dy * half_lat / 3)
                for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
            ]
            rings.append([*map(list, hole), list(hole[0])])
        fences[key] = parse_geojson({"type": "Polygon", "coordinates": rings})[0].fence
    return fences


def run(*, quick: bool) -> dict[str, Any]:
    rng = random.Random(10)
    started = time.perf_counter()
    fences = make_fences(rng)
    index = FenceIndex(fences)
    built = time.perf_counter() - started
    reports = 20 if quick else 100
    trackers = [
        (rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH), rng.uniform(0, 360))
        for _ in range(TRACKERS)
    ]
    # The walks are computed before the clock starts: only detection is timed.
    walks = []
    for lon, lat, heading in trackers:
        walk = []
        for _ in range(reports):
            lon, lat, _ = GEOD.fwd(lon, lat, heading + rng.uniform(-20, 20), rng.uniform(10, 40))
            walk.append((lon, lat))
        walks.append(walk)
    inside: list[frozenset[int]] = [frozenset()] * TRACKERS
    entered = exited = 0
    started = time.perf_counter()
    for step in range(reports):
        for tracker, walk in enumerate(walks):
            lon, lat = walk[step]
            found = crossings(index, inside[tracker], latitude=lat, longitude=lon)
            inside[tracker] = (inside[tracker] - found.exited) | found.entered
            entered += len(found.entered)
            exited += len(found.exited)
    elapsed = time.perf_counter() - started
    events = reports * TRACKERS
    return {
        "fences": FENCES,
        "trackers": TRACKERS,
        "events": events,
        "microseconds_per_event": elapsed / events * 1e6,
        "index_build_seconds": built,
        "entered": entered,
        "exited": exited,
        "inside_at_end": sum(map(len, inside)),
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    return [
        Row(
            "geofences",
            f"detection, {figures['fences']:,} fences, {figures['trackers']:,} trackers",
            f"{figures['microseconds_per_event']:.1f} us/event",
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.geofences", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 reports per tracker, not 100")
    figures = run(quick=parser.parse_args(argv).quick)
    for name, value in figures.items():
        print(f"{name}: {value:,.2f}" if isinstance(value, float) else f"{name}: {value:,}")


if __name__ == "__main__":
    main()
