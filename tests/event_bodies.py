"""Hypothesis strategies for event bodies (docs/protocol.md §1): valid ones as
real devices write them, and hostile ones: arbitrary bytes and text, and
near-valid JSON objects with a field mutated, dropped, or given a value no
device should send (NUL, lone surrogates, numbers past a double, odd dates)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

# Trackers of the valid bodies: few, so that several events meet on one tracker.
TRACKERS = [uuid.UUID(int=0x5B0E2C1D_7F3A_4E8B_9C6D_2A1F0E9D8C00 + n) for n in range(4)]

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)

# JSON text that a JSON library would never write but a device might send.
odd_json = st.sampled_from(
    [
        "1e999",
        "-1e999",
        "123456789012345678901234567890",
        "-0",
        "1E-400",
        "NaN",
        "Infinity",
        '"\\u0000"',
        '"a\\u0000b"',
        '"\\ud800"',
        '"\\udc00x"',
        '"\u0000"',
        "[" * 40,
        '"' + "9" * 3000 + '"',
    ]
)


def _two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


# Timestamps of the right shape with any parts: year 0, month 13, hour 29,
# offsets past a day, fractions of any length, the edges of the calendar.
odd_timestamps = st.one_of(
    st.builds(
        lambda year, month, day, hour, minute, second, fraction, offset: (
            f"{year:04d}-{month}-{day}T{hour}:{minute}:{second}{fraction}{offset}"
        ),
        st.integers(0, 9999),
        _two(0, 13),
        _two(0, 32),
        _two(0, 25),
        _two(0, 61),
        _two(0, 61),
        st.text("0123456789", max_size=30).map(lambda digits: f".{digits}" if digits else ""),
        st.sampled_from(["Z", "z", "", "+00:00", "-00:00"])
        | st.builds(
            lambda sign, hours, minutes: f"{sign}{hours}:{minutes}",
            st.sampled_from("+-"),
            _two(0, 99),
            _two(0, 99),
        ),
    ),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.9999999-01:00",
            "9999-12-31T23:59:59.999999999Z",
            "\uff12\uff10\uff12\uff16-11-26T11:12:40Z",
        ]
    ),
    st.text(max_size=40),
)


def stamp(moment: datetime, *, digits: int, offset_minutes: int = 0) -> str:
    """``moment`` as a device writes it: ``digits`` fractional digits (0 to 9),
    in UTC (``Z``) or at an offset."""
    local = moment.astimezone(UTC) + timedelta(minutes=offset_minutes)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + (f"{local.microsecond:06d}" + "000")[:digits]
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def valid_bodies(now: datetime) -> st.SearchStrategy[bytes]:
    """Bodies every rule accepts, stamped within the hour before ``now``."""
    return st.builds(
        lambda tracker, latitude, longitude, ago, digits, offset, extra: json.dumps(
            {
                "Id": str(tracker),
                "Lat": latitude,
                "Lng": longitude,
                "Ts": stamp(now - ago, digits=digits, offset_minutes=offset),
                **extra,
            }
        ).encode(),
        st.sampled_from(TRACKERS),
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.timedeltas(timedelta(0), timedelta(hours=1)),
        st.integers(0, 9),
        st.sampled_from([0, 120, -300, 330]),
        st.fixed_dictionaries(
            {},
            optional={
                "Speed": st.floats(0, 500) | st.none(),
                "Heading": st.floats(0, 360) | st.none(),
                "Accuracy": st.floats(0, 1e6) | st.none(),
            },
        ),
    )


def _object_text(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in fields.items()) + "}"


def near_valid_bodies(now: datetime) -> st.SearchStrategy[bytes]:
    """A valid body with some fields replaced by hostile JSON, or dropped."""
    hostile_value = (
        json_values.map(lambda value: json.dumps(value)) | odd_json | odd_timestamps.map(json.dumps)
    )
    return st.builds(
        lambda body, changes, dropped: _object_text(
            {
                **{
                    key: json.dumps(value)
                    for key, value in json.loads(body).items()
                    if key not in dropped
                },
                **changes,
            }
        ).encode("utf-8", errors="surrogatepass"),
        valid_bodies(now),
        st.dictionaries(
            st.sampled_from(["Id", "Lat", "Lng", "Ts", "Speed", "Heading", "Accuracy", "Extra"]),
            hostile_value,
            min_size=1,
            max_size=3,
        ),
        st.sets(st.sampled_from(["Id", "Lat", "Lng", "Ts"]), max_size=1),
    )


# Any character, the ones no database stores often among them.
any_characters = st.characters(exclude_categories=[]) | st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\ufffe", "\n", "{", '"']
)


def arbitrary_texts() -> st.SearchStrategy[str]:
    return st.text(any_characters, max_size=80)


def arbitrary_bodies() -> st.SearchStrategy[bytes]:
    """Any bytes at all, and any text (lone surrogates and NUL included) as UTF-8 would carry it."""
    return st.binary(max_size=200) | arbitrary_texts().map(
        lambda text: text.encode("utf-8", errors="surrogatepass")
    )


def hostile_bodies(now: datetime) -> st.SearchStrategy[bytes]:
    return arbitrary_bodies() | near_valid_bodies(now)
