from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tracking.events import InvalidEvent, parse_event
from tracking.ingest.rejections import CATEGORY_LABELS, RejectionCounts, StoreAllowance

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 11, 15, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_allowance_stores_up_to_the_rate_then_nothing_until_the_minute_is_over() -> None:
    clock = FakeClock()
    allowance = StoreAllowance(per_minute=10, clock=clock)
    assert allowance.take(4) == 4
    assert allowance.take(20) == 6
    clock.now += 59
    assert allowance.take(5) == 0
    clock.now += 1
    assert allowance.take(25) == 10


def test_an_allowance_of_zero_stores_nothing() -> None:
    allowance = StoreAllowance(per_minute=0, clock=FakeClock())
    assert allowance.take(1) == 0
    assert allowance.take(1000) == 0


def test_the_counts_read_largest_first_with_what_was_not_stored() -> None:
    counts = RejectionCounts()
    counts.add({"future-ts": 1900, "not-json": 3000}, not_stored=4000)
    counts.add({"not-json": 100, "database": 2}, not_stored=990)
    assert counts.describe() == (
        "rejected 5002: 3100 not JSON, 1900 Ts in the future, 2 database "
        "(4990 not stored: over TRACKING_REJECTED_STORE_PER_MINUTE)"
    )


def test_counts_with_everything_stored_say_nothing_of_the_rate() -> None:
    counts = RejectionCounts()
    counts.add({"bad-id": 2}, not_stored=0)
    assert counts.describe() == "rejected 2: 2 bad Id"
    assert RejectionCounts().describe() == ""


_NEAR_VALID = st.fixed_dictionaries(
    {},
    optional={
        "Id": st.one_of(
            st.uuids().map(str), st.text(max_size=40), st.integers(-(2**63), 2**63 - 1), st.none()
        ),
        "Lat": st.one_of(st.floats(allow_nan=False), st.text(max_size=5), st.none()),
        "Lng": st.one_of(st.floats(allow_nan=False), st.booleans(), st.none()),
        "Ts": st.one_of(
            st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat()),
            st.text(max_size=30),
            st.integers(-(2**63), 2**63 - 1),
        ),
        "Speed": st.one_of(st.floats(allow_nan=False), st.text(max_size=3)),
        "Heading": st.one_of(st.floats(allow_nan=False), st.none()),
        "Accuracy": st.one_of(
            st.floats(allow_nan=False), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2)
        ),
    },
).map(orjson.dumps)


@given(body=st.one_of(st.binary(max_size=300), _NEAR_VALID))
def test_every_refusal_is_counted_under_a_category_an_operator_can_read(body: bytes) -> None:
    try:
        parse_event(body, now=NOW, max_future=timedelta(minutes=5), max_bytes=200)
    except InvalidEvent as exc:
        assert exc.category in CATEGORY_LABELS, (exc.category, str(exc))


def test_the_protocol_document_names_every_kind_of_refusal_as_the_progress_line_does() -> None:
    doc = " ".join((ROOT / "docs" / "protocol.md").read_text().split())
    sentence = doc.split("The kinds, as these lines name them: ", 1)[1].split(". ", 1)[0]
    assert set(re.findall(r"\*([^*]+)\*", sentence)) == set(CATEGORY_LABELS.values())
