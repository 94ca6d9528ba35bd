from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracking.hub import protocol as hub_protocol
from tracking.hub.protocol import (
    Close,
    Ignored,
    Invocation,
    Ping,
    ProtocolError,
    RecordBuffer,
    StreamInvocation,
    parse_handshake,
    parse_message,
)

RS = "\x1e"


def decode(text: str) -> list[dict[str, object]]:
    assert text.endswith(RS)
    return [orjson.loads(part) for part in text.split(RS)[:-1]]


def test_a_json_handshake_of_any_version_up_to_2_is_accepted() -> None:
    assert parse_handshake('{"protocol":"json","version":1}').version == 1
    assert parse_handshake('{"protocol":"json","version":2}').version == 2
    assert parse_handshake('{"protocol":"json","version":0}').version == 0
    assert hub_protocol.HANDSHAKE_OK == "{}" + RS


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (
            '{"protocol":"messagepack","version":1}',
            "Requested protocol 'messagepack' is not available.",
        ),
        ('{"protocol":"json","version":3}', "does not support version 3"),
        ('{"protocol":"json"}', "no protocol version"),
        ('{"version":1}', "no protocol name"),
        ("[]", "not a JSON object"),
        ("{protocol", "not valid JSON"),
    ],
)
def test_a_bad_handshake_is_refused_with_a_reason(record: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_handshake(record)


def test_a_handshake_error_is_one_record_with_the_reason() -> None:
    assert decode(hub_protocol.handshake_error("nope")) == [{"error": "nope"}]


def test_an_invocation_is_read_with_its_id_target_and_arguments() -> None:
    message = parse_message(
        '{"type":1,"invocationId":"7","target":"updateMapGridGroups","arguments":[[[24,60]],[]]}'
    )
    assert message == Invocation(
        target="updateMapGridGroups", arguments=[[[24, 60]], []], invocation_id="7"
    )


def test_an_invocation_without_id_is_fire_and_forget() -> None:
    message = parse_message('{"type":1,"target":"x","arguments":[]}')
    assert isinstance(message, Invocation) and message.invocation_id is None


def test_other_message_types_are_recognised() -> None:
    assert parse_message('{"type":6}') == Ping()
    assert parse_message('{"type":7,"error":"bye"}') == Close(error="bye")
    assert parse_message(
        '{"type":4,"invocationId":"1","target":"s","arguments":[]}'
    ) == StreamInvocation(invocation_id="1", target="s")
    assert parse_message('{"type":5,"invocationId":"1"}') == Ignored(type=5)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("not json", "not valid JSON"),
        ('"text"', "not a JSON object"),
        ('{"target":"x"}', "no integer 'type'"),
        ('{"type":"1"}', "no integer 'type'"),
        ('{"type":1,"arguments":[]}', "'target' must be a string"),
        ('{"type":1,"target":"x","arguments":{}}', "'arguments' must be an array"),
        (
            '{"type":1,"invocationId":7,"target":"x","arguments":[]}',
            "'invocationId' must be a string",
        ),
        ('{"type":1,"target":"x","arguments":[],"streamIds":[1]}', "'streamIds'"),
        ('{"type":8,"sequenceId":1}', "stateful reconnect"),
        ('{"type":99}', "unknown message type 99"),
    ],
)
def test_a_malformed_message_is_a_protocol_error(record: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_message(record)


def test_location_updated_puts_latitude_before_longitude_as_floats() -> None:
    record = hub_protocol.location_updated(
        tracker_id="t", latitude=60, longitude=24.5, timestamp_ms=1500
    )
    [message] = decode(record)
    assert message == {"type": 1, "target": "locationUpdated", "arguments": ["t", 60.0, 24.5, 1500]}
    assert '"arguments":["t",60.0,24.5,1500]' in record


def test_completions_carry_a_result_or_an_error() -> None:
    assert decode(hub_protocol.completion("3", result={"a": 1})) == [
        {"type": 3, "invocationId": "3", "result": {"a": 1}}
    ]
    assert decode(hub_protocol.completion_error("3", "bad")) == [
        {"type": 3, "invocationId": "3", "error": "bad"}
    ]


def test_ping_and_close_records() -> None:
    assert decode(hub_protocol.PING) == [{"type": 6}]
    assert decode(hub_protocol.close("oops")) == [{"type": 7, "error": "oops"}]
    assert decode(hub_protocol.close(allow_reconnect=True)) == [{"type": 7, "allowReconnect": True}]


def test_geofence_records_name_tracker_then_geofence() -> None:
    assert decode(hub_protocol.geofence_entered(tracker_id="t", geofence_id="g"))[0][
        "arguments"
    ] == ["t", "g"]
    assert (
        decode(hub_protocol.geofence_exited(tracker_id="t", geofence_id="g"))[0]["target"]
        == "geofenceExited"
    )


def test_the_buffer_splits_several_records_in_one_message() -> None:
    buffer = RecordBuffer(max_chars=1000)
    assert buffer.feed('{"type":6}\x1e{"type":6}\x1e') == ['{"type":6}', '{"type":6}']


def test_the_buffer_holds_a_partial_record_until_the_rest_arrives() -> None:
    buffer = RecordBuffer(max_chars=1000)
    assert buffer.feed('{"type":6}\x1e{"ty') == ['{"type":6}']
    assert buffer.feed('pe":6}\x1e') == ['{"type":6}']


def test_the_buffer_refuses_an_endless_record() -> None:
    buffer = RecordBuffer(max_chars=10)
    with pytest.raises(ProtocolError, match="maximum message size"):
        buffer.feed("x" * 11)


@given(
    records=st.lists(st.text(alphabet=st.characters(blacklist_characters="\x1e"), max_size=50)),
    max_chars=st.integers(min_value=1, max_value=120),
)
def test_records_are_cut_into_pieces_between_records_only(
    records: list[str], max_chars: int
) -> None:
    text = "".join(record + hub_protocol.RECORD_SEPARATOR for record in records)
    pieces = hub_protocol.split_records(text, max_chars)
    assert "".join(pieces) == text
    for piece in pieces:
        assert piece.endswith(hub_protocol.RECORD_SEPARATOR) or piece == text == ""
        # Longer than allowed only when it is one record.
        assert len(piece) <= max_chars or piece.count(hub_protocol.RECORD_SEPARATOR) == 1
