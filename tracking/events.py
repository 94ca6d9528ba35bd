"""Location events (docs/protocol.md §1): parse and validate one body; no Django import.

A device sends one UTF-8 JSON object per event, PascalCase keys::

    {"Id": "<uuid>", "Lat": 60.17, "Lng": 24.94, "Ts": "2026-11-26T11:12:40.1234567Z"}

``parse_event`` returns a ``LocationEvent`` or raises ``InvalidEvent`` with a
reason an operator can act on. Latitude and longitude are named everywhere and
never passed by position.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from tracking.grid import normalize_longitude

# ISO-8601 as devices write it: a date, a time with any number of fractional
# digits (.NET writes seven, Go up to nine), and an explicit offset or Z.
# Anything vaguer is refused rather than guessed at. ASCII digits only: \d
# would also match other scripts' digits.
_TIMESTAMP = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]+))?(?P<offset>Z|z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")


class InvalidEvent(ValueError):
    """An event body that breaks a rule of the contract; ``str()`` is the reason.

    ``category`` is a stable short key for the kind of rule broken
    (``not-json``, ``bad-ts``, ...), so refusals can be counted per kind.
    """

    def __init__(self, reason: str, *, category: str = "invalid") -> None:
        super().__init__(reason)
        self.category = category


@dataclass(frozen=True, slots=True)
class LocationEvent:
    tracker_id: uuid.UUID
    latitude: float
    longitude: float
    timestamp: datetime
    # Where the event stands among its tracker's events when deciding its
    # latest position: the earlier of ``timestamp`` and when it was received,
    # so a device clock running ahead cannot hold the position in the future.
    ordered_at: datetime
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None

    @property
    def timestamp_ms(self) -> int:
        """Unix milliseconds of ``timestamp``, as the hub sends it."""
        return unix_ms(self.timestamp)


def unix_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_event(
    body: bytes | str, *, now: datetime, max_future: timedelta, max_bytes: int = 16384
) -> LocationEvent:
    """Parse one event body, or raise ``InvalidEvent`` saying what is wrong.

    Whatever ``body`` holds, nothing else is raised. ``now`` is when the body
    was received (timezone-aware): the Event Hubs enqueued time where there is
    one, else the clock. Events stamped later than ``now + max_future`` are
    refused; an accepted event is ordered at the earlier of its ``Ts`` and
    ``now`` (docs/protocol.md §1.3).
    """
    if len(body) > max_bytes:
        raise InvalidEvent(
            f"body is longer than the limit of {max_bytes} bytes", category="too-long"
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"body is not UTF-8 JSON: {exc}", category="not-json") from None
    if not isinstance(data, dict):
        raise InvalidEvent(
            f"body is a JSON {_json_type(data)}, not an object", category="not-object"
        )

    tracker_id = _tracker_id(data.get("Id", _MISSING))
    latitude = _number(data, "Lat", low=-90.0, high=90.0, required=True)
    longitude = _number(data, "Lng", low=-180.0, high=180.0, required=True)
    assert latitude is not None and longitude is not None
    timestamp = _timestamp(data.get("Ts", _MISSING))
    if timestamp - now > max_future:
        raise InvalidEvent(
            f"Ts {data['Ts'][:64]} is more than {int(max_future.total_seconds())} s in the future",
            category="future-ts",
        )
    heading = _number(data, "Heading", low=0.0, high=360.0)
    return LocationEvent(
        tracker_id=tracker_id,
        latitude=latitude,
        longitude=normalize_longitude(longitude),
        timestamp=timestamp,
        ordered_at=min(timestamp, now),
        speed=_number(data, "Speed", low=0.0, high=math.inf),
        heading=None if heading is None else heading % 360.0,
        accuracy=_number(data, "Accuracy", low=0.0, high=math.inf),
    )


_MISSING = object()


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _tracker_id(value: object) -> uuid.UUID:
    if value is _MISSING:
        raise InvalidEvent("Id is missing", category="bad-id")
    if not isinstance(value, str):
        raise InvalidEvent(f"Id must be a string, got a {_json_type(value)}", category="bad-id")
    known = _KNOWN_IDS.get(value)
    if known is not None:
        return known
    if not _UUID.match(value):
        raise InvalidEvent(f"Id {value[:64]!r} is not a UUID", category="bad-id")
    if len(_KNOWN_IDS) >= _KNOWN_IDS_MAX:
        _KNOWN_IDS.clear()
    known = _KNOWN_IDS[value] = uuid.UUID(value)
    return known


# A fleet sends the same ids over and over: each is checked and parsed once.
_KNOWN_IDS: dict[str, uuid.UUID] = {}
_KNOWN_IDS_MAX = 200_000


def _number(
    data: dict[str, object],
    key: str,
    *,
    low: float,
    high: float,
    required: bool = False,
) -> float | None:
    value = data.get(key, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise InvalidEvent(f"{key} is missing", category=f"bad-{key.lower()}")
        return None
    # bool is an int in Python, but true is not a coordinate.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(
            f"{key} must be a number, got a {_json_type(value)}", category=f"bad-{key.lower()}"
        )
    number = float(value)
    # JSON has no infinity, but a number past a double's range reads as one.
    if not (math.isfinite(number) and low <= number <= high):
        raise InvalidEvent(
            f"{key} {value} is out of range [{low:g}, {high:g}]", category=f"bad-{key.lower()}"
        )
    return number


def _timestamp(value: object) -> datetime:
    if value is _MISSING:
        raise InvalidEvent("Ts is missing", category="bad-ts")
    if not isinstance(value, str):
        raise InvalidEvent(f"Ts must be a string, got a {_json_type(value)}", category="bad-ts")
    match = _TIMESTAMP.match(value)
    if match is None:
        raise InvalidEvent(
            f"Ts {value[:64]!r} is not ISO-8601 with an offset or Z "
            "(like 2026-11-26T11:12:40.1234567Z)",
            category="bad-ts",
        )
    if match["offset"] == "z":
        value = value[:-1] + "Z"
    # The pattern has pinned the shape; Python 3.11 reads it as it stands, of
    # any number of fractional digits keeping the microseconds (the digits
    # past the sixth are dropped, not rounded, as its documentation says).
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEvent(
            f"Ts {value[:64]!r} is not a valid date and time: {exc}", category="bad-ts"
        ) from None
    try:
        return moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid string whose UTC is before year 1.
        raise InvalidEvent(
            f"Ts {value[:64]!r} is outside the years 1 to 9999 in UTC", category="bad-ts"
        ) from None
