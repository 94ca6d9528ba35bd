from __future__ import annotations

from django.urls import path

from tracking.consumers import HubConsumer

websocket_urlpatterns = [path("api/signalr", HubConsumer.as_asgi())]
