"""What the map and its API let in: who (one rule for the page, the API and the
hub), and which HTTP methods an API endpoint takes; the API refuses in JSON,
like every other answer under ``/api/``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

View = Callable[..., HttpResponse]


def may_view_map(user: Any) -> bool:
    """Whether ``user`` may see trackers: anyone when ``MAP_PUBLIC`` is on (the
    default under ``DEBUG``), else only a signed-in user. The page, the API and
    the hub (negotiate and connect) all ask this, and nothing else."""
    return settings.MAP_PUBLIC or bool(user.is_authenticated)


def api_endpoint(*methods: str) -> Callable[[View], View]:
    """An API endpoint that takes only ``methods`` and answers only those who may
    see the map. Another method gets a JSON 405 naming the right ones (and the
    ``Allow`` header); a visitor who may not see the map, a JSON 401. CSRF is
    not checked: the API changes nothing a browser session could be tricked
    into, and a client posting to a read-only endpoint should read that the
    method is wrong, not a CSRF page."""

    def wrap(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                allowed = ", ".join(methods)
                response = JsonResponse(
                    {"error": f"{request.path} answers {allowed}, not {request.method}."},
                    status=405,
                )
                response["Allow"] = allowed
                return response
            if not may_view_map(request.user):
                return JsonResponse({"error": "Sign in to see the map."}, status=401)
            return view(request, *args, **kwargs)

        return endpoint

    return wrap
