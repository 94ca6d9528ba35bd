"""Hostile clients against the README's own server command lines (uvicorn and daphne):
a viewer that never reads is cut off and costs the server a bounded amount, and
a huge frame is refused before it is read."""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests import support
from tests.test_readme import README, readme_blocks
from tracking.hub import protocol

pytestmark = [pytest.mark.slow, pytest.mark.redis]

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
HELSINKI = [24, 60]
STALLED = "nothing could be sent for"


def readme_command(server: str, port: int) -> str:
    """The README's command line for ``server``, serving ``port``."""
    if server == "uvicorn":
        command = readme_blocks()["production-web"].body.strip().splitlines()[-1]
        return command.replace("--port 8000", f"--port {port}")
    [command] = re.findall(r"`(daphne [^`]+)`", README.read_text())
    return command.replace("-p 8000", f"-p {port}")


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def said(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)

    def rss(self) -> int:
        """The resident memory of the server and its workers, in bytes."""
        root = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


@pytest.fixture(params=["uvicorn", "daphne"])
def server(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Server, str]]:
    """A server started with the README's command line, its hub settings made
    small so a test sees them act, and the Redis channel prefix it listens on."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    env = support.base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL=redis_url,
        CHANNEL_LAYER_PREFIX=prefix,
        HUB_SEND_STALL_SECONDS="2",
        HUB_OUTBOX_BYTES="65536",
        HUB_CLIENT_TIMEOUT_SECONDS="300",
        PATH=f"{Path(support.PYTHON).parent}{os.pathsep}{os.environ['PATH']}",
    )
    migrated = support.manage(["migrate", "-v0"], env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    port = support.free_port()
    log = tmp_path / "server.log"
    command = ["bash", "-c", f"exec {readme_command(request.param, port)}"]
    with support.background(command, env=env, log=log) as process:
        support.wait_for_port("127.0.0.1", port, timeout=60, process=process)
        yield Server(port, process, log), prefix


class Publisher:
    """Publishes the positions of many trackers in one cell, 20 times a second."""

    def __init__(self, redis_url: str, channel: str, trackers: int = 500) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url)
        self._channel = channel
        self._trackers = [str(uuid.uuid4()) for _ in range(trackers)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(0.05):
            step += 1
            records = "".join(
                protocol.location_updated(
                    tracker_id=tracker,
                    latitude=60.1 + step * 1e-6,
                    longitude=24.9,
                    timestamp_ms=1_795_690_800_000 + step,
                )
                for tracker in self._trackers
            )
            self._redis.publish(self._channel, records)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._redis.close()


def frame(payload: bytes, *, opcode: int = 1, length: int | None = None) -> bytes:
    """A client's WebSocket frame (masked); ``length`` may claim more than ``payload``."""
    length = len(payload) if length is None else length
    mask = os.urandom(4)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[n % 4] for n, b in enumerate(payload))


def open_websocket(port: int, *, receive_buffer: int | None = None) -> socket.socket:
    """A raw WebSocket to the hub, past the HTTP upgrade (read byte by byte,
    so nothing after it is read)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /api/signalr HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the server closed during the upgrade: {response!r}"
        response += byte
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_viewer_that_never_reads_is_cut_off_and_the_server_stays_flat(
    server: tuple[Server, str], redis_url: str
) -> None:
    running, prefix = server
    join = protocol.invocation("updateMapGridGroups", [[HELSINKI], []])
    join = join.replace('"type":1,', '"type":1,"invocationId":"1",')

    def slow_viewers(count: int) -> None:
        """``count`` viewers of the busy cell that never read, until each is cut off."""
        before = running.said(STALLED)
        sockets = [open_websocket(running.port, receive_buffer=4096) for _ in range(count)]
        for sock in sockets:
            sock.sendall(frame((HANDSHAKE + join).encode()))
        support.wait_until(
            lambda: running.said(STALLED) >= before + count,
            timeout=60,
            what=f"{count} viewers cut off; the server said: {running.log.read_text()[-3000:]}",
        )
        for sock in sockets:
            sock.settimeout(30)
            assert read_to_the_end(sock).startswith(b"\x81")  # it had sent something
            sock.close()

    with Publisher(redis_url, f"{prefix}.cell.24.60"):
        slow_viewers(5)  # the server's own first use of everything
        settled = running.rss()
        slow_viewers(10)
        grown = running.rss() - settled
    assert grown < 40 * 2**20, f"the server grew by {grown / 2**20:.1f} MiB"
    assert "Traceback" not in running.log.read_text()


def frames(received: bytes) -> list[tuple[int, bytes]]:
    """The server's frames (unmasked) in ``received``: opcode and payload."""
    found = []
    while len(received) >= 2:
        opcode, length, start = received[0] & 0x0F, received[1] & 0x7F, 2
        if length == 126:
            (length,), start = struct.unpack("!H", received[2:4]), 4
        elif length == 127:
            (length,), start = struct.unpack("!Q", received[2:10]), 10
        if start + length > len(received):
            break  # not all of it has arrived
        found.append((opcode, received[start : start + length]))
        received = received[start + length :]
    return found


def read_to_the_close(sock: socket.socket) -> list[tuple[int, bytes]]:
    """The server's frames up to its close frame (or the end of the connection)."""
    received = b""
    while not any(opcode == 8 for opcode, _ in frames(received)):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return frames(received)


def test_a_huge_frame_is_refused_before_it_is_read(server: tuple[Server, str]) -> None:
    running, _ = server
    sock = open_websocket(running.port)
    sock.sendall(frame(HANDSHAKE.encode()))
    # A frame that says it carries 16 MiB, and its first KiB (more, unread when
    # the server closes, would have the server's kernel reset the connection).
    sock.sendall(frame(b"", length=16 * 2**20) + b"x" * 1024)
    sock.settimeout(30)
    # The server ends the connection with 16 MiB still to come, so it judged the
    # frame by its header: uvicorn with a close, code 1009 (the message is too
    # big), perhaps before it answered the handshake; daphne (autobahn) drops it.
    said = frames(read_to_the_end(sock))
    closes = [payload for opcode, payload in said if opcode == 8]
    assert [struct.unpack("!H", payload[:2])[0] for payload in closes] in ([], [1009]), said


def test_a_client_that_floods_invocations_is_told_why_and_closed(
    server: tuple[Server, str],
) -> None:
    running, _ = server
    sock = open_websocket(running.port)
    flood = "".join(
        protocol.invocation(
            "updateMapGridGroups", [[[x, 0]], []] if kind == "join" else [[], [[x, 0]]]
        ).replace('"type":1,', f'"type":1,"invocationId":"{kind}{x}",')
        for x in range(150)
        for kind in ("join", "leave")
    )
    sock.sendall(frame((HANDSHAKE + flood).encode()))
    sock.settimeout(30)
    said = read_to_the_close(sock)
    records = [r for opcode, text in said if opcode == 1 for r in text.decode().split(RS)[:-1]]
    assert '"type":7,"error":"Connection closed with an error. Too many invocations' in records[-1]
    assert said[-1][0] == 8  # and the WebSocket closed
    assert sum('"result"' in r for r in records) <= 5
