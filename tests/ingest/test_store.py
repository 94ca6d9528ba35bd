from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.test import override_settings

from tests.conftest import event_body
from tracking.grid import Cell
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch, prune_rejected, register_trackers
from tracking.models import Position, RejectedEvent, Tracker

pytestmark = pytest.mark.django_db

HELSINKI = (60.1699, 24.9384)


def raw(body: bytes, origin: str = "test") -> RawEvent:
    return RawEvent(body=body, origin=origin)


def at(
    tracker: uuid.UUID,
    moment: datetime,
    latitude: float = HELSINKI[0],
    longitude: float = HELSINKI[1],
) -> RawEvent:
    return raw(event_body(tracker_id=tracker, latitude=latitude, longitude=longitude, at=moment))


def test_it_registers_an_unknown_tracker_and_stores_its_position(now: datetime) -> None:
    tracker_id = uuid.uuid4()
    result = ingest_batch(events=[at(tracker_id, now, 60.17, 24.94)], now=now)

    tracker = Tracker.objects.get(id=tracker_id)
    assert tracker.name == f"Tracker {str(tracker_id)[:8]}"
    assert (tracker.latitude, tracker.longitude, tracker.position_at) == (60.17, 24.94, now)
    assert (tracker.cell_x, tracker.cell_y) == (24, 60)
    assert Position.objects.filter(tracker=tracker).count() == 1
    assert result.accepted == 1 and result.rejected == 0
    assert [(p.tracker_id, p.cell) for p in result.moved] == [(tracker_id, Cell(24, 60))]


def test_speed_and_heading_are_kept_when_reported(now: datetime) -> None:
    tracker_id = uuid.uuid4()
    body = event_body(
        tracker_id=tracker_id, latitude=1, longitude=2, at=now, Speed=42.0, Heading=90.0, Accuracy=5
    )
    ingest_batch(events=[raw(body)], now=now)
    tracker = Tracker.objects.get(id=tracker_id)
    assert (tracker.speed, tracker.heading) == (42.0, 90.0)
    assert Position.objects.get(tracker=tracker).accuracy == 5.0


def test_out_of_order_events_are_all_history_but_the_latest_position_is_the_newest(
    now: datetime,
) -> None:
    tracker_id = uuid.uuid4()
    events = [
        at(tracker_id, now - timedelta(seconds=1), 60.2, 24.2),
        at(tracker_id, now, 60.3, 24.3),
        at(tracker_id, now - timedelta(seconds=2), 60.1, 24.1),
    ]
    result = ingest_batch(events=events, now=now)

    tracker = Tracker.objects.get(id=tracker_id)
    assert (tracker.latitude, tracker.longitude, tracker.position_at) == (60.3, 24.3, now)
    assert Position.objects.filter(tracker=tracker).count() == 3
    # Only the newest position per tracker is published.
    assert [(p.latitude, p.longitude) for p in result.moved] == [(60.3, 24.3)]


def test_an_older_event_in_a_later_batch_does_not_move_the_tracker_back(now: datetime) -> None:
    tracker_id = uuid.uuid4()
    ingest_batch(events=[at(tracker_id, now, 60.3, 24.3)], now=now)
    result = ingest_batch(events=[at(tracker_id, now - timedelta(minutes=1), 50.0, 20.0)], now=now)

    tracker = Tracker.objects.get(id=tracker_id)
    assert (tracker.latitude, tracker.position_at) == (60.3, now)
    assert result.moved == []
    assert Position.objects.filter(tracker=tracker).count() == 2


def test_a_repeated_event_is_harmless(now: datetime) -> None:
    tracker_id = uuid.uuid4()
    event = at(tracker_id, now)
    first = ingest_batch(events=[event, event], now=now)
    replay = ingest_batch(events=[event], now=now)

    assert Position.objects.filter(tracker_id=tracker_id).count() == 1
    assert (first.accepted, first.new) == (2, 1)
    assert (replay.accepted, replay.new) == (1, 0)
    assert replay.moved == [] and replay.rejected == 0
    assert RejectedEvent.objects.count() == 0


def test_a_bad_body_in_a_batch_keeps_the_good_ones(now: datetime) -> None:
    good = [uuid.uuid4(), uuid.uuid4()]
    events = [
        at(good[0], now),
        raw(b'{"Id": "nope"}', origin="file.jsonl:2"),
        at(good[1], now),
        raw(b"\xff\xfe garbage", origin="file.jsonl:4"),
        raw(
            b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "0001-01-01T00:00:00+01:00"}'
            % str(good[0]).encode(),
            origin="file.jsonl:5",
        ),
    ]
    result = ingest_batch(events=events, now=now)

    assert result.accepted == 2 and result.rejected == 3
    assert set(Position.objects.values_list("tracker_id", flat=True)) == set(good)
    rejected = {r.source: r for r in RejectedEvent.objects.all()}
    assert set(rejected) == {"file.jsonl:2", "file.jsonl:4", "file.jsonl:5"}
    assert "outside the years 1 to 9999" in rejected["file.jsonl:5"].reason
    assert (
        "Id" in rejected["file.jsonl:2"].reason
        and rejected["file.jsonl:2"].body == '{"Id": "nope"}'
    )
    assert "not UTF-8 JSON" in rejected["file.jsonl:4"].reason
    assert rejected["file.jsonl:4"].body_bytes == len(b"\xff\xfe garbage")


@override_settings(TRACKING_REJECTED_BODY_CHARS=20)
def test_a_rejected_body_is_stored_truncated_with_its_full_size(now: datetime) -> None:
    body = b'{"Id": "' + b"x" * 500 + b'"}'
    ingest_batch(events=[raw(body)], now=now)
    rejected = RejectedEvent.objects.get()
    assert rejected.body == body[:20].decode()
    assert rejected.body_bytes == len(body)


@override_settings(TRACKING_AUTO_REGISTER=False)
def test_an_unknown_tracker_is_rejected_when_auto_registration_is_off(now: datetime) -> None:
    known = Tracker.objects.create(name="known")
    stranger = uuid.uuid4()
    result = ingest_batch(events=[at(known.id, now), at(stranger, now)], now=now)

    assert result.accepted == 1 and result.rejected == 1
    assert not Tracker.objects.filter(id=stranger).exists()
    assert "unknown tracker" in RejectedEvent.objects.get().reason


def test_an_inactive_trackers_events_are_rejected(now: datetime) -> None:
    tracker = Tracker.objects.create(name="parked", is_active=False)
    result = ingest_batch(events=[at(tracker.id, now)], now=now)
    assert result.rejected == 1 and result.moved == []
    assert "inactive" in RejectedEvent.objects.get().reason
    assert not Position.objects.exists()


def test_a_tracker_crossing_into_another_cell_is_published_to_the_new_cell(now: datetime) -> None:
    tracker_id = uuid.uuid4()
    ingest_batch(events=[at(tracker_id, now - timedelta(seconds=1), -17.0, 179.99)], now=now)
    result = ingest_batch(events=[at(tracker_id, now, -17.0, -179.99)], now=now)
    assert [p.cell for p in result.moved] == [Cell(-180, -17)]
    tracker = Tracker.objects.get(id=tracker_id)
    assert (tracker.cell_x, tracker.cell_y) == (-180, -17)
    # The cell it left is named, so the hub can tell that cell's viewers' processes.
    assert [p.left_cell for p in result.moved] == [Cell(179, -17)]


def test_a_first_position_or_a_move_within_a_cell_leaves_no_cell(now: datetime) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    ingest_batch(events=[at(first, now - timedelta(seconds=1))], now=now)
    result = ingest_batch(events=[at(first, now, HELSINKI[0] + 0.01), at(second, now)], now=now)
    assert {p.tracker_id: p.left_cell for p in result.moved} == {first: None, second: None}


def test_register_trackers_names_new_trackers_and_leaves_existing_ones(now: datetime) -> None:
    existing = Tracker.objects.create(name="renamed by an operator")
    fresh = uuid.uuid4()
    created = register_trackers(trackers=[(existing.id, "Sim 1"), (fresh, "Sim 2")])
    assert created == 1
    assert Tracker.objects.get(id=existing.id).name == "renamed by an operator"
    assert Tracker.objects.get(id=fresh).name == "Sim 2"


def test_prune_rejected_keeps_the_newest(now: datetime) -> None:
    ingest_batch(events=[raw(f"bad {n}".encode(), origin=str(n)) for n in range(10)], now=now)
    assert prune_rejected(keep=3) == 7
    assert sorted(RejectedEvent.objects.values_list("source", flat=True)) == ["7", "8", "9"]
    assert prune_rejected(keep=3) == 0


def test_history_written_through_the_orm_and_the_pipeline_is_the_same_row(now: datetime) -> None:
    # The pipeline writes history with plain SQL: its values must be stored
    # exactly as Django stores them, or the uniqueness check would miss.
    tracker = Tracker.objects.create()
    Position.objects.create(tracker=tracker, timestamp=now, latitude=1.0, longitude=2.0)
    ingest_batch(events=[at(tracker.id, now, 1.0, 2.0)], now=now)
    assert Position.objects.filter(tracker=tracker).count() == 1
    ingest_batch(events=[at(tracker.id, now + timedelta(microseconds=1), 1.0, 2.0)], now=now)
    stored = sorted(Position.objects.filter(tracker=tracker).values_list("timestamp", flat=True))
    assert stored == [now, now + timedelta(microseconds=1)]
