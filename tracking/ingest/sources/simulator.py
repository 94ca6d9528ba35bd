"""The simulated fleet, reporting in real time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

from tracking.ingest.sources import Deliver, RawEvent
from tracking.simulation.fleet import Fleet, encode_event


class SimulatorSource:
    finite = False

    def __init__(self, *, fleet: Fleet, batch_size: int, batch_wait: float) -> None:
        self.fleet = fleet
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.description = f"simulator ({len(fleet.trackers)} trackers)"

    def progress_line(self) -> str | None:
        return None

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tick = time.monotonic()
            bodies = self.fleet.events_until(datetime.now(UTC))
            for start in range(0, len(bodies), self.batch_size):
                await deliver(
                    [
                        RawEvent(body=encode_event(body), origin="simulator")
                        for body in bodies[start : start + self.batch_size]
                    ]
                )
            # Sleep until the next report is due, but gather at least
            # batch_wait's worth of reports per batch.
            until_due = (self.fleet.next_due() - datetime.now(UTC)).total_seconds()
            wait = max(until_due, self.batch_wait - (time.monotonic() - tick), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
