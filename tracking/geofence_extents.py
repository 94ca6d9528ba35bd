"""What the API and the hub need of each geofence, parsed once per version of it.

Parsing a fence (``Geofence.parsed``) projects every vertex and checks the
shape: milliseconds for a large one, too slow to repeat for a thousand fences
on every ``GET /api/geofences``. A fence's ``Extent`` (its lon/lat boxes,
centre, radius and drawn geometry) is therefore kept in this process under
``(pk, updated_at)``: every save stamps ``updated_at`` (so does
``Geofence.objects.update``), so an edited fence is a new key and the old one
ages out. The cache is bounded by entries and by the bytes of geometry held.
A fence whose stored GeoJSON no longer parses is logged once per version and
left out, never an error for the caller.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from tracking.geofences import Box, FenceError
from tracking.logsafe import one_line
from tracking.models import Geofence

logger = logging.getLogger("tracking.geofences")

# Bounds on what one process keeps: enough for every fence of a large
# deployment, small beside a web process.
MAX_CACHED_FENCES = 20_000
MAX_CACHED_GEOMETRY_BYTES = 64 * 1024 * 1024

# Bounded ``IN`` lists: SQLite refuses statements with too many parameters.
_CHUNK = 500

Version = tuple[int, datetime]


@dataclass(frozen=True, slots=True)
class Extent:
    """A fence as the API and the hub see it."""

    boxes: tuple[Box, ...]
    """Lon/lat boxes (west, south, east, north) that hold it, split at the antimeridian."""
    longitude: float
    latitude: float
    """The centre (``Fence.centre``)."""
    radius_m: float | None
    """A circle's radius; None for a polygon."""
    geometry: bytes
    """The stored GeoJSON geometry, encoded as JSON."""

    def meets(self, boxes: Sequence[Box]) -> bool:
        """Whether any of the fence's boxes meets (overlaps or touches) any of ``boxes``."""
        return any(
            west <= other_east
            and other_west <= east
            and south <= other_north
            and other_south <= north
            for west, south, east, north in self.boxes
            for other_west, other_south, other_east, other_north in boxes
        )


def extent_of(geojson: str) -> Extent:
    """The extent of a stored fence; ``FenceError`` if it does not parse."""
    fence = Geofence(geojson=geojson).parsed().fence
    data = json.loads(geojson)
    geometry = data["geometry"] if data.get("type") == "Feature" else data
    longitude, latitude = fence.centre
    return Extent(
        boxes=fence.boxes,
        longitude=longitude,
        latitude=latitude,
        radius_m=fence.radius_m,
        geometry=orjson.dumps(geometry),
    )


class ExtentCache:
    """Extents by fence version, least recently used dropped first. Thread-safe:
    a WSGI server, or the thread pool of an ASGI server's sync views, may share it."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_CACHED_FENCES,
        max_bytes: int = MAX_CACHED_GEOMETRY_BYTES,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Version, Extent | None] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def extents(
        self,
        versions: Iterable[Version],
        *,
        load: Callable[[list[int]], Mapping[int, str]],
    ) -> dict[int, Extent]:
        """The extent of each version that parses, by pk; ``load`` gives the
        GeoJSON of the pks not cached (one call, or none when all are)."""
        found: dict[int, Extent] = {}
        missing: dict[int, Version] = {}
        with self._lock:
            for version in versions:
                if version in self._entries:
                    self._entries.move_to_end(version)
                    extent = self._entries[version]
                    if extent is not None:
                        found[version[0]] = extent
                else:
                    missing[version[0]] = version
        if not missing:
            return found
        texts = load(list(missing))
        for pk, version in missing.items():
            text = texts.get(pk)
            if text is None:
                continue  # deleted meanwhile
            extent = self._parse(pk, text)
            self._keep(version, extent)
            if extent is not None:
                found[pk] = extent
        return found

    def extent(self, version: Version, geojson: str) -> Extent | None:
        """The extent of one version whose GeoJSON the caller holds."""
        return self.extents([version], load=lambda pks: {version[0]: geojson}).get(version[0])

    @staticmethod
    def _parse(pk: int, text: str) -> Extent | None:
        try:
            return extent_of(text)
        except (FenceError, ValueError, KeyError, TypeError) as error:
            logger.warning(
                "Geofence %s is left out: its stored GeoJSON does not parse (%s)",
                pk,
                one_line(str(error)),
            )
            return None

    def _keep(self, version: Version, extent: Extent | None) -> None:
        size = 0 if extent is None else len(extent.geometry)
        if size > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(version, None)
            self._bytes -= 0 if previous is None else len(previous.geometry)
            self._entries[version] = extent
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= 0 if dropped is None else len(dropped.geometry)


EXTENTS = ExtentCache()
"""This process's cache."""


def active_extents() -> list[tuple[int, str, Extent]]:
    """``(pk, name, extent)`` of every active fence that parses, ordered by name, then pk."""
    rows = list(
        Geofence.objects.filter(is_active=True)
        .order_by("name", "pk")
        .values_list("pk", "name", "updated_at")
    )
    extents = EXTENTS.extents([(pk, updated_at) for pk, _, updated_at in rows], load=_geojson_of)
    return [(pk, name, extents[pk]) for pk, name, _ in rows if pk in extents]


def extents_of(pks: Iterable[int], *, using: str = "default") -> dict[int, Extent]:
    """The current extent of each of the fences ``pks`` that exists and parses,
    active or not, read from database ``using``."""
    wanted = sorted(set(pks))
    rows = [
        row
        for start in range(0, len(wanted), _CHUNK)
        for row in Geofence.objects.using(using)
        .filter(pk__in=wanted[start : start + _CHUNK])
        .values_list("pk", "updated_at")
    ]
    return EXTENTS.extents(rows, load=lambda missing: _geojson_of(missing, using=using))


def _geojson_of(pks: list[int], *, using: str = "default") -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(pks), _CHUNK):
        chunk = pks[start : start + _CHUNK]
        found.update(
            Geofence.objects.using(using).filter(pk__in=chunk).values_list("pk", "geojson")
        )
    return found
