"""``simulate``: the simulated fleet sent to a file or to an Event Hub (the local stand-in)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import orjson
import pytest

from tests import support
from tests.eventhub_stub import EventHubStub

pytestmark = pytest.mark.slow


def test_sending_to_an_event_hub_says_how_it_goes_while_it_runs(tmp_path: Path) -> None:
    with EventHubStub(hub="fleet", partitions=2) as hub:
        env = support.base_env(
            EVENTHUB_CONNECTION_STRING=hub.connection_string, TRACKING_PROGRESS_SECONDS="0.5"
        )
        log = tmp_path / "simulate.log"
        command = [
            *(support.PYTHON, "manage.py", "simulate", "--to", "eventhub", "--realtime"),
            *("--trackers", "6", "--interval", "0.2", "--seed", "5"),
        ]
        with support.background(command, env=env, log=log) as process:
            support.wait_until(
                lambda: "events in" in log.read_text(), timeout=30, what="a progress line"
            )
            # It says so while it runs, not only when it stops.
            assert process.poll() is None
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        output = log.read_text()
        assert "simulate: 6 trackers send reports in real time, until stopped" in output
        sent = re.search(r"simulate: sent (\d+) events from 6 trackers", output)
        assert sent is not None, output
        assert sum(hub.event_counts().values()) == int(sent[1]) > 0
        bodies = [orjson.loads(e.body) for p in hub.partition_ids for e in hub.events(p)]
        assert len({body["Id"] for body in bodies}) == 6
