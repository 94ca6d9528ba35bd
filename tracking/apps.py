from __future__ import annotations

from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        # Connects the signals that tell open maps when geofences change.
        from tracking import geofence_changes  # noqa: F401
