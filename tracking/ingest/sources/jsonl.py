"""A file of one event body per line (``-`` is standard input).

Lines are read in large chunks straight from the file descriptor. A file is
delivered in full batches; a live stream (a pipe that is still being written)
is delivered as its lines arrive, so ``tail -f events | consume_events`` does
not wait for a batch to fill. A line longer than the body limit is cut there
and rejected without the rest of it ever being held in memory.
"""

from __future__ import annotations

import asyncio
import collections
import os
import select
import sys
from pathlib import Path
from typing import BinaryIO

from tracking.ingest.sources import Deliver, RawEvent

CHUNK_BYTES = 1 << 16


class JsonlSource:
    finite = True

    def __init__(self, *, path: str, batch_size: int, max_line_bytes: int) -> None:
        self.path = path
        self.batch_size = batch_size
        self.max_line_bytes = max_line_bytes
        self.name = "stdin" if path == "-" else path
        self.description = f"jsonl {self.name}"
        self.line_number = 0
        self._ready: collections.deque[RawEvent] = collections.deque()
        self._partial = b""
        self._overlong: bytes | None = None  # the kept start of a line too long to keep
        self._ended = False

    def open(self) -> BinaryIO:
        """Open the file now, so a wrong path fails before anything starts."""
        if self.path == "-":
            return sys.stdin.buffer
        return Path(self.path).open("rb", buffering=0)

    def progress_line(self) -> str | None:
        return None

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        stream = self.open()
        try:
            # While one batch is stored, the next is parsed and the one after read.
            reading = asyncio.ensure_future(asyncio.to_thread(self._read_batch, stream.fileno()))
            storing: asyncio.Future[object] | None = None
            while not stop.is_set():
                batch = await reading
                if not batch:
                    break
                reading = asyncio.ensure_future(
                    asyncio.to_thread(self._read_batch, stream.fileno())
                )
                delivering = asyncio.ensure_future(deliver(batch))
                if storing is not None:
                    await storing  # at most two batches in hand
                storing = delivering
            if storing is not None:
                await storing
            await reading  # let the read in hand finish before the file closes
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    def _read_batch(self, fd: int) -> list[RawEvent]:
        """Up to ``batch_size`` events: as many as a file holds, or as a stream has sent."""
        while len(self._ready) < self.batch_size and not self._ended:
            if self._ready and not _readable_now(fd):
                break  # a live stream: deliver what has arrived
            chunk = os.read(fd, CHUNK_BYTES)
            if chunk:
                self._take(chunk)
            else:
                self._ended = True
                self._end_line()  # a last line without a newline
        count = min(len(self._ready), self.batch_size)
        return [self._ready.popleft() for _ in range(count)]

    def _take(self, chunk: bytes) -> None:
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            self._extend(chunk[start:newline])
            self._end_line()
            start = newline + 1
        self._extend(chunk[start:])

    def _extend(self, piece: bytes) -> None:
        if self._overlong is not None:
            return  # the rest of a line already too long
        self._partial += piece
        if len(self._partial) > self.max_line_bytes:
            # One byte over the limit is enough for the parser to refuse it.
            self._overlong = self._partial[: self.max_line_bytes + 1]
            self._partial = b""

    def _end_line(self) -> None:
        body = self._overlong if self._overlong is not None else self._partial
        self._overlong, self._partial = None, b""
        if self._ended and not body:
            return
        self.line_number += 1
        body = body.rstrip(b"\r")
        if body.strip():
            self._ready.append(RawEvent(body=body, origin=f"{self.name}:{self.line_number}"))


def _readable_now(fd: int) -> bool:
    """Whether reading ``fd`` would return at once (always, for a regular file)."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)
