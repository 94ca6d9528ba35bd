"""The web server with a wrong setting stops, saying why in one line, and
frees its port: it does not restart crashing workers forever."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests import support

pytestmark = pytest.mark.slow

UVICORN_OPTIONS = ["--host", "127.0.0.1", "--workers", "2", "--lifespan", "off"]
GOOD_KEY = "production-key-" + "0123456789abcdef" * 3
# Long enough for two workers to start and fail on a slow, busy machine.
STOPS_WITHIN = 90


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_until_it_stops(command: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``command``; its exit code once it stops by itself (the test fails
    if it still runs after ``STOPS_WITHIN`` seconds: it is then stopped)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=support.ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            return process.wait(timeout=STOPS_WITHIN)
        except subprocess.TimeoutExpired:
            support.stop(process)
            raise AssertionError(
                f"still running after {STOPS_WITHIN} s:\n{log.read_text()[-3000:]}"
            ) from None


def test_the_servers_launcher_refuses_a_wrong_setting_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    port = support.free_port()
    log = tmp_path / "serve.log"
    command = [support.PYTHON, "-m", "tracker_site.serve", "--port", str(port), *UVICORN_OPTIONS]
    code = run_until_it_stops(command, support.base_env(MAP_CENTER="91,24"), log)
    assert code == 2
    assert log.read_text().splitlines() == [
        "Cannot start: MAP_CENTER must be 'latitude,longitude' (latitude first) within "
        "[-90, 90] and [-180, 180], got '91,24'"
    ]
    assert port_is_free(port)


def test_uvicorn_with_workers_stops_on_a_wrong_setting_instead_of_restarting_them(
    tmp_path: Path,
) -> None:
    port = support.free_port()
    log = tmp_path / "uvicorn.log"
    command = [
        support.PYTHON,
        "-m",
        "uvicorn",
        "tracker_site.asgi:application",
        "--port",
        str(port),
        *UVICORN_OPTIONS,
    ]
    # DEBUG off and no key: each worker refuses to serve.
    run_until_it_stops(command, support.base_env(DEBUG="0", SECRET_KEY=""), log)
    output = log.read_text()
    # One line per worker at most (each learns it alone), no traceback, no restart.
    refusals = [line for line in output.splitlines() if line.startswith("Cannot start: ")]
    assert 1 <= len(refusals) <= 2, output
    assert all("SECRET_KEY must be 50 or more random characters" in line for line in refusals)
    assert "Traceback" not in output and "died" not in output, output
    assert support.wait_until(lambda: port_is_free(port), timeout=10, what="the port freed")


def test_the_launcher_serves_with_good_settings(tmp_path: Path) -> None:
    port = support.free_port()
    env = support.base_env(DEBUG="0", SECRET_KEY=GOOD_KEY, MAP_PUBLIC="1", SECURE_SSL_REDIRECT="0")
    command = [support.PYTHON, "-m", "tracker_site.serve", "--port", str(port), *UVICORN_OPTIONS]
    with support.background(command, env=env, log=tmp_path / "serve.log") as server:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/signalr/negotiate?negotiateVersion=1", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
