"""A small AMQP 1.0 codec: the type system, frames, performatives and messages.

Only what an Event Hubs stand-in needs, but complete for the wire types a client
may send. Decoding maps AMQP values onto plain Python values (``str``, ``bytes``,
``int``, ``list``, ``dict``...) plus the markers below; encoding needs the markers
where Python has one type for several AMQP ones (``UInt`` vs ``long``, ``Symbol``
vs ``string``).

Every performative and composite this module writes carries *all* of its fields,
trailing nulls included (see ``described_list``). AMQP 1.0 section 1.4 lets a
sender drop trailing nulls, and qpid-proton does, but the pure-Python AMQP stack
inside azure-eventhub 5.15.1 indexes fields by position and fails on such frames
(fixed upstream in Azure/azure-sdk-for-python pull request 47660, unreleased at
the time of writing). The real Event Hubs service writes every field, so writing
every field here is both what the SDK needs and what the service does.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# --- value markers -----------------------------------------------------------------


class Symbol(str):
    """An AMQP symbol (ASCII, used for keys and well-known names)."""

    __slots__ = ()


class UByte(int):
    __slots__ = ()


class UShort(int):
    __slots__ = ()


class UInt(int):
    __slots__ = ()


class ULong(int):
    __slots__ = ()


class Int(int):
    """A signed 32-bit integer (a plain ``int`` encodes as a 64-bit ``long``)."""

    __slots__ = ()


class Timestamp(int):
    """Milliseconds since the Unix epoch, UTC."""

    __slots__ = ()


@dataclass(frozen=True)
class Described:
    """A described value: a descriptor (usually a ``ULong`` code) and its value."""

    descriptor: Any
    value: Any


@dataclass(frozen=True)
class Array:
    """An AMQP array: every element has the same type, named by ``element``.

    ``element`` is one of ``"symbol"``, ``"string"``, ``"binary"``, ``"long"``,
    ``"uint"``, ``"ulong"``.
    """

    element: str
    items: tuple[Any, ...] = ()


# --- decoding ----------------------------------------------------------------------


class DecodeError(ValueError):
    """The bytes are not a valid AMQP encoding."""


_FIXED: Final[dict[int, tuple[int, struct.Struct | None]]] = {
    0x50: (1, struct.Struct(">B")),  # ubyte
    0x51: (1, struct.Struct(">b")),  # byte
    0x52: (1, struct.Struct(">B")),  # smalluint
    0x53: (1, struct.Struct(">B")),  # smallulong
    0x54: (1, struct.Struct(">b")),  # smallint
    0x55: (1, struct.Struct(">b")),  # smalllong
    0x60: (2, struct.Struct(">H")),  # ushort
    0x61: (2, struct.Struct(">h")),  # short
    0x70: (4, struct.Struct(">I")),  # uint
    0x71: (4, struct.Struct(">i")),  # int
    0x72: (4, struct.Struct(">f")),  # float
    0x73: (4, struct.Struct(">I")),  # char (UTF-32 code point)
    0x80: (8, struct.Struct(">Q")),  # ulong
    0x81: (8, struct.Struct(">q")),  # long
    0x82: (8, struct.Struct(">d")),  # double
    0x74: (4, None),  # decimal32, kept as raw bytes
    0x84: (8, None),  # decimal64
    0x94: (16, None),  # decimal128
}
_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")
_I64 = struct.Struct(">q")


def decode(data: bytes | memoryview, pos: int = 0) -> tuple[Any, int]:
    """Decode one value at ``pos``; return it and the position just after it."""
    try:
        constructor = data[pos]
    except IndexError:
        raise DecodeError("truncated AMQP value") from None
    return _decode_body(constructor, data, pos + 1)


def _decode_body(constructor: int, data: bytes | memoryview, pos: int) -> tuple[Any, int]:
    if pos > len(data):
        raise DecodeError("truncated AMQP value")
    if constructor == 0x00:
        descriptor, pos = decode(data, pos)
        value, pos = decode(data, pos)
        return Described(descriptor, value), pos
    if constructor == 0x40:
        return None, pos
    if constructor == 0x41:
        return True, pos
    if constructor == 0x42:
        return False, pos
    if constructor == 0x56:
        return data[pos] == 1, pos + 1
    if constructor in (0x43, 0x44):
        return 0, pos
    if constructor == 0x45:
        return [], pos
    if constructor == 0x83:
        return Timestamp(_I64.unpack_from(data, pos)[0]), pos + 8
    if constructor == 0x98:
        return uuid.UUID(bytes=bytes(data[pos : pos + 16])), pos + 16
    if constructor in _FIXED:
        width, fmt = _FIXED[constructor]
        end = pos + width
        if end > len(data):
            raise DecodeError("truncated AMQP value")
        if fmt is None:
            return bytes(data[pos:end]), end
        value = fmt.unpack_from(data, pos)[0]
        if constructor == 0x73:
            value = chr(value)
        return value, end
    if constructor in (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3):
        if constructor < 0xB0:
            size, pos = data[pos], pos + 1
        else:
            size, pos = _U32.unpack_from(data, pos)[0], pos + 4
        end = pos + size
        if end > len(data):
            raise DecodeError("truncated AMQP value")
        raw = bytes(data[pos:end])
        if constructor in (0xA0, 0xB0):
            return raw, end
        if constructor in (0xA1, 0xB1):
            return raw.decode("utf-8"), end
        return Symbol(raw.decode("ascii")), end
    if constructor in (0xC0, 0xC1, 0xD0, 0xD1):
        if constructor < 0xD0:
            size, count, body = data[pos], data[pos + 1], pos + 2
            end = pos + 1 + size
        else:
            size, count = _U32_PAIR.unpack_from(data, pos)
            body, end = pos + 8, pos + 4 + size
        items = []
        for _ in range(count):
            item, body = decode(data, body)
            items.append(item)
        if body != end:
            raise DecodeError("AMQP compound size does not match its contents")
        if constructor in (0xC0, 0xD0):
            return items, end
        return dict(zip(items[::2], items[1::2], strict=True)), end
    if constructor in (0xE0, 0xF0):
        if constructor == 0xE0:
            size, count, body = data[pos], data[pos + 1], pos + 2
            end = pos + 1 + size
        else:
            size, count = _U32_PAIR.unpack_from(data, pos)
            body, end = pos + 8, pos + 4 + size
        element = data[body]
        body += 1
        descriptor = None
        if element == 0x00:
            descriptor, body = decode(data, body)
            element = data[body]
            body += 1
        items = []
        for _ in range(count):
            item, body = _decode_body(element, data, body)
            items.append(item if descriptor is None else Described(descriptor, item))
        return items, end
    raise DecodeError(f"unknown AMQP constructor 0x{constructor:02x}")


# --- encoding ----------------------------------------------------------------------

_ARRAY_ELEMENTS: Final[dict[str, tuple[int, int]]] = {
    # element name: (constructor for short items, constructor for long items)
    "symbol": (0xA3, 0xB3),
    "string": (0xA1, 0xB1),
    "binary": (0xA0, 0xB0),
}


def encode(value: Any) -> bytes:
    """Encode one value; see the module docstring for the Python → AMQP mapping."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _encode_into(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(0x40)
    elif value is True:
        out.append(0x41)
    elif value is False:
        out.append(0x42)
    elif isinstance(value, Described):
        out.append(0x00)
        _encode_into(out, value.descriptor)
        _encode_into(out, value.value)
    elif isinstance(value, Symbol):
        _encode_variable(out, value.encode("ascii"), 0xA3, 0xB3)
    elif isinstance(value, str):
        _encode_variable(out, value.encode("utf-8"), 0xA1, 0xB1)
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode_variable(out, bytes(value), 0xA0, 0xB0)
    elif isinstance(value, int):
        _encode_int(out, value)
    elif isinstance(value, float):
        out.append(0x82)
        out += struct.pack(">d", value)
    elif isinstance(value, uuid.UUID):
        out.append(0x98)
        out += value.bytes
    elif isinstance(value, Array):
        _encode_array(out, value)
    elif isinstance(value, Mapping):
        body = bytearray()
        for key, item in value.items():
            _encode_into(body, key)
            _encode_into(body, item)
        _encode_compound(out, body, 2 * len(value), 0xC1, 0xD1)
    elif isinstance(value, list | tuple):
        if not value:
            out.append(0x45)
            return
        body = bytearray()
        for item in value:
            _encode_into(body, item)
        _encode_compound(out, body, len(value), 0xC0, 0xD0)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMQP")


def _encode_int(out: bytearray, value: int) -> None:
    if isinstance(value, Timestamp):
        out.append(0x83)
        out += struct.pack(">q", value)
    elif isinstance(value, UByte):
        out += struct.pack(">BB", 0x50, value)
    elif isinstance(value, UShort):
        out += struct.pack(">BH", 0x60, value)
    elif isinstance(value, UInt):
        if value == 0:
            out.append(0x43)
        elif value < 256:
            out += struct.pack(">BB", 0x52, value)
        else:
            out += struct.pack(">BI", 0x70, value)
    elif isinstance(value, ULong):
        # Section and performative descriptors must use smallulong (0x53): the
        # SDK's decoder reads the descriptor code at a fixed byte position.
        if value == 0:
            out.append(0x44)
        elif value < 256:
            out += struct.pack(">BB", 0x53, value)
        else:
            out += struct.pack(">BQ", 0x80, value)
    elif isinstance(value, Int):
        if -128 <= value <= 127:
            out += struct.pack(">Bb", 0x54, value)
        else:
            out += struct.pack(">Bi", 0x71, value)
    elif -128 <= value <= 127:
        out += struct.pack(">Bb", 0x55, value)
    else:
        out += struct.pack(">Bq", 0x81, value)


def _encode_variable(out: bytearray, raw: bytes, short: int, long: int) -> None:
    if len(raw) < 256:
        out += struct.pack(">BB", short, len(raw))
    else:
        out += struct.pack(">BI", long, len(raw))
    out += raw


def _encode_compound(
    out: bytearray, body: bytes | bytearray, count: int, short: int, long: int
) -> None:
    if len(body) + 1 < 256 and count < 256:
        out += struct.pack(">BBB", short, len(body) + 1, count)
    else:
        out += struct.pack(">BII", long, len(body) + 4, count)
    out += body


def _encode_array(out: bytearray, array: Array) -> None:
    body = bytearray()
    if array.element in _ARRAY_ELEMENTS:
        raws = [
            item.encode("ascii" if array.element == "symbol" else "utf-8")
            if isinstance(item, str)
            else bytes(item)
            for item in array.items
        ]
        short, long = _ARRAY_ELEMENTS[array.element]
        if all(len(raw) < 256 for raw in raws):
            body.append(short)
            for raw in raws:
                body.append(len(raw))
                body += raw
        else:
            body.append(long)
            for raw in raws:
                body += _U32.pack(len(raw)) + raw
    elif array.element in ("long", "uint", "ulong"):
        code, fmt = {"long": (0x81, ">q"), "uint": (0x70, ">I"), "ulong": (0x80, ">Q")}[
            array.element
        ]
        body.append(code)
        for item in array.items:
            body += struct.pack(fmt, item)
    else:
        raise TypeError(f"unsupported AMQP array element {array.element!r}")
    count = len(array.items)
    if len(body) + 1 < 256 and count < 256:
        out += struct.pack(">BBB", 0xE0, len(body) + 1, count)
    else:
        out += struct.pack(">BII", 0xF0, len(body) + 4, count)
    out += body


# --- composites and performatives --------------------------------------------------

# Descriptor code → number of fields in the AMQP 1.0 definition. ``described_list``
# refuses to write fewer, so no frame from the stub omits a trailing field.
FIELD_COUNTS: Final[dict[int, int]] = {
    0x10: 10,  # open
    0x11: 8,  # begin
    0x12: 14,  # attach
    0x13: 11,  # flow
    0x14: 11,  # transfer
    0x15: 6,  # disposition
    0x16: 3,  # detach
    0x17: 1,  # end
    0x18: 1,  # close
    0x1D: 3,  # error
    0x23: 2,  # received
    0x24: 0,  # accepted
    0x25: 1,  # rejected
    0x26: 0,  # released
    0x27: 3,  # modified
    0x28: 11,  # source
    0x29: 7,  # target
    0x40: 1,  # sasl-mechanisms
    0x41: 3,  # sasl-init
    0x44: 2,  # sasl-outcome
    0x70: 5,  # header
    0x73: 13,  # properties
}

OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
ERROR, ACCEPTED, REJECTED, SOURCE, TARGET = 0x1D, 0x24, 0x25, 0x28, 0x29
SASL_MECHANISMS, SASL_INIT, SASL_OUTCOME = 0x40, 0x41, 0x44


def described_list(code: int, *fields: Any) -> Described:
    """A composite with every one of its fields present (trailing ``None`` included)."""
    expected = FIELD_COUNTS[code]
    if len(fields) != expected:
        raise ValueError(f"composite 0x{code:02x} has {expected} fields, got {len(fields)}")
    return Described(ULong(code), list(fields))


def error(condition: str, description: str | None = None) -> Described:
    """An AMQP ``error`` composite (condition, description, info)."""
    return described_list(ERROR, Symbol(condition), description, None)


ACCEPTED_STATE: Final = described_list(ACCEPTED)


def fields_of(value: Any, code: int) -> list[Any]:
    """The fields of a received composite, padded to its full length.

    Peers may omit trailing nulls; padding here lets handlers index every field.
    """
    if not isinstance(value, Described) or not isinstance(value.value, list):
        raise DecodeError(f"expected composite 0x{code:02x}, got {value!r}")
    fields = list(value.value)
    return fields + [None] * (FIELD_COUNTS.get(code, len(fields)) - len(fields))


# --- frames ------------------------------------------------------------------------

AMQP_HEADER: Final = b"AMQP\x00\x01\x00\x00"
SASL_HEADER: Final = b"AMQP\x03\x01\x00\x00"
FRAME_AMQP, FRAME_SASL = 0, 1
_FRAME_HEADER = struct.Struct(">IBBH")
FRAME_HEADER_SIZE: Final = _FRAME_HEADER.size


def frame(
    channel: int, performative: Described | bytes, payload: bytes = b"", kind: int = FRAME_AMQP
) -> bytes:
    """One frame: the 8-byte header, the performative (or its encoding), then any payload."""
    body = performative if isinstance(performative, bytes) else encode(performative)
    return _FRAME_HEADER.pack(8 + len(body) + len(payload), 2, kind, channel) + body + payload


@dataclass(frozen=True)
class Frame:
    """A received frame. ``performative`` is ``None`` for an empty (heartbeat) frame."""

    kind: int
    channel: int
    code: int | None
    fields: list[Any]
    payload: bytes


def parse_frame(data: bytes | memoryview) -> Frame:
    """Parse one complete frame (header included)."""
    size, doff, kind, channel = _FRAME_HEADER.unpack_from(data, 0)
    if size != len(data) or doff < 2:
        raise DecodeError("malformed frame header")
    start = doff * 4
    if start == size:
        return Frame(kind, channel, None, [], b"")
    performative, end = decode(data, start)
    if not isinstance(performative, Described) or not isinstance(performative.descriptor, int):
        raise DecodeError("frame body is not a described performative")
    code = int(performative.descriptor)
    return Frame(kind, channel, code, fields_of(performative, code), bytes(data[end:size]))


def frame_size(header: bytes | bytearray | memoryview) -> int:
    """The total size of the frame whose first 8 bytes are ``header``."""
    return int(_U32.unpack_from(header, 0)[0])


# --- messages ----------------------------------------------------------------------

HEADER_SECTION, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES = 0x70, 0x71, 0x72, 0x73
APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x74, 0x75, 0x76, 0x77, 0x78
BATCH_MESSAGE_FORMAT: Final = 0x80013700


@dataclass
class ParsedMessage:
    """An AMQP message split into its sections.

    ``bare`` holds the encoded bare message (properties, application properties,
    body) and any footer exactly as received, so an intermediary can pass it on
    unaltered, as the specification requires.
    """

    header: bytes = b""
    delivery_annotations: dict[Any, Any] = field(default_factory=dict)
    message_annotations: dict[Any, Any] = field(default_factory=dict)
    properties: list[Any] = field(default_factory=list)
    application_properties: dict[Any, Any] = field(default_factory=dict)
    data: list[bytes] = field(default_factory=list)
    value: Any = None
    bare: bytes = b""

    def property(self, index: int) -> Any:
        """Field ``index`` of the properties section (0 message-id, 4 reply-to, ...)."""
        return self.properties[index] if index < len(self.properties) else None


def parse_message(payload: bytes | memoryview) -> ParsedMessage:
    """Split an encoded message into its sections; raise ``DecodeError`` if malformed."""
    message = ParsedMessage()
    pos, bare_start = 0, None
    while pos < len(payload):
        start = pos
        section, pos = decode(payload, pos)
        if not isinstance(section, Described) or not isinstance(section.descriptor, int):
            raise DecodeError("message section is not described")
        code = int(section.descriptor)
        if code == HEADER_SECTION:
            message.header = bytes(payload[start:pos])
        elif code == DELIVERY_ANNOTATIONS:
            message.delivery_annotations = dict(section.value or {})
        elif code == MESSAGE_ANNOTATIONS:
            message.message_annotations = dict(section.value or {})
        else:
            if bare_start is None:
                bare_start = start
            if code == PROPERTIES:
                message.properties = list(section.value or [])
            elif code == APPLICATION_PROPERTIES:
                message.application_properties = dict(section.value or {})
            elif code == DATA:
                message.data.append(bytes(section.value))
            elif code in (AMQP_VALUE, AMQP_SEQUENCE):
                message.value = section.value
            elif code != FOOTER:
                raise DecodeError(f"unknown message section 0x{code:02x}")
    message.bare = bytes(payload[bare_start:]) if bare_start is not None else b""
    return message


def section(code: int, value: Any) -> bytes:
    """One encoded message section."""
    return encode(Described(ULong(code), value))


def properties_section(
    *, message_id: Any = None, correlation_id: Any = None, reply_to: str | None = None
) -> bytes:
    """A properties section with all thirteen fields written."""
    fields: list[Any] = [None] * FIELD_COUNTS[PROPERTIES]
    fields[0], fields[4], fields[5] = message_id, reply_to, correlation_id
    return section(PROPERTIES, fields)


def data_message(body: bytes, *, application_properties: Mapping[str, Any] | None = None) -> bytes:
    """A bare message with one data section (and application properties if given)."""
    parts = []
    if application_properties:
        parts.append(section(APPLICATION_PROPERTIES, dict(application_properties)))
    parts.append(section(DATA, body))
    return b"".join(parts)


def symbol_array(names: Iterable[str]) -> Array:
    return Array("symbol", tuple(names))
