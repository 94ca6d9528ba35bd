"""Settings come from the environment; wrong ones stop the process with a clear message."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
from pathlib import Path
from unittest import mock

import hypothesis
import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given
from hypothesis import strategies as st

from tests import support

GOOD_KEY = "production-key-" + "0123456789abcdef" * 3


def check(**env: str) -> tuple[int, str]:
    result = support.manage(["check"], env=support.base_env(**env), timeout=60)
    return result.returncode, result.stdout + result.stderr


def start_web_server(**env: str) -> tuple[int, str]:
    """Import the ASGI application as a web server does; its exit code and output."""
    result = subprocess.run(
        [support.PYTHON, "-c", "import tracker_site.asgi"],
        cwd=support.ROOT,
        env=support.base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_defaults_pass_the_system_check() -> None:
    code, output = check()
    assert code == 0, output


def only_line(output: str) -> str:
    """The one line a wrong setting prints, and that it is the only one."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean (1/0, true/false), got 'maybe'"),
        ({"TRACKING_GRID_DEGREES": "0.7"}, "TRACKING_GRID_DEGREES must divide 180 and 360 evenly"),
        (
            {"TRACKING_MAX_CELLS_PER_CONNECTION": "fifty"},
            "TRACKING_MAX_CELLS_PER_CONNECTION must be an integer, got 'fifty'",
        ),
        (
            {"TRACKING_MAX_CELLS_PER_CONNECTION": "0"},
            "TRACKING_MAX_CELLS_PER_CONNECTION must be an integer of at least 1, got '0'",
        ),
        ({"TRACKING_BATCH_SIZE": "1_000"}, "TRACKING_BATCH_SIZE must be an integer, got '1_000'"),
        # Arabic-Indic 15, which float() would take.
        ({"HUB_PING_SECONDS": "\u0661\u0665"}, "HUB_PING_SECONDS must be a number"),
        (
            {"TRACKING_ONLINE_SECONDS": "600", "TRACKING_OFFLINE_SECONDS": "60"},
            "TRACKING_OFFLINE_SECONDS",
        ),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must start with redis://"),
        ({"DATABASE_URL": "mysqlish://x"}, "DATABASE_URL"),
        ({"MAP_CENTER": "north"}, "MAP_CENTER must be 'latitude,longitude' (latitude first)"),
        ({"MAP_CENTER": "160.2,24.9"}, "within [-90, 90] and [-180, 180], got '160.2,24.9'"),
        ({"MAP_CENTER": "60,24,5"}, "MAP_CENTER must be 'latitude,longitude'"),
        ({"MAP_ZOOM": "40"}, "MAP_ZOOM must be an integer from 0 to 24, got '40'"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL must be a logging level name"),
        ({"ENV_FILE": "/nowhere/.env"}, "ENV_FILE must name an existing file"),
        ({"DEBUG": "0", "ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must name the host names served"),
        (
            {"ALLOWED_HOSTS": "https://map.example.com"},
            "ALLOWED_HOSTS must be host names such as map.example.com, not URLs",
        ),
        (
            {"CHANNEL_LAYER_BACKEND": "fast"},
            "CHANNEL_LAYER_BACKEND must be 'core' or 'pubsub', got 'fast'",
        ),
        (
            {"MAP_TILE_URL": "tile.openstreetmap.org/{z}/{x}/{y}.png"},
            "MAP_TILE_URL must be an http(s) URL template with {z}, {x} and {y}",
        ),
        (
            {"MAP_TILE_URL": "https://tiles.example.com/world.png"},
            "MAP_TILE_URL must be an http(s) URL template",
        ),
        (
            {"CSRF_TRUSTED_ORIGINS": "map.example.com"},
            "CSRF_TRUSTED_ORIGINS must be origins such as https://map.example.com",
        ),
        (
            {"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"},
            "SECURE_PROXY_SSL_HEADER must be 'HTTP_HEADER_NAME,value'",
        ),
        ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS must be an integer"),
        ({"SECURE_COOKIES": "0"}, "SECURE_COOKIES is no longer read: use SESSION_COOKIE_SECURE"),
        ({"MAP_LOGIN_REQUIRED": "1"}, "MAP_LOGIN_REQUIRED is no longer read: use MAP_PUBLIC"),
        ({"AXES_FAILURE_LIMIT": "0"}, "AXES_FAILURE_LIMIT must be an integer of at least 1"),
    ],
)
def test_a_wrong_setting_stops_the_process_with_one_line_naming_it(
    env: dict[str, str], message: str
) -> None:
    code, output = check(**env)
    assert code == 2, output
    line = only_line(output)
    assert line.startswith("Cannot start: ") and message in line


def test_a_password_in_a_wrong_url_is_not_printed() -> None:
    code, output = check(REDIS_URL="localhost://tracker:hunter2@cache:6379/0")
    assert code == 2
    assert "hunter2" not in output and "REDIS_URL" in only_line(output)


@pytest.mark.parametrize(
    "key",
    ["", "short", "k" * 60, "django-insecure-" + "0123456789abcdef" * 4],
    ids=["unset", "short", "one character", "django's insecure prefix"],
)
def test_a_web_server_with_debug_off_refuses_a_key_anyone_could_know(key: str) -> None:
    code, output = start_web_server(DEBUG="0", SECRET_KEY=key)
    assert code == 3, output  # uvicorn's code for a worker that cannot start
    assert "SECRET_KEY must be 50 or more random characters" in only_line(output)


def test_a_web_server_with_a_wrong_setting_says_it_in_one_line() -> None:
    code, output = start_web_server(MAP_CENTER="91,0")
    assert code == 3 and "MAP_CENTER" in only_line(output)


def test_an_empty_value_means_the_default_as_in_env_example() -> None:
    names = ["CHANNEL_LAYER_PREFIX", "HUB_FANOUT", "LOG_LEVEL", "MAP_CENTER_LATITUDE", "MAP_ZOOM"]
    empty = dict.fromkeys(["CHANNEL_LAYER_PREFIX", "HUB_FANOUT", "LOG_LEVEL", "MAP_CENTER"], "")
    assert settings_of(names, MAP_ZOOM="", **empty) == {
        "CHANNEL_LAYER_PREFIX": "tracker",
        "HUB_FANOUT": "cells",
        "LOG_LEVEL": "INFO",
        "MAP_CENTER_LATITUDE": 60.1699,
        "MAP_ZOOM": 13,
    }


def test_commands_that_sign_nothing_run_without_a_key_with_debug_off() -> None:
    code, output = check(DEBUG="0", SECRET_KEY="")
    assert code == 0, output


def test_production_settings_start_with_a_real_key() -> None:
    code, output = check(DEBUG="0", SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="map.example.com")
    assert code == 0, output
    code, output = start_web_server(DEBUG="0", SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="map.example.com")
    assert code == 0, output


def settings_of(names: list[str], **env: str) -> dict[str, object]:
    """The values of settings ``names`` in a process started with ``env``
    (``DEBUG`` unset unless given)."""
    script = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name) for name in {names!r}}}))"
    )
    environment = support.base_env(**env)
    if "DEBUG" not in env:
        del environment["DEBUG"]
    result = support.manage(["shell", "-v0", "-c", script], env=environment)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


SECURITY = [
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "MAP_PUBLIC",
]


def test_debug_is_off_unless_set_and_off_means_https_and_a_private_map() -> None:
    assert settings_of(SECURITY) == dict.fromkeys(SECURITY, False) | {
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_with_debug_on_the_map_is_public_over_plain_http() -> None:
    assert settings_of(SECURITY, DEBUG="1") == dict.fromkeys(SECURITY, False) | {
        "DEBUG": True,
        "MAP_PUBLIC": True,
    }


def test_the_security_settings_are_read_under_djangos_names() -> None:
    env = {
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "MAP_PUBLIC": "1",
    }
    values = settings_of([*env, "DEBUG"], DEBUG="0", **env)
    assert values == {
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "MAP_PUBLIC": True,
        "DEBUG": False,
    }


def test_the_deployment_check_passes_with_every_production_setting() -> None:
    env = support.base_env(
        DEBUG="0",
        SECRET_KEY=GOOD_KEY,
        ALLOWED_HOSTS="map.example.com",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
    )
    result = support.manage(["check", "--deploy", "--fail-level", "WARNING"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # And without HSTS it is not quiet about it.
    env["SECURE_HSTS_SECONDS"] = "0"
    result = support.manage(["check", "--deploy", "--fail-level", "WARNING"], env=env)
    assert result.returncode != 0 and "security.W004" in result.stderr


def test_a_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nexport MAP_ZOOM="7"\nMAP_CENTER=1,2\n')
    script = (
        "from django.conf import settings; print(settings.MAP_ZOOM, settings.MAP_CENTER_LATITUDE)"
    )
    result = support.manage(
        ["shell", "-v0", "-c", script],
        env=support.base_env(ENV_FILE=str(env_file), MAP_CENTER="5,6"),
    )
    assert result.stdout.split() == ["7", "5.0"], result.stderr


def test_a_malformed_dotenv_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=1\nthis is not a setting\n")
    result = support.manage(["check"], env=support.base_env(ENV_FILE=str(env_file)))
    assert result.returncode == 2
    assert only_line(result.stderr) == (
        f"Cannot start: {env_file}:2: expected KEY=VALUE, got 'this is not a setting'"
    )


def test_production_static_files_collect_with_hashed_module_imports(tmp_path: Path) -> None:
    env = support.base_env(DEBUG="0", SECRET_KEY=GOOD_KEY, STATIC_ROOT=str(tmp_path))
    result = support.manage(["collectstatic", "--noinput", "-v0"], env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = (tmp_path / "staticfiles.json").read_text()
    hashed_map = json.loads(manifest)["paths"]["maps/map.js"]
    # The page's entry module imports its siblings by their hashed names.
    imports = (tmp_path / hashed_map).read_text()
    hashed_grid = json.loads(manifest)["paths"]["maps/grid.js"].rsplit("/", 1)[-1]
    assert hashed_grid in imports
    # servestatic serves the compressed copies it made.
    assert any(tmp_path.glob("vendor/leaflet/leaflet.*.js.gz"))


# --- Whatever an operator writes ---------------------------------------------------------------

SETTINGS_FILE = support.ROOT / "tracker_site" / "settings.py"
VARIABLES = re.findall(r"^([A-Z][A-Z0-9_]*)=", (support.ROOT / ".env.example").read_text(), re.M)
# What an environment variable can hold: any text without NUL.
ENV_TEXT = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40)
# And near-valid values: numbers, booleans, lists, URLs, off by a little.
NEAR_VALID = st.sampled_from(
    [
        "",
        " ",
        "0",
        "1",
        "-1",
        "1.5",
        "1e400",
        "nan",
        "inf",
        "-0",
        "1_0",
        "\u0663",  # Arabic-Indic 3
        "0x10",
        "true",
        "TRUE",
        "yes",
        "on",
        "off",
        "2",
        "a,b",
        ",",
        "60.1,24.9",
        "91,0",
        "0,181",
        "https://example.com/{z}/{x}/{y}.png",
        "http://{z}{x}{y}",
        "redis://:pw@h:1/0",
        "postgres://u:pw@h:5432/db",
        "postgres://h:notaport/db",
        "sqlite:///x.db",
        "*",
        "HTTP_X_FORWARDED_PROTO,https",
        "HTTP_X,",
        "earliest",
        "cells",
        "pubsub",
        "DEBUG",
    ]
)


def load_settings(env: dict[str, str]) -> dict[str, object]:
    """Run settings.py as Django would, with ``env`` as the whole environment."""
    with mock.patch.dict(os.environ, {"ENV_FILE": "/dev/null", **env}, clear=True):
        return runpy.run_path(str(SETTINGS_FILE))


def test_the_settings_file_loads_with_the_example_environment() -> None:
    loaded = load_settings({})
    assert loaded["MAP_ZOOM"] == 13 and loaded["DEBUG"] is True  # the tests' default


@given(
    env=st.dictionaries(
        st.sampled_from(VARIABLES), st.one_of(NEAR_VALID, ENV_TEXT), min_size=1, max_size=4
    )
)
@hypothesis.settings(max_examples=300)
def test_any_value_is_taken_or_refused_in_one_line_naming_its_variable(
    env: dict[str, str],
) -> None:
    try:
        load_settings(env)
    except ImproperlyConfigured as refusal:
        message = str(refusal)
        assert "\n" not in message
        named = [name for name in env if name in message]
        assert named, f"{message!r} names none of {sorted(env)}"
