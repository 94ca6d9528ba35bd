"""docs/protocol.md held to the code: its examples and tables are checked here.

How the doc is read (the doc states the same at its top):

- Fenced blocks by info string. ```json event holds one event body, which
  ``parse_event`` must accept. ```json hub-client and ```json hub-server hold
  one record per line, the record separator left out: a conversation starts at
  a hub-client block whose first record is a handshake, and the hub-server
  block right after a hub-client block is what the server answers to it (no
  block: nothing). ```json hub-push holds records the server sends on its own;
  each must be exactly what ``tracking/hub/protocol.py`` writes. ```json
  geofences, ```json visits, ```json positions and ```json track hold what the
  REST API answers for the fences, visits and positions they show; ```csv
  export-csv, ```json export-geojson and ```xml export-gpx the files an export
  answers (checked in tests/test_export_doc.py). Other blocks are illustrations and are not read.
- Tables by their first header cell: "rejected body", "setting", "latitude"
  (grid cells), "west" (viewports), "server method", "client method",
  "client sends" (broken input), "tracker field" (the tracker object),
  "fence field" and "visit field" (the geofence API), "position field" (a
  tracker's positions), "track field" (a track for replay) and "request" (HTTP
  answers; a file's row names its CSV columns or its XML root element). Tables with the same first header are read as one.
- A code span holding an ALL_CAPS name with an underscore (alone, or as
  ``NAME=value``) names a setting.

The examples are read with the clock at ``NOW`` and every setting at the
default the doc's settings tables give; those defaults are compared with
``django.conf.settings`` separately.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import os
import re
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from xml.etree import ElementTree

import orjson
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.test import Client, override_settings
from django.urls import resolve
from django.utils import timezone

from tests.support import eventually
from tracking import urls as tracking_urls
from tracking import views as api_views
from tracking.api_tokens import issue_token, revoke
from tracking.areas import Overview, OverviewRequest
from tracking.events import InvalidEvent, LocationEvent, parse_event
from tracking.grid import Cell, Grid, group_name
from tracking.hub import protocol, publishing
from tracking.hub.fanout import LocalFanOut
from tracking.hub.fanout.redis_pubsub import RedisFanOut
from tracking.hub.map_hub import MapHub
from tracking.hub.overview import OverviewWatch
from tracking.hub.routing import websocket_urlpatterns
from tracking.hub.session import HubSession, SessionLimits
from tracking.hub.sign_in import SIGN_IN_ENDED
from tracking.hub.tokens import new_connection
from tracking.models import ApiToken, Geofence, Position, Tracker, Visit
from tracking.positions import Crossing, LatestPosition, newest_per_tracker

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "protocol.md"
DOC = DOC_PATH.read_text()
NOW = datetime(2026, 11, 26, 11, 15, tzinfo=UTC)
RS = protocol.RECORD_SEPARATOR

# --- Reading the doc ---------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    tag: str
    text: str
    line: int

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block; ``tag`` is the info string's second word (``json event``: ``event``)."""
    blocks = []
    for match in _FENCE.finditer(text):
        words = match[1].split()
        blocks.append(
            Block(
                tag=words[1] if len(words) > 1 else "",
                text=match[2],
                line=text.count("\n", 0, match.start()) + 1,
            )
        )
    return blocks


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.replace("\\|", "|").strip() for cell in re.split(r"(?<!\\)\|", inner)]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every table, as rows keyed by the header's cells."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines[:-1]):
        if not line.startswith("|") or not re.fullmatch(r"\|[\s:|-]+\|", lines[number + 1]):
            continue
        if number > 0 and lines[number - 1].startswith("|"):
            continue
        header = _cells(line)
        rows = []
        for row in lines[number + 2 :]:
            if not row.startswith("|"):
                break
            rows.append(dict(zip(header, _cells(row), strict=True)))
        found.append(rows)
    return found


def table(first_header: str) -> list[dict[str, str]]:
    """The rows of every table whose first header cell is ``first_header``."""
    rows = [row for found in tables(DOC) for row in found if next(iter(found[0])) == first_header]
    assert rows, f"docs/protocol.md has no table headed {first_header!r}"
    return rows


def spans(cell: str) -> list[str]:
    """The code spans of a table cell or a text, in order."""
    return re.findall(r"`([^`]+)`", cell)


def span(cell: str) -> str:
    found = spans(cell)
    assert found, f"no code span in {cell!r}"
    return found[0]


def signature(cell: str) -> list[tuple[str, str]]:
    """``(name: type, name: type)`` as ``[(name, type), ...]``."""
    inner = span(cell).strip().removeprefix("(").removesuffix(")")
    return [
        (name.strip(), kind.strip())
        for name, kind in (part.split(":") for part in inner.split(",") if part.strip())
    ]


BLOCKS = fenced_blocks(DOC)


def prose(text: str) -> str:
    """``text`` without its fenced blocks, whose backticks would pair with a code span's."""
    return _FENCE.sub("", text)


def blocks(tag: str) -> list[Block]:
    found = [block for block in BLOCKS if block.tag == tag]
    assert found, f"docs/protocol.md has no ```json {tag} block"
    return found


def default(name: str) -> str:
    """The default the doc's settings tables give ``name``."""
    for row in table("setting"):
        if span(row["setting"]) == name:
            return row["default"]
    raise AssertionError(f"docs/protocol.md gives no default for {name}")


GRID = Grid(float(default("TRACKING_GRID_DEGREES")))
MAX_CELLS = int(default("TRACKING_MAX_CELLS_PER_CONNECTION"))


def parse_documented(body: str | bytes) -> LocationEvent:
    return parse_event(
        body,
        now=NOW,
        max_future=timedelta(seconds=int(default("TRACKING_MAX_FUTURE_SECONDS"))),
        max_bytes=int(default("TRACKING_MAX_EVENT_BYTES")),
    )


def documented_positions() -> list[LatestPosition]:
    """The latest position of each tracker of the doc's event examples, as the
    store keeps it: the event with the latest ``Ts`` wins."""
    documented = [parse_documented(block.text) for block in blocks("event")]
    return [
        LatestPosition.of(
            event, cell=GRID.cell_of(latitude=event.latitude, longitude=event.longitude)
        )
        for event in newest_per_tracker(documented)
    ]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def conforms(value: object, kind: str) -> bool:
    """Whether a JSON value is of a documented type: ``string``, ``number``,
    ``integer``, ``cell[]``, or several joined with ``or``."""
    checks = {
        "string": lambda v: isinstance(v, str),
        "string[]": lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "object": lambda v: isinstance(v, dict),
        "number": _is_number,
        "number[]": lambda v: isinstance(v, list) and all(_is_number(n) for n in v),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "cell[]": lambda v: (
            isinstance(v, list)
            and all(
                isinstance(c, list)
                and len(c) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in c)
                for c in v
            )
        ),
    }
    return any(checks[part.strip()](value) for part in kind.split(" or "))


def split_records(messages: Sequence[str]) -> list[str]:
    records = []
    for message in messages:
        assert message.endswith(RS), (
            f"a message does not end with the record separator: {message!r}"
        )
        records += message.split(RS)[:-1]
    return records


# --- 1. Location events ---------------------------------------------------------------


@pytest.mark.parametrize("block", blocks("event"), ids=lambda b: f"line {b.line}")
def test_every_event_example_is_accepted(block: Block) -> None:
    parse_documented(block.text)


@pytest.mark.parametrize("row", table("rejected body"), ids=lambda r: span(r["reason starts with"]))
def test_every_rejected_body_is_refused_with_the_documented_reason(row: dict[str, str]) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_documented(span(row["rejected body"]))
    assert str(refused.value).startswith(span(row["reason starts with"]))


# --- 2. The map grid --------------------------------------------------------------------


async def test_every_documented_point_lies_in_its_cell_and_the_cell_has_its_names() -> None:
    redis = RedisFanOut("redis://127.0.0.1:9", prefix=default("CHANNEL_LAYER_PREFIX"))
    for row in table("latitude"):
        cell = GRID.cell_of(latitude=float(row["latitude"]), longitude=float(row["longitude"]))
        assert list(cell) == json.loads(span(row["cell"])), row
        assert group_name(cell) == span(row["group name"]), row
        assert redis.channel(cell) == span(row["Redis channel"]), row
    await redis._redis.aclose()


def test_every_documented_viewport_is_covered_by_its_cells() -> None:
    for row in table("west"):
        edges = {edge: float(row[edge]) for edge in ("west", "south", "east", "north")}
        covering = [list(cell) for cell in GRID.cells_covering(**edges)]
        assert covering == json.loads(span(row["cells"])), row


# --- 3. The hub: methods and targets ------------------------------------------------------


def test_the_documented_hub_methods_are_the_registered_ones_with_their_arguments() -> None:
    documented = {
        span(row["server method"]): tuple(name for name, _ in signature(row["arguments"]))
        for row in table("server method")
    }
    registered = {method.target: method.arguments for method in MapHub.methods.values()}
    assert documented == registered


def encodable_targets() -> dict[str, str]:
    """``{target: encoder function}`` for every client method ``protocol.py`` can
    call: the functions that build an invocation with a literal target."""
    tree = ast.parse(inspect.getsource(protocol))
    targets = {}
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "invocation"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets[node.args[0].value] = function.name
    return targets


def test_the_documented_client_methods_are_exactly_the_ones_the_server_can_send() -> None:
    documented = {span(row["client method"]) for row in table("client method")}
    assert documented == set(encodable_targets())


def client_method_arguments() -> dict[str, list[tuple[str, str]]]:
    return {
        span(row["client method"]): signature(row["arguments"]) for row in table("client method")
    }


def encoded_like(record: dict[str, Any]) -> str:
    """What ``protocol.py`` writes for the content of ``record``."""
    kind = record.get("type")
    if kind == protocol.MessageType.INVOCATION:
        target, arguments = record["target"], record["arguments"]
        documented = client_method_arguments()[target]
        assert len(arguments) == len(documented), record
        for value, (name, kind_name) in zip(arguments, documented, strict=True):
            assert conforms(value, kind_name), f"{target}: {name} is not a {kind_name}: {value!r}"
        encoder = getattr(protocol, encodable_targets()[target])
        names = list(inspect.signature(encoder).parameters)
        return str(encoder(**dict(zip(names, arguments, strict=True))))
    if kind == protocol.MessageType.COMPLETION:
        if "error" in record:
            return protocol.completion_error(record["invocationId"], record["error"])
        return protocol.completion(record["invocationId"], result=record["result"])
    if kind == protocol.MessageType.PING:
        return protocol.PING
    if kind == protocol.MessageType.CLOSE:
        return protocol.close(
            record.get("error"), allow_reconnect=record.get("allowReconnect", False)
        )
    if kind is None and "error" in record:
        return protocol.handshake_error(record["error"])
    assert record == {}, f"not a record the server sends: {record!r}"
    return protocol.HANDSHAKE_OK


def server_lines() -> list[str]:
    return [line for tag in ("hub-server", "hub-push") for b in blocks(tag) for line in b.lines]


@pytest.mark.parametrize("line", server_lines())
def test_every_server_record_is_written_exactly_as_the_encoder_writes_it(line: str) -> None:
    assert encoded_like(orjson.loads(line)) == line + RS


def test_a_documented_location_update_carries_the_documented_event() -> None:
    """Latitude before longitude, Ts as Unix ms: the records the doc shows for
    its event examples are the ones the hub builds from those events."""
    positions = {str(p.tracker_id): p for p in documented_positions()}
    checked = 0
    for line in server_lines():
        record = orjson.loads(line)
        if record.get("target") == "locationUpdated" and record["arguments"][0] in positions:
            assert protocol.location_record(positions[record["arguments"][0]]) == line + RS
            checked += 1
    assert checked >= len(positions)


def test_every_documented_completion_result_has_the_documented_keys() -> None:
    documented = {
        span(row["server method"]): set(re.findall(r'"(\w+)"', span(row["result"])))
        for row in table("server method")
    }
    checked = set()
    for conversation in conversations():
        targets: dict[str, str] = {}
        for client, answer in conversation:
            for line in client.lines:
                record = orjson.loads(line)
                if "invocationId" in record:
                    targets[record["invocationId"]] = record["target"]
            for line in answer:
                record = orjson.loads(line)
                if record.get("type") == 3 and "result" in record:
                    target = targets[record["invocationId"]]
                    assert set(record["result"]) == documented[target], line
                    checked.add(target)
    assert checked == set(documented)


@pytest.mark.parametrize(
    "line", [line for b in blocks("hub-client") for line in b.lines], ids=lambda line: line[:40]
)
def test_every_client_record_is_one_the_hub_reads(line: str) -> None:
    record = orjson.loads(line)
    if "protocol" in record:
        protocol.parse_handshake(line)
        return
    message = protocol.parse_message(line)
    if isinstance(message, protocol.Invocation):
        method = MapHub.methods[message.target.lower()]
        documented = {span(row["server method"]): row for row in table("server method")}
        kinds = [kind for _, kind in signature(documented[method.target]["arguments"])]
        assert len(message.arguments) == len(kinds)
        assert all(conforms(v, k) for v, k in zip(message.arguments, kinds, strict=True))


# --- 3. The hub: conversations ----------------------------------------------------------


class Socket:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.closed = False

    async def send(self, text: str) -> None:
        self.messages.append(text)

    async def close(self) -> None:
        self.closed = True


class DocumentedPorts:
    """The fan-out and the database of a hub session, holding the doc's events
    (every one counted in the overview: they are minutes old at ``NOW``)."""

    def __init__(self, positions: Sequence[LatestPosition]) -> None:
        self.positions = list(positions)
        self.overviews = OverviewWatch(read=self.read_overview, period=lambda: 3600.0)
        self.session: HubSession | None = None

    async def read_overview(self) -> Overview:
        return Overview.counting((p.latitude, p.longitude) for p in self.positions)

    async def watch_overview(self, request: OverviewRequest) -> None:
        assert self.session is not None
        await self.overviews.watch(self.session, request)

    async def unwatch_overview(self) -> None:
        if self.session is not None:
            self.overviews.unwatch(self.session)

    async def watch(self, cells: Sequence[Cell]) -> None:
        pass

    async def unwatch(self, cells: Collection[Cell]) -> None:
        pass

    async def snapshot(self, cells: Sequence[Cell]) -> Sequence[str]:
        return [protocol.location_record(p) for p in self.positions if p.cell in cells]


def new_session() -> tuple[HubSession, Socket]:
    socket = Socket()
    ports = DocumentedPorts(documented_positions())
    session = HubSession(
        connection_id="doc",
        hub=MapHub(grid=GRID, max_cells=MAX_CELLS, ports=ports, overview=ports),
        send=socket.send,
        close=socket.close,
        limits=SessionLimits(),
    )
    ports.session = session
    return session, socket


async def answered(session: HubSession) -> None:
    """Wait until the invocations are answered and what they queued (an
    overview) has gone out."""
    await session.answered()
    await eventually(lambda: not session.queued, what="the queued records sent")


def conversations() -> list[list[tuple[Block, list[str]]]]:
    """Each conversation: its client blocks, each with the records answered to it."""
    hub_blocks = [b for b in BLOCKS if b.tag in ("hub-client", "hub-server")]
    found: list[list[tuple[Block, list[str]]]] = []
    for number, block in enumerate(hub_blocks):
        if block.tag != "hub-client":
            assert number > 0 and hub_blocks[number - 1].tag == "hub-client", (
                f"line {block.line}: a hub-server block answers the hub-client block before it"
            )
            continue
        if "protocol" in orjson.loads(block.lines[0]):
            found.append([])
        assert found, f"line {block.line}: a conversation starts with a handshake"
        following = hub_blocks[number + 1] if number + 1 < len(hub_blocks) else None
        answer = following.lines if following and following.tag == "hub-server" else []
        found[-1].append((block, answer))
    assert found
    return found


@pytest.mark.parametrize("conversation", conversations(), ids=lambda c: f"line {c[0][0].line}")
async def test_every_documented_conversation_is_what_the_hub_answers(
    conversation: list[tuple[Block, list[str]]],
) -> None:
    session, socket = new_session()
    for client, answer in conversation:
        socket.messages.clear()
        for line in client.lines:
            await session.receive(line + RS)
            await answered(session)
        assert split_records(socket.messages) == answer, f"the answer to line {client.line}"
    await session.hub.close()


@pytest.mark.parametrize("row", table("client sends"), ids=lambda r: span(r["client sends"])[:40])
async def test_broken_input_is_answered_as_documented(row: dict[str, str]) -> None:
    session, socket = new_session()
    sent = span(row["client sends"])
    if "protocol" not in orjson.loads(sent):
        await session.receive('{"protocol":"json","version":1}' + RS)
        socket.messages.clear()
    await session.receive(sent + RS)
    await answered(session)
    answer = row["server answers"]
    expected = [span(answer)] if answer.startswith("`") else []
    assert split_records(socket.messages) == expected
    assert socket.closed == (row["then"] == "closes")


async def test_a_documented_crossing_follows_its_location_as_publishing_sends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The §3.10 example: a tracker's position, then what it crossed, exits first."""
    (block,) = [b for b in blocks("hub-push") if '"geofenceExited"' in b.text]
    records = [orjson.loads(line) for line in block.lines]
    tracker, latitude, longitude, ms = records[0]["arguments"]
    at = datetime.fromtimestamp(ms / 1000, tz=UTC)
    cell = GRID.cell_of(latitude=latitude, longitude=longitude)
    crossings = [
        Crossing(
            uuid.UUID(record["arguments"][0]),
            int(record["arguments"][1]),
            entered=record["target"] == "geofenceEntered",
            at=at,
        )
        for record in records[1:]
    ]
    sent: list[dict[Cell, str]] = []

    class Recording(LocalFanOut):
        async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
            sent.append(dict(records_by_cell))
            return 0

    monkeypatch.setattr(publishing, "get_fanout", Recording)
    position = LatestPosition(uuid.UUID(tracker), latitude, longitude, at, cell)
    await publishing.publish_locations([position], crossings)
    assert sent == [{cell: "".join(line + RS for line in block.lines)}]


def test_the_documented_close_of_an_ended_sign_in_is_the_one_the_hub_sends() -> None:
    closes = [
        orjson.loads(line)
        for block in blocks("hub-push")
        for line in block.lines
        if orjson.loads(line).get("type") == protocol.MessageType.CLOSE
    ]
    assert {"type": 7, "error": SIGN_IN_ENDED} in closes


def limit_answers() -> list[tuple[dict[str, Any], str]]:
    """The rows of the limits table, in order: the record the server answers
    with, and what then happens."""
    return [
        (orjson.loads(span(row["server answers"])), row["then"])
        for row in table("when a client sends")
    ]


def call(invocation_id: str, target: str = "nope", *arguments: Any) -> str:
    record = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": arguments}
    return orjson.dumps(record).decode() + RS


async def test_the_invocation_limits_answer_as_documented() -> None:
    sixth, past_the_rate, replaced, abuse = limit_answers()

    async def conversation(*messages: str) -> tuple[list[dict[str, Any]], bool]:
        """What a session with the default limits, and a clock that stands still, says."""
        socket = Socket()
        session = HubSession(
            connection_id="doc",
            hub=MapHub(grid=GRID, max_cells=MAX_CELLS, ports=DocumentedPorts([])),
            send=socket.send,
            close=socket.close,
            limits=SessionLimits(),
            clock=lambda: 0.0,
        )
        for message in ('{"protocol":"json","version":1}' + RS, *messages):
            await session.receive(message)
            await session.answered()
        return [orjson.loads(r) for r in split_records(socket.messages)], socket.closed

    def said(records: list[dict[str, Any]], invocation_id: str) -> dict[str, Any]:
        return next(r for r in records if r.get("invocationId") == invocation_id)

    records, closed = await conversation("".join(call(str(n)) for n in range(1, 7)))
    assert (said(records, "6"), "stays open") == sixth
    five = "".join(call(str(n)) for n in range(5))
    records, closed = await conversation(five, five, five, five, call("9"))
    assert (said(records, "9"), "stays open") == past_the_rate
    join: tuple[str, list[list[int]], list[list[int]]] = ("updateMapGridGroups", [[24, 60]], [])
    records, closed = await conversation(call("1", *join) + call("2", *join))
    assert (said(records, "1"), "stays open") == replaced and "result" in said(records, "2")
    records, closed = await conversation(*[five] * 20)
    assert (records[-1], "closes") == abuse
    assert closed


# --- 4. The REST API ------------------------------------------------------------------------


def tracker_keys() -> dict[str, str]:
    return {span(row["tracker field"]): row["type"] for row in table("tracker field")}


def requests() -> list[dict[str, str]]:
    return table("request")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "row",
    requests(),
    ids=lambda r: f"{span(r['request'])} {r['when'].replace('`', '')} {r['status']}",
)
def test_every_documented_request_is_answered_as_documented(
    client: Client, row: dict[str, str]
) -> None:
    tracker = Tracker.objects.create(
        name="Helsinki tram 4",
        latitude=60.170218,
        longitude=24.940806,
        position_at=timezone.now(),
        cell_x=24,
        cell_y=60,
    )
    method, target = span(row["request"]).split(" ", 1)
    target = target.format(id=tracker.id, unknown=uuid.uuid4(), token=new_connection()[1])
    path = target.partition("?")[0]
    status = int(row["status"])
    keys = spans(row["JSON keys"])
    if method == "WS":
        assert any(p.pattern.match(path.removeprefix("/")) for p in websocket_urlpatterns)
        assert status == 101 and not keys
        from maps.views import hub_url

        assert hub_url() == path
        return
    if status != 404:
        assert resolve(path).func is not api_views.api_not_found, path
    private = "MAP_PUBLIC=0" in row["when"]
    headers = {}
    if "API token" in row["when"]:
        api_token, text = issue_token(user=User.objects.create_user("doc"))
        if "revoked" in row["when"]:
            revoke([api_token])
        if "expired" in row["when"]:
            ApiToken.objects.filter(pk=api_token.pk).update(expires_at=timezone.now())
        headers["Authorization"] = f"Bearer {text}"
    with override_settings(MAP_PUBLIC=not private):
        response = client.generic(method, target, headers=headers)
    assert response.status_code == status
    if isinstance(response, StreamingHttpResponse):
        content = b"".join(cast(Iterator[bytes], response.streaming_content))
    else:
        content = response.content
    if not keys:
        assert content == b""
        return
    media_type = response["Content-Type"].partition(";")[0]
    if media_type in FILE_MEDIA_TYPES:  # a file: its row names what it starts with
        assert (FILE_MEDIA_TYPES[media_type], file_start(media_type, content)) == (
            row["JSON keys"].partition(":")[0],
            keys,
        )
        return
    body = orjson.loads(content)
    assert set(body) == set(keys)
    for item in [body] if "status" in body else body.get("trackers", []):
        assert set(item) == set(tracker_keys())


# The answers that are files (§4.10), by the word their row in §4.12 starts with.
FILE_MEDIA_TYPES = {"text/csv": "CSV", "application/gpx+xml": "GPX"}


def file_start(media_type: str, content: bytes) -> list[str]:
    """A CSV's header columns, or an XML document's root element."""
    if media_type == "text/csv":
        return content.decode().splitlines()[0].split(",")
    return [ElementTree.fromstring(content).tag.rpartition("}")[2]]


def test_every_api_endpoint_is_documented() -> None:
    """Each URL pattern under /api/ but the catch-all answers some documented request."""
    documented = set()
    for row in requests():
        method, target = span(row["request"]).split(" ", 1)
        if method != "WS":
            path = target.partition("?")[0].format(id=uuid.uuid4(), unknown=uuid.uuid4())
            documented.add(resolve(path).route)
    endpoints = {
        f"api/{pattern.pattern}"
        for pattern in tracking_urls.urlpatterns
        if pattern.callback is not api_views.api_not_found
    }
    assert sorted(endpoints - documented) == []


@pytest.mark.django_db
def test_the_tracker_object_has_the_documented_keys_and_types(client: Client) -> None:
    seen = Tracker.objects.create(
        name="Helsinki tram 4",
        latitude=60.170218,
        longitude=24.940806,
        position_at=timezone.now() - timedelta(minutes=5),
        cell_x=24,
        cell_y=60,
        speed=31.5,
        heading=90.0,
    )
    fields = {span(row["tracker field"]): row for row in table("tracker field")}
    # The name row says what a tracker of a given id answers when nobody named it.
    unnamed_id, unnamed_name = spans(fields["name"]["meaning"])[-2:]
    never = Tracker.objects.create(id=uuid.UUID(unnamed_id))
    for tracker in (seen, never):
        answer = client.get(f"/api/trackers/{tracker.id}").json()
        assert set(answer) == set(tracker_keys())
        for key, kind in tracker_keys().items():
            assert conforms(answer[key], kind), (key, answer[key])
    assert client.get(f"/api/trackers/{never.id}").json()["name"] == json.loads(unnamed_name), (
        "an unnamed tracker's name is not what docs/protocol.md §4.1 says"
    )
    statuses = re.findall(r"`(\w+)`", fields["status"]["meaning"])
    assert client.get(f"/api/trackers/{seen.id}").json()["status"] in statuses
    assert client.get(f"/api/trackers/{never.id}").json()["status"] in statuses


def documented_json(tag: str) -> Any:
    (block,) = blocks(tag)
    return json.loads(block.text)


@pytest.mark.django_db
def test_the_documented_fences_are_answered_as_documented(client: Client) -> None:
    documented = documented_json("geofences")
    ids = {}
    for feature in documented["features"]:
        properties = feature["properties"]
        stored = {"name": properties["name"]}
        if properties["radius"] is not None:
            stored["radius"] = properties["radius"]
        fence = Geofence.objects.create(
            name=properties["name"],
            geojson=json.dumps(
                {"type": "Feature", "properties": stored, "geometry": feature["geometry"]}
            ),
        )
        ids[feature["id"]] = str(fence.pk)
    answer = client.get("/api/geofences?bbox=24.5,59.9,25.4,60.3")
    assert answer["Content-Type"] == "application/geo+json"
    body = answer.json()
    for feature in documented["features"]:
        feature["id"] = feature["properties"]["id"] = ids[feature["id"]]
        centre = feature["properties"]["centre"]
        feature["properties"]["centre"] = {k: pytest.approx(v) for k, v in centre.items()}
    assert body == documented
    fields = {span(row["fence field"]): row["type"] for row in table("fence field")}
    for feature in body["features"]:
        assert set(feature["properties"]) == set(fields)
        for key, kind in fields.items():
            assert conforms(feature["properties"][key], kind), (key, feature)


@pytest.mark.django_db
def test_the_documented_visits_are_answered_as_documented(client: Client) -> None:
    documented = documented_json("visits")
    tracker = Tracker.objects.create(id=uuid.UUID(documented["trackerId"]), name="Tram 4")
    ids = {}
    for visit in documented["visits"]:
        name = visit["geofenceName"]
        point = {"type": "Point", "coordinates": [24.95, 60.17]}
        fence = Geofence.objects.create(
            name=name,
            geojson=json.dumps(
                {"type": "Feature", "properties": {"radius": 100}, "geometry": point}
            ),
        )
        ids[visit["geofenceId"]] = str(fence.pk)
        exited = visit["exitedAt"]
        Visit.objects.create(
            tracker=tracker,
            geofence=fence,
            entered_at=datetime.fromtimestamp(visit["enteredAt"] / 1000, tz=UTC),
            exited_at=None if exited is None else datetime.fromtimestamp(exited / 1000, tz=UTC),
        )
    # A stay shorter than a minimum dwell is not answered.
    Visit.objects.create(tracker=tracker, geofence=fence, entered_at=NOW, pending=True)
    body = client.get(f"/api/trackers/{tracker.id}/visits").json()
    for visit in documented["visits"]:
        visit["geofenceId"] = ids[visit["geofenceId"]]
    assert body == documented
    fields = {span(row["visit field"]): row["type"] for row in table("visit field")}
    for visit in body["visits"]:
        assert set(visit) == set(fields)
        assert all(conforms(visit[key], kind) for key, kind in fields.items()), visit


@pytest.mark.django_db
def test_the_documented_positions_are_answered_as_documented(client: Client) -> None:
    documented = documented_json("positions")
    tracker = Tracker.objects.create(id=uuid.UUID(documented["trackerId"]), name="Tram 4")
    for position in documented["positions"]:
        Position.objects.create(
            tracker=tracker,
            timestamp=datetime.fromtimestamp(position["timestamp"] / 1000, tz=UTC),
            latitude=position["latitude"],
            longitude=position["longitude"],
            speed=position["speed"],
            heading=position["heading"],
        )
    query = f"since={documented['since']}&until={documented['until']}"
    assert client.get(f"/api/trackers/{tracker.id}/positions?{query}").json() == documented
    fields = {span(row["position field"]): row["type"] for row in table("position field")}
    for position in documented["positions"]:
        assert set(position) == set(fields)
        assert all(conforms(position[key], kind) for key, kind in fields.items()), position


@pytest.mark.django_db
def test_the_documented_track_is_answered_as_documented(client: Client) -> None:
    documented = documented_json("track")
    tracker = Tracker.objects.create(id=uuid.UUID(documented["trackerId"]), name="Tram 4")
    kept = documented["positions"]
    # Stored: the positions answered, and one half way between each pair, in
    # time and place, which the thinning leaves out.
    halves = [
        [(a[0] + b[0]) // 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2, a[3], a[4]]
        for a, b in itertools.pairwise(kept)
    ]
    for moment, latitude, longitude, speed, heading in kept + halves:
        Position.objects.create(
            tracker=tracker,
            timestamp=datetime.fromtimestamp(moment / 1000, tz=UTC),
            latitude=latitude,
            longitude=longitude,
            speed=speed,
            heading=heading,
        )
    query = f"since={documented['since']}&until={documented['until']}&zoom={documented['zoom']}"
    body = client.get(f"/api/trackers/{tracker.id}/track?{query}").json()
    assert body == documented and body["stored"] == len(kept) + len(halves)
    fields = {span(row["track field"]): row["type"] for row in table("track field")}
    assert set(body) == set(fields)
    assert all(conforms(body[key], kind) for key, kind in fields.items()), body


# --- Settings -------------------------------------------------------------------------------

SETTING_NAME = re.compile(r"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?:=\S*)?")


def test_every_setting_the_doc_names_exists() -> None:
    names = {m[1] for text in spans(prose(DOC)) if (m := SETTING_NAME.fullmatch(text))}
    assert "TRACKING_MAX_FUTURE_SECONDS" in names
    assert sorted(name for name in names if not hasattr(settings, name)) == []


def test_the_documented_defaults_are_the_settings_defaults() -> None:
    for row in table("setting"):
        name = span(row["setting"])
        if name in os.environ:
            continue  # set here, so its value says nothing of the default
        value = getattr(settings, name)
        documented = row["default"]
        if documented == "`DEBUG`":
            continue  # follows DEBUG: tests/test_settings.py starts processes to see it
        if isinstance(value, bool):
            assert value == (documented == "1"), name
        elif isinstance(value, int | float):
            assert value == float(documented), name
        else:
            assert value == documented, name


# --- Citations ---------------------------------------------------------------------------------

CITING_FILES = [
    path
    for folder in ("tracking", "maps", "tests", "bench", "tracker_site", "docs")
    for path in (ROOT / folder).rglob("*")
    if path.suffix in {".py", ".js", ".json", ".md", ".html"} and "node_modules" not in path.parts
]


def test_every_citation_of_the_doc_names_a_section_it_has() -> None:
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", DOC, re.MULTILINE))
    cited = {
        (path.relative_to(ROOT), number)
        for path in CITING_FILES
        for number in re.findall(r"docs/protocol\.md §(\d+(?:\.\d+)?)", path.read_text())
    }
    assert cited, "nothing cites docs/protocol.md"
    assert sorted(c for c in cited if c[1] not in sections) == []


def test_nothing_cites_the_team_folder_protocol_sections() -> None:
    stale = [
        path.relative_to(ROOT)
        for path in CITING_FILES
        if re.search(r"PROTOCOL [1-9]", path.read_text())
    ]
    assert stale == []


def test_every_repository_path_in_the_docs_exists() -> None:
    top = {"tracking", "maps", "tests", "bench", "tracker_site", "docs", "static"}
    for doc in (ROOT / "docs").glob("*.md"):
        for text in spans(prose(doc.read_text())):
            if "/" in text and " " not in text and text.split("/")[0] in top:
                assert (ROOT / text).exists(), f"{doc.name} names {text}, which does not exist"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_docs_reaches_a_heading() -> None:
    for doc in (ROOT / "docs").glob("*.md"):
        text = prose(doc.read_text())
        anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
        links = re.findall(r"\]\(#([^)]+)\)", text)
        assert sorted(set(links) - anchors) == [], doc.name
