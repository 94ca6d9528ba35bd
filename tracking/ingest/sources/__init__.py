"""Event sources: where bodies come from, apart from what is done with them.

A source reads bodies from its origin and hands them to ``deliver`` one batch
at a time, awaiting each before reading on; it stops between batches once
``stop`` is set. ``deliver`` returns once the batch is stored and published,
which is when a source that can acknowledge (a checkpoint) may do so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tracking.logsafe import one_line


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One event body as a source delivered it, and where it came from."""

    body: bytes
    origin: str
    # Set when the source already knows the body cannot be an event.
    problem: str | None = None
    # When the body reached the source's service (the Event Hubs enqueued
    # time), if the source knows; else the pipeline's clock stands for it.
    received_at: datetime | None = None


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type if it has none), for a log
    line: escaped, as it may quote what a device sent."""
    return one_line((str(error).strip().splitlines() or [type(error).__name__])[0][:300])


class SourceConfigurationError(Exception):
    """A source cannot start as configured; the message names the setting to fix."""


# Sources do not read what delivering a batch returns: only that it is done.
Deliver = Callable[[Sequence[RawEvent]], Awaitable[object]]


class EventSource(Protocol):
    #: Said in log lines, e.g. "jsonl file events.jsonl".
    description: str
    #: Whether the source ends on its own (a file) or runs until stopped.
    finite: bool

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None: ...

    def progress_line(self) -> str | None:
        """Source-specific figures for the progress line (per partition, say), or None."""
        ...
