from __future__ import annotations

from django.urls import path, re_path

from tracking import export_views, geofence_views, trip_views, views
from tracking.hub import views as hub_views

app_name = "tracking"
urlpatterns = [
    path("signalr/negotiate", hub_views.negotiate, name="negotiate"),
    path("trackers", views.tracker_list, name="tracker-list"),
    path("trackers/<uuid:tracker_id>", views.tracker_detail, name="tracker-detail"),
    path(
        "trackers/<uuid:tracker_id>/visits",
        geofence_views.tracker_visits,
        name="tracker-visits",
    ),
    path(
        "trackers/<uuid:tracker_id>/positions",
        views.tracker_positions,
        name="tracker-positions",
    ),
    path("trackers/<uuid:tracker_id>/track", views.tracker_track, name="tracker-track"),
    path(
        "trackers/<uuid:tracker_id>/trips",
        trip_views.tracker_trips,
        name="tracker-trips",
    ),
    path(
        "trackers/<uuid:tracker_id>/export",
        export_views.tracker_export,
        name="tracker-export",
    ),
    path("geofences", geofence_views.geofence_list, name="geofence-list"),
    # The hub itself is a WebSocket route (tracking/hub/routing.py); over HTTP it explains.
    path("signalr", hub_views.hub_over_http),
    re_path(r"", views.api_not_found),
]
