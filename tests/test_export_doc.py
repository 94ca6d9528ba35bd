"""docs/protocol.md §4.10 held to the code: the example files are exactly
what an export of the example positions answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from tests.test_protocol_doc import blocks, documented_json
from tracking.models import Position, Tracker

pytestmark = pytest.mark.django_db

# The doc's example: the positions of §4.7, the first with an accuracy of 4 m.
ACCURACY = [4.0, None]


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gpx"])
def test_the_documented_files_are_answered_as_documented(client: Client, fmt: str) -> None:
    documented = documented_json("positions")
    tracker = Tracker.objects.create(id=uuid.UUID(documented["trackerId"]), name="Helsinki tram 4")
    Position.objects.bulk_create(
        Position(
            tracker=tracker,
            timestamp=datetime.fromtimestamp(fields.pop("timestamp") / 1000, tz=UTC),
            accuracy=accuracy,
            **fields,
        )
        for fields, accuracy in zip(documented["positions"], ACCURACY, strict=True)
    )
    query = f"format={fmt}&since={documented['since']}&until={documented['until']}"
    response = client.get(f"/api/trackers/{tracker.id}/export?{query}")
    assert isinstance(response, StreamingHttpResponse)
    answered = b"".join(cast(Iterator[bytes], response.streaming_content)).decode()
    (example,) = blocks(f"export-{fmt}")
    # The doc's lines end in LF; the CSV's in CRLF, as RFC 4180 has them.
    assert answered.replace("\r\n", "\n") == example.text
    assert response["Content-Disposition"] == (
        f'attachment; filename="helsinki-tram-4-20261126T1103Z-20261126T1113Z.{fmt}"'
    )
