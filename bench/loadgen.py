"""The fan-out benchmark's client side: many SignalR viewers in one process.

No Django import. Each viewer is an ``asyncio.Protocol`` that speaks just
enough WebSocket (RFC 6455) and SignalR JSON hub protocol by hand: the HTTP
upgrade to ``/api/signalr`` (``skipNegotiation``, no ``Origin``), the
handshake ``{"protocol":"json","version":1}``, one ``updateMapGridGroups``
invocation with its viewport and the wait for its completion, then counting
``locationUpdated`` records. It answers WebSocket pings with pongs and sends a
hub ping every 15 s, nothing else. A hand-written client costs a few
microseconds per message where a general WebSocket library costs tens; on a
two-core machine the load generator's CPU is taken from the server under test,
so it has to be cheap (its CPU is reported next to the server's).

The synthetic fleet and the viewports are pure functions of a seed, so the
publisher (``bench.fanout publisher``) and every load-generator process agree
on tracker ids and cells without talking to each other.

Run as ``python -m bench.loadgen --port PORT --clients N ...``; it is driven
by JSON lines: it prints ``{"event": "joined", ...}`` once its viewers have
joined, then reads ``{"cmd": "window", "start": T0, "end": T1, "drain": S,
"reports": PATH | null, "latencies": PATH}`` on stdin (Unix seconds), counts
the records whose ``timestamp`` falls in ``[T0, T1)``, and ``S`` seconds after
``T1`` prints ``{"event": "result", ...}``: what it received against what the
publisher's report file says it should have, and writes every latency (ms,
float64) to ``latencies``. ``{"cmd": "exit"}`` or end of input closes every
connection and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import heapq
import math
import os
import random
import resource
import sys
import time
import uuid
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson

from tracking.grid import Cell, Grid

RS = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}' + RS
PING_RECORD = b'{"type":6}' + RS
INVOCATION_ID = "1"
# Each viewer sends a hub ping this often, as the official clients do.
PING_SECONDS = 15.0
HUB_PATH = "/api/signalr"
# Keys of received records: tracker index << 42 | timestamp ms (ms < 2**42 until 2109).
KEY_SHIFT = 42

# The synthetic fleet lives on a block of one-degree cells in Europe.
ORIGIN = Cell(10, 40)
BLOCK_COLUMNS = 20
BLOCK_ROWS = 20
GRID = Grid(1.0)


# --- Fleet and viewports: pure, seeded -------------------------------------------------


def tracker_ids(count: int, *, seed: int) -> list[str]:
    """``count`` distinct tracker ids (UUID4 text), the same for the same seed."""
    rng = random.Random(f"ids-{seed}")
    return [str(uuid.UUID(bytes=rng.randbytes(16), version=4)) for _ in range(count)]


def viewports(
    count: int, *, seed: int, columns: int = 2, rows: int = 2
) -> list[list[tuple[int, int]]]:
    """Each viewer's cells: a ``columns`` x ``rows`` block placed uniformly in the fleet's block."""
    rng = random.Random(f"viewports-{seed}")
    result = []
    for _ in range(count):
        x0 = ORIGIN.x + rng.randrange(BLOCK_COLUMNS - columns + 1)
        y0 = ORIGIN.y + rng.randrange(BLOCK_ROWS - rows + 1)
        result.append([(x, y) for x in range(x0, x0 + columns) for y in range(y0, y0 + rows)])
    return result


@dataclass(frozen=True, slots=True)
class Report:
    """One report a tracker makes: what the map should show, and where."""

    index: int
    timestamp_ms: int
    latitude: float
    longitude: float
    cell: Cell


class SyntheticFleet:
    """``count`` trackers spread uniformly over the block, each reporting every ``interval``.

    Report times are staggered evenly over the first interval, so reports
    arrive at a steady rate. Each report moves its tracker ``step`` degrees
    in a slowly turning direction, bouncing off the block's edges; some cross
    into a neighbouring cell now and then, as vehicles do.
    """

    def __init__(
        self, *, count: int, seed: int, interval: float, start_ms: int, step: float = 0.002
    ) -> None:
        rng = random.Random(f"fleet-{seed}")
        self.rng = rng
        self.ids = tracker_ids(count, seed=seed)
        self.step = step
        self.interval_ms = max(1, round(interval * 1000))
        self.latitude = [ORIGIN.y + rng.uniform(0.001, BLOCK_ROWS - 0.001) for _ in range(count)]
        self.longitude = [
            ORIGIN.x + rng.uniform(0.001, BLOCK_COLUMNS - 0.001) for _ in range(count)
        ]
        self.heading = [rng.uniform(0, 2 * math.pi) for _ in range(count)]
        self.cells = [
            GRID.cell_of(latitude=lat, longitude=lng)
            for lat, lng in zip(self.latitude, self.longitude, strict=True)
        ]
        self.crossings = 0
        self._due: list[tuple[int, int]] = [
            (start_ms + (i * self.interval_ms) // max(count, 1), i) for i in range(count)
        ]
        heapq.heapify(self._due)

    def due(self, now_ms: int) -> list[Report]:
        """Every report due at or before ``now_ms``, in time order; each moves its tracker."""
        reports = []
        while self._due and self._due[0][0] <= now_ms:
            when, index = heapq.heappop(self._due)
            reports.append(self._move(index, when))
            heapq.heappush(self._due, (when + self.interval_ms, index))
        return reports

    def _move(self, index: int, when: int) -> Report:
        heading = self.heading[index] + self.rng.uniform(-0.3, 0.3)
        lat = self.latitude[index] + self.step * math.cos(heading)
        lng = self.longitude[index] + self.step * math.sin(heading)
        low_lat, high_lat = ORIGIN.y + 0.001, ORIGIN.y + BLOCK_ROWS - 0.001
        low_lng, high_lng = ORIGIN.x + 0.001, ORIGIN.x + BLOCK_COLUMNS - 0.001
        if not low_lat <= lat <= high_lat:
            heading = math.pi - heading
            lat = min(max(lat, low_lat), high_lat)
        if not low_lng <= lng <= high_lng:
            heading = -heading
            lng = min(max(lng, low_lng), high_lng)
        self.heading[index], self.latitude[index], self.longitude[index] = heading, lat, lng
        cell = GRID.cell_of(latitude=lat, longitude=lng)
        if cell != self.cells[index]:
            self.crossings += 1
            self.cells[index] = cell
        return Report(index, when, round(lat, 6), round(lng, 6), cell)


def event_body(tracker_id: str, report: Report) -> bytes:
    """The event body (docs/protocol.md §1.1) of a report; ``Ts`` in whole milliseconds, so the hub's ms match."""
    seconds, millis = divmod(report.timestamp_ms, 1000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return orjson.dumps(
        {
            "Id": tracker_id,
            "Lat": report.latitude,
            "Lng": report.longitude,
            "Ts": f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z",
        }
    )


def report_line(report: Report) -> str:
    """One line of the publisher's report file: ``index timestamp_ms cell_x cell_y``."""
    return f"{report.index} {report.timestamp_ms} {report.cell.x} {report.cell.y}\n"


# --- WebSocket framing (client side) ------------------------------------------------------


def client_frame(payload: bytes, *, opcode: int = 0x1) -> bytes:
    """A masked, final frame: what RFC 6455 requires of a client."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    repeated = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little"
    )
    return header + mask + masked


def upgrade_request(host: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {HUB_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# --- Counting ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What every viewer of this process counts, shared to keep each viewer small."""

    index_of: dict[str, int]
    window_start_ms: float = math.inf
    window_end_ms: float = -math.inf
    counting: bool = False
    latencies: array[float] = field(default_factory=lambda: array("d"))
    frames_in_window: int = 0
    records_in_window: int = 0
    duplicates: int = 0
    unknown: int = 0
    closes_with_error: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def note_error(self, text: str) -> None:
        self.errors[text[:120]] = self.errors.get(text[:120], 0) + 1


HTTP, HANDSHAKING, JOINING, JOINED, CLOSED = range(5)


class Viewer(asyncio.Protocol):
    """One SignalR connection watching ``cells``; counts what arrives for the window."""

    def __init__(
        self,
        *,
        tally: Tally,
        cells: Sequence[tuple[int, int]],
        host: str,
        port: int,
        snapshot_size: int = 0,
    ) -> None:
        self.tally = tally
        self.cells = list(cells)
        # Records the join's snapshot holds: joined only once they are all in.
        self.snapshot_missing = snapshot_size
        self.host, self.port = host, port
        self.state = HTTP
        self.pending = b""
        self.fragments: list[bytes] = []
        self.seen: set[int] = set()
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed_at: float | None = None
        self.transport: asyncio.Transport | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(upgrade_request(self.host, self.port))

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.closed_at = time.time()
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed before joining: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000.0
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if self.state == HTTP:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.pending = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self._fail(f"upgrade refused: {status.decode(errors='replace')}")
                return
            data = data[end + 4 :]
            self.state = HANDSHAKING
            self._send(HANDSHAKE)
        pos, size = 0, len(data)
        while size - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            end = pos + header + length
            if end > size:
                break
            self._frame(b0, data[pos + header : end], now_ms)
            pos = end
        if pos < size:
            self.pending = data[pos:]

    # frames and messages
    def _frame(self, b0: int, payload: bytes, now_ms: float) -> None:
        opcode = b0 & 0x0F
        if opcode == 0x1 or opcode == 0x0:
            if not b0 & 0x80:
                self.fragments.append(payload)
                return
            if self.fragments:
                payload = b"".join([*self.fragments, payload])
                self.fragments = []
            self._message(payload, now_ms)
        elif opcode == 0x9:
            self._send(payload, opcode=0xA)
        elif opcode == 0x8 and self.transport is not None:
            self.transport.write(client_frame(payload[:2], opcode=0x8))
            self.transport.close()

    def _message(self, payload: bytes, now_ms: float) -> None:
        if not payload.endswith(RS):
            self._fail("a message that does not end with the record separator")
            return
        records = orjson.loads(b"[" + payload[:-1].replace(RS, b",") + b"]")
        if self.state == JOINED:
            self._count(records, now_ms)
        elif self.state == HANDSHAKING:
            if records[0]:
                self._fail(f"handshake refused: {records[0]}")
                return
            self.state = JOINING
            cells = [list(cell) for cell in self.cells]
            invocation = {
                "type": 1,
                "invocationId": INVOCATION_ID,
                "target": "updateMapGridGroups",
                "arguments": [cells, []],
            }
            self._send(orjson.dumps(invocation) + RS)
        elif self.state == JOINING:
            for at, record in enumerate(records):
                if record.get("type") == 3 and record.get("invocationId") == INVOCATION_ID:
                    if record.get("error") is not None:
                        self._fail(f"updateMapGridGroups failed: {record['error']}")
                        return
                    self.state = JOINED
                    self._schedule_ping()
                    self._count(records[at + 1 :], now_ms)
                    return

    def _count(self, records: list[Any], now_ms: float) -> None:
        if self.snapshot_missing > 0:
            self.snapshot_missing -= sum(
                1 for r in records if r.get("type") == 1 and r.get("target") == "locationUpdated"
            )
        if self.snapshot_missing <= 0 and not self.joined.done():
            self.joined.set_result(None)
        tally = self.tally
        if not tally.counting:
            return
        if tally.window_start_ms <= now_ms < tally.window_end_ms:
            tally.frames_in_window += 1
        for record in records:
            kind = record.get("type")
            if kind == 1 and record.get("target") == "locationUpdated":
                arguments = record["arguments"]
                timestamp = arguments[3]
                if not tally.window_start_ms <= timestamp < tally.window_end_ms:
                    continue
                index = tally.index_of.get(arguments[0])
                if index is None:
                    tally.unknown += 1
                    continue
                key = (index << KEY_SHIFT) | timestamp
                tally.records_in_window += 1
                if key in self.seen:
                    tally.duplicates += 1
                    continue
                self.seen.add(key)
                tally.latencies.append(now_ms - timestamp)
            elif kind == 7:
                tally.closes_with_error += 1
                tally.note_error(f"hub closed: {record.get('error')}")

    def _send(self, payload: bytes, *, opcode: int = 0x1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(payload, opcode=opcode))

    def _schedule_ping(self) -> None:
        """Ping every ``PING_SECONDS`` from joining on: the hub closes clients silent for 30 s."""
        asyncio.get_running_loop().call_later(PING_SECONDS, self._ping)

    def _ping(self) -> None:
        if self.state == JOINED:
            self._send(PING_RECORD)
            self._schedule_ping()

    def _fail(self, reason: str) -> None:
        self.tally.note_error(reason)
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


# --- The process ---------------------------------------------------------------------------


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


async def join_all(
    *,
    host: str,
    port: int,
    cells: Sequence[Sequence[tuple[int, int]]],
    tally: Tally,
    concurrency: int,
    patience: float,
    snapshot_sizes: dict[tuple[int, int], int] | None = None,
) -> tuple[list[Viewer], int]:
    """Open and join every viewer, ``concurrency`` at a time; return those joined and failures.

    Given ``snapshot_sizes`` (records per cell), a viewer has joined once its
    snapshot is in, not at the completion."""
    sizes = snapshot_sizes or {}
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    joined: list[Viewer] = []
    failed = 0

    async def one(viewer_cells: Sequence[tuple[int, int]]) -> None:
        nonlocal failed
        async with gate:
            try:
                _, viewer = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Viewer(
                            tally=tally,
                            cells=viewer_cells,
                            host=host,
                            port=port,
                            snapshot_size=sum(sizes.get((x, y), 0) for x, y in viewer_cells),
                        ),
                        host,
                        port,
                    ),
                    patience,
                )
                await asyncio.wait_for(viewer.joined, patience)
            except (OSError, TimeoutError, ConnectionError) as exc:
                failed += 1
                tally.note_error(f"join: {exc!r}")
                return
            joined.append(viewer)

    await asyncio.gather(*(one(c) for c in cells))
    return joined, failed


def expected_by_cell(
    path: Path, *, start_ms: float, end_ms: float
) -> tuple[dict[tuple[int, int], set[int]], int]:
    """From the publisher's report file: the keys each cell's viewers should receive."""
    by_cell: dict[tuple[int, int], set[int]] = {}
    total = 0
    with path.open() as reports:
        for line in reports:
            parts = line.split()
            if len(parts) != 4:
                continue  # a line being written as the file was read
            index, timestamp, x, y = (int(part) for part in parts)
            if start_ms <= timestamp < end_ms:
                by_cell.setdefault((x, y), set()).add((index << KEY_SHIFT) | timestamp)
                total += 1
    return by_cell, total


def analyse(
    viewers: Sequence[Viewer], tally: Tally, *, reports: Path | None, start: float, end: float
) -> dict[str, Any]:
    """Received against expected, per viewer, summed; latencies summarised."""
    start_ms, end_ms = start * 1000, end * 1000
    result: dict[str, Any] = {
        "records_in_window": tally.records_in_window,
        "unique_in_window": sum(len(v.seen) for v in viewers),
        "duplicates": tally.duplicates,
        "unknown_trackers": tally.unknown,
        "frames_in_window": tally.frames_in_window,
        "closes_with_error": tally.closes_with_error,
        "connected_at_end": sum(1 for v in viewers if v.state == JOINED),
        "closed_during_run": sum(1 for v in viewers if v.closed_at is not None),
    }
    if reports is not None:
        by_cell, published = expected_by_cell(reports, start_ms=start_ms, end_ms=end_ms)
        expected = lost = unexpected = with_loss = worst = 0
        for viewer in viewers:
            want: set[int] = set()
            for cell in viewer.cells:
                want |= by_cell.get(cell, set())
            missing = len(want - viewer.seen)
            expected += len(want)
            lost += missing
            unexpected += len(viewer.seen - want)
            with_loss += missing > 0
            worst = max(worst, missing)
        result.update(
            reports_in_window=published,
            expected=expected,
            lost=lost,
            unexpected=unexpected,
            viewers_with_loss=with_loss,
            most_lost_by_one_viewer=worst,
        )
    return result


def write_latencies(path: Path, latencies: array[float]) -> None:
    """Every latency (ms) as native float64s, for the parent to merge across processes."""
    with path.open("wb") as out:
        latencies.tofile(out)


async def main(arguments: argparse.Namespace) -> None:
    fleet_ids = tracker_ids(arguments.trackers, seed=arguments.seed)
    tally = Tally(index_of={tracker_id: i for i, tracker_id in enumerate(fleet_ids)})
    every_cells = viewports(
        arguments.first + arguments.clients,
        seed=arguments.seed,
        columns=arguments.viewport,
        rows=arguments.viewport,
    )
    mine = every_cells[arguments.first :]
    started = time.monotonic()
    viewers, failed = await join_all(
        host=arguments.host,
        port=arguments.port,
        cells=mine,
        tally=tally,
        concurrency=arguments.concurrency,
        patience=arguments.join_timeout,
        snapshot_sizes=_snapshot_sizes(arguments.snapshots),
    )
    join_seconds = time.monotonic() - started
    emit(
        {
            "event": "joined",
            "joined": len(viewers),
            "failed": failed,
            "seconds": round(join_seconds, 3),
            "errors": tally.errors,
        }
    )

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = orjson.loads(line)
        if command["cmd"] == "exit":
            break
        if command["cmd"] == "window":
            start, end, drain = command["start"], command["end"], command["drain"]
            tally.window_start_ms, tally.window_end_ms = start * 1000, end * 1000
            tally.counting = True
            await asyncio.sleep(max(0.0, end + drain - time.time()))
            tally.counting = False
            reports = Path(command["reports"]) if command.get("reports") else None
            result = analyse(viewers, tally, reports=reports, start=start, end=end)
            if command.get("latencies"):
                write_latencies(Path(command["latencies"]), tally.latencies)
            result.update(event="result", joined=len(viewers), errors=tally.errors)
            emit(result)
    for viewer in viewers:
        viewer.abort()
    await asyncio.sleep(0.1)


def _snapshot_sizes(path: Path | None) -> dict[tuple[int, int], int] | None:
    """``{cell: trackers}`` from a JSON list of ``[x, y, count]``."""
    if path is None:
        return None
    return {(x, y): count for x, y, count in orjson.loads(path.read_bytes())}


def raise_open_files_limit() -> int:
    """Raise this process's open-files limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True, help="viewers in this process")
    parser.add_argument("--first", type=int, default=0, help="index of this process's first")
    parser.add_argument("--trackers", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--viewport", type=int, default=2, help="cells per side")
    parser.add_argument("--concurrency", type=int, default=16, help="joins in flight")
    parser.add_argument("--join-timeout", type=float, default=60.0)
    parser.add_argument(
        "--snapshots",
        type=Path,
        help="JSON [[x, y, trackers], ...]: a viewer has joined once its snapshot is in",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise_open_files_limit()
    import uvloop

    uvloop.run(main(parse_arguments()))
