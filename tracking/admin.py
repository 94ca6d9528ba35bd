"""The operators' admin: trackers, their position history, rejected event bodies, geofences
and visits.

History is big, so nothing here loads it whole: the tracker page reads the 20
newest positions, the history list skips the unfiltered count and reads one
tracker's history through the (tracker, timestamp) index, and deleting a
tracker counts its history instead of listing it.
Everything shown from the database goes through ``format_html`` (escaped).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers, widgets
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.db.models.expressions import Combinable
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, capfirst
from django.utils.translation import ngettext

from tracking.admin_map import FenceMapWidget, map_media, neighbours_of, trail_map
from tracking.ages import ago
from tracking.api_tokens import TOKEN_PREFIX, default_expiry, new_secret, revoke
from tracking.geofence_import import ImportRefused, ImportReport, import_geofences
from tracking.geofences import FenceError
from tracking.models import (
    ApiToken,
    EventHubCheckpoint,
    EventHubOwnership,
    Geofence,
    Position,
    RejectedEvent,
    Tracker,
    TrackerQuerySet,
    TrackerStatus,
    Visit,
)
from tracking.selectors import tracker_search

admin.site.site_header = "Tracker map administration"
admin.site.site_title = "Tracker map administration"
admin.site.index_title = "Trackers, their history, and rejected events"

RECENT_POSITIONS = 20
# Visits on a tracker's or a fence's page, newest first; the rest are a link away.
LATEST_VISITS = 10
# What goes with a deleted tracker, counted on its delete page rather than listed.
TRACKER_HISTORY: tuple[type[Position] | type[Visit], ...] = (Position, Visit)
# The zoom of the map a tracker's page links to: streets around it.
MAP_LINK_ZOOM = 16

# Background colours of the status badges; white text reads on each, light or dark theme.
_STATUS_COLOURS = {
    TrackerStatus.ONLINE: "#2e7d32",
    TrackerStatus.STALE: "#b26a00",
    TrackerStatus.OFFLINE: "#c62828",
    TrackerStatus.NEVER_SEEN: "#616161",
}


# --- Helpers ------------------------------------------------------------------------------------


def fixed(value: float | None, digits: int) -> str | None:
    """A number with ``digits`` decimals, None (the admin's "-") when unknown."""
    return None if value is None else f"{value:.{digits}f}"


def fixed_column(field: str, description: str, *, digits: int) -> Callable[[Any, Any], str | None]:
    """An admin column (or read-only field) showing a number field with ``digits`` decimals."""

    @admin.display(description=description, ordering=field)
    def column(model_admin: Any, obj: Any) -> str | None:
        return fixed(getattr(obj, field), digits)

    return column


def when(moment: datetime) -> str:
    """A moment to the second, in the site's time zone (UTC): positions can be seconds apart."""
    return formats.date_format(timezone.localtime(moment), "Y-m-d H:i:s T")


def device_id(value: uuid.UUID) -> str:
    return format_html('<code style="white-space: nowrap;">{}</code>', value)


def position_history_url(tracker_id: uuid.UUID) -> str:
    query = urlencode({TrackerHistoryFilter.parameter_name: str(tracker_id)})
    return f"{reverse('admin:tracking_position_changelist')}?{query}"


def counted_deletion(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    objs: Sequence[Any] | QuerySet[Any],
    dependents: tuple[type[Position] | type[Visit], ...],
) -> tuple[list[Any], dict[str, int], set[str], list[str]] | None:
    """What ``get_deleted_objects`` answers, with each object's ``dependents``
    (rows pointing at it by a foreign key named after its model) counted
    instead of listed; None, for Django's full listing, if the model has
    dependents other than these."""
    model = model_admin.model
    meta = model._meta
    if {relation.related_model for relation in meta.related_objects} != set(dependents):
        return None
    owners = list(objs)
    via = meta.model_name
    counts = {
        dependent: dict(
            dependent.objects.filter(**{f"{via}__in": [owner.pk for owner in owners]})
            .order_by()
            .values_list(via)
            .annotate(count=Count("id"))
            .values_list(via, "count")
        )
        for dependent in dependents
    }
    to_delete: list[Any] = []
    for owner in owners:
        to_delete.append(
            format_html(
                '{}: <a href="{}">{}</a>',
                capfirst(meta.verbose_name),
                reverse(f"admin:{meta.app_label}_{via}_change", args=[owner.pk]),
                owner,
            )
        )
        to_delete.extend(
            [_count_of(dependent, counts[dependent][owner.pk])]
            for dependent in dependents
            if counts[dependent].get(owner.pk)
        )
    perms_needed: set[str] = set()
    if not all(model_admin.has_delete_permission(request, owner) for owner in owners):
        perms_needed.add(str(meta.verbose_name))
    model_count = {str(meta.verbose_name_plural): len(owners)}
    for dependent in dependents:
        total = sum(counts[dependent].values())
        if not total:
            continue
        model_count[str(dependent._meta.verbose_name_plural)] = total
        dependent_admin = model_admin.admin_site.get_model_admin(dependent)
        if not dependent_admin.has_delete_permission(request):
            perms_needed.add(str(dependent._meta.verbose_name))
    return to_delete, model_count, perms_needed, []


# --- Trackers -----------------------------------------------------------------------------------


class ChoiceFilter(admin.SimpleListFilter):
    """A filter of fixed ``options``; a value that is not one of them matches nothing."""

    options: list[tuple[str, str]]

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return self.options

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        if value not in dict(self.options):
            return queryset.none()
        return self.narrow(queryset, value)

    def narrow(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        raise NotImplementedError


class TokenStateFilter(ChoiceFilter):
    """Active / expired / revoked, as the token list's "state" column says it."""

    title = "state"
    parameter_name = "state"
    options = [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def narrow(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        if value == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        live = queryset.filter(revoked_at__isnull=True)
        now = timezone.now()
        return (
            live.filter(expires_at__gt=now)
            if value == "active"
            else live.filter(expires_at__lte=now)
        )


class StatusFilter(ChoiceFilter):
    """Online / stale / offline / never seen: ``Tracker.status`` done by the database."""

    title = "status"
    parameter_name = "status"
    options = [(str(value), str(label)) for value, label in TrackerStatus.choices]

    def narrow(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        # The changelist starts from Tracker.objects, so this is a TrackerQuerySet.
        return cast(TrackerQuerySet, queryset).with_status(TrackerStatus(value))


@admin.register(Tracker)
class TrackerAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "device_id",
        "is_active",
        "status_badge",
        "last_seen",
        "latitude_display",
        "longitude_display",
        "cell",
        "speed_display",
        "heading_display",
    ]
    list_filter = ["is_active", StatusFilter, ("created_at", admin.DateFieldListFilter)]
    # The search box needs a field; ``get_search_results`` adds the device id.
    search_fields = ["name"]
    search_help_text = "Name, or device id (whole, or its first characters)."
    actions = ["activate", "deactivate"]

    _latest_position = [
        "status_badge",
        "last_seen",
        "latitude_display",
        "longitude_display",
        "cell",
        "speed_display",
        "heading_display",
        "on_the_map",
    ]

    # --- Columns and read-only fields ---

    @admin.display(description="tracker", ordering="name")
    def display_name(self, tracker: Tracker) -> str:
        return str(tracker)

    @admin.display(description="device id", ordering="id")
    def device_id(self, tracker: Tracker) -> str:
        return device_id(tracker.pk)

    @admin.display(description="status", ordering="position_at")
    def status_badge(self, tracker: Tracker) -> str:
        status = tracker.status()
        return format_html(
            '<span style="background: {}; color: #fff; border-radius: 0.6em; '
            'padding: 0.1em 0.6em; white-space: nowrap;">{}</span>',
            _STATUS_COLOURS[status],
            status.label,
        )

    @admin.display(description="last seen", ordering="position_at")
    def last_seen(self, tracker: Tracker) -> str | None:
        if tracker.position_at is None:
            return None
        return format_html(
            '{}<br><span class="quiet" style="white-space: nowrap;">{}</span>',
            ago(tracker.position_at, now=timezone.now()),
            when(tracker.position_at),
        )

    @admin.display(description="created")
    def created(self, tracker: Tracker) -> str:
        return when(tracker.created_at)

    latitude_display = fixed_column("latitude", "latitude", digits=6)

    longitude_display = fixed_column("longitude", "longitude", digits=6)

    @admin.display(description="cell")
    def cell(self, tracker: Tracker) -> str | None:
        if tracker.cell_x is None or tracker.cell_y is None:
            return None
        return f"{tracker.cell_x}, {tracker.cell_y}"

    speed_display = fixed_column("speed", "speed (km/h)", digits=1)

    heading_display = fixed_column("heading", "heading (°)", digits=0)

    @admin.display(description="on the map")
    def on_the_map(self, tracker: Tracker) -> str | None:
        """A link to the live map at street zoom over the latest position (the
        map reads its view from the URL's "#zoom/latitude/longitude")."""
        if tracker.latitude is None or tracker.longitude is None:
            return None
        view = f"#{MAP_LINK_ZOOM}/{tracker.latitude:.5f}/{tracker.longitude:.5f}"
        return format_html('<a href="{}{}">Show on the live map</a>', reverse("maps:index"), view)

    @admin.display(description="trail")
    def trail(self, tracker: Tracker) -> str:
        return trail_map(tracker)

    @admin.display(description="latest visits")
    def visits_here(self, tracker: Tracker) -> str:
        return latest_visits(
            tracker=tracker,
            of="geofence",
            all_url=visits_url(**{TrackerHistoryFilter.parameter_name: str(tracker.pk)}),
        )

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        if kwargs.get("obj") is not None:  # the trail's map, on an existing tracker's page
            context["media"] = context["media"] + map_media()
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="recent positions")
    def recent_positions(self, tracker: Tracker) -> str:
        # The (tracker, timestamp) unique index serves this: 20 rows, never the history.
        positions = list(tracker.positions.order_by("-timestamp")[:RECENT_POSITIONS])
        if not positions:
            return "No positions yet."
        rows = format_html_join(
            "\n",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:tracking_position_change", args=[position.pk]),
                    when(position.timestamp),
                    fixed(position.latitude, 6),
                    fixed(position.longitude, 6),
                    fixed(position.speed, 1) or "-",
                    fixed(position.heading, 0) or "-",
                    fixed(position.accuracy, 0) or "-",
                    when(position.received_at),
                )
                for position in positions
            ),
        )
        return format_html(
            '<table class="recent-positions"><thead><tr><th>timestamp</th><th>latitude</th>'
            "<th>longitude</th><th>speed (km/h)</th><th>heading (°)</th><th>accuracy (m)</th>"
            "<th>received</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">Full history</a></p>',
            rows,
            position_history_url(tracker.pk),
        )

    # --- Forms ---

    def get_fieldsets(self, request: HttpRequest, obj: Tracker | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": ["id", "name", "is_active"]})]
        return [
            (None, {"fields": ["id", "name", "is_active", "created"]}),
            ("Latest position", {"fields": self._latest_position}),
            ("Recent trail", {"fields": ["trail"]}),
            (
                "Latest visits",
                {
                    "fields": ["visits_here"],
                    "description": f"The {LATEST_VISITS} newest geofence visits, newest first.",
                },
            ),
            (
                "Recent positions",
                {
                    "fields": ["recent_positions"],
                    "description": f"The {RECENT_POSITIONS} newest, newest first.",
                },
            ),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Tracker | None = None) -> list[str]:
        # The id is what the device sends: set once, when an operator registers it.
        fixed_once = [] if obj is None else ["id"]
        return [
            *fixed_once,
            "created",
            *self._latest_position,
            "trail",
            "visits_here",
            "recent_positions",
        ]

    def get_form(
        self, request: HttpRequest, obj: Tracker | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["widgets"] = {
                "id": widgets.AdminUUIDInputWidget(
                    attrs={"style": "width: 24em; font-family: var(--font-family-monospace);"}
                )
            }
            kwargs["help_texts"] = {
                "id": "The UUID the device sends. Register a device before it reports "
                "by entering its UUID; it cannot be changed later."
            }
        return super().get_form(request, obj, change, **kwargs)

    # --- Search ---

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Tracker], bool]:
        condition = tracker_search(search_term, name="name", tracker_id="id")
        return queryset.filter(condition), False

    # --- Actions ---

    @admin.action(description="Activate selected trackers", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> None:
        self._set_active(request, queryset, active=True)

    @admin.action(description="Deactivate selected trackers", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Tracker]) -> None:
        self._set_active(request, queryset, active=False)

    def _set_active(
        self, request: HttpRequest, queryset: QuerySet[Tracker], *, active: bool
    ) -> None:
        with transaction.atomic():
            pending = queryset.filter(is_active=not active)
            changed = list(pending.only("id", "name"))
            pending.update(is_active=active)
            LogEntry.objects.log_actions(
                # Actions run for a signed-in staff user, who has a pk.
                user_id=cast(int, request.user.pk),
                queryset=changed,
                action_flag=CHANGE,
                change_message=[{"changed": {"fields": ["Active"]}}],
            )
        verb = "activated" if active else "deactivated"
        self.message_user(
            request,
            ngettext("%(count)d tracker %(verb)s.", "%(count)d trackers %(verb)s.", len(changed))
            % {"count": len(changed), "verb": verb},
            messages.SUCCESS if changed else messages.INFO,
        )

    # --- Deletion ---

    def get_deleted_objects(
        self, objs: Sequence[Tracker] | QuerySet[Tracker], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[str]]:
        """Count each tracker's positions and visits instead of listing them: history can
        be millions."""
        counted = counted_deletion(self, request, objs, TRACKER_HISTORY)
        return super().get_deleted_objects(objs, request) if counted is None else counted


def _count_of(model: type[Position] | type[Visit], count: int) -> str:
    """ "30 positions", "1 visit"."""
    meta = model._meta
    return f"{count} {meta.verbose_name if count == 1 else meta.verbose_name_plural}"


# --- Position history ---------------------------------------------------------------------------


class TrackerHistoryFilter(admin.SimpleListFilter):
    """The history of one tracker (``?tracker=<uuid>``), linked from its page.

    It lists only the chosen tracker, so the sidebar never loads every tracker;
    it is hidden until one is chosen. Django applies a filter only while it
    lists something, so an unknown or malformed id is listed too, and matches
    nothing.
    """

    title = "tracker"
    parameter_name = "tracker"

    def _tracker_id(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(self.value() or "")
        except ValueError:
            return None

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        value = self.value()
        if value is None:
            return []
        tracker_id = self._tracker_id()
        tracker = None if tracker_id is None else Tracker.objects.filter(pk=tracker_id).first()
        return [(value, str(tracker) if tracker else f"{value} (no such tracker)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() is None:
            return queryset
        tracker_id = self._tracker_id()
        return queryset.none() if tracker_id is None else queryset.filter(tracker_id=tracker_id)


@admin.register(Position)
class PositionAdmin(admin.ModelAdmin):
    list_display = [
        "tracker_history",
        "timestamp_display",
        "latitude_display",
        "longitude_display",
        "speed_display",
        "heading_display",
        "accuracy_display",
        "received",
    ]
    list_display_links = ["timestamp_display"]
    list_select_related = ["tracker"]
    # date_hierarchy would scan the whole history for its dates; a date filter does not.
    list_filter = [TrackerHistoryFilter, ("timestamp", admin.DateFieldListFilter)]
    search_fields = ["tracker__name"]
    search_help_text = "Tracker name, or device id (whole, or its first characters)."
    raw_id_fields = ["tracker"]
    show_full_result_count = False
    fields = [
        "tracker",
        "timestamp_display",
        "latitude",
        "longitude",
        "speed",
        "heading",
        "accuracy",
        "received",
    ]
    readonly_fields = ["timestamp_display", "received"]

    @admin.display(description="tracker")
    def tracker_history(self, position: Position) -> str:
        return format_html(
            '<a href="{}" title="Only this tracker">{}</a>',
            position_history_url(position.tracker_id),
            position.tracker,
        )

    @admin.display(description="timestamp", ordering="timestamp")
    def timestamp_display(self, position: Position) -> str:
        return when(position.timestamp)

    @admin.display(description="received", ordering="received_at")
    def received(self, position: Position) -> str:
        return when(position.received_at)

    latitude_display = fixed_column("latitude", "latitude", digits=6)

    longitude_display = fixed_column("longitude", "longitude", digits=6)

    speed_display = fixed_column("speed", "speed (km/h)", digits=1)

    heading_display = fixed_column("heading", "heading (°)", digits=0)

    accuracy_display = fixed_column("accuracy", "accuracy (m)", digits=0)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Position], bool]:
        condition = tracker_search(search_term, name="tracker__name", tracker_id="tracker__id")
        return queryset.filter(condition), False

    def get_ordering(self, request: HttpRequest) -> list[str | Combinable]:
        """Newest first, by what an index can serve: one tracker's history by
        (tracker, timestamp), all of it by insertion order."""
        return ["-timestamp"] if request.GET.get("tracker") else ["-id"]

    # History is what the devices reported: it is read, never written here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Position | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Position | None = None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


# --- Rejected events ----------------------------------------------------------------------------


@admin.register(RejectedEvent)
class RejectedEventAdmin(admin.ModelAdmin):
    list_display = ["received", "source", "reason", "body_bytes", "preview"]
    list_filter = [("received_at", admin.DateFieldListFilter)]
    search_fields = ["reason", "source", "body"]
    search_help_text = "Words in the reason, the source or the body."
    show_full_result_count = False
    fields = ["received", "source", "reason", "body_bytes", "full_body"]
    readonly_fields = ["received", "full_body"]

    @admin.display(description="received", ordering="received_at")
    def received(self, event: RejectedEvent) -> str:
        return when(event.received_at)

    @admin.display(description="body")
    def preview(self, event: RejectedEvent) -> str:
        one_line = " ".join(event.body.split())
        return format_html(
            '<code style="overflow-wrap: anywhere;">{}</code>', Truncator(one_line).chars(80)
        )

    @admin.display(description="body")
    def full_body(self, event: RejectedEvent) -> str:
        # Re-encoding never yields fewer bytes than were decoded, so fewer means cut.
        stored_bytes = len(event.body.encode("utf-8"))
        note = (
            format_html(
                '<p class="quiet">Truncated: the first {} characters of {} bytes are stored.</p>',
                len(event.body),
                event.body_bytes,
            )
            if stored_bytes < event.body_bytes
            else ""
        )
        return format_html(
            '<pre style="white-space: pre-wrap; overflow-wrap: anywhere; margin: 0;">{}</pre>{}',
            event.body,
            note,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RejectedEvent | None = None) -> bool:
        return False


# --- Event Hub partitions ----------------------------------------------------------------------


class EventHubStateAdmin(admin.ModelAdmin):
    """Read-only: the consumers write these rows; an operator reads them to see
    which process reads which partition and how far it got. Deleting a
    checkpoint makes the partition start over from EVENTHUB_STARTING_POSITION."""

    list_filter = ["eventhub", "consumer_group"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EventHubOwnership)
class EventHubOwnershipAdmin(EventHubStateAdmin):
    list_display = ["eventhub", "consumer_group", "partition_id", "owner", "last_modified"]
    ordering = ["eventhub", "consumer_group", "partition_id"]

    @admin.display(description="owner")
    def owner(self, ownership: EventHubOwnership) -> str:
        return ownership.owner_id or "released"


@admin.register(EventHubCheckpoint)
class EventHubCheckpointAdmin(EventHubStateAdmin):
    list_display = [
        "eventhub",
        "consumer_group",
        "partition_id",
        "sequence_number",
        "offset",
        "updated_at",
    ]
    ordering = ["eventhub", "consumer_group", "partition_id"]


# --- API tokens ---------------------------------------------------------------------------------


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens for clients that are not browsers. A new token's text is shown on
    the page that answers the save, and nowhere ever again: only its digest is
    stored. Revoking one (the action) closes the hub connections using it
    within HUB_CREDENTIAL_CHECK_SECONDS."""

    list_display = ["token", "name", "user", "created", "expires", "state"]
    list_filter = [TokenStateFilter, "user"]
    search_fields = ["name", "prefix"]
    search_help_text = "Name, or the 8 characters after tmap_."
    actions = ["revoke_tokens"]

    @admin.display(description="token", ordering="prefix")
    def token(self, token: ApiToken) -> str:
        return format_html("<code>{}{}_…</code>", TOKEN_PREFIX, token.prefix)

    @admin.display(description="created", ordering="created_at")
    def created(self, token: ApiToken) -> str:
        return when(token.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, token: ApiToken) -> str:
        return when(token.expires_at)

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        if token.revoked_at is not None:
            return f"revoked {when(token.revoked_at)}"
        return "expired" if token.expires_at <= timezone.now() else "active"

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        if obj is None:
            return ["user", "name", "expires_at"]
        return ["token", "user", "name", "created", "expires", "state"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return [] if obj is None else ["token", "user", "created", "expires", "state"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {**super().get_changeform_initial_data(request), "expires_at": default_expiry()}

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            # Kept on the request for response_add only: never stored, never in a cookie.
            request.new_api_token = new_secret(obj)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        return TemplateResponse(
            request,
            "admin/tracking/apitoken/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "Copy the new token now",
                "opts": self.opts,
                "token": obj,
                "text": getattr(request, "new_api_token", ""),
                "expires": when(obj.expires_at),
            },
        )

    @admin.action(description="Revoke the selected tokens (their hub connections close)")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = revoke(queryset)
        self.message_user(
            request,
            ngettext("Revoked %(count)d token.", "Revoked %(count)d tokens.", revoked)
            % {"count": revoked},
            messages.SUCCESS if revoked else messages.INFO,
        )


# --- Geofences and visits -----------------------------------------------------------------------


def shape_of(geofence: Geofence) -> tuple[str, str]:
    """The kind of a fence's shape and its size: ("polygon", "5 vertices"),
    ("circle", "250 m"); ("invalid", the parser's message) for GeoJSON it refuses.
    Kept on the object: a changelist row asks twice, and a fence may have thousands
    of vertices."""
    cached: tuple[str, str] | None = getattr(geofence, "_shape", None)
    if cached is None:
        cached = _shape_of(geofence)
        geofence._shape = cached  # type: ignore[attr-defined]
    return cached


def _shape_of(geofence: Geofence) -> tuple[str, str]:
    try:
        fence = geofence.fence
    except FenceError as error:
        return "invalid", str(error)
    if fence.radius_m is not None:
        return "circle", f"{fence.radius_m:g} m"
    data = json.loads(geofence.geojson)
    geometry = data["geometry"] if data["type"] == "Feature" else data
    polygons = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        polygons = [polygons]
    vertices = sum(len(ring) - 1 for polygon in polygons for ring in polygon)
    holes = sum(len(polygon) - 1 for polygon in polygons)
    kind = "polygon" if len(polygons) == 1 else f"multipolygon of {len(polygons)}"
    size = ngettext("%(count)d vertex", "%(count)d vertices", vertices) % {"count": vertices}
    if holes:
        size += ngettext(", %(count)d hole", ", %(count)d holes", holes) % {"count": holes}
    return kind, size


# An imported fence without a name is named after its file: keep room for its number.
NAME_STEM = (Geofence._meta.get_field("name").max_length or 100) - 8


def import_summary(report: ImportReport) -> str:
    """ "Imported 3, updated 1 and left 2 unchanged of 6 geofences from the file." """
    parts = [
        f"{words} {report.count(verb)}"
        for verb, words in [("Imported", "imported"), ("Updated", "updated")]
        if report.count(verb)
    ]
    if report.count("Unchanged"):
        parts.append(f"left {report.count('Unchanged')} unchanged")
    done = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    fences = ngettext("%(count)d geofence", "%(count)d geofences", report.fences) % {
        "count": report.fences
    }
    return f"{done[0].upper()}{done[1:]} of {fences} from the file."


def visits_url(**query: object) -> str:
    return f"{reverse('admin:tracking_visit_changelist')}?{urlencode(query)}"


def latest_visits(*, of: str, all_url: str, **where: object) -> str:
    """The newest LATEST_VISITS counted visits ``where`` as a table naming ``of`` ("tracker"
    or "geofence") for each, with a link to all of them."""
    visits = Visit.objects.counted().filter(**where).select_related(of)
    shown = list(visits.order_by("-entered_at", "-id")[:LATEST_VISITS])
    if not shown:
        return "No visits yet."
    rows = format_html_join(
        "\n",
        '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>',
        (
            (
                reverse(f"admin:tracking_{of}_change", args=[getattr(visit, f"{of}_id")]),
                getattr(visit, of),
                when(visit.entered_at),
                "inside now" if visit.exited_at is None else when(visit.exited_at),
            )
            for visit in shown
        ),
    )
    return format_html(
        '<table class="latest-visits"><thead><tr><th>{}</th><th>entered</th><th>exited</th>'
        '</tr></thead><tbody>{}</tbody></table><p><a href="{}">All visits</a></p>',
        of,
        rows,
        all_url,
    )


# The largest GeoJSON file the admin imports (the Helsinki sample is a few kB).
IMPORT_MAX_BYTES = 5 * 1024 * 1024


class GeofenceImportForm(forms.Form):
    file = forms.FileField(label="GeoJSON file", help_text="At most 5 MB.")
    replace = forms.BooleanField(
        label="Replace fences of the same name",
        required=False,
        help_text="Ticked, a fence whose name is in the file gets the file's shape (and stays on "
        "or off as it was). Unticked, such a name refuses the file.",
    )

    def clean_file(self) -> bytes:
        upload = self.cleaned_data["file"]
        if upload.size > IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size / 1024 / 1024:.1f} MB; at most "
                f"{IMPORT_MAX_BYTES // 1024 // 1024} MB can be imported."
            )
        self.default_name = Path(upload.name or "").stem[:NAME_STEM] or "imported"
        return bytes(upload.read())


@admin.register(Geofence)
class GeofenceAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "shape", "size", "inside_now", "updated"]
    list_filter = ["is_active"]
    search_fields = ["name"]
    fields = ["name", "is_active", "geojson"]

    def get_fields(self, request: HttpRequest, obj: Geofence | None = None) -> Any:
        return self.fields if obj is None else [*self.fields, "visits_here"]

    def get_readonly_fields(self, request: HttpRequest, obj: Geofence | None = None) -> list[str]:
        return [] if obj is None else ["visits_here"]

    @admin.display(description="latest visits")
    def visits_here(self, geofence: Geofence) -> str:
        return latest_visits(
            geofence=geofence,
            of="tracker",
            all_url=visits_url(geofence__id__exact=geofence.pk),
        )

    def get_form(
        self, request: HttpRequest, obj: Geofence | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        form.base_fields["geojson"].widget.neighbours = neighbours_of(obj)
        return form

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "geojson":
            kwargs["widget"] = FenceMapWidget()
            kwargs["label"] = "Shape"
            kwargs["help_text"] = (
                "Draw a polygon, rectangle or circle with the tools on the map's left; drag its "
                "vertices to change it. Or paste one GeoJSON Feature in the GeoJSON section: "
                + str(db_field.help_text)
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Geofence]:
        # Trackers inside now: open visits that count (not pending a minimum dwell).
        inside = Q(visits__exited_at__isnull=True, visits__pending=False)
        return super().get_queryset(request).annotate(open_visits=Count("visits", filter=inside))

    def get_urls(self) -> list[Any]:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="tracking_geofence_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a GeoJSON file of fences: the use case of ``manage.py import_geofences``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = GeofenceImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                report = import_geofences(
                    raw=form.cleaned_data["file"],
                    default_name=form.default_name,
                    update_existing=form.cleaned_data["replace"],
                )
            except ImportRefused as refused:
                form.add_error("file", refused.problems)
            except FenceError as error:
                form.add_error("file", str(error))
            else:
                self.message_user(request, import_summary(report), messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:tracking_geofence_changelist"))
        return TemplateResponse(
            request,
            "admin/tracking/geofence/import.html",
            {
                **self.admin_site.each_context(request),
                "title": "Import GeoJSON",
                "opts": self.opts,
                "form": form,
                # The admin's fieldset markup; AdminForm takes any form (the stubs say ModelForm).
                "adminform": helpers.AdminForm(
                    cast(Any, form), [(None, {"fields": list(form.fields)})], {}
                ),
            },
        )

    def get_deleted_objects(
        self, objs: Sequence[Geofence] | QuerySet[Geofence], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[str]]:
        """Count each fence's visits instead of listing them: they grow with every crossing."""
        counted = counted_deletion(self, request, objs, (Visit,))
        return super().get_deleted_objects(objs, request) if counted is None else counted

    @admin.display(description="shape")
    def shape(self, geofence: Geofence) -> str:
        return shape_of(geofence)[0]

    @admin.display(description="vertices / radius")
    def size(self, geofence: Geofence) -> str:
        return shape_of(geofence)[1]

    @admin.display(description="trackers inside now", ordering="open_visits")
    def inside_now(self, geofence: Any) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            visits_url(geofence__id__exact=geofence.pk, open="yes"),
            geofence.open_visits,
        )

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, geofence: Geofence) -> str:
        return when(geofence.updated_at)


class OpenVisitFilter(ChoiceFilter):
    """Open visits (the tracker is inside now) or closed ones."""

    title = "open"
    parameter_name = "open"
    options = [("yes", "Inside now"), ("no", "Left")]

    def narrow(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(exited_at__isnull=value == "yes")


@admin.register(Visit)
class VisitAdmin(admin.ModelAdmin):
    """Read-only: visits are written by the pipeline's crossings."""

    list_display = ["tracker", "geofence", "entered", "exited"]
    list_filter = [TrackerHistoryFilter, OpenVisitFilter, "geofence"]
    list_select_related = ["tracker", "geofence"]
    ordering = ["-entered_at", "-id"]
    show_full_result_count = False

    @admin.display(description="entered", ordering="entered_at")
    def entered(self, visit: Visit) -> str:
        return when(visit.entered_at)

    @admin.display(description="exited", ordering="exited_at")
    def exited(self, visit: Visit) -> str:
        return "inside now" if visit.exited_at is None else when(visit.exited_at)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Visit]:
        # Visits pending a minimum dwell are not entries yet: like everything users see.
        return Visit.objects.counted()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Visit | None = None) -> bool:
        return False
