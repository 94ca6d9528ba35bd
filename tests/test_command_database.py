"""Operators' commands on a database they cannot use: one sentence saying what
to do, never a traceback (a cron job run from the wrong folder lands on an
empty SQLite file; a typo in DATABASE_URL points nowhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import support


def run(*args: str, database_url: str) -> tuple[int, str]:
    done = support.manage(list(args), env=support.base_env(DATABASE_URL=database_url), timeout=60)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["prune_history"],
        ["prune_history", "--dry-run"],
        ["consume_events", "--source", "jsonl", "--path", "-"],
    ],
)
def test_a_database_never_migrated_is_named_with_the_way_out(
    tmp_path: Path, command: list[str]
) -> None:
    empty = tmp_path / "empty.sqlite3"
    code, output = run(*command, database_url=f"sqlite:///{empty}")
    assert code == 1, output
    assert "Traceback" not in output
    assert f"the database {empty} is not migrated" in output
    assert "run `python manage.py migrate` first" in output


def test_a_database_that_does_not_answer_is_one_line_without_its_password() -> None:
    port = support.free_port()
    code, output = run(
        "prune_history", database_url=f"postgres://ops:hunter2@127.0.0.1:{port}/tracker"
    )
    assert code == 1, output
    assert "Traceback" not in output and "hunter2" not in output
    [line] = [line for line in output.splitlines() if line.strip()]
    assert line.startswith("CommandError: cannot read the database (postgresql): ")
