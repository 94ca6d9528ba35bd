"""A tracker's positions as a file: CSV, GeoJSON (RFC 7946) or GPX 1.1.

Pure: no Django, no database. A writer turns a document into pieces of text
that follow each other: ``start()``, then ``page(rows)`` for each page of
positions in time order, then ``end()``. Nothing is kept between pages but
whether a row came before, so an export of any length costs the memory of
one page (the endpoint, ``tracking/export_views.py``, streams the pieces as
they come). docs/protocol.md §4.10 describes the files.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol
from xml.sax.saxutils import escape

import orjson

from tracking.events import unix_ms
from tracking.positions import PositionRow


class ExportFormat(StrEnum):
    CSV = "csv"
    GEOJSON = "geojson"
    GPX = "gpx"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]

    @property
    def extension(self) -> str:
        return self.value


_CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.GEOJSON: "application/geo+json",
    ExportFormat.GPX: "application/gpx+xml",
}


def export_format(raw: str | None) -> ExportFormat:
    """The format a ``format`` parameter names; ``ValueError`` with a sentence if none."""
    for fmt in ExportFormat:
        if raw == fmt.value:
            return fmt
    shown = "nothing" if raw is None else repr(raw[:40])
    names = ", ".join(fmt.value for fmt in ExportFormat)
    raise ValueError(f"format must be one of {names}, got {shown}.")


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """What a file says about itself: whose positions, over which range."""

    tracker_id: uuid.UUID
    name: str
    since: datetime
    until: datetime


def iso_time(moment: datetime) -> str:
    """``2026-11-26T11:15:00.123Z``: UTC, to the millisecond."""
    if moment.tzinfo is not UTC:  # what the database answers is UTC already: no conversion
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def file_name(header: ExportHeader, fmt: ExportFormat) -> str:
    """``<name-slug>-<since>-<until>.<ext>``, times as ``20261126T1115Z`` (UTC, to the minute)."""
    return f"{_slug(header.name)}-{_minute(header.since)}-{_minute(header.until)}.{fmt.extension}"


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%MZ")


def _slug(name: str) -> str:
    """ASCII letters, digits and hyphens only, so the name is safe in any header and file system."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60].rstrip("-")
    return slug or "tracker"


class Writer(Protocol):
    def start(self) -> str: ...
    def page(self, rows: Sequence[PositionRow]) -> str: ...
    def end(self) -> str: ...


def writer(fmt: ExportFormat, header: ExportHeader) -> Writer:
    return _WRITERS[fmt](header)


class CsvWriter:
    """RFC 4180 CSV with a header row; an unreported value is an empty field."""

    COLUMNS = ("time", "latitude", "longitude", "speed_kmh", "heading_deg", "accuracy_m")

    def __init__(self, header: ExportHeader) -> None:
        self.header = header

    def start(self) -> str:
        return ",".join(self.COLUMNS) + "\r\n"

    def page(self, rows: Sequence[PositionRow]) -> str:
        text = io.StringIO()
        csv.writer(text).writerows(
            (
                iso_time(row.timestamp),
                row.latitude,
                row.longitude,
                row.speed,
                row.heading,
                row.accuracy,
            )
            for row in rows
        )
        return text.getvalue()

    def end(self) -> str:
        return ""


class GeoJsonWriter:
    """A FeatureCollection of Point features, oldest first; the tracker and the
    range are foreign members of the collection (RFC 7946 §6.1)."""

    def __init__(self, header: ExportHeader) -> None:
        self.header = header
        self.written = False

    def start(self) -> str:
        members = orjson.dumps(
            {
                "type": "FeatureCollection",
                "trackerId": str(self.header.tracker_id),
                "name": self.header.name,
                "since": unix_ms(self.header.since),
                "until": unix_ms(self.header.until),
            }
        ).decode()
        return members.removesuffix("}") + ',"features":['

    def page(self, rows: Sequence[PositionRow]) -> str:
        if not rows:
            return ""
        features = orjson.dumps(
            [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [row.longitude, row.latitude]},
                    "properties": {
                        "time": iso_time(row.timestamp),
                        "timestamp": unix_ms(row.timestamp),
                        "speed": row.speed,
                        "heading": row.heading,
                        "accuracy": row.accuracy,
                    },
                }
                for row in rows
            ]
        ).decode()[1:-1]
        separator = "," if self.written else ""
        self.written = True
        return separator + features

    def end(self) -> str:
        return "]}\n"


GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"
# Garmin's TrackPointExtension v2: where GPX 1.1 readers look for speed (m/s) and course (°).
TRACK_POINT_EXTENSION = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
GPX_CREATOR = "tracker map"


class GpxWriter:
    """GPX 1.1: one track named after the tracker, one segment, a point per
    position with its time; speed (in m/s, as GPX has it, to the mm/s) and
    course in Garmin's TrackPointExtension, where GPX 1.1 readers look for
    them (GPX 1.1 itself has neither). Accuracy has no place in GPX: its
    ``hdop`` is a dilution of precision, not metres."""

    def __init__(self, header: ExportHeader) -> None:
        self.header = header

    def start(self) -> str:
        name = _xml_text(self.header.name)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<gpx version="1.1" creator="{GPX_CREATOR}" xmlns="{GPX_NAMESPACE}" '
            f'xmlns:gpxtpx="{TRACK_POINT_EXTENSION}" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{GPX_NAMESPACE} http://www.topografix.com/GPX/1/1/gpx.xsd">\n'
            f"<metadata><name>{name}</name><desc>{iso_time(self.header.since)} to "
            f"{iso_time(self.header.until)}</desc></metadata>\n"
            f"<trk><name>{name}</name><src>{self.header.tracker_id}</src><trkseg>\n"
        )

    def page(self, rows: Sequence[PositionRow]) -> str:
        return "".join(
            f'<trkpt lat="{_decimal(row.latitude)}" lon="{_decimal(row.longitude)}">'
            f"<time>{iso_time(row.timestamp)}</time>{_extensions(row)}</trkpt>\n"
            for row in rows
        )

    def end(self) -> str:
        return "</trkseg></trk>\n</gpx>\n"


def _extensions(row: PositionRow) -> str:
    if row.speed is None and row.heading is None:
        return ""
    speed = (
        ""
        if row.speed is None
        else f"<gpxtpx:speed>{_decimal(round(row.speed / 3.6, 3))}</gpxtpx:speed>"
    )
    # The schema's course is from 0 up to, not including, 360.
    course = (
        ""
        if row.heading is None
        else f"<gpxtpx:course>{_decimal(row.heading % 360)}</gpxtpx:course>"
    )
    return (
        f"<extensions><gpxtpx:TrackPointExtension>{speed}{course}"
        "</gpxtpx:TrackPointExtension></extensions>"
    )


# What XML 1.0 cannot hold at all, even escaped (§2.2 Char): control characters
# but tab, newline and carriage return, surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` as XML character data: markup escaped, characters XML cannot hold as U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", text))


def _decimal(number: float) -> str:
    """``number`` as xsd:decimal, which GPX uses for coordinates: every digit, never an exponent."""
    shortest = repr(number)
    if "e" not in shortest:
        return shortest
    return format(Decimal(shortest), "f")


_WRITERS: dict[ExportFormat, type[CsvWriter | GeoJsonWriter | GpxWriter]] = {
    ExportFormat.CSV: CsvWriter,
    ExportFormat.GEOJSON: GeoJsonWriter,
    ExportFormat.GPX: GpxWriter,
}
