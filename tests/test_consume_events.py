from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from tests.conftest import event_body
from tests.event_bodies import hostile_bodies, valid_bodies
from tracking.events import parse_event
from tracking.models import Position, RejectedEvent, Tracker

pytestmark = pytest.mark.django_db(transaction=True)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_file_mixing_valid_and_malformed_bodies_stores_every_valid_one(
    tmp_path: Path, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    trackers = [uuid.uuid4() for _ in range(3)]
    valid = [
        event_body(
            tracker_id=tracker,
            latitude=60 + n / 100,
            longitude=24 + n / 100,
            at=now - timedelta(seconds=n),
        )
        for n, tracker in enumerate(trackers * 3)
    ]
    malformed = [
        b"{oops",
        b'{"Id": "x", "Lat": 1, "Lng": 2, "Ts": "2026-11-26T11:12:40Z"}',
        b"\xc3\x28",
        b"[]",
    ]
    lines = valid[:4] + malformed[:2] + [b"", b"   "] + valid[4:] + malformed[2:]
    path = write_lines(tmp_path / "events.jsonl", lines)

    call_command("consume_events", "--source", "jsonl", "--path", str(path), "--batch-size", "4")

    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        "consume_events finished: 9 accepted (9 new, 0 already stored), 4 rejected"
    )
    assert Position.objects.count() == 9
    assert Tracker.objects.count() == 3
    assert sorted(RejectedEvent.objects.values_list("source", flat=True)) == [
        f"{path}:14",
        f"{path}:15",
        f"{path}:5",
        f"{path}:6",
    ]


def test_hostile_lines_are_rejected_and_every_valid_event_around_them_stored(
    tmp_path: Path, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    trackers = [uuid.uuid4() for _ in range(4)]
    valid = [
        event_body(tracker_id=tracker, latitude=60.1, longitude=24.9, at=now - timedelta(seconds=n))
        for n, tracker in enumerate(trackers)
    ]
    go_clock = b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "%s.123456789Z"}' % (
        str(uuid.uuid4()).encode(),
        now.strftime("%Y-%m-%dT%H:%M:%S").encode(),
    )
    hostile = [
        b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "0001-01-01T00:00:00+01:00"}'
        % str(trackers[0]).encode(),
        b'{"Id": "bus\x00 42", "Lat": 1, "Lng": 2}',
        b'{"Id": "\\u0000", "Lat": 1, "Lng": 2, "Ts": "2026-11-26T11:12:40Z"}',
        b"\x00\x00\x00",
        '{"Id": "\ud800"}'.encode("utf-8", errors="surrogatepass"),
        b'{"Id": "%s", "Lat": 1e400, "Lng": 2, "Ts": "2026-11-26T11:12:40Z"}'
        % str(trackers[1]).encode(),
        b"[" * 5000,
    ]
    lines = [valid[0], *hostile[:4], valid[1], go_clock, *hostile[4:], *valid[2:]]
    path = write_lines(tmp_path / "events.jsonl", lines)

    call_command("consume_events", "--source", "jsonl", "--path", str(path), "--batch-size", "4")

    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        "consume_events finished: 5 accepted (5 new, 0 already stored), 7 rejected"
    )
    assert set(trackers) <= set(Position.objects.values_list("tracker_id", flat=True))
    assert Position.objects.count() == 5
    assert RejectedEvent.objects.count() == 7
    assert (
        RejectedEvent.objects.get(source=f"{path}:3").body
        == '{"Id": "bus\\x00 42", "Lat": 1, "Lng": 2}'
    )


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_file_is_read_to_its_end_storing_every_valid_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    now = datetime.now(UTC)
    valid = data.draw(st.lists(valid_bodies(now), max_size=5), label="valid")
    hostile = data.draw(st.lists(hostile_bodies(now), min_size=1, max_size=8), label="hostile")
    lines = data.draw(st.permutations(valid + hostile), label="lines")
    path = write_lines(tmp_path_factory.mktemp("hostile") / "events.jsonl", lines)
    # What the file holds once cut at newlines, as the source reads it.
    sent = [line for line in path.read_bytes().split(b"\n") if line.rstrip(b"\r").strip()]
    before = Position.objects.count(), RejectedEvent.objects.count()
    out = io.StringIO()

    call_command("consume_events", "--source", "jsonl", "--path", str(path), stdout=out)

    accepted, rejected = map(
        int, re.findall(r"finished: (\d+) accepted .*, (\d+) rejected", out.getvalue())[0]
    )
    assert accepted + rejected == len(sent)
    assert RejectedEvent.objects.count() - before[1] == rejected
    for body in valid:
        event = parse_event(body, now=now, max_future=timedelta(0))
        assert Position.objects.filter(
            tracker_id=event.tracker_id, timestamp=event.timestamp
        ).exists()


def test_a_file_read_twice_is_accepted_twice_and_stored_once(
    tmp_path: Path, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = uuid.uuid4()
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            event_body(tracker_id=tracker, latitude=60, longitude=24, at=now - timedelta(seconds=n))
            for n in range(5)
        ],
    )
    call_command("consume_events", "--source", "jsonl", "--path", str(path))
    call_command("consume_events", "--source", "jsonl", "--path", str(path))

    first, second = capsys.readouterr().out.strip().splitlines()[-2:]
    assert first.startswith("consume_events finished: 5 accepted (5 new, 0 already stored)")
    assert second.startswith("consume_events finished: 5 accepted (0 new, 5 already stored)")
    assert Position.objects.count() == 5


def test_an_overlong_line_is_rejected_and_the_next_line_still_read(
    tmp_path: Path, now: datetime
) -> None:
    tracker = uuid.uuid4()
    huge = b'{"Id": "' + b"x" * 100_000 + b'"}'
    path = write_lines(
        tmp_path / "events.jsonl",
        [huge, event_body(tracker_id=tracker, latitude=1, longitude=2, at=now)],
    )

    call_command("consume_events", "--source", "jsonl", "--path", str(path))

    assert Position.objects.get().tracker_id == tracker
    rejected = RejectedEvent.objects.get()
    assert "longer than the limit" in rejected.reason and rejected.source.endswith(":1")


@pytest.mark.slow
def test_a_live_stream_on_standard_input_is_stored_as_it_arrives(
    tmp_path: Path, now: datetime
) -> None:
    env = support.base_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert support.manage(["migrate", "-v0"], env=env).returncode == 0
    count = [
        "shell",
        "-v0",
        "-c",
        "from tracking.models import Position; print(Position.objects.count())",
    ]
    process = subprocess.Popen(
        [support.PYTHON, "manage.py", "consume_events", "--source", "jsonl", "--path", "-"],
        cwd=support.ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdin is not None
    first = event_body(tracker_id=uuid.uuid4(), latitude=1, longitude=2, at=now)
    process.stdin.write(first + b"\n")
    process.stdin.flush()
    # The stream is still open, far from a full batch: the event is stored anyway.
    support.wait_until(
        lambda: support.manage(count, env=env).stdout.strip() == "1",
        timeout=20,
        what="the first event stored before the stream ends",
    )
    process.stdin.write(
        b"not json\n" + event_body(tracker_id=uuid.uuid4(), latitude=3, longitude=4, at=now)
    )
    process.stdin.close()  # the last line has no newline
    assert process.wait(timeout=30) == 0
    assert process.stdout is not None
    output = process.stdout.read()
    assert b"finished: 2 accepted (2 new, 0 already stored), 1 rejected" in output


def test_a_missing_file_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="cannot read --path /no/such/file"):
        call_command("consume_events", "--source", "jsonl", "--path", "/no/such/file")


def test_the_jsonl_source_needs_a_path() -> None:
    with pytest.raises(CommandError, match="needs --path"):
        call_command("consume_events", "--source", "jsonl")


@pytest.mark.slow
def test_sigterm_finishes_the_batch_commits_and_exits_0(tmp_path: Path) -> None:
    env = support.base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", TRACKING_PROGRESS_SECONDS="0.5"
    )
    assert support.manage(["migrate", "-v0"], env=env).returncode == 0
    log = tmp_path / "consume_events.log"
    command = [
        *(support.PYTHON, "manage.py", "consume_events", "--source", "simulator"),
        *("--trackers", "20", "--seed", "3"),
    ]
    with support.background(command, env=env, log=log) as process:
        support.wait_until(
            lambda: "lag median" in log.read_text(), timeout=30, what="a progress line"
        )
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text()

    assert process.returncode == 0, output
    assert "SIGTERM: finishing the current batch" in output
    assert "events/s" in output
    summary = [line for line in output.splitlines() if line.startswith("consume_events stopped:")]
    assert summary, output
    accepted = int(summary[0].split()[2])
    assert accepted > 0
    count = support.manage(
        [
            "shell",
            "-v0",
            "-c",
            "from tracking.models import Position; print(Position.objects.count())",
        ],
        env=env,
    )
    assert int(count.stdout.strip()) == accepted


@pytest.mark.slow
@pytest.mark.postgres
def test_sigterm_while_the_database_is_down_waits_for_it_and_loses_nothing(
    tmp_path: Path, now: datetime
) -> None:
    lines = [
        event_body(tracker_id=uuid.uuid4(), latitude=60.1, longitude=24.9, at=now)
        for _ in range(30)
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)
    with support.scratch_postgres_database() as database:
        env = support.base_env(DATABASE_URL=database)
        assert support.manage(["migrate", "-v0"], env=env).returncode == 0
        proxy, proxied = support.TcpProxy.in_front_of(database, default_port=5432)
        proxy.cut()
        process = subprocess.Popen(
            [
                support.PYTHON,
                "manage.py",
                "consume_events",
                "--source",
                "jsonl",
                "--path",
                str(path),
            ],
            cwd=support.ROOT,
            env={**env, "DATABASE_URL": proxied},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert process.stdout is not None
            seen = _read_until(process.stdout, "database unavailable, retrying the batch of 30")
            process.send_signal(signal.SIGTERM)
            seen += _read_until(process.stdout, "SIGTERM: the database is down")
            assert "the 30 events in hand are stored when it answers" in seen
            proxy.restore()
            rest, _ = process.communicate(timeout=60)
        finally:
            process.kill()
            proxy.stop()
        assert process.returncode == 0, seen + rest
        assert "30 accepted (30 new, 0 already stored), 0 rejected" in rest
        stored = support.manage(
            [
                "shell",
                "-v0",
                "-c",
                "from tracking.models import Position as P; print(P.objects.count())",
            ],
            env=env,
        )
        assert stored.stdout.strip() == "30"


def _read_until(stream: IO[str], text: str) -> str:
    """Lines of a process's output up to and including the first holding ``text``."""
    seen = ""
    for line in stream:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never came; the output was:\n{seen}")


def test_what_simulate_writes_is_consumed_without_a_rejection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.jsonl"
    call_command(
        "simulate",
        "--to",
        "jsonl",
        "--path",
        str(path),
        "--trackers",
        "12",
        "--duration",
        "5",
        "--seed",
        "2",
    )
    lines = path.read_bytes().splitlines()
    assert len(lines) >= 12 * 4

    call_command("consume_events", "--source", "jsonl", "--path", str(path))

    assert f"finished: {len(lines)} accepted ({len(lines)} new" in capsys.readouterr().out
    assert Position.objects.count() == len(lines)
    assert Tracker.objects.count() == 12
    assert not RejectedEvent.objects.exists()


def test_windows_line_endings_and_a_last_line_without_newline_are_read(
    tmp_path: Path, now: datetime
) -> None:
    bodies = [
        event_body(tracker_id=uuid.uuid4(), latitude=n, longitude=n, at=now) for n in range(3)
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(bodies[0] + b"\r\n" + bodies[1] + b"\r\n\r\n" + bodies[2])
    call_command("consume_events", "--source", "jsonl", "--path", str(path), "--batch-size", "2")
    assert sorted(Position.objects.values_list("latitude", flat=True)) == [0.0, 1.0, 2.0]
    assert not RejectedEvent.objects.exists()


def half_junk(now: datetime, count: int) -> list[bytes]:
    """``count`` valid bodies, each followed by a refused one: not JSON, then a
    ``Ts`` a day ahead, by turns."""
    lines = []
    for n in range(count):
        tracker = uuid.uuid4()
        lines.append(event_body(tracker_id=tracker, latitude=n, longitude=n, at=now))
        if n % 2:
            lines.append(event_body(tracker_id=tracker, latitude=n, longitude=n, at=now)[:20])
        else:
            ahead = now + timedelta(days=1)
            lines.append(event_body(tracker_id=tracker, latitude=n, longitude=n, at=ahead))
    return lines


@override_settings(TRACKING_REJECTED_STORE_PER_MINUTE=5)
def test_a_half_junk_file_stores_refusals_up_to_the_rate_and_counts_them_all_per_reason(
    tmp_path: Path,
    now: datetime,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    path = write_lines(tmp_path / "events.jsonl", half_junk(now, 20))

    call_command("consume_events", "--source", "jsonl", "--path", str(path), "--batch-size", "8")

    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(
        "consume_events finished: 20 accepted (20 new, 0 already stored), 20 rejected (40 events"
    )
    assert summary.endswith(
        "; rejected 20: 10 Ts in the future, 10 not JSON "
        "(15 not stored: over TRACKING_REJECTED_STORE_PER_MINUTE)"
    )
    assert Position.objects.count() == 20
    # The first five refusals are kept, with their lines; the rest only counted.
    assert sorted(RejectedEvent.objects.values_list("source", flat=True)) == sorted(
        f"{path}:{line}" for line in (2, 4, 6, 8, 10)
    )
    assert not [record for record in caplog.records if f"{path}:" in record.getMessage()]


def test_the_progress_line_sums_up_the_refusals_of_its_interval(
    now: datetime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracking.ingest.pipeline")
    read_end, write_end = os.pipe()
    stdin = io.TextIOWrapper(os.fdopen(read_end, "rb"))
    monkeypatch.setattr(sys, "stdin", stdin)

    def progress_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("progress: ")]

    def stream() -> None:
        try:
            os.write(write_end, b"\n".join(half_junk(now, 4)) + b"\n")
            support.wait_until(
                lambda: any("rejected 4:" in r.getMessage() for r in progress_lines()),
                timeout=20,
                what="a progress line summing up the refusals",
            )
            os.write(write_end, b"{oops\n[]\n")
        finally:
            os.close(write_end)

    writer = threading.Thread(target=stream)
    writer.start()
    try:
        call_command(
            "consume_events", "--source", "jsonl", "--path", "-", "--progress-seconds", "0.05"
        )
    finally:
        writer.join()
        stdin.close()

    with_refusals = [r for r in progress_lines() if "; rejected " in r.getMessage()]
    assert with_refusals[0].getMessage().endswith("; rejected 4: 2 Ts in the future, 2 not JSON")
    # Only intervals with refusals warn; the quiet ones are INFO.
    assert {r.levelno for r in with_refusals} == {logging.WARNING}
    assert {r.levelno for r in progress_lines() if r not in with_refusals} <= {logging.INFO}
    assert Position.objects.count() == 4
    assert RejectedEvent.objects.count() == 6
    assert not [r for r in caplog.records if "stdin:" in r.getMessage()]
