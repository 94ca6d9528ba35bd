"""tracking/exports.py: the CSV, GeoJSON and GPX writers, without a database.

However the positions are cut into pages, the pieces make one file that its
format's parser reads back whole."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import gpxpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracking.exports import ExportFormat, ExportHeader, export_format, file_name, writer
from tracking.positions import PositionRow as Row

SINCE = datetime(2026, 11, 26, 11, 15, 42, tzinfo=UTC)


def header(name: str = "Van 1") -> ExportHeader:
    return ExportHeader(
        tracker_id=uuid.UUID("5b0e2c1d-7f3a-4e8b-9c6d-2a1f0e9d8c7b"),
        name=name,
        since=SINCE,
        until=SINCE + timedelta(days=1),
    )


def written(fmt: ExportFormat, pages: list[list[Row]], name: str = "Van 1") -> str:
    document = writer(fmt, header(name))
    return document.start() + "".join(document.page(page) for page in pages) + document.end()


optional = st.none() | st.floats(0, 1_000, allow_nan=False)
rows = st.lists(
    st.builds(
        Row,
        timestamp=st.integers(0, 10**9).map(lambda ms: SINCE + timedelta(milliseconds=ms)),
        latitude=st.floats(-90, 90),
        longitude=st.floats(-180, 180),
        speed=optional,
        heading=st.none() | st.floats(0, 360),
        accuracy=optional,
    ),
    max_size=30,
)


def paged(items: list[Row], cuts: list[int]) -> list[list[Row]]:
    """``items`` cut where ``cuts`` say (empty pages included)."""
    edges = [0, *sorted(cut % (len(items) + 1) for cut in cuts), len(items)]
    return [items[start:end] for start, end in pairwise(edges)]


@given(items=rows, cuts=st.lists(st.integers(0, 100), max_size=5))
def test_csv_pages_make_one_table_of_every_row(items: list[Row], cuts: list[int]) -> None:
    table = list(csv.reader(io.StringIO(written(ExportFormat.CSV, paged(items, cuts)))))
    assert table[0] == ["time", "latitude", "longitude", "speed_kmh", "heading_deg", "accuracy_m"]
    assert len(table) == len(items) + 1
    for line, row in zip(table[1:], items, strict=True):
        assert datetime.fromisoformat(line[0]) == row.timestamp.replace(
            microsecond=row.timestamp.microsecond // 1000 * 1000
        )
        assert [float(value) if value else None for value in line[1:]] == list(row[1:])


@given(items=rows, cuts=st.lists(st.integers(0, 100), max_size=5))
def test_geojson_pages_make_one_feature_collection(items: list[Row], cuts: list[int]) -> None:
    document = json.loads(written(ExportFormat.GEOJSON, paged(items, cuts)))
    assert document["type"] == "FeatureCollection"
    assert [feature["geometry"]["coordinates"] for feature in document["features"]] == [
        [row.longitude, row.latitude] for row in items
    ]


@given(items=rows, cuts=st.lists(st.integers(0, 100), max_size=5), name=st.text(max_size=40))
def test_gpx_pages_make_one_track_gpxpy_reads(items: list[Row], cuts: list[int], name: str) -> None:
    gpx = gpxpy.parse(written(ExportFormat.GPX, paged(items, cuts), name=name))
    (track,) = gpx.tracks
    points = track.segments[0].points
    assert [(point.latitude, point.longitude) for point in points] == [
        (row.latitude, row.longitude) for row in items
    ]
    # What XML can hold of the name comes back as it was.
    if name.isprintable() and name.strip() == name:
        assert (track.name or "") == name


def test_gpx_coordinates_never_use_an_exponent() -> None:
    # GPX types them as xsd:decimal, which has no exponent (repr(1e-05) has one).
    row = Row(SINCE, 1e-05, -2.5e-07, 0.036, 1e-05, None)
    text = written(ExportFormat.GPX, [[row]])
    assert '<trkpt lat="0.00001" lon="-0.00000025">' in text
    assert "<gpxtpx:speed>0.01</gpxtpx:speed><gpxtpx:course>0.00001</gpxtpx:course>" in text
    assert "e-0" not in text


def test_a_heading_of_360_degrees_is_a_course_of_0() -> None:
    text = written(ExportFormat.GPX, [[Row(SINCE, 60.0, 24.0, None, 360.0, None)]])
    assert "<gpxtpx:course>0.0</gpxtpx:course>" in text and "<gpxtpx:speed>" not in text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Helsinki tram 4", "helsinki-tram-4-20261126T1115Z-20261127T1115Z.gpx"),
        ("Väinö's bus ../../etc", "vaino-s-bus-etc-20261126T1115Z-20261127T1115Z.gpx"),
        ("東京", "tracker-20261126T1115Z-20261127T1115Z.gpx"),
        ("a" * 100, "a" * 60 + "-20261126T1115Z-20261127T1115Z.gpx"),
    ],
)
def test_the_file_name_is_the_trackers_name_and_the_range_in_utc(name: str, expected: str) -> None:
    assert file_name(header(name), ExportFormat.GPX) == expected


def test_a_format_is_named_exactly() -> None:
    assert export_format("geojson") is ExportFormat.GEOJSON
    for raw in (None, "", "GPX", "json", "csv "):
        with pytest.raises(ValueError, match="format must be one of csv, geojson, gpx"):
            export_format(raw)
