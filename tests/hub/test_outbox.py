"""A connection's outbox: in order while the client keeps up, newest per tracker while
it does not, and never past its bound."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from tracking.hub import protocol
from tracking.hub.outbox import Outbox

RS = "\x1e"


def located(tracker: str, step: int) -> str:
    return protocol.location_updated(
        tracker_id=tracker, latitude=60 + step / 1000, longitude=24.9, timestamp_ms=step
    )


def test_the_tracker_id_is_read_from_a_location_record_as_the_encoder_writes_it() -> None:
    tracker = str(uuid.uuid4())
    assert protocol.location_tracker_id(located(tracker, 1)) == tracker
    assert protocol.location_tracker_id(protocol.PING) is None
    assert (
        protocol.location_tracker_id(protocol.geofence_entered(tracker_id=tracker, geofence_id="g"))
        is None
    )


def test_while_the_client_keeps_up_deliveries_go_out_as_they_came() -> None:
    outbox = Outbox(max_chars=100_000)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    texts = [located(a, 1) + located(b, 1), located(a, 2)]
    for text in texts:
        assert outbox.add(text, behind=False)
    assert outbox.take() == "".join(texts)
    assert not outbox and outbox.chars == 0


def test_while_the_client_is_behind_a_newer_position_replaces_the_one_waiting() -> None:
    outbox = Outbox(max_chars=100_000)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    outbox.add(located(a, 1) + located(b, 1), behind=False)
    outbox.add(located(a, 2), behind=True)
    outbox.add(located(a, 3) + located(b, 3), behind=True)
    assert outbox.take() == located(a, 3) + located(b, 3)


def test_other_records_keep_their_order_and_a_waiting_ping_is_sent_once() -> None:
    outbox = Outbox(max_chars=100_000)
    tracker = str(uuid.uuid4())
    entered = protocol.geofence_entered(tracker_id=tracker, geofence_id="harbour")
    exited = protocol.geofence_exited(tracker_id=tracker, geofence_id="harbour")
    for text in (entered, protocol.PING, exited, protocol.PING):
        outbox.add(text, behind=True)
    assert outbox.take() == entered + exited + protocol.PING


def test_a_backlog_past_a_quarter_of_the_bound_is_kept_by_tracker_even_if_not_behind() -> None:
    tracker = str(uuid.uuid4())
    outbox = Outbox(max_chars=4 * len(located(tracker, 1)) * 3)
    for step in range(100):
        assert outbox.add(located(tracker, step), behind=False)
    assert outbox.take() == located(tracker, 99)


def test_more_trackers_than_the_bound_holds_overflow() -> None:
    record_size = len(located(str(uuid.uuid4()), 1))
    outbox = Outbox(max_chars=10 * record_size)
    results = [outbox.add(located(str(uuid.uuid4()), 1), behind=True) for _ in range(11)]
    assert results == [True] * 10 + [False]


@given(
    deliveries=st.lists(
        st.tuples(st.lists(st.integers(0, 30), min_size=1, max_size=5), st.booleans()),
        max_size=60,
    )
)
def test_whatever_arrives_the_outbox_holds_each_trackers_newest_position_within_its_count(
    deliveries: list[tuple[list[int], bool]],
) -> None:
    trackers = [f"00000000-0000-0000-0000-{n:012d}" for n in range(31)]
    outbox = Outbox(max_chars=1_000_000)
    newest: dict[str, str] = {}
    sent = 0
    for step, (numbers, behind) in enumerate(deliveries):
        text = "".join(located(trackers[n], step) for n in numbers)
        sent += text.count(RS)
        outbox.add(text, behind=behind)
        newest.update({trackers[n]: located(trackers[n], step) for n in numbers})
    counted = outbox.chars
    held = outbox.take()
    assert len(held) == counted
    # Every tracker's newest position is there; no more records than were sent.
    assert set(newest.values()) <= {r + RS for r in held.split(RS)[:-1]}
    assert held.count(RS) <= sent
