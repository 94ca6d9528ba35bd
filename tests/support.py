"""Helpers for tests that need real services or other processes.

Redis: the one at ``TEST_REDIS_URL`` or ``REDIS_URL`` or 127.0.0.1:6379 if it
answers, else a private ``redis-server`` on a free port. PostgreSQL: the
server of ``DATABASE_URL`` when that is PostgreSQL, else ``TEST_POSTGRES_URL``
or 127.0.0.1:5432 as user postgres (``python -m tests.run`` points both at a
private cluster from ``private_postgres`` when none answers). Where a service
cannot be found a test skips and says why; with
``TRACKER_TEST_REQUIRE_SERVICES=1`` (CI) it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ARTIFACTS = ROOT / "test-artifacts"
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"

# Debian's Chromium, driven by Playwright in the browser tests and benchmark,
# with the flags this machine's closed network needs (no background lookups)
# and root's lack of a sandbox.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_services() -> bool:
    return os.environ.get("TRACKER_TEST_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip the test for a missing service, or fail it where every service is required."""
    if require_services():
        pytest.fail(f"{reason} (TRACKER_TEST_REQUIRE_SERVICES is set, so this fails)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str, port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_answers(host, port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout} s")


# --- Waiting for a condition ----------------------------------------------------------
# Tests wait for what they expect, never for a fixed time: these poll until the
# condition holds and fail, saying what was awaited, when it never does.


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if outcome:
            return outcome
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}; last: {outcome!r}")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """``wait_until`` for async tests: the event loop runs while it waits;
    ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return outcome
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}; last: {outcome!r}")
        await asyncio.sleep(interval)


# --- Redis ------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


@contextlib.contextmanager
def running_redis() -> Iterator[str | None]:
    """A Redis URL that answers: an existing server, or a private one started here."""
    for url in (
        os.environ.get("TEST_REDIS_URL"),
        os.environ.get("REDIS_URL"),
        "redis://127.0.0.1:6379/0",
    ):
        if url and redis_answers(url):
            yield url
            return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=10, process=process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- PostgreSQL ---------------------------------------------------------------------


def postgres_server_url() -> str:
    """A URL of a PostgreSQL server to create databases on (its own database is left alone)."""
    configured = os.environ.get("DATABASE_URL", "")
    if configured.startswith(("postgres://", "postgresql://")):
        return configured
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _admin_connection(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


def postgres_answers(url: str) -> bool:
    try:
        with _admin_connection(url):
            return True
    except Exception:
        return False


# Debian installs each major version's server binaries here, not on PATH.
DEBIAN_POSTGRES_LIB = Path("/usr/lib/postgresql")


def postgres_bindir(debian_lib: Path = DEBIAN_POSTGRES_LIB) -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: Debian's newest version,
    else the one of an ``initdb`` on PATH; None when neither is installed."""
    found = [
        folder
        for folder in debian_lib.glob("*/bin")
        if (folder / "initdb").is_file() and (folder / "postgres").is_file()
    ]
    if found:
        return max(found, key=lambda folder: _version_key(folder.parent.name))
    initdb = shutil.which("initdb")
    if initdb is not None and (Path(initdb).parent / "postgres").is_file():
        return Path(initdb).parent
    return None


def _version_key(name: str) -> tuple[int, ...]:
    # "9.6" < "15": compare the numbers, not the text.
    return tuple(int(part) for part in name.split(".") if part.isdigit())


@dataclass(frozen=True)
class PostgresCluster:
    """A running private cluster: the superuser's URL of its ``postgres`` database."""

    url: str
    folder: Path
    pid: int


@contextlib.contextmanager
def private_postgres(bindir: Path, *, user: str = "postgres") -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL server for the tests, stopped and deleted afterwards.

    ``initdb`` makes a cluster in a new temporary folder whose superuser is
    ``user``, with trust authentication; the server listens on 127.0.0.1 only,
    at a free port, with its socket in that folder and fsync off (nothing in it
    needs to survive a crash). initdb refuses to run as root, so as root the
    cluster runs as the ``postgres`` system user (Debian's package creates it),
    who owns the folder.
    """
    owner = _unprivileged_owner()
    folder = Path(tempfile.mkdtemp(prefix="tracker-postgres-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        # Popen's defaults (None) keep the current user and groups.
        uid = owner.pw_uid if owner else None
        gid = owner.pw_gid if owner else None
        groups: list[int] | None = [] if owner else None
        data = folder / "data"
        initdb = subprocess.run(
            [
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={user}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed with exit code {initdb.returncode}: {initdb.stderr}")
        port = free_port()
        log = folder / "server.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(folder),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                cwd=folder,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Out of the terminal's process group: Ctrl-C stops the tests,
                # which then drop their databases, and only then this server.
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        url = f"postgres://{user}@127.0.0.1:{port}/postgres"
        _wait_for_postgres(url, server, log=log, timeout=60)
        yield PostgresCluster(url=url, folder=folder, pid=server.pid)
    finally:
        if server is not None:
            _stop_postgres(server)
        shutil.rmtree(folder, ignore_errors=True)


def _unprivileged_owner() -> pwd.struct_passwd | None:
    """Who runs a private cluster: None for the current user, the ``postgres`` user for root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "initdb refuses to run as root and there is no 'postgres' user to run it as "
            "(Debian's postgresql package creates one)"
        ) from None


def _wait_for_postgres(
    url: str, server: subprocess.Popen[bytes], *, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not postgres_answers(url):
        if server.poll() is not None:
            raise RuntimeError(
                f"PostgreSQL exited with {server.returncode} at start:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL did not answer at {url} within {timeout} s")
        time.sleep(0.1)


def _stop_postgres(server: subprocess.Popen[bytes]) -> None:
    # SIGINT is PostgreSQL's fast shutdown (open sessions are ended, not waited
    # for); SIGQUIT its immediate one; SIGKILL the last resort.
    for stop, grace in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, None)):
        if server.poll() is not None:
            return
        server.send_signal(stop)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=grace)


@contextlib.contextmanager
def scratch_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for other processes; dropped afterwards."""
    server = postgres_server_url()
    if not postgres_answers(server):
        unavailable(f"PostgreSQL does not answer at {server} (set TEST_POSTGRES_URL)")
    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        with _admin_connection(server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Processes --------------------------------------------------------------------------


def manage(
    args: Sequence[str], *, env: dict[str, str], timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def daphne_command(port: int) -> list[str]:
    """The production layout's server: daphne serving the site on loopback at ``port``."""
    return [
        str(PYTHON),
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "tracker_site.asgi:application",
    ]


def base_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process: this one's, minus our settings, plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    # ENV_FILE=/dev/null: a developer's .env must not point a test at real data.
    env.update(
        {"PYTHONUNBUFFERED": "1", "DEBUG": "1", "LOG_LEVEL": "INFO", "ENV_FILE": "/dev/null"}
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def background(
    args: Sequence[str], *, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the duration of the block; stop it with SIGTERM, then SIGKILL."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(args), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            stop(process)


def stop(
    process: subprocess.Popen[Any],
    *,
    send: int | None = signal.SIGTERM,
    grace: float = 15,
    group: bool = False,
) -> None:
    """Ask a process to stop with the signal ``send`` (None: it was asked
    already), give it ``grace`` seconds to tidy up, then kill it. ``group``
    signals its whole process group (what a terminal's Ctrl-C reaches)."""

    def signal_it(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    if process.poll() is not None:
        return
    if send is not None:
        signal_it(send)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_it(signal.SIGKILL)
        process.wait()


class TcpProxy:
    """Forwards a local port to a server; ``cut()`` takes the server away.

    While cut, every open connection is dropped and new ones are closed at
    once: what a client sees when its database goes down. ``restore()``
    brings it back. Runs its own event loop on a daemon thread.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the proxy did not start")
        return self.port

    @classmethod
    def in_front_of(cls, url: str, *, default_port: int) -> tuple[TcpProxy, str]:
        """A started proxy to the server of ``url``, and ``url`` pointed at it
        (credentials, database and the rest kept)."""
        parts = urlsplit(url)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or default_port)
        credentials, _, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}@" if credentials else ""
        netloc += f"127.0.0.1:{proxy.start()}"
        return proxy, parts._replace(netloc=netloc).geturl()

    def cut(self) -> None:
        """Drop every connection and refuse new ones; done when this returns."""

        async def drop() -> None:
            self._cut = True
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=10)

    def restore(self) -> None:
        """Let connections through again; done when this returns."""

        async def allow() -> None:
            self._cut = False

        asyncio.run_coroutine_threadsafe(allow(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def shutdown() -> None:
            self._cut = True
            for writer in list(self._writers):
                writer.close()
            pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )
        self._writers -= {writer, upstream_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


class _LineCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def logged_lines() -> Iterator[list[str]]:
    """The messages logged in this process meanwhile, as a log line shows them
    (without a traceback, which is many lines by design)."""
    collector = _LineCollector()
    logging.getLogger().addHandler(collector)
    try:
        yield collector.lines
    finally:
        logging.getLogger().removeHandler(collector)
