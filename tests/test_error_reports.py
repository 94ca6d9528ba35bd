"""Django's error reports (the debug page, the admins' e-mails) show no secret."""

from __future__ import annotations

from tests import support

SECRETS = {
    "SECRET_KEY": "sk-" + "secret-key-value-0123456789" * 2,
    "DATABASE_URL": "postgres://tracker:db-hunter2@db.internal:5432/tracker?sslpassword=db-ssl-hunter2",
    "REDIS_URL": "rediss://app:redis-hunter2@cache.internal:6380/0",
    "EVENTHUB_CONNECTION_STRING": (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;"
        "SharedAccessKey=eh-hunter2=;EntityPath=trackers"
    ),
    "MAP_TILE_URL": "https://tiles.example.com/{z}/{x}/{y}.png?key=tiles-hunter2",
}
# The parts of those values that must not be shown.
HIDDEN = [
    SECRETS["SECRET_KEY"],
    "db-hunter2",
    "db-ssl-hunter2",
    "redis-hunter2",
    "eh-hunter2",
    "tiles-hunter2",
]

# What an error report of a request shows: the settings (what
# SafeExceptionReporterFilter.get_safe_settings keeps) and the technical 500
# page, rendered as it is with DEBUG on.
REPORT = """
import sys
from django.test import RequestFactory, override_settings
from django.views.debug import get_default_exception_reporter_filter, technical_500_response

print(repr(get_default_exception_reporter_filter().get_safe_settings()))
request = RequestFactory().get("/api/trackers")
try:
    raise RuntimeError("a view failed")
except RuntimeError:
    with override_settings(DEBUG=True):
        page = technical_500_response(request, *sys.exc_info())
print(page.content.decode())
"""


def test_no_setting_that_carries_a_secret_is_shown_in_an_error_report() -> None:
    result = support.manage(["shell", "-v0", "-c", REPORT], env=support.base_env(**SECRETS))
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert "a view failed" in report and "DATABASE_URL" in report  # it is the report
    shown = [secret for secret in HIDDEN if secret in report]
    assert shown == []
    # Settings without secrets are still there to debug with.
    assert "TRACKING_GRID_DEGREES" in report and "HUB_MAX_MESSAGE_BYTES" in report
