"""No log line and no message names a password or a key."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import support
from tracking.redaction import REDACTED, RedactingFilter, redacted, redacted_url


def test_a_redis_url_is_named_without_its_password() -> None:
    assert redacted_url("redis://:hunter2@redis.internal:6380/1") == "redis://redis.internal:6380/1"
    assert redacted_url("rediss://app:hunter2@cache:6379/0") == "rediss://cache:6379/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgres://db.internal/tracker?user=tracker&password=hunter2",
            f"postgres://db.internal/tracker?user=tracker&password={REDACTED}",
        ),
        (
            "redis://cache:6379/0?password=hunter2&db=1",
            f"redis://cache:6379/0?password={REDACTED}&db=1",
        ),
        ("https://tiles.example.com/{z}/{x}/{y}.png?api_key=hunter2", None),
        ("postgres://u:p%40ss@db/x?sslpassword=hunter2", None),
    ],
)
def test_a_password_in_the_query_is_not_shown_either(url: str, shown: str | None) -> None:
    cleaned = redacted_url(url)
    assert "hunter2" not in cleaned and "p%40ss" not in cleaned
    if shown is not None:
        assert cleaned == shown


def test_urls_and_connection_strings_inside_a_message_are_redacted() -> None:
    message = (
        "could not connect to redis://:hunter2@cache:6379/0 "
        "(Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;"
        "SharedAccessKey=hunter2=;EntityPath=trackers) with token=hunter2"
    )
    cleaned = redacted(message)
    assert "hunter2" not in cleaned
    # What an operator needs to find the service stays.
    assert "redis://cache:6379/0" in cleaned and "SharedAccessKeyName=send" in cleaned
    assert "EntityPath=trackers" in cleaned


@given(
    password=st.text(
        alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=6, max_size=30
    ),
    user=st.sampled_from(["", "tracker", "app"]),
    scheme=st.sampled_from(["redis", "rediss", "postgres", "postgresql", "amqps"]),
    form=st.sampled_from(["userinfo", "query", "field"]),
)
def test_no_form_of_a_password_survives_redaction(
    password: str, user: str, scheme: str, form: str
) -> None:
    if form == "userinfo":
        text = f"failed: {scheme}://{user}:{password}@host:1234/0 refused"
    elif form == "query":
        text = f"failed: {scheme}://host:1234/db?sslmode=require&password={password}"
    else:
        text = f"Endpoint=sb://host/;SharedAccessKeyName={user or 'x'};SharedAccessKey={password}"
    cleaned = redacted(text)
    assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(password)}(?![A-Za-z0-9])", cleaned), cleaned


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.redaction")
    handler_filter = RedactingFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        logger.error("Redis at %s is down", "redis://:hunter2@cache:6379/0")
        try:
            raise ConnectionError("cannot reach postgres://tracker:hunter2@db/tracker")
        except ConnectionError:
            logger.exception("database unavailable")
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert "hunter2" not in caplog.text
    assert "Redis at redis://cache:6379/0 is down" in caplog.text
    assert "postgres://db/tracker" in caplog.text


@pytest.mark.parametrize("logger", ["tracking.hub", "django.request"])
@pytest.mark.parametrize("debug", ["0", "1"])
def test_the_processes_log_lines_go_through_the_redaction(logger: str, debug: str) -> None:
    script = (
        "import logging; "
        f"logging.getLogger('{logger}').error('Redis at %s is down', "
        "'redis://:hunter2@cache:6379/0?password=hunter2')"
    )
    result = support.manage(["shell", "-v0", "-c", script], env=support.base_env(DEBUG=debug))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("Redis at redis://cache:6379/0") == 1, output
    assert "hunter2" not in output
