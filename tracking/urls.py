from __future__ import annotations

from django.urls import path, re_path

from tracking import views
from tracking.hub import views as hub_views

app_name = "tracking"
urlpatterns = [
    path("signalr/negotiate", hub_views.negotiate, name="negotiate"),
    path("trackers", views.tracker_list, name="tracker-list"),
    path("trackers/<uuid:tracker_id>", views.tracker_detail, name="tracker-detail"),
    # The hub itself is a WebSocket route (tracking/hub/routing.py); over HTTP it explains.
    path("signalr", hub_views.hub_over_http),
    re_path(r"", views.api_not_found),
]
