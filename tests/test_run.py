from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import psutil
import psycopg
import pytest

from tests import support
from tests.run import PytestRun, pytest_runs, run_all, running_postgres

NOWHERE = f"postgres://tracker@127.0.0.1:{support.free_port()}/tracker_nowhere"


def refuse(*_: object) -> NoReturn:
    raise AssertionError("not expected to be called")


def test_the_suite_runs_on_postgresql_then_the_database_tests_again_on_sqlite() -> None:
    url = "postgres://postgres@127.0.0.1:5432/tracker"
    first, second = pytest_runs(["-k", "grid"], postgres_url=url)

    assert first.args == ["-k", "grid"]
    assert first.env == {"DATABASE_URL": url, "DATABASE_CONN_MAX_AGE": "0"}
    assert second.args == ["-q", "-m", "django_db and not slow and not postgres", "-k", "grid"]
    assert second.env == {"DATABASE_URL": ""}


def test_without_postgresql_the_suite_runs_once_on_sqlite() -> None:
    [only] = pytest_runs(["-x"], postgres_url=None)

    assert only.args == ["-x"]
    assert only.env == {"DATABASE_URL": ""}
    assert "PostgreSQL tests skip" in only.title


def test_the_first_failing_run_ends_it_with_pytests_exit_code() -> None:
    codes = iter([1, 0])
    seen: list[dict[str, str]] = []

    def pytest(args: Sequence[str], env: Mapping[str, str]) -> int:
        seen.append(dict(env))
        return next(codes)

    runs = [PytestRun("first", [], {"DATABASE_URL": "a"}), PytestRun("second", [], {})]
    assert run_all(runs, env={"KEEP": "1"}, pytest=pytest) == 1
    assert seen == [{"KEEP": "1", "DATABASE_URL": "a"}]


def test_a_subset_with_no_database_test_passes_the_sqlite_run_that_selects_nothing() -> None:
    codes = iter([0, 5])  # pytest's "no tests collected"
    runs = pytest_runs(["tests/test_grid.py"], postgres_url="postgres://127.0.0.1/tracker")
    assert run_all(runs, env={}, pytest=lambda args, env: next(codes)) == 0


def test_a_first_run_that_selects_nothing_fails() -> None:
    runs = pytest_runs(["-k", "no such test"], postgres_url="postgres://127.0.0.1/tracker")
    assert run_all(runs, env={}, pytest=lambda args, env: 5) == 5


def test_every_run_passing_exits_0() -> None:
    runs = [PytestRun("first", []), PytestRun("second", [])]
    assert run_all(runs, env={}, pytest=lambda args, env: 0) == 0


@pytest.mark.postgres
def test_a_postgresql_that_answers_is_used_as_it_is() -> None:
    url = support.postgres_server_url()
    if not support.postgres_answers(url):
        support.unavailable(f"PostgreSQL does not answer at {url} (set TEST_POSTGRES_URL)")

    with running_postgres(url, find_binaries=refuse, install=refuse) as found:
        assert found == url


def test_with_nothing_answering_and_no_binaries_it_installs_postgresql() -> None:
    installed: list[str] = []

    def install(package: str) -> bool:
        installed.append(package)
        return False

    with running_postgres(NOWHERE, find_binaries=lambda: None, install=install) as found:
        assert found is None
    assert installed == ["postgresql"]


@pytest.mark.slow
@pytest.mark.postgres
def test_freshly_installed_binaries_start_a_private_cluster_that_is_deleted_afterwards(
    postgres_binaries: Path,
) -> None:
    found: list[Path | None] = [None]

    def install(package: str) -> bool:
        found[0] = postgres_binaries
        return True

    with running_postgres(NOWHERE, find_binaries=lambda: found[0], install=install) as url:
        assert url is not None
        assert url.startswith("postgres://tracker@127.0.0.1:")
        assert url.endswith("/tracker_nowhere")
        with psycopg.connect(urlsplit(url)._replace(path="/postgres").geturl()) as connection:
            row = connection.execute("SELECT current_setting('data_directory')").fetchone()
            server = psutil.Process(connection.info.backend_pid).parent()
        assert row is not None and server is not None
        folder = Path(row[0]).parent
        assert folder.is_dir()

    assert not folder.exists()
    assert not psutil.pid_exists(server.pid)
    assert not support.postgres_answers(url)
