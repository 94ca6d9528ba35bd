"""Settings come from the environment; wrong ones stop the process with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import support

GOOD_KEY = "k" * 50


def check(**env: str) -> tuple[int, str]:
    result = support.manage(["check"], env=support.base_env(**env), timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_the_defaults_pass_the_system_check() -> None:
    code, output = check()
    assert code == 0, output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "0"}, "SECRET_KEY is unset or shorter than 32 characters"),
        (
            {"DEBUG": "0", "SECRET_KEY": "short"},
            "SECRET_KEY is unset or shorter than 32 characters",
        ),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({"TRACKING_GRID_DEGREES": "0.7"}, "TRACKING_GRID_DEGREES must divide 180 and 360 evenly"),
        (
            {"TRACKING_MAX_CELLS_PER_CONNECTION": "fifty"},
            "TRACKING_MAX_CELLS_PER_CONNECTION must be an integer",
        ),
        (
            {"TRACKING_MAX_CELLS_PER_CONNECTION": "0"},
            "TRACKING_MAX_CELLS_PER_CONNECTION must be at least 1",
        ),
        (
            {"TRACKING_ONLINE_SECONDS": "600", "TRACKING_OFFLINE_SECONDS": "60"},
            "TRACKING_OFFLINE_SECONDS",
        ),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must start with redis://"),
        ({"DATABASE_URL": "mysqlish://x"}, "DATABASE_URL"),
        ({"MAP_CENTER": "north"}, "MAP_CENTER must be 'latitude,longitude'"),
        ({"MAP_CENTER": "160.2,24.9"}, "MAP_CENTER must be 'latitude,longitude'"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL must be a logging level name"),
    ],
)
def test_a_wrong_setting_stops_the_process_naming_it(env: dict[str, str], message: str) -> None:
    code, output = check(**env)
    assert code != 0
    assert "ImproperlyConfigured" in output and message in output


def test_production_settings_start_with_a_real_key() -> None:
    code, output = check(DEBUG="0", SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="map.example.com")
    assert code == 0, output


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
    assert result.returncode != 0 and f"{env_file}:2: expected KEY=VALUE" in result.stderr


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
