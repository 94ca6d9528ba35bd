"""The SignalR JSON hub protocol, version 1: a pure codec, no Django import.

Public specification: ``src/SignalR/docs/specs/HubProtocol.md`` in the
``dotnet/aspnetcore`` repository. Every record is a JSON object followed by
the record separator ``0x1E``; one WebSocket message may carry several. The
first record from a client is the handshake; after it, records carry a
``type``. Only what this hub needs is modelled: invocations from the client,
completions, pings and close from the server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from tracking.events import unix_ms
from tracking.positions import LatestPosition

RECORD_SEPARATOR = "\x1e"
PROTOCOL_NAME = "json"
# As in ASP.NET Core, any version up to the newest is accepted: version 2 only
# adds messages for stateful reconnect, which this hub never negotiates, and
# some clients (signalrcore) announce version 0.
SUPPORTED_VERSIONS = frozenset({0, 1, 2})


class MessageType(IntEnum):
    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


class ProtocolError(ValueError):
    """A record that is not valid hub protocol; the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    protocol: str
    version: int


@dataclass(frozen=True, slots=True)
class Invocation:
    """A client's call. Without an ``invocation_id`` it expects no completion."""

    target: str
    arguments: list[Any]
    invocation_id: str | None = None
    stream_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamInvocation:
    invocation_id: str
    target: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A record the hub has no use for (stream items, cancels, completions)."""

    type: int


HubMessage = Invocation | StreamInvocation | Ping | Close | Ignored


class RecordBuffer:
    """Splits incoming text into records, holding back an unfinished tail.

    Clients send whole records per WebSocket message, but nothing in the
    transport forbids splitting one, so a partial tail waits for the next
    message, up to ``max_chars`` in all.
    """

    def __init__(self, *, max_chars: int) -> None:
        self._pending = ""
        self._max_chars = max_chars

    def feed(self, text: str) -> list[str]:
        data = self._pending + text if self._pending else text
        *records, self._pending = data.split(RECORD_SEPARATOR)
        if len(self._pending) > self._max_chars:
            raise ProtocolError(
                f"a record is longer than the maximum message size of {self._max_chars} bytes"
            )
        return records


def parse_handshake(record: str) -> HandshakeRequest:
    """Read the client's handshake; raise ``ProtocolError`` with the reason to send back."""
    data = _object(record, what="handshake")
    protocol, version = data.get("protocol"), data.get("version")
    if not isinstance(protocol, str):
        raise ProtocolError("the handshake has no protocol name")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError("the handshake has no protocol version")
    if protocol != PROTOCOL_NAME:
        raise ProtocolError(f"Requested protocol '{protocol}' is not available.")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"The server does not support version {version} of the '{protocol}' protocol."
        )
    return HandshakeRequest(protocol=protocol, version=version)


def parse_message(record: str) -> HubMessage:
    """Read one record after the handshake."""
    data = _object(record, what="message")
    kind = data.get("type")
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise ProtocolError("a message has no integer 'type'")
    if kind == MessageType.INVOCATION:
        return _invocation(data)
    if kind == MessageType.STREAM_INVOCATION:
        return StreamInvocation(
            invocation_id=_required_string(data, "invocationId"),
            target=_required_string(data, "target"),
        )
    if kind == MessageType.PING:
        return Ping()
    if kind == MessageType.CLOSE:
        error = data.get("error")
        return Close(error=error if isinstance(error, str) else None)
    if kind in (
        MessageType.STREAM_ITEM,
        MessageType.COMPLETION,
        MessageType.CANCEL_INVOCATION,
    ):
        return Ignored(type=kind)
    if kind in (MessageType.ACK, MessageType.SEQUENCE):
        raise ProtocolError("stateful reconnect was not negotiated")
    raise ProtocolError(f"unknown message type {kind}")


def _invocation(data: dict[str, Any]) -> Invocation:
    invocation_id = data.get("invocationId")
    if invocation_id is not None and not isinstance(invocation_id, str):
        raise ProtocolError("'invocationId' must be a string")
    arguments = data.get("arguments", [])
    if not isinstance(arguments, list):
        raise ProtocolError("'arguments' must be an array")
    stream_ids = data.get("streamIds") or []
    if not isinstance(stream_ids, list) or not all(isinstance(s, str) for s in stream_ids):
        raise ProtocolError("'streamIds' must be an array of strings")
    return Invocation(
        target=_required_string(data, "target"),
        arguments=arguments,
        invocation_id=invocation_id,
        stream_ids=tuple(stream_ids),
    )


def check_server_records(text: str) -> None:
    """Raise ``ProtocolError`` unless ``text`` is what the server sends viewers:
    whole invocation records, as ``publish_locations`` writes them. Checked
    where such text arrives from outside the process (Redis), so that a
    malformed message is dropped there rather than breaking every client that
    would receive it."""
    *records, tail = text.split(RECORD_SEPARATOR)
    if not records or tail:
        raise ProtocolError("the message does not end with a record separator")
    for record in records:
        data = _object(record, what="record")
        if data.get("type") != MessageType.INVOCATION or not isinstance(data.get("target"), str):
            raise ProtocolError("a record is not an invocation with a target")
        if not isinstance(data.get("arguments"), list):
            raise ProtocolError("a record has no list of arguments")


def _object(record: str, *, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the {what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"the {what} is not a JSON object")
    return data


def _required_string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"'{key}' must be a string")
    return value


# --- Encoding ------------------------------------------------------------------
# Records are built as bytes by orjson and joined; the hub sends them as text.

HANDSHAKE_OK = "{}" + RECORD_SEPARATOR
PING = '{"type":6}' + RECORD_SEPARATOR


def _record(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode() + RECORD_SEPARATOR


def handshake_error(message: str) -> str:
    return _record({"error": message})


def invocation(target: str, arguments: Sequence[Any]) -> str:
    """A server-to-client call that expects no answer."""
    return _record({"type": MessageType.INVOCATION, "target": target, "arguments": arguments})


def completion(invocation_id: str, *, result: Any = None) -> str:
    return _record(
        {
            "type": MessageType.COMPLETION,
            "invocationId": invocation_id,
            "result": result,
        }
    )


def completion_error(invocation_id: str, error: str) -> str:
    return _record({"type": MessageType.COMPLETION, "invocationId": invocation_id, "error": error})


def close(error: str | None = None, *, allow_reconnect: bool = False) -> str:
    data: dict[str, Any] = {"type": MessageType.CLOSE}
    if error is not None:
        data["error"] = error
    if allow_reconnect:
        data["allowReconnect"] = True
    return _record(data)


def split_records(text: str, max_chars: int) -> list[str]:
    """``text``, whole records, cut into pieces of at most ``max_chars``
    between records (a record longer than that is a piece of its own)."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = text.rfind(RECORD_SEPARATOR, start, start + max_chars)
        if end < 0:  # one record longer than max_chars
            end = text.find(RECORD_SEPARATOR, start + max_chars)
            end = len(text) - 1 if end < 0 else end
        pieces.append(text[start : end + 1])
        start = end + 1
    return pieces


def location_updated(
    *, tracker_id: str, latitude: float, longitude: float, timestamp_ms: int
) -> str:
    """``locationUpdated(trackerId, latitude, longitude, timestamp)``: latitude first."""
    return invocation(
        "locationUpdated", [tracker_id, float(latitude), float(longitude), timestamp_ms]
    )


# How every ``locationUpdated`` record this server writes begins, up to its tracker id.
_LOCATION_PREFIX = '{"type":1,"target":"locationUpdated","arguments":["'


def location_tracker_id(record: str) -> str | None:
    """The tracker id of a ``locationUpdated`` record as ``location_updated``
    writes it, or None for any other record; read without decoding the JSON,
    as a slow connection's outbox does for every record it holds."""
    if not record.startswith(_LOCATION_PREFIX):
        return None
    end = record.find('"', len(_LOCATION_PREFIX))
    return record[len(_LOCATION_PREFIX) : end] if end > 0 else None


def location_record(position: LatestPosition) -> str:
    """The ``locationUpdated`` record of a tracker's latest position: the one
    encoding that live updates and join snapshots share."""
    return location_updated(
        tracker_id=str(position.tracker_id),
        latitude=position.latitude,
        longitude=position.longitude,
        timestamp_ms=unix_ms(position.timestamp),
    )


# How every record ``location_record`` writes begins (orjson keeps the keys' order).
_LOCATION_PREFIX = '{"type":1,"target":"locationUpdated","arguments":["'


def location_records(records: str) -> Iterator[tuple[str, int, str]]:
    """``(tracker id, timestamp ms, record)`` of each ``locationUpdated``
    record in ``records`` as ``location_record`` writes them; anything else
    is skipped."""
    start = 0
    while (end := records.find(RECORD_SEPARATOR, start)) >= 0:
        record = records[start : end + 1]
        start = end + 1
        if not record.startswith(_LOCATION_PREFIX):
            continue
        id_end = record.find('"', len(_LOCATION_PREFIX))
        try:
            timestamp_ms = int(record[record.rindex(",") + 1 : record.rindex("]")])
        except ValueError:
            continue
        if id_end > 0:
            yield record[len(_LOCATION_PREFIX) : id_end], timestamp_ms, record


def geofence_entered(*, tracker_id: str, geofence_id: str) -> str:
    return invocation("geofenceEntered", [tracker_id, geofence_id])


def geofence_exited(*, tracker_id: str, geofence_id: str) -> str:
    return invocation("geofenceExited", [tracker_id, geofence_id])


def geofences_changed(*, geofence_ids: Sequence[str]) -> str:
    """Fences were added, edited, switched on or off or deleted: refetch them."""
    return invocation("geofencesChanged", [list(geofence_ids)])


def overview_updated(*, overview: dict[str, Any]) -> str:
    """``overviewUpdated(overview)``: the counted trackers by area (docs/protocol.md §3.11)."""
    return invocation("overviewUpdated", [overview])


# How every record ``overview_updated`` writes begins.
_OVERVIEW_PREFIX = '{"type":1,"target":"overviewUpdated",'


def overview_updated_of(*, area_degrees: int, total: int, areas: Sequence[str]) -> str:
    """The record ``overview_updated`` writes, from areas encoded apart
    (``json_text`` of each): an area in many views is encoded once."""
    head = orjson.dumps({"areaDegrees": area_degrees, "total": total}).decode()[:-1]
    return (
        f'{_OVERVIEW_PREFIX}"arguments":[{head},"areas":[{",".join(areas)}]}}]}}{RECORD_SEPARATOR}'
    )


def json_text(value: Any) -> str:
    """``value`` as JSON, as every record here writes it."""
    return orjson.dumps(value).decode()


def is_overview_record(record: str) -> bool:
    """Whether ``record`` is an ``overviewUpdated`` record as ``overview_updated`` writes it."""
    return record.startswith(_OVERVIEW_PREFIX)
