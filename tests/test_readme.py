"""The README's commands, run as a new user would type them.

Every ``sh`` block in README.md follows a marker, ``<!-- test: NAME -->``, and
a block whose last command keeps running (a server) says so:
``<!-- test: NAME, holds the terminal -->``. A test here runs each block in
bash, in a copy of the checkout whose ``.venv`` is the one running the tests,
with one liberty: the service addresses the README names (PostgreSQL on
127.0.0.1:5432, Redis on 127.0.0.1:6379, the web server on port 8000, the
Event Hubs stand-in on 5673) are replaced by the ones this test started. A
block that holds its terminal is left running, as in a second terminal, until
the test ends.
"""

from __future__ import annotations

import http.client
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests import support

README = support.ROOT / "README.md"
EXAMPLE = support.ROOT / "docs" / "examples" / "watch_cell.py"
MARKED_BLOCK = re.compile(
    r"<!-- test: (?P<name>[\w-]+)(?P<holds>, holds the terminal)? -->\n"
    r"```(?P<language>\w*)\n(?P<body>.*?)```",
    re.S,
)
# What a copy of the checkout leaves out: environments, caches, local data.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".hypothesis",
    "test-artifacts",
    "staticfiles",
    "db.sqlite3*",
    ".env",
    "node_modules",
    "results",
)


@dataclass(frozen=True)
class Block:
    name: str
    holds: bool
    body: str


def readme_blocks() -> dict[str, Block]:
    text = README.read_text()
    return {
        match["name"]: Block(match["name"], bool(match["holds"]), match["body"])
        for match in MARKED_BLOCK.finditer(text)
    }


def test_every_shell_block_of_the_readme_is_run_by_a_test() -> None:
    text = README.read_text()
    bodies = re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)
    marked = [block["body"] for block in MARKED_BLOCK.finditer(text) if block["language"] == "sh"]
    # The two commands themselves: CI runs `make test`, tests/test_demo.py what `make run` runs.
    unmarked = [body for body in bodies if body not in marked and not body.startswith("make run")]
    assert unmarked == [], "every ```sh block needs a <!-- test: NAME --> marker"
    names = set(readme_blocks())
    source = Path(__file__).read_text()
    tested = set(re.findall(r'(?:run|start)\("([\w-]+)"', source))
    assert names == tested, (
        f"untested blocks: {names - tested}; tests of no block: {tested - names}"
    )


def test_the_readmes_python_client_is_the_example_file_word_for_word() -> None:
    assert f"```python\n{EXAMPLE.read_text()}```" in README.read_text()


def test_the_python_client_says_why_it_could_not_watch_and_exits_1() -> None:
    nobody = f"http://127.0.0.1:{support.free_port()}"
    watched = subprocess.run(
        [support.PYTHON, str(EXAMPLE), "--url", nobody, "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert watched.returncode == 1
    assert watched.stderr.startswith("watch_cell.py: ") and "Cannot connect" in watched.stderr


class Terminals:
    """A copy of the checkout, and the terminals a user opens in it."""

    def __init__(self, folder: Path, replacements: dict[str, str]) -> None:
        self.folder = folder
        self.replacements = replacements
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []
        shutil.copytree(support.ROOT, folder, ignore=NOT_COPIED, symlinks=True)
        # The environment `make` built: the one these tests run in.
        (folder / ".venv").symlink_to(Path(sys.prefix))
        self.env = {
            key: value
            for key, value in support.base_env().items()
            if key not in {"ENV_FILE", "VIRTUAL_ENV", "DEBUG", "LOG_LEVEL"}
        }

    def migrate(self) -> None:
        """Create the SQLite database, as `make run` does before anything else."""
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=self.folder,
            env=self.env,
            check=True,
        )

    def manage(self, *arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *arguments],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout

    def script(self, name: str) -> str:
        block = readme_blocks()[name]
        body = block.body
        for written, actual in self.replacements.items():
            body = body.replace(written, actual)
        return body

    def run(self, name: str, *, timeout: float = 180) -> str:
        """Run a block to its end; its output."""
        assert not readme_blocks()[name].holds, f"{name} holds its terminal: start() it"
        done = subprocess.run(
            ["bash", "-e", "-c", self.script(name)],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"README block {name} failed:\n{output}"
        return output

    def start(self, name: str) -> Path:
        """Start a block that holds its terminal; the file its output goes to."""
        assert readme_blocks()[name].holds, f"{name} ends by itself: run() it"
        log = self.folder / f"terminal-{name}.log"
        process = subprocess.Popen(
            ["bash", "-e", "-c", self.script(name)],
            cwd=self.folder,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the whole terminal's processes
        )
        self.running.append((process, log))
        return log

    def close(self) -> None:
        """Ctrl-C in every terminal still running, as a user ends a session."""
        while self.running:
            process, _ = self.running.pop()
            support.stop(process, send=signal.SIGINT, grace=20, group=True)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[..., Terminals]]:
    """Opens a copy of the checkout (``**replacements``: address in README -> address here)."""
    opened: list[Terminals] = []

    def open_terminals(**replacements: str) -> Terminals:
        checkout = Terminals(tmp_path / f"checkout{len(opened)}", replacements)
        opened.append(checkout)
        return checkout

    yield open_terminals
    for checkout in opened:
        checkout.close()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


class BehindTheProxy:
    """A browser talking to the web server as the README's HTTPS proxy passes
    it on (``X-Forwarded-Proto: https``), keeping its cookies (which are for
    HTTPS only, so a cookie jar would not send them over the plain HTTP
    between proxy and server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        proxied: bool = True,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request; ``proxied=False``: straight to the server, by plain HTTP."""
        headers = {
            "Referer": f"https://127.0.0.1:{self.port}{path}",
            "Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items()),
        }
        if proxied:
            headers["X-Forwarded-Proto"] = "https"
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            for cookie in response.headers.get_all("Set-Cookie") or []:
                name, _, value = cookie.split(";", 1)[0].partition("=")
                self.cookies[name] = value
            return response.status, response.headers, content
        finally:
            connection.close()

    def get(self, path: str) -> bytes:
        status, _, content = self.request("GET", path)
        assert status == 200, (path, status, content[:500])
        return content

    def sign_in(self, username: str, password: str) -> None:
        page = self.get("/admin/login/").decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:2000]
        form = {"csrfmiddlewaretoken": token[1], "username": username, "password": password}
        status, headers, content = self.request("POST", "/admin/login/?next=/", form)
        assert status == 302 and headers["Location"] == "/", (status, content[:2000])


# --- Try it by hand ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_pipeline_walkthrough_runs_as_written_and_says_what_it_says(
    terminals: Callable[..., Terminals],
) -> None:
    checkout = terminals()
    checkout.migrate()  # what `make run` did before
    output = checkout.run("pipeline")
    finished = re.findall(
        r"consume_events finished: (\d+) accepted \((\d+) new, (\d+) already", output
    )
    assert len(finished) == 2, output
    (accepted, new, repeats), (again, new_again, repeats_again) = finished
    assert int(accepted) == int(new) > 0 and repeats == "0"
    assert again == accepted and new_again == "0" and repeats_again == accepted
    # What the README says the runs end with.
    said = " ".join(README.read_text().split())
    assert "finished: N accepted (N new, 0 already stored), 0 rejected" in said
    assert "(`0 new, N already stored`)" in said
    assert 550 <= int(accepted) <= 650  # "about 600"


@pytest.mark.slow
def test_the_hub_client_and_the_api_call_work_against_the_demo(
    terminals: Callable[..., Terminals], demo: str
) -> None:
    port = demo.rstrip("/").rsplit(":", 1)[1]
    checkout = terminals(**{"127.0.0.1:8000": f"127.0.0.1:{port}"})
    log = checkout.start("watch")
    updates = support.wait_until(
        lambda: re.findall(
            r"^\d\d:\d\d:\d\d  [0-9a-f-]{36}  (6\d\.\d+), (2\d\.\d+)$", log.read_text(), re.M
        ),
        timeout=30,
        what="the example client's lines",
    )
    # Cell [24, 60] is 60 <= latitude < 61, 24 <= longitude < 25.
    assert all(60 <= float(lat) < 61 and 24 <= float(lng) < 25 for lat, lng in updates)
    checkout.close()  # Ctrl-C, as the README says, ends it quietly
    assert "Error" not in log.read_text() and "Traceback" not in log.read_text(), log.read_text()

    answer = orjson.loads(checkout.run("api"))
    assert answer["count"] > 0 and len(answer["trackers"]) == 2
    assert all("helsinki" in tracker["name"].lower() for tracker in answer["trackers"])


# --- Production ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_production_steps_run_as_written(
    terminals: Callable[..., Terminals], redis_url: str
) -> None:
    bindir = support.postgres_bindir()
    if bindir is None:
        support.unavailable("PostgreSQL's binaries are not installed (apt-get install postgresql)")
    assert bindir is not None
    if shutil.which("psql") is None:
        support.unavailable("psql is not installed (apt-get install postgresql-client)")
    redis_address = redis_url.removeprefix("redis://").split("/")[0]
    web = support.free_port()
    with support.private_postgres(bindir) as cluster:
        host, port = cluster.url.split("@")[1].split("/")[0].split(":")
        checkout = terminals(
            **{
                "-h 127.0.0.1 -p 5432": f"-h {host} -p {port}",
                "127.0.0.1:5432": f"{host}:{port}",
                "redis://127.0.0.1:6379/0": f"redis://{redis_address}/0",
                "--port 8000": f"--port {web}",
                "127.0.0.1:8000": f"127.0.0.1:{web}",
            }
        )
        checkout.run("production-database")
        setup = checkout.run("production-setup")
        assert "Superuser created successfully." in setup, setup
        # Django's deployment check finds nothing to warn of (with `bash -e`, it would stop the block).
        assert "System check identified no issues (0 silenced)." in setup, setup
        # The tests of a checkout with an operator's .env keep to their own settings.
        tests = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_settings.py",
            ],
            cwd=checkout.folder,
            env=checkout.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert tests.returncode == 0, tests.stdout[-3000:]
        server = checkout.start("production-web")
        support.wait_for_port("127.0.0.1", web, timeout=60)
        pipeline = checkout.start("production-pipeline")

        # DEBUG is off: plain HTTP goes to HTTPS, and the map is for signed-in users.
        browser = BehindTheProxy(web)
        status, headers, _ = browser.request("GET", "/api/trackers", proxied=False)
        assert status == 301 and headers["Location"] == f"https://127.0.0.1:{web}/api/trackers"
        status, headers, _ = browser.request("GET", "/")
        assert status == 302 and headers["Location"].startswith("/admin/login/")
        assert browser.request("GET", "/api/trackers")[0] == 401
        assert "max-age=31536000; includeSubDomains; preload" in headers.get(
            "Strict-Transport-Security", ""
        )
        browser.sign_in("admin", "choose-a-long-one")
        page = browser.get("/").decode()
        # Static files are the hashed ones collectstatic wrote.
        assert re.search(r'src="/static/maps/map\.[0-9a-f]{12}\.js"', page), page[:2000]
        listed = support.wait_until(
            lambda: orjson.loads(browser.get("/api/trackers?status=online"))["count"] >= 200,
            timeout=60,
            what=f"200 trackers online; the pipeline said: {pipeline.read_text()[-2000:]}",
        )
        assert listed
        # A client that is not a browser, with an API token.
        signed_in = checkout.run("production-token", timeout=120)
        assert '"trackers": [' in signed_in or '"trackers":[' in signed_in, signed_in
        # (curl's answer ends without a newline: the client's line follows it.)
        assert re.search(r"\d\d:\d\d:\d\d  [0-9a-f-]{36}  6\d\.\d+, 2\d\.\d+$", signed_in, re.M), (
            signed_in
        )
        script = re.search(r'src="(/static/maps/map\.[0-9a-f]{12}\.js)"', page)
        assert script is not None and browser.get(script[1])
        # A forged connection id (refused), then a client of its own (let in, or
        # refused if the map is private): each is one WebSocket.
        for query in ("id=a-secret", "access_token=a-secret"):
            open_and_close_a_websocket(f"ws://127.0.0.1:{web}/api/signalr?{query}")
        checkout.close()
        assert "consume_events stopped:" in pipeline.read_text(), pipeline.read_text()
        log = server.read_text()
        assert "Traceback" not in log, log
        # What the server said about those: one access line per HTTP request,
        # no warning for the static file, one line per WebSocket (without the
        # query, where connection ids and access tokens travel).
        assert f'"GET {script[1]} HTTP/1.1" 200' in log, log
        assert "StreamingHttpResponse" not in log and "Warning" not in log, log
        websockets = [line for line in log.splitlines() if "WebSocket" in line]
        # The token example's WebSocket, then the two above.
        assert len(websockets) == 3, log
        assert all('"WebSocket /api/signalr" ' in line for line in websockets), log
        assert "connection open" not in log and "a-secret" not in log, log


def open_and_close_a_websocket(url: str) -> None:
    """Connect as a SignalR client would, shake hands if let in, and leave."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, open_timeout=10) as socket:
            socket.send('{"protocol":"json","version":1}\x1e')
            assert socket.recv(timeout=10) == "{}\x1e"
    except InvalidStatus:
        pass  # refused (a private map): the line says so


# --- Event Hubs stand-in ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_event_hubs_stand_in_steps_run_as_written(
    terminals: Callable[..., Terminals],
) -> None:
    stub_port = support.free_port()
    checkout = terminals(**{"5673": str(stub_port)})
    checkout.migrate()  # what `make run` did before
    stub = checkout.start("stand-in")
    support.wait_for_port("127.0.0.1", stub_port, timeout=30)
    assert f"127.0.0.1:{stub_port}" in support.wait_until(
        lambda: stub.read_text(), what="the stand-in's connection string"
    )
    consumer = checkout.start("stand-in-pipeline")
    sent = support.wait_until(
        lambda: re.search(r"simulate: sent (\d+) events from 50 trackers", consumer.read_text()),
        timeout=90,
        what="the simulated minute sent",
    )
    count = "from tracking.models import Position; print(Position.objects.count())"

    def stored() -> bool:
        return checkout.manage("shell", "-v0", "-c", count).strip() == sent[1]

    support.wait_until(
        stored,
        timeout=90,
        interval=0.5,
        what=f"{sent[1]} events stored; the consumer said: {consumer.read_text()[-2000:]}",
    )
    checkout.close()
    assert "consume_events stopped:" in consumer.read_text()
