"""Who may see the map: one rule for the map page, the API and the hub."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse


def may_view_map(user: Any) -> bool:
    """Whether ``user`` may see trackers: anyone, unless ``MAP_LOGIN_REQUIRED`` is on."""
    return not settings.MAP_LOGIN_REQUIRED or bool(user.is_authenticated)


def api_refusal(request: HttpRequest) -> JsonResponse | None:
    """The answer of an API endpoint to a visitor who may not see the map, or None."""
    if may_view_map(request.user):
        return None
    return JsonResponse({"error": "Sign in to see the map."}, status=401)
