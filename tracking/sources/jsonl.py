"""A file of one event body per line (``-`` is standard input)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import BinaryIO

from tracking.services import RawEvent
from tracking.sources import Deliver


class JsonlSource:
    finite = True

    def __init__(self, *, path: str, batch_size: int, max_line_bytes: int) -> None:
        self.path = path
        self.batch_size = batch_size
        self.max_line_bytes = max_line_bytes
        self.name = "stdin" if path == "-" else path
        self.description = f"jsonl {self.name}"
        self.line_number = 0

    def open(self) -> BinaryIO:
        """Open the file now, so a wrong path fails before anything starts."""
        if self.path == "-":
            return sys.stdin.buffer
        return Path(self.path).open("rb")

    def progress_line(self) -> str | None:
        return None

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        stream = self.open()
        try:
            while not stop.is_set():
                batch = await asyncio.to_thread(self._read_batch, stream)
                if not batch:
                    return
                await deliver(batch)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    def _read_batch(self, stream: BinaryIO) -> list[RawEvent]:
        batch: list[RawEvent] = []
        while len(batch) < self.batch_size:
            # One byte over the limit is enough to know a line is too long,
            # and reading no further keeps a runaway line out of memory.
            line = stream.readline(self.max_line_bytes + 2)
            if not line:
                break
            self.line_number += 1
            if not line.endswith(b"\n") and len(line) > self.max_line_bytes:
                self._skip_rest_of_line(stream)
            body = line.rstrip(b"\r\n")
            if body.strip():
                batch.append(RawEvent(body=body, origin=f"{self.name}:{self.line_number}"))
        return batch

    @staticmethod
    def _skip_rest_of_line(stream: BinaryIO) -> None:
        while (chunk := stream.readline(65536)) and not chunk.endswith(b"\n"):
            pass
