from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import cases
from tests.conftest import event_body
from tracking.grid import Cell
from tracking.ingest.rejections import StoreAllowance
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import (
    BatchResult,
    ingest_batch,
    parse_batch,
    prune_rejected,
    register_trackers,
    rejected_prune_point,
    store_batch,
)
from tracking.models import Position, RejectedEvent, Tracker
from tracking.positions import LatestPosition

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


def test_pruning_deletes_the_oldest_a_chunk_at_a_time_and_keeps_the_newest(
    now: datetime,
) -> None:
    ingest_batch(events=[raw(f"bad {n}".encode(), origin=str(n)) for n in range(10)], now=now)
    up_to = rejected_prune_point(keep=3)
    assert up_to == RejectedEvent.objects.get(source="6").id
    # Rejected meanwhile: newer than the point, so kept whatever the chunks do.
    ingest_batch(events=[raw(b"bad 10", origin="10")], now=now)

    assert up_to is not None
    assert prune_rejected(up_to=up_to, chunk=4) == 4
    assert sorted(RejectedEvent.objects.values_list("source", flat=True), key=int) == [
        "4", "5", "6", "7", "8", "9", "10",
    ]  # fmt: skip
    assert prune_rejected(up_to=up_to, chunk=4) == 3
    assert prune_rejected(up_to=up_to, chunk=4) == 0
    assert sorted(RejectedEvent.objects.values_list("source", flat=True), key=int) == [
        "7", "8", "9", "10",
    ]  # fmt: skip
    assert rejected_prune_point(keep=4) is None


def test_refusals_beyond_the_allowance_are_counted_by_category_but_not_stored(
    now: datetime,
) -> None:
    tracker = uuid.uuid4()
    bodies = [b"{oops", b"[1]", b"{oops", at(tracker, now).body, b'{"Id": "bus-42"}']
    events = [raw(body, origin=str(n)) for n, body in enumerate(bodies)]
    allowance = StoreAllowance(per_minute=3)

    first = store_batch(parsed=parse_batch(events=events, now=now), now=now, allowance=allowance)
    second = store_batch(parsed=parse_batch(events=events, now=now), now=now, allowance=allowance)

    assert (first.accepted, first.rejected, first.not_stored) == (1, 4, 1)
    assert first.rejected_by_category == {"not-json": 2, "not-object": 1, "bad-id": 1}
    assert (second.rejected, second.not_stored) == (4, 4)
    # The first three refusals of the first batch, and nothing of the second.
    assert sorted(RejectedEvent.objects.values_list("source", flat=True)) == ["0", "1", "2"]
    assert Position.objects.filter(tracker_id=tracker).count() == 1


@given(
    bodies=st.lists(
        st.one_of(
            # NUL is left to the tests of storing what PostgreSQL refuses.
            st.binary(max_size=40).map(lambda body: body.replace(b"\x00", b"")),
            st.sampled_from([b"{oops", b"[]", b'{"Id": 1}']),
        ),
        max_size=30,
    ),
    valid=st.integers(0, 10),
    per_minute=st.integers(0, 20),
)
@settings(max_examples=25)
def test_whatever_arrives_stored_plus_only_counted_is_every_refusal(
    bodies: list[bytes], valid: int, per_minute: int
) -> None:
    now = timezone.now()
    good = [at(uuid.uuid4(), now).body for _ in range(valid)]
    events = [raw(body) for body in bodies + good]
    before = RejectedEvent.objects.count()

    result = store_batch(
        parsed=parse_batch(events=events, now=now),
        now=now,
        allowance=StoreAllowance(per_minute=per_minute),
    )

    stored = RejectedEvent.objects.count() - before
    assert result.accepted + result.rejected == len(events)
    assert sum(result.rejected_by_category.values()) == result.rejected
    assert stored == min(result.rejected, per_minute)
    assert stored + result.not_stored == result.rejected


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


def test_characters_no_database_stores_are_kept_as_escapes_in_rejected_events(
    now: datetime,
) -> None:
    # PostgreSQL refuses NUL in text, and no database takes a lone surrogate
    # (a file name that is not UTF-8 carries them into the origin).
    tracker = uuid.uuid4()
    events = [
        raw(b'{"Id": "a\x00b", "Lat": 1}', origin="nul in the body"),
        raw(b"\x00" * 3, origin="only NULs"),
        raw('{"Id": "\ud800"}'.encode("utf-8", errors="surrogatepass"), origin="CESU surrogate"),
        raw(b"not json", origin="file-\udcff.jsonl:4"),
        at(tracker, now),
    ]
    result = ingest_batch(events=events, now=now)

    assert (result.accepted, result.rejected) == (1, 4)
    assert Position.objects.get().tracker_id == tracker
    stored = {r.source: r for r in RejectedEvent.objects.all()}
    assert stored["nul in the body"].body == '{"Id": "a\\x00b", "Lat": 1}'
    assert stored["only NULs"].body == "\\x00\\x00\\x00"
    assert stored["only NULs"].body_bytes == 3
    assert stored["CESU surrogate"].body == '{"Id": "\\xed\\xa0\\x80"}'
    assert "file-\\udcff.jsonl:4" in stored


def test_a_report_stamped_ahead_is_passed_by_the_next_real_report(now: datetime) -> None:
    # A device whose clock ran four minutes ahead for one report, then was right.
    tracker_id = uuid.uuid4()
    ahead = ingest_batch(events=[at(tracker_id, now + timedelta(minutes=4), 60.0, 24.0)], now=now)
    real = ingest_batch(
        events=[at(tracker_id, now + timedelta(seconds=1), 60.5, 24.5)],
        now=now + timedelta(seconds=2),
    )
    later = ingest_batch(
        events=[at(tracker_id, now + timedelta(seconds=3), 60.6, 24.6)],
        now=now + timedelta(seconds=4),
    )

    assert [(p.latitude, p.timestamp) for p in ahead.moved] == [(60.0, now + timedelta(minutes=4))]
    assert [(p.latitude, p.timestamp) for p in real.moved] == [(60.5, now + timedelta(seconds=1))]
    assert [p.latitude for p in later.moved] == [60.6]
    tracker = Tracker.objects.get(id=tracker_id)
    assert (tracker.latitude, tracker.position_at) == (60.6, now + timedelta(seconds=3))
    # History keeps all three, the one stamped ahead too.
    assert Position.objects.filter(tracker=tracker).count() == 3


def test_a_report_stamped_ahead_does_not_pass_a_real_one_received_after_it(
    now: datetime,
) -> None:
    tracker_id = uuid.uuid4()
    ingest_batch(
        events=[at(tracker_id, now + timedelta(seconds=1), 60.0, 24.0)],
        now=now + timedelta(seconds=2),
    )
    result = ingest_batch(events=[at(tracker_id, now + timedelta(minutes=2), 61.0, 25.0)], now=now)
    # Received before the real report was (an older batch read late), it stands before it.
    assert result.moved == []
    assert Tracker.objects.get(id=tracker_id).latitude == 60.0


def test_in_one_batch_the_report_received_with_the_others_but_stamped_ahead_stands_first(
    now: datetime,
) -> None:
    # Both received at `now`: the one ahead stands at `now`, the real one at
    # its Ts, a second before; of two standing alike, the later Ts wins.
    tracker_id = uuid.uuid4()
    result = ingest_batch(
        events=[
            at(tracker_id, now + timedelta(minutes=3), 50.0, 20.0),
            at(tracker_id, now - timedelta(seconds=1), 60.0, 24.0),
        ],
        now=now,
    )
    assert [p.latitude for p in result.moved] == [50.0]


def test_the_event_hubs_enqueued_time_is_the_time_of_receipt(now: datetime) -> None:
    # A backlog read an hour late: each body is judged by when the hub took it.
    enqueued = now - timedelta(hours=1)
    tracker_id = uuid.uuid4()

    def hub_event(ts: datetime, latitude: float, received: datetime) -> RawEvent:
        body = event_body(tracker_id=tracker_id, latitude=latitude, longitude=24.0, at=ts)
        return RawEvent(body=body, origin="eventhub", received_at=received)

    result = ingest_batch(
        events=[
            hub_event(enqueued + timedelta(minutes=10), 10.0, enqueued),  # too far ahead then
            hub_event(enqueued + timedelta(minutes=4), 20.0, enqueued),  # ahead, within limit
            hub_event(enqueued + timedelta(seconds=30), 30.0, enqueued + timedelta(seconds=31)),
        ],
        now=now,
    )
    assert (result.accepted, result.rejected) == (2, 1)
    assert "more than 300 s in the future" in RejectedEvent.objects.get().reason
    assert Tracker.objects.get(id=tracker_id).latitude == 30.0


@pytest.mark.parametrize("case", cases.load("order")["cases"], ids=cases.case_id)
def test_the_latest_position_shows_the_report_of_every_order_case(
    case: dict[str, Any], now: datetime
) -> None:
    tracker_id = uuid.uuid4()
    for n, report in enumerate(case["reports"]):
        ingest_batch(
            events=[at(tracker_id, now + timedelta(milliseconds=report["stampMs"]), n, 0.0)],
            now=now + timedelta(milliseconds=report["receivedMs"]),
        )
    assert Tracker.objects.get(id=tracker_id).latitude == case["shows"]


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-01:00", "2026-01-01T00:00:00.999999999Z"]
)
@override_settings(TRACKING_HISTORY_DAYS=0)  # history kept whole: nothing is too old
def test_an_event_at_an_edge_of_the_calendar_is_stored(stamp: str, now: datetime) -> None:
    tracker_id = uuid.uuid4()
    body = b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "%s"}' % (
        str(tracker_id).encode(),
        stamp.encode(),
    )
    result = ingest_batch(events=[raw(body)], now=now)
    assert (result.accepted, result.rejected) == (1, 0)
    stored = Position.objects.get(tracker_id=tracker_id).timestamp
    assert stored == Tracker.objects.get(id=tracker_id).position_at
    assert [p.timestamp for p in result.moved] == [stored]


def test_results_merged_say_a_tracker_moved_in_both_left_the_cell_it_was_in_first(
    now: datetime,
) -> None:
    # A batch stored in parts (the database refused a row): the tracker went
    # A -> B in the first part and B -> C in the second; the hub must hear it
    # left A, where its snapshots still hold it.
    tracker_id = uuid.uuid4()
    a, b, c = Cell(24, 60), Cell(25, 60), Cell(26, 60)

    def moved(cell: Cell, previous: Cell) -> LatestPosition:
        return LatestPosition(
            tracker_id=tracker_id,
            latitude=60.5,
            longitude=cell.x + 0.5,
            timestamp=now,
            cell=cell,
            previous_cell=previous,
        )

    merged = BatchResult(moved=[moved(b, a)]).merged(BatchResult(moved=[moved(c, b)]))
    assert [(p.cell, p.previous_cell) for p in merged.moved] == [(c, a)]
