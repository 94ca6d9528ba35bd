"""Thinning a track for replay (tracking/thinning.py): what it drops is never
drawn farther than its tolerance from where the tracker really was at that
moment, stops and gaps keep their ends, and a long track fits the map's budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.thinning import GAP_MS, TrackRow, metres_per_pixel, thin_track

T0 = 1_795_000_000_000


def pages_of(rows: list[TrackRow], size: int) -> list[list[TrackRow]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def pixels(latitude: float, longitude: float, zoom: float) -> tuple[float, float]:
    scale = 256 * 2**zoom
    sine = math.sin(math.radians(latitude))
    return (
        (longitude + 180) / 360 * scale,
        (0.5 - math.log((1 + sine) / (1 - sine)) / (4 * math.pi)) * scale,
    )


def replayed_at(kept: list[TrackRow], moment: int) -> tuple[float, float]:
    """Where a replay of ``kept`` draws the tracker at ``moment``: straight
    motion in time between the kept positions around it."""
    times = [row[0] for row in kept]
    after = next(index for index, time in enumerate(times) if time >= moment)
    if times[after] == moment:
        return kept[after][1], kept[after][2]
    before = kept[after - 1]
    fraction = (moment - before[0]) / (kept[after][0] - before[0])
    longitude_step = (kept[after][2] - before[2] + 540) % 360 - 180
    return (
        before[1] + fraction * (kept[after][1] - before[1]),
        before[2] + fraction * longitude_step,
    )


def worst_miss(rows: list[TrackRow], kept: list[TrackRow], zoom: float) -> float:
    """How far, in pixels at ``zoom``, the replay draws the worst-placed position."""
    worst = 0.0
    for row in rows:
        latitude, longitude = replayed_at(kept, row[0])
        x, y = pixels(latitude, longitude, zoom)
        real_x, real_y = pixels(row[1], row[2], zoom)
        # Across the antimeridian the replay's longitude may stand a world away.
        world = 256 * 2**zoom
        dx = (x - real_x + world / 2) % world - world / 2
        worst = max(worst, math.hypot(dx, y - real_y))
    return worst


def drive(
    seconds: range, *, start: tuple[float, float], velocity: tuple[float, float]
) -> list[TrackRow]:
    """A report a second, moving ``velocity`` degrees a second from ``start``."""
    return [
        (
            T0 + second * 1000,
            start[0] + velocity[0] * (second - seconds.start),
            start[1] + velocity[1] * (second - seconds.start),
            36.0,
            90.0,
        )
        for second in seconds
    ]


def test_a_straight_drive_at_constant_speed_keeps_only_its_ends() -> None:
    rows = drive(range(600), start=(60.0, 24.0), velocity=(0.0, 0.0002))
    track = thin_track([rows], zoom=16, max_points=5000)
    assert track.stored == 600 and track.thinned
    assert track.rows == [rows[0], rows[-1]]
    # Read a page at a time, the last position of each page is kept too.
    paged = thin_track(pages_of(rows, 100), zoom=16, max_points=5000)
    assert paged.rows == rows[::100][:1] + rows[99::100]


def test_a_stop_keeps_both_its_ends_so_the_replay_waits_there() -> None:
    there = drive(range(0, 300), start=(60.0, 24.0), velocity=(0.0, 0.0002))
    stopped_at = (there[-1][1], there[-1][2])
    waiting = [(T0 + second * 1000, *stopped_at, 0.0, None) for second in range(300, 900)]
    on = drive(range(900, 1200), start=stopped_at, velocity=(0.0002, 0.0))
    rows = there + waiting + on
    track = thin_track(pages_of(rows, 250), zoom=15, max_points=5000)
    times = [row[0] for row in track.rows]
    # It arrives, waits ten minutes, leaves: the replay is where it was at every moment.
    assert T0 + 299_000 in times or T0 + 300_000 in times
    assert T0 + 900_000 in times
    assert replayed_at(track.rows, T0 + 600_000) == pytest.approx(stopped_at)
    # Its ends, the stop's two, and the last of each page of 250.
    assert len(track.rows) <= 4 + 4
    assert worst_miss(rows, track.rows, 15) <= track.pixel_tolerance + 1e-6


def test_a_silence_keeps_its_ends_and_is_named() -> None:
    before = drive(range(0, 100), start=(60.0, 24.0), velocity=(0.0, 0.0002))
    after = drive(
        range(100 + GAP_MS // 1000 + 60, 300 + GAP_MS // 1000),
        start=(60.0, 24.1),
        velocity=(0.0, 0.0002),
    )
    track = thin_track([before + after], zoom=14, max_points=5000)
    assert track.gaps == [(before[-1][0], after[0][0])]
    assert before[-1] in track.rows and after[0] in track.rows


def test_a_track_across_the_antimeridian_is_one_line() -> None:
    rows = drive(range(400), start=(-17.0, 179.9), velocity=(0.0, 0.0005))
    rows = [
        (time, latitude, (longitude + 180) % 360 - 180, speed, heading)
        for time, latitude, longitude, speed, heading in rows
    ]
    track = thin_track(pages_of(rows, 400), zoom=12, max_points=5000)
    assert track.rows == [rows[0], rows[-1]]
    # Pages that end either side of it join up too.
    paged = thin_track(pages_of(rows, 150), zoom=12, max_points=5000)
    assert paged.rows == [rows[0], rows[149], rows[299], rows[-1]]


def test_a_day_at_one_report_a_second_fits_the_budget_within_a_stated_tolerance() -> None:
    generator = np.random.default_rng(7)
    seconds = np.arange(86_400)
    # A winding drive with GPS noise of a few metres: a pixel keeps most of it.
    latitudes = 60.17 + 0.02 * np.sin(seconds / 900) + generator.normal(0, 3e-5, seconds.size)
    longitudes = 24.94 + 0.04 * np.cos(seconds / 1300) + generator.normal(0, 6e-5, seconds.size)
    rows: list[TrackRow] = [
        (T0 + int(second) * 1000, float(latitude), float(longitude), 30.0, None)
        for second, latitude, longitude in zip(seconds, latitudes, longitudes, strict=True)
    ]
    track = thin_track(pages_of(rows, 5000), zoom=17, max_points=5000)
    assert track.stored == 86_400 and len(track.rows) <= 5000
    assert track.rows[0] == rows[0] and track.rows[-1] == rows[-1]
    assert track.pixel_tolerance > 1
    sample = rows[::37]
    assert worst_miss(sample, track.rows, 17) <= track.pixel_tolerance + 1e-6


def test_tolerance_on_the_ground_follows_the_zoom_and_latitude() -> None:
    assert metres_per_pixel(zoom=0, latitude=0) == pytest.approx(156_543.03, rel=1e-6)
    assert metres_per_pixel(zoom=16, latitude=60) == pytest.approx(156_543.03 / 2**16 / 2, rel=1e-6)


def test_nothing_stored_is_nothing_kept() -> None:
    track = thin_track([[], []], zoom=10, max_points=100)
    assert track.stored == 0 and track.rows == [] and not track.thinned
    assert track.tolerance_metres(zoom=10) == 0


@st.composite
def tracks(draw: st.DrawFn) -> list[TrackRow]:
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(1, 400_000),  # ms since the last report: gaps too
                st.floats(-0.01, 0.01),
                st.floats(-0.01, 0.01),
            ),
            min_size=1,
            max_size=200,
        )
    )
    time = T0
    latitude = draw(st.floats(-80, 80))
    longitude = draw(st.floats(-180, 180))
    rows: list[TrackRow] = []
    for step, north, east in steps:
        time += step
        latitude = min(84.0, max(-84.0, latitude + north))
        longitude = (longitude + east + 180) % 360 - 180
        rows.append((time, latitude, longitude, None, None))
    return rows


@settings(max_examples=150, deadline=None)
@given(
    rows=tracks(),
    zoom=st.floats(0, 22),
    page=st.integers(1, 60),
    budget=st.integers(2, 80),
)
def test_whatever_the_track_every_dropped_position_is_within_the_stated_tolerance(
    rows: list[TrackRow], zoom: float, page: int, budget: int
) -> None:
    track = thin_track(pages_of(rows, page), zoom=zoom, max_points=budget)
    assert track.stored == len(rows)
    assert track.rows[0] == rows[0] and track.rows[-1] == rows[-1]
    assert [row[0] for row in track.rows] == sorted({row[0] for row in track.rows})
    assert set(track.rows) <= set(rows)
    for gap in track.gaps:
        assert gap[1] - gap[0] > GAP_MS
        assert {gap[0], gap[1]} <= {row[0] for row in track.rows}
    # Kept whatever the budget: the ends of the whole, of gaps, of every page read
    # and of every run of 4,095.
    always = 2 + 2 * len(track.gaps) + len(rows) // page + len(rows) // 4095
    assert len(track.rows) <= max(budget, always)
    # A position thinned at exactly the tolerance is drawn at exactly it: allow for rounding.
    assert worst_miss(rows, track.rows, zoom) <= track.pixel_tolerance * (1 + 1e-6) + 1e-6
