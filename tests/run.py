"""The test command behind ``make test``: find or start the services, run pytest.

    python -m tests.run [pytest arguments]

Redis: the one that answers at ``TEST_REDIS_URL``, ``REDIS_URL`` or
127.0.0.1:6379, else a private ``redis-server``. PostgreSQL: the one at
``TEST_POSTGRES_URL`` if it answers, else a private cluster, after installing
Debian's ``postgresql`` when its binaries are missing. The suite runs on
PostgreSQL, then the database tests that start no process and need no
PostgreSQL (``django_db and not slow and not postgres``) run again on SQLite. What was started here is stopped and deleted at the end, also after a
failure, Ctrl-C or SIGTERM. The exit code is pytest's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn
from urllib.parse import urlsplit

from pytest import ExitCode

from tests import support

DEFAULT_TEST_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/tracker"
# What the second run repeats on SQLite: the database tests that start no process.
SQLITE_MARKERS = "django_db and not slow and not postgres"


@dataclass(frozen=True)
class PytestRun:
    """One pytest process: what it says first, its arguments, the settings it
    gets, and whether selecting no test at all is a pass."""

    title: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    may_select_nothing: bool = False


def pytest_runs(pytest_args: Sequence[str], *, postgres_url: str | None) -> list[PytestRun]:
    """The whole suite on PostgreSQL, then the database tests on SQLite; without
    PostgreSQL, the suite once on SQLite (the PostgreSQL tests then skip)."""
    on_sqlite = {"DATABASE_URL": ""}
    if postgres_url is None:
        return [
            PytestRun(
                "== no PostgreSQL: tests on SQLite, the PostgreSQL tests skip",
                list(pytest_args),
                on_sqlite,
            )
        ]
    return [
        PytestRun(
            f"== tests on PostgreSQL ({postgres_url}, test database created by pytest-django)",
            list(pytest_args),
            {"DATABASE_URL": postgres_url, "DATABASE_CONN_MAX_AGE": "0"},
        ),
        # `make test PYTEST_ARGS=tests/test_grid.py` has no database test to repeat.
        PytestRun(
            "== database tests again on SQLite",
            ["-q", "-m", SQLITE_MARKERS, *pytest_args],
            on_sqlite,
            may_select_nothing=True,
        ),
    ]


def install_debian_package(package: str) -> bool:
    """``apt-get install`` it (through sudo when not root); whether that worked."""
    if shutil.which("apt-get") is None:
        print(f"== no apt-get here to install Debian's {package}", flush=True)
        return False
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    print(f"== installing Debian's {package}", flush=True)
    for command in (["update", "-qq"], ["install", "-y", "-qq", package]):
        if subprocess.run([*apt, *command], stdout=subprocess.DEVNULL, check=False).returncode:
            print(f"== apt-get {command[0]} failed: {package} is not installed", flush=True)
            return False
    return True


@contextlib.contextmanager
def running_postgres(
    url: str,
    *,
    find_binaries: Callable[[], Path | None] = support.postgres_bindir,
    install: Callable[[str], bool] = install_debian_package,
) -> Iterator[str | None]:
    """``url`` if PostgreSQL answers there, else the same database and user on a
    private cluster, started here and deleted on leaving; None if neither can be had."""
    if support.postgres_answers(url):
        yield url
        return
    bindir = find_binaries()
    if bindir is None and install("postgresql"):
        bindir = find_binaries()
    if bindir is None:
        print(f"== PostgreSQL does not answer at {url} and cannot be started here", flush=True)
        yield None
        return
    print(f"== PostgreSQL does not answer at {url}: a private cluster from {bindir}", flush=True)
    with support.private_postgres(bindir, user=urlsplit(url).username or "postgres") as cluster:
        print(f"== private PostgreSQL at {cluster.url}, in {cluster.folder}", flush=True)
        try:
            yield _moved_to(url, server=cluster.url)
        finally:
            print(f"== stopping the private PostgreSQL and deleting {cluster.folder}", flush=True)


def _moved_to(url: str, *, server: str) -> str:
    """``url``'s database and options on ``server``'s host, port and user."""
    return urlsplit(url)._replace(netloc=urlsplit(server).netloc).geturl()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised so that it leaves through the same ``finally`` blocks as Ctrl-C."""


def _terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


def run_pytest(args: Sequence[str], env: Mapping[str, str]) -> int:
    process = subprocess.Popen([support.PYTHON, "-m", "pytest", *args], cwd=support.ROOT, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt as interruption:
        # Ctrl-C from the terminal reached pytest too; SIGTERM came to this
        # process alone, so pytest is asked to stop as Ctrl-C would. Either
        # way it gets a while to tear its fixtures down (drop its databases).
        support.stop(process, send=signal.SIGINT if isinstance(interruption, Terminated) else None)
        raise


def run_all(
    runs: Sequence[PytestRun],
    *,
    env: Mapping[str, str],
    pytest: Callable[[Sequence[str], Mapping[str, str]], int] = run_pytest,
) -> int:
    """Each run in turn until one fails; its exit code, or 0."""
    for run in runs:
        print(run.title, flush=True)
        code = pytest(run.args, {**env, **run.env})
        if code == ExitCode.NO_TESTS_COLLECTED and run.may_select_nothing:
            print("== none of the tests selected belongs in this run", flush=True)
            continue
        if code != 0:
            return code
    return 0


def main(pytest_args: Sequence[str]) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    configured = os.environ.get("TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL
    support.ARTIFACTS.mkdir(exist_ok=True)
    try:
        with support.running_redis() as redis_url, running_postgres(configured) as postgres_url:
            env = {**os.environ, "TEST_POSTGRES_URL": postgres_url or configured}
            if redis_url is not None:
                print(f"== Redis at {redis_url}", flush=True)
                env["TEST_REDIS_URL"] = redis_url
            return run_all(pytest_runs(pytest_args, postgres_url=postgres_url), env=env)
    except KeyboardInterrupt:
        print("== interrupted; the services started for the tests are stopped", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
