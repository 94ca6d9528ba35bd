from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
import pytest

from tests import support


def test_debians_newest_postgresql_is_chosen(tmp_path: Path) -> None:
    for version in ["9.6", "13", "15"]:
        (tmp_path / version / "bin").mkdir(parents=True)
        for program in ["initdb", "postgres"]:
            (tmp_path / version / "bin" / program).touch()
    (tmp_path / "16" / "bin").mkdir(parents=True)  # the client only: no server

    assert support.postgres_bindir(tmp_path) == tmp_path / "15" / "bin"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_private_cluster_creates_databases_and_knows_unicode_case(
    postgres_binaries: Path,
) -> None:
    with support.private_postgres(postgres_binaries) as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as connection:
            connection.execute('CREATE DATABASE "scratch"')
        scratch = urlsplit(cluster.url)._replace(path="/scratch").geturl()
        with psycopg.connect(scratch) as connection:
            connection.execute("CREATE TABLE t (name text)")
            connection.execute("INSERT INTO t VALUES ('Ähtäri'), ('Espoo')")
            rows = connection.execute("SELECT upper(name) FROM t ORDER BY name").fetchall()
        assert rows == [("ESPOO",), ("ÄHTÄRI",)]
        assert cluster.folder.is_dir()
    assert not cluster.folder.exists()
    assert not psutil.pid_exists(cluster.pid)
