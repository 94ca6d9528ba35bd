from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.event_bodies import TRACKERS, arbitrary_texts, hostile_bodies, valid_bodies
from tracking.events import InvalidEvent, LocationEvent, parse_event

TRACKER = "6f1c2a4e-3b0d-4c7e-9a51-0e2d8f7b9c10"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def parse(body: object) -> LocationEvent:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_event(raw, now=NOW, max_future=timedelta(minutes=5))


def valid(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "Id": TRACKER,
        "Lat": 60.170218,
        "Lng": 24.940806,
        "Ts": "2026-11-26T11:12:40.1234567Z",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


def test_it_reads_the_protocol_example_keeping_latitude_and_longitude_apart() -> None:
    event = parse(valid())
    assert event.tracker_id == uuid.UUID(TRACKER)
    assert event.latitude == 60.170218
    assert event.longitude == 24.940806
    assert event.timestamp == datetime(2026, 11, 26, 11, 12, 40, 123456, tzinfo=UTC)
    assert event.speed is None and event.heading is None and event.accuracy is None


def test_it_does_not_swap_coordinates_when_latitude_is_out_of_range_for_a_longitude() -> None:
    # Lng 150 is a fine longitude but would be an impossible latitude.
    event = parse(valid(Lat=-33.86, Lng=151.21))
    assert (event.latitude, event.longitude) == (-33.86, 151.21)
    with pytest.raises(InvalidEvent, match=r"Lat 151\.21 is out of range"):
        parse(valid(Lat=151.21, Lng=-33.86))


def test_it_reports_the_timestamp_in_unix_milliseconds() -> None:
    event = parse(valid(Ts="1970-01-01T00:00:01.5Z"))
    assert event.timestamp_ms == 1500


def test_it_accepts_an_explicit_offset_and_converts_to_utc() -> None:
    event = parse(valid(Ts="2026-11-26T13:12:40+02:00"))
    assert event.timestamp == datetime(2026, 11, 26, 11, 12, 40, tzinfo=UTC)
    assert parse(valid(Ts="2026-11-26T11:12:40.5z")).timestamp.microsecond == 500_000
    assert parse(valid(Ts="2026-11-26 11:12:40.9999999Z")).timestamp.microsecond == 999_999


@pytest.mark.parametrize(
    ("stamp", "microsecond"),
    [
        ("2026-11-26T11:12:40.123456789Z", 123_456),  # Go's nine digits
        ("2026-11-26T11:12:40.12345678Z", 123_456),
        ("2026-11-26T11:12:40.999999999999999999999Z", 999_999),
        ("2026-11-26T11:12:40.1Z", 100_000),
        ("2026-11-26T11:12:40Z", 0),
    ],
)
def test_it_accepts_any_number_of_fractional_digits_keeping_microseconds(
    stamp: str, microsecond: int
) -> None:
    moment = parse(valid(Ts=stamp)).timestamp
    assert moment.replace(microsecond=0) == datetime(2026, 11, 26, 11, 12, 40, tzinfo=UTC)
    assert moment.microsecond == microsecond


def test_it_normalises_longitude_180_to_minus_180() -> None:
    assert parse(valid(Lng=180)).longitude == -180.0
    assert parse(valid(Lng=-180)).longitude == -180.0


def test_it_accepts_the_poles_and_integer_coordinates() -> None:
    assert parse(valid(Lat=90, Lng=0)).latitude == 90.0
    assert parse(valid(Lat=-90, Lng=0)).latitude == -90.0


def test_it_keeps_optional_speed_heading_and_accuracy() -> None:
    event = parse(valid(Speed=48.5, Heading=360, Accuracy=4))
    assert (event.speed, event.heading, event.accuracy) == (48.5, 0.0, 4.0)
    assert parse(valid(Speed=None)).speed is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe{}", "not UTF-8 JSON"),
        (b"[1, 2]", "JSON array, not an object"),
        (b'"text"', "JSON string, not an object"),
        (b'{"Lat": NaN}', "not UTF-8 JSON"),
        (valid(Id=...), "Id is missing"),
        (valid(Id=42), "Id must be a string"),
        (valid(Id="tracker-1"), "is not a UUID"),
        (valid(Lat=...), "Lat is missing"),
        (valid(Lng=...), "Lng is missing"),
        (valid(Lat="60.1"), "Lat must be a number, got a string"),
        (valid(Lat=True), "Lat must be a number, got a boolean"),
        (valid(Lat=None), "Lat must be a number, got a null"),
        (valid(Lat=90.0001), "Lat 90.0001 is out of range"),
        (valid(Lat=-91), "Lat -91 is out of range"),
        (valid(Lng=180.5), "Lng 180.5 is out of range"),
        (valid(Lng=-181), "Lng -181 is out of range"),
        (valid(Ts=...), "Ts is missing"),
        (valid(Ts=1764155560), "Ts must be a string"),
        (valid(Ts="2026-11-26T11:12:40"), "with an offset or Z"),
        (valid(Ts="2026-11-26"), "with an offset or Z"),
        (valid(Ts="2026-11-26T11:12:40.Z"), "with an offset or Z"),
        (valid(Ts="\uff12\uff10\uff12\uff16-11-26T11:12:40Z"), "with an offset or Z"),
        (valid(Ts="2026-02-30T11:12:40Z"), "not a valid date"),
        (valid(Ts="2026-11-26T12:06:00Z"), "in the future"),
        (valid(Speed=-1), "Speed -1 is out of range"),
        (
            b'{"Id": "%s", "Lat": 1, "Lng": 2, "Ts": "2026-11-26T11:12:40Z", "Speed": 1e400}'
            % TRACKER.encode(),
            "not UTF-8 JSON: number is infinity",
        ),
        (valid(Heading=361), "Heading 361 is out of range"),
        (valid(Accuracy="good"), "Accuracy must be a number"),
    ],
)
def test_it_rejects_a_body_that_breaks_a_rule_with_a_reason(body: object, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse(body)


def test_it_accepts_a_timestamp_just_inside_the_future_limit() -> None:
    assert parse(valid(Ts="2026-11-26T12:04:59Z")).timestamp.minute == 4


def test_an_event_stands_at_the_earlier_of_its_timestamp_and_its_receipt() -> None:
    assert parse(valid(Ts="2026-11-26T11:12:40Z")).ordered_at == datetime(
        2026, 11, 26, 11, 12, 40, tzinfo=UTC
    )
    ahead = parse(valid(Ts="2026-11-26T12:04:00Z"))
    assert ahead.timestamp.minute == 4 and ahead.ordered_at == NOW


def test_the_future_limit_is_measured_from_the_receipt() -> None:
    received = NOW - timedelta(hours=1)
    body = orjson.dumps(valid(Ts="2026-11-26T11:06:00Z"))
    with pytest.raises(InvalidEvent, match="more than 300 s in the future"):
        parse_event(body, now=received, max_future=timedelta(seconds=300))


def test_it_rejects_an_oversized_body_without_parsing_it() -> None:
    body = orjson.dumps(valid(Padding="x" * 100))
    with pytest.raises(InvalidEvent, match="longer than the limit of 64 bytes"):
        parse_event(body, now=NOW, max_future=timedelta(minutes=5), max_bytes=64)


def test_it_ignores_unknown_keys_for_forward_compatibility() -> None:
    assert parse(valid(Battery=87)).latitude == 60.170218


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_it_rejects_a_timestamp_whose_utc_is_outside_the_calendar(stamp: str) -> None:
    body = orjson.dumps({"Id": str(uuid.uuid4()), "Lat": 1, "Lng": 2, "Ts": stamp})
    with pytest.raises(InvalidEvent, match="outside the years 1 to 9999 in UTC"):
        parse_event(body, now=NOW, max_future=timedelta(seconds=300))


@given(
    body=hostile_bodies(NOW)
    | valid_bodies(NOW)
    | arbitrary_texts()
    | st.fixed_dictionaries(
        {
            "Id": st.uuids().map(str) | st.text(max_size=40),
            "Lat": st.floats() | st.integers() | st.text(max_size=5),
            "Lng": st.floats() | st.integers() | st.none(),
            "Ts": st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
            | st.text(max_size=40),
        },
        optional={"Speed": st.floats(), "Heading": st.floats(), "Accuracy": st.floats()},
    ).map(lambda fields: json.dumps(fields).encode())  # NaN, huge integers and all
)
def test_any_body_is_an_event_or_a_rejection_with_a_reason(body: bytes | str) -> None:
    try:
        event = parse_event(body, now=NOW, max_future=timedelta(seconds=300))
    except InvalidEvent as exc:
        assert str(exc)
    else:
        assert -90 <= event.latitude <= 90 and -180 <= event.longitude < 180
        assert event.timestamp.tzinfo is UTC
        assert event.timestamp <= NOW + timedelta(seconds=300)
        for value in (event.speed, event.heading, event.accuracy):
            assert value is None or math.isfinite(value)


@given(body=valid_bodies(NOW))
def test_every_body_a_device_writes_is_accepted(body: bytes) -> None:
    assert parse_event(body, now=NOW, max_future=timedelta(0)).tracker_id in TRACKERS
