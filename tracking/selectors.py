"""Database reads for the hub, the API and the admin."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import reduce
from operator import or_
from typing import cast

from django.core.paginator import EmptyPage, Page, Paginator
from django.db import connection
from django.db.models import Count, F, FloatField, Max, Min, Q, Sum, Value
from django.db.models.functions import Floor
from django.utils import timezone
from django.utils.text import smart_split, unescape_string_literal

from tracking.areas import AreaSummary
from tracking.events import unix_ms
from tracking.grid import Cell
from tracking.models import Position, Tracker, TrackerQuerySet, TrackerStatus
from tracking.positions import LatestPosition, PositionRow
from tracking.thinning import TrackRow


def latest_positions_in_cells(
    *, cells: Collection[Cell], heard_since: datetime | None = None
) -> list[LatestPosition]:
    """The latest position of every active tracker whose cell is in ``cells``;
    with ``heard_since``, only of those whose position is that recent (given
    ``models.offline_before(now)``: none offline, as the map shows none)."""
    if not cells:
        return []
    in_cells = reduce(or_, (Q(cell_x=cell.x, cell_y=cell.y) for cell in cells))
    heard = Q(position_at__isnull=False) if heard_since is None else Q(position_at__gte=heard_since)
    rows = (
        Tracker.objects.filter(in_cells, heard, is_active=True)
        .values_list("id", "latitude", "longitude", "position_at", "cell_x", "cell_y")
        .order_by()
    )
    # position_at is set together with the other fields, so none is null here.
    return [
        LatestPosition(
            tracker_id=tracker_id,
            latitude=cast(float, latitude),
            longitude=cast(float, longitude),
            timestamp=cast(datetime, position_at),
            cell=Cell(cast(int, cell_x), cast(int, cell_y)),
        )
        for tracker_id, latitude, longitude, position_at, cell_x, cell_y in rows
    ]


def counted_trackers_by_area(
    *, size: float, now: datetime | None = None
) -> list[tuple[Cell, AreaSummary]]:
    """The trackers the overview counts (active, with a position, not offline
    by the status rule at ``now``), grouped by area of ``size`` degrees:
    ``[floor(lng / size), floor(lat / size)]``. One query, a scan of the
    trackers; the areas are few (at most one per ``size`` square)."""
    now = now or timezone.now()
    active = Tracker.objects.filter(is_active=True, position_at__isnull=False)
    counted = active.with_status(TrackerStatus.ONLINE, now=now) | active.with_status(
        TrackerStatus.STALE, now=now
    )
    degrees = Value(float(size), output_field=FloatField())
    rows = (
        counted.annotate(
            area_x=Floor(F("longitude") / degrees), area_y=Floor(F("latitude") / degrees)
        )
        .values("area_x", "area_y")
        .annotate(
            count=Count("id"),
            latitude_sum=Sum("latitude"),
            longitude_sum=Sum("longitude"),
            south=Min("latitude"),
            north=Max("latitude"),
            west=Min("longitude"),
            east=Max("longitude"),
        )
        .values_list(
            "area_x",
            "area_y",
            "count",
            "latitude_sum",
            "longitude_sum",
            "south",
            "north",
            "west",
            "east",
        )
        .order_by()
    )
    return [
        (
            Cell(int(x), int(y)),
            AreaSummary(
                count,
                latitude_sum=float(latitude_sum),
                longitude_sum=float(longitude_sum),
                south=float(south),
                north=float(north),
                west=float(west),
                east=float(east),
            ),
        )
        for x, y, count, latitude_sum, longitude_sum, south, north, west, east in rows
    ]


def trackers_by_id(*, ids: Sequence[uuid.UUID]) -> list[Tracker]:
    return list(Tracker.objects.filter(id__in=ids))


class PageNotFound(ValueError):
    """A page number past the last page; ``str()`` says how many there are."""


def tracker_page(
    *,
    search: str = "",
    status: TrackerStatus | None = None,
    page: int = 1,
    page_size: int = 100,
    now: datetime | None = None,
) -> Page[Tracker]:
    """One page of the active trackers, by name then id: those matching
    ``search`` (see ``tracker_search``) and of ``status``, if given."""
    trackers = matching_trackers(search).order_by("name", "id")
    if status is not None:
        trackers = trackers.with_status(status, now=now)
    paginator = Paginator(trackers, page_size, allow_empty_first_page=True)
    try:
        return paginator.page(page)
    except EmptyPage:
        raise PageNotFound(f"page {page} is past the last page, {paginator.num_pages}.") from None


def matching_trackers(search: str = "") -> TrackerQuerySet:
    """The active trackers matching ``search`` (every one for blank search)."""
    trackers = Tracker.objects.filter(is_active=True)
    if search.strip():
        trackers = trackers.filter(tracker_search(search, name="name", tracker_id="id"))
    return trackers


def positions_between(
    tracker_id: uuid.UUID, *, since: datetime, until: datetime, limit: int
) -> tuple[list[Position], bool]:
    """A tracker's stored positions stamped from ``since`` to ``until`` (both
    included), oldest first: the newest ``limit`` of them, and whether older
    ones in the range were left out. Reads the (tracker, timestamp) index
    backwards from ``until``, so a long history costs no more than ``limit``."""
    newest_first = list(
        Position.objects.filter(
            tracker_id=tracker_id, timestamp__gte=since, timestamp__lte=until
        ).order_by("-timestamp")[: limit + 1]
    )
    truncated = len(newest_first) > limit
    return newest_first[:limit][::-1], truncated


def position_pages(
    tracker_id: uuid.UUID, *, since: datetime, until: datetime, page_size: int = 5_000
) -> Iterator[list[PositionRow]]:
    """A tracker's positions stamped from ``since`` to ``until`` (both
    included), oldest first, a page of at most ``page_size`` at a time.

    Each page is its own short query from where the last one ended (keyset
    paging on the (tracker, timestamp) index): however long the range, no
    page costs more than ``page_size`` rows, no transaction or cursor stays
    open between pages, and a caller that streams (an export) holds one page
    in memory."""
    if connection.vendor == "postgresql":
        for page in _history_pages(tracker_id, since=since, until=until, page_size=page_size):
            yield [
                PositionRow(
                    _EPOCH + timedelta(microseconds=micros),
                    latitude,
                    longitude,
                    speed,
                    heading,
                    accuracy,
                )
                for micros, latitude, longitude, speed, heading, accuracy in page
            ]
        return
    after: datetime | None = None
    while True:
        rows = Position.objects.filter(tracker_id=tracker_id, timestamp__lte=until)
        rows = (
            rows.filter(timestamp__gt=after)
            if after is not None
            else rows.filter(timestamp__gte=since)
        )
        found = [
            PositionRow(*values)
            for values in rows.order_by("timestamp").values_list(*PositionRow._fields)[:page_size]
        ]
        if found:
            yield found
        if len(found) < page_size:
            return
        after = found[-1].timestamp


def track_pages(
    tracker_id: uuid.UUID, *, since: datetime, until: datetime, page_size: int = 5_000
) -> Iterator[list[TrackRow]]:
    """``position_pages`` as ``TrackRow``s, for the replay's thinning."""
    if connection.vendor == "postgresql":
        for page in _history_pages(tracker_id, since=since, until=until, page_size=page_size):
            yield [
                (micros // 1000, latitude, longitude, speed, heading)
                for micros, latitude, longitude, speed, heading, _ in page
            ]
        return
    for rows in position_pages(tracker_id, since=since, until=until, page_size=page_size):
        yield [
            (unix_ms(row.timestamp), row.latitude, row.longitude, row.speed, row.heading)
            for row in rows
        ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _history_pages(
    tracker_id: uuid.UUID, *, since: datetime, until: datetime, page_size: int
) -> Iterator[list[tuple[int, float, float, float | None, float | None, float | None]]]:
    """``position_pages`` on PostgreSQL, each time handed over as microseconds
    since the epoch: an integer is read for a fraction of what parsing a
    timestamp's text costs, which was most of the time a day's 86,400
    positions took to read. Keyset paging on those microseconds; a cursor
    per page."""
    table = connection.ops.quote_name(Position._meta.db_table)
    select = (
        'SELECT (EXTRACT(EPOCH FROM "timestamp") * 1000000)::int8, latitude, longitude, '
        f'speed, heading, accuracy FROM {table} WHERE tracker_id = %s AND "timestamp" <= %s AND '
    )
    order = ' ORDER BY "timestamp" LIMIT %s'
    after: int | None = None
    while True:
        with connection.cursor() as cursor:
            if after is None:
                cursor.execute(
                    select + '"timestamp" >= %s' + order, [tracker_id, until, since, page_size]
                )
            else:
                cursor.execute(
                    select
                    + "\"timestamp\" > TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 microsecond'"
                    + order,
                    [tracker_id, until, after, page_size],
                )
            rows = cursor.fetchall()
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        after = rows[-1][0]


_HEX_DIGITS = frozenset("0123456789abcdef")


def uuid_prefix_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The lowest and highest UUID starting with ``text``, or None if it is no UUID prefix.

    Hyphens and case are ignored, so a full UUID, its hex, or its first few
    characters all work. A range compares the stored UUID as it is, so it uses
    the primary-key index and never casts: a partial UUID cannot fail as a
    UUID value would on PostgreSQL.
    """
    digits = text.strip().lower().replace("-", "")
    if not digits or len(digits) > 32 or not set(digits) <= _HEX_DIGITS:
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def tracker_search(search_term: str, *, name: str, tracker_id: str) -> Q:
    """Every word must be in the tracker's name or start its device id.

    Words split like the admin's own search: quoted phrases stay together.
    """
    condition = Q()
    for word in smart_split(search_term):
        if word[:1] in {'"', "'"} and word[-1:] == word[0] and len(word) > 1:
            word = unescape_string_literal(word)
        matches = Q(**{f"{name}__icontains": word})
        id_range = uuid_prefix_range(word)
        if id_range is not None:
            matches |= Q(**{f"{tracker_id}__range": id_range})
        condition &= matches
    return condition
