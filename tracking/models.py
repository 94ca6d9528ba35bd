"""Trackers, their position history, the event bodies the pipeline refused, and geofences
with their visits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.dispatch import Signal
from django.utils import timezone

from tracking.geofences import Fence, FenceError, ParsedFence, parse_geojson_text
from tracking.grid import Grid


def configured_grid() -> Grid:
    """The grid of ``TRACKING_GRID_DEGREES``, in which trackers' stored cells are numbered."""
    return Grid(settings.TRACKING_GRID_DEGREES)


def default_tracker_name(tracker_id: uuid.UUID) -> str:
    """The name of a tracker nobody named (one registered on first sight, say):
    "Tracker" and the first eight characters of its device id."""
    return f"Tracker {str(tracker_id)[:8]}"


class TrackerStatus(models.TextChoices):
    """What the age of a tracker's latest position says; these words are the
    ones the admin and the map show (the map receives them in its config)."""

    ONLINE = "online", "Online"
    STALE = "stale", "Stale"
    OFFLINE = "offline", "Offline"
    NEVER_SEEN = "never", "Never seen"


class _SeenWindow(NamedTuple):
    """Last seen at or after ``since`` and before ``before``; None leaves that end open."""

    since: datetime | None
    before: datetime | None

    def contains(self, moment: datetime) -> bool:
        return (self.since is None or moment >= self.since) and (
            self.before is None or moment < self.before
        )

    def condition(self) -> models.Q:
        """The window as a filter on ``position_at`` (NULL, never seen, matches no window)."""
        condition = models.Q()
        if self.since is not None:
            condition &= models.Q(position_at__gte=self.since)
        if self.before is not None:
            condition &= models.Q(position_at__lt=self.before)
        return condition


def offline_before(now: datetime) -> datetime:
    """Last seen before this moment, a tracker is offline at ``now`` (by TRACKING_OFFLINE_SECONDS)."""
    return now - timedelta(seconds=settings.TRACKING_OFFLINE_SECONDS)


def _seen_windows(now: datetime) -> dict[TrackerStatus, _SeenWindow]:
    """The one definition of the status rule: when a tracker last seen at a
    moment is online, stale or offline, by TRACKING_ONLINE_SECONDS and
    TRACKING_OFFLINE_SECONDS. Seen exactly ``TRACKING_ONLINE_SECONDS`` ago is
    still online; a position ahead of ``now`` (a device clock ahead) is online.
    ``Tracker.status`` and ``TrackerQuerySet.with_status`` both read it, and
    the map's twin (maps/static/maps/status.js) is held to the same cases
    (tests/cases/status.json)."""
    online_since = now - timedelta(seconds=settings.TRACKING_ONLINE_SECONDS)
    offline_from = offline_before(now)
    return {
        TrackerStatus.ONLINE: _SeenWindow(since=online_since, before=None),
        TrackerStatus.STALE: _SeenWindow(since=offline_from, before=online_since),
        TrackerStatus.OFFLINE: _SeenWindow(since=None, before=offline_from),
    }


def _status_condition(status: TrackerStatus, now: datetime) -> models.Q:
    if status == TrackerStatus.NEVER_SEEN:
        return models.Q(position_at__isnull=True)
    return _seen_windows(now)[status].condition()


class TrackerQuerySet(models.QuerySet["Tracker"]):
    def with_status(self, status: TrackerStatus, *, now: datetime | None = None) -> TrackerQuerySet:
        """The trackers whose ``status(now=now)`` is ``status``, filtered in the database."""
        return self.filter(_status_condition(status, now or timezone.now()))

    def status_counts(self, *, now: datetime | None = None) -> dict[TrackerStatus, int]:
        """How many of these trackers have each status at ``now``, in one query."""
        moment = now or timezone.now()
        counts = self.order_by().aggregate(
            **{
                status.value: models.Count("pk", filter=_status_condition(status, moment))
                for status in TrackerStatus
            }
        )
        return {status: counts[status.value] for status in TrackerStatus}


class Tracker(models.Model):
    """A device, keyed by the UUID it sends, with its latest known position.

    The latest position only moves forward, by ``ordered_at`` (see
    ``ingest.store`` and docs/protocol.md §1.3); the
    cell is the grid cell of that position, stored so a map connection can
    read the trackers of its cells with one indexed query.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, verbose_name="device id")
    name = models.CharField(
        max_length=100,
        blank=True,
        help_text="Left empty, it is “Tracker” and the first eight characters of the device id.",
    )
    is_active = models.BooleanField(
        "active", default=True, help_text="Events from inactive trackers are rejected."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    latitude = models.FloatField(null=True, blank=True, editable=False)
    longitude = models.FloatField(null=True, blank=True, editable=False)
    # Not indexed: moving the latest position must not touch an index, so that
    # PostgreSQL updates the row in place (a HOT update; see migration 0004).
    position_at = models.DateTimeField("last seen", null=True, blank=True, editable=False)
    # Where the latest position stands among the tracker's events: the earlier
    # of its Ts and when it was received (docs/protocol.md §1.3). A later
    # event moves the position only if it stands later, so one stamped ahead
    # by a wrong clock is passed by the next real report. Not indexed either.
    ordered_at = models.DateTimeField(null=True, blank=True, editable=False)
    cell_x = models.IntegerField(null=True, blank=True, editable=False)
    cell_y = models.IntegerField(null=True, blank=True, editable=False)
    speed = models.FloatField("speed (km/h)", null=True, blank=True, editable=False)
    heading = models.FloatField("heading (°)", null=True, blank=True, editable=False)

    objects = TrackerQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["cell_x", "cell_y"], name="tracker_cell_idx")]

    def __str__(self) -> str:
        return self.name or default_tracker_name(self.id)

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.name.strip():
            self.name = default_tracker_name(self.id)
        super().save(*args, **kwargs)

    def status(self, *, now: datetime | None = None) -> TrackerStatus:
        """Online, stale or offline by the age of the latest position; never seen without one."""
        if self.position_at is None:
            return TrackerStatus.NEVER_SEEN
        windows = _seen_windows(now or timezone.now())
        # The windows cover every moment, so exactly one holds position_at.
        return next(
            status for status, window in windows.items() if window.contains(self.position_at)
        )


class PositionQuerySet(models.QuerySet["Position"]):
    def bulk_create(
        self,
        objs: Iterable[Any],
        batch_size: int | None = None,
        ignore_conflicts: bool = False,
        update_conflicts: bool = False,
        update_fields: Collection[str] | None = None,
        unique_fields: Collection[str] | None = None,
    ) -> list[Any]:
        """Rows for any day: the day partitions they need are made first (PostgreSQL)."""
        rows = list(objs)
        _ensure_days_of(rows)
        return super().bulk_create(
            rows,
            batch_size=batch_size,
            ignore_conflicts=ignore_conflicts,
            update_conflicts=update_conflicts,
            update_fields=update_fields,
            unique_fields=unique_fields,
        )


def _ensure_days_of(positions: Sequence[Position]) -> None:
    # Imported here: retention reads these models.
    from tracking import retention

    retention.ensure_days(
        {retention.day_of(position.timestamp) for position in positions if position.timestamp}
    )


class Position(models.Model):
    """One reported location of a tracker; unique per tracker and time.

    On PostgreSQL a row goes to the partition of its UTC day
    (``tracking.retention``); ``save`` and ``objects.bulk_create`` make it
    when it is missing. Code that writes history with its own SQL (the
    ingest's COPY) calls ``retention.ensure_days`` itself.
    """

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="positions")
    timestamp = models.DateTimeField()
    latitude = models.FloatField()
    longitude = models.FloatField()
    speed = models.FloatField("speed (km/h)", null=True, blank=True)
    heading = models.FloatField("heading (°)", null=True, blank=True)
    accuracy = models.FloatField("accuracy (m)", null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    objects = PositionQuerySet.as_manager()

    class Meta:
        # No default ordering: history is the largest table, and a sort nobody
        # asked for is a full scan. Order where it is read.
        constraints = [
            models.UniqueConstraint(
                fields=["tracker", "timestamp"],
                name="position_unique_per_tracker_and_time",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tracker_id} at {self.timestamp.isoformat()}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        _ensure_days_of([self])
        super().save(*args, **kwargs)


class RejectedEvent(models.Model):
    """An event body the pipeline refused, kept so an operator can see why."""

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=200, help_text="Where the body came from.")
    reason = models.CharField(max_length=500)
    body = models.TextField(help_text="The raw body, truncated.")
    body_bytes = models.PositiveIntegerField("body size (bytes)")

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class EventHubOwnership(models.Model):
    """Which ``consume_events`` process owns an Event Hub partition.

    Written by the SDK's load balancer through ``checkpoints``: a claim
    succeeds only if the row's ``etag`` is still the one the claimant read,
    so of two processes claiming at once exactly one wins. An empty
    ``owner_id`` means released; an old ``last_modified`` means its owner died.
    """

    namespace = models.CharField(max_length=255)
    eventhub = models.CharField(max_length=255)
    consumer_group = models.CharField(max_length=255)
    partition_id = models.CharField(max_length=64)
    owner_id = models.CharField(max_length=255, blank=True)
    last_modified = models.DateTimeField()
    etag = models.CharField(max_length=64)

    class Meta:
        verbose_name = "Event Hub partition ownership"
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "eventhub", "consumer_group", "partition_id"],
                name="eventhub_ownership_unique_partition",
            )
        ]

    def __str__(self) -> str:
        return f"{self.eventhub}/{self.consumer_group}/{self.partition_id}: {self.owner_id or 'released'}"


class EventHubCheckpoint(models.Model):
    """Where a consumer group has read an Event Hub partition up to (inclusive).

    Updated only after the batch holding that event has committed.
    """

    namespace = models.CharField(max_length=255)
    eventhub = models.CharField(max_length=255)
    consumer_group = models.CharField(max_length=255)
    partition_id = models.CharField(max_length=64)
    offset = models.CharField(max_length=64)
    sequence_number = models.BigIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "Event Hub checkpoint"
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "eventhub", "consumer_group", "partition_id"],
                name="eventhub_checkpoint_unique_partition",
            )
        ]

    def __str__(self) -> str:
        return f"{self.eventhub}/{self.consumer_group}/{self.partition_id} @ {self.sequence_number}"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self, *, now: datetime | None = None) -> ApiTokenQuerySet:
        """Tokens that sign their user in at ``now``: not revoked, not expired,
        and their user still active."""
        return self.filter(
            revoked_at__isnull=True, expires_at__gt=now or timezone.now(), user__is_active=True
        )


class ApiToken(models.Model):
    """A bearer token that signs a user in from a client that is not a browser.

    Only the token's SHA-256 digest is stored; the token itself is shown once,
    when it is made (``tracking.api_tokens``). ``prefix`` is the part shown
    everywhere after that, to tell tokens apart and to find one by.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What or who uses it.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField("expires")
    revoked_at = models.DateTimeField("revoked", null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name or 'token'} ({self.prefix}…)"


geofences_updating = Signal()
"""Sent with ``pks`` and ``using`` before ``Geofence.objects.update`` changes
rows, which sends no ``pre_save`` (``tracking.geofence_changes`` listens)."""
geofences_updated = Signal()
"""Sent with ``pks`` and ``using`` after it."""


class GeofenceQuerySet(models.QuerySet["Geofence"]):
    def update(self, **kwargs: Any) -> int:
        """An update (an admin action switching fences on or off, say) that stamps
        ``updated_at`` unless given, as a save does, so that whatever keeps
        fences by version (the detection's reload, the API's cache) sees it, and
        that tells listeners which fences it changes."""
        kwargs.setdefault("updated_at", timezone.now())
        pks = list(self.values_list("pk", flat=True))
        if not pks:
            return 0
        geofences_updating.send(sender=Geofence, pks=pks, using=self.db)
        count = super().update(**kwargs)
        geofences_updated.send(sender=Geofence, pks=pks, using=self.db)
        return count


class Geofence(models.Model):
    """A named area, kept as one GeoJSON Feature (a polygon, a multipolygon or a
    circle: a Point with a ``radius`` in metres), parsed by ``tracking.geofences``.

    Entering and leaving it is recorded as ``Visit`` rows; nothing detects
    crossings yet (issue 10).
    """

    name = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(
        "active", default=True, help_text="Inactive fences are kept but not checked."
    )
    geojson = models.TextField(
        "GeoJSON",
        help_text=(
            "One GeoJSON Feature in WGS84 (longitude, latitude): a Polygon or MultiPolygon "
            "(holes allowed; each ring closed, not crossing itself), or a circle: a Point "
            'with a "radius" property in metres.'
        ),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GeofenceQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuses a GeoJSON the parser refuses, with the parser's message."""
        super().clean()
        if not self.geojson.strip():
            return  # the field's own check says it is required
        try:
            self.parsed()
        except FenceError as error:
            raise ValidationError({"geojson": str(error)}) from None
        data = json.loads(self.geojson)
        if data["type"] != "Feature":  # a bare Polygon or MultiPolygon: kept as its Feature
            self.geojson = json.dumps({"type": "Feature", "properties": {}, "geometry": data})

    def parsed(self) -> ParsedFence:
        """The stored Feature, parsed; ``FenceError`` if it is not exactly one valid fence."""
        fences = parse_geojson_text(self.geojson)
        if len(fences) != 1:
            raise FenceError(
                f"a geofence is one Feature, this holds {len(fences)}"
                " (import a collection with manage.py import_geofences)"
            )
        return fences[0]

    @property
    def fence(self) -> Fence:
        """The fence's geometry (``FenceError`` if the stored GeoJSON is not valid)."""
        return self.parsed().fence


class VisitQuerySet(models.QuerySet["Visit"]):
    def counted(self) -> VisitQuerySet:
        """Visits that are entries: not ``pending`` a minimum dwell."""
        return self.filter(pending=False)

    def open(self) -> VisitQuerySet:
        """Visits of trackers still inside (pending ones included)."""
        return self.filter(exited_at__isnull=True)


class Visit(models.Model):
    """A tracker's stay inside a geofence: open (``exited_at`` empty) while it is inside.

    A tracker has at most one open visit per fence, held by the database. With
    ``GEOFENCE_MIN_DWELL_SECONDS`` set, a visit is ``pending`` from the first
    position inside until the tracker has stayed that long; only then is it an
    entry (``geofenceEntered``). A pending visit whose tracker leaves is deleted:
    it never was an entry. Everything users see reads ``Visit.objects.counted()``.
    """

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="visits")
    geofence = models.ForeignKey(Geofence, on_delete=models.CASCADE, related_name="visits")
    entered_at = models.DateTimeField("entered")
    exited_at = models.DateTimeField("exited", null=True, blank=True)
    pending = models.BooleanField(
        default=False,
        help_text="Inside for less than GEOFENCE_MIN_DWELL_SECONDS so far: not an entry yet.",
    )

    objects = VisitQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tracker", "geofence"],
                condition=models.Q(exited_at__isnull=True),
                name="visit_one_open_per_tracker_and_fence",
            )
        ]
        indexes = [
            # A tracker's latest visits (GET /api/trackers/<id>/visits, the admin).
            models.Index(fields=["tracker", "-entered_at"], name="visit_tracker_latest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tracker} in {self.geofence}"

    @property
    def is_open(self) -> bool:
        return self.exited_at is None
