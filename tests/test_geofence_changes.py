"""Open maps are told when geofences change: which cells, which fences, after the commit."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client, override_settings
from django.urls import reverse

from tracking import geofence_changes
from tracking.grid import Cell, Grid
from tracking.hub.fanout import LocalFanOut
from tracking.hub.fanout.cells import CellSnapshots, check_cell_message
from tracking.hub.publishing import geofence_change_messages
from tracking.models import Geofence

pytestmark = pytest.mark.django_db

RS = "\x1e"
HELSINKI = Cell(24, 60)
TAMPERE = Cell(23, 61)


def square(west: float, south: float, east: float, north: float) -> str:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return json.dumps(
        {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }
    )


KAMPPI = square(24.928, 60.166, 24.936, 60.170)
TAMPERE_SQUARE = square(23.75, 61.49, 23.77, 61.50)


class RecordingFanOut(LocalFanOut):
    """A fan-out that keeps what it is asked to publish, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[dict[Cell, str]] = []
        self.closed = False

    async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
        self.published.append(dict(records_by_cell))
        return 0

    async def close(self) -> None:
        self.closed = True


def told(fanout_calls: list[dict[Cell, str]]) -> dict[Cell, list[str]]:
    merged: dict[Cell, list[str]] = {}
    for call in fanout_calls:
        for cell, text in call.items():
            check_cell_message(text)
            (record,) = [orjson.loads(part) for part in text.split(RS)[:-1]]
            assert record["target"] == "geofencesChanged"
            merged[cell] = record["arguments"][0]
    return merged


@pytest.fixture
def changes(monkeypatch: pytest.MonkeyPatch) -> list[dict[Cell, list[str]]]:
    """What each commit told the map cells, publish by publish."""
    seen: list[dict[Cell, list[str]]] = []
    fanouts: list[RecordingFanOut] = []

    def make() -> RecordingFanOut:
        fanout = RecordingFanOut()
        fanouts.append(fanout)
        return fanout

    original = geofence_changes.announce

    def announce(extents: Any) -> None:
        before = len(fanouts)
        original(extents)
        for fanout in fanouts[before:]:
            assert fanout.closed
            seen.append(told(fanout.published))

    monkeypatch.setattr(geofence_changes, "make_fanout", make)
    monkeypatch.setattr(geofence_changes, "announce", announce)
    return seen


Capture = Callable[..., Any]


def test_a_fence_added_tells_the_cells_it_covers(
    changes: list[dict[Cell, list[str]]], django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        fence = Geofence.objects.create(name="Kamppi", geojson=KAMPPI)
    assert changes == [{HELSINKI: [str(fence.pk)]}]


def test_nothing_is_told_before_the_commit_nor_for_a_rollback(
    changes: list[dict[Cell, list[str]]], django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        Geofence.objects.create(name="Kamppi", geojson=KAMPPI)
        assert changes == []
        transaction.set_rollback(True)
    assert callbacks == [] and changes == []


def test_a_fence_moved_tells_the_cells_it_left_and_the_ones_it_reached(
    changes: list[dict[Cell, list[str]]], django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        fence = Geofence.objects.create(name="Kamppi", geojson=KAMPPI)
    changes.clear()
    fence.geojson = TAMPERE_SQUARE
    with django_capture_on_commit_callbacks(execute=True):
        fence.save()
    assert changes == [{HELSINKI: [str(fence.pk)], TAMPERE: [str(fence.pk)]}]


def test_the_admin_tells_maps_of_an_edit_and_a_bulk_delete(
    admin_client: Client,
    changes: list[dict[Cell, list[str]]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        kamppi = Geofence.objects.create(name="Kamppi", geojson=KAMPPI)
        tampere = Geofence.objects.create(name="Tampere", geojson=TAMPERE_SQUARE)
    changes.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:tracking_geofence_change", args=[kamppi.pk]),
            {"name": "Kamppi", "geojson": TAMPERE_SQUARE},  # moved, and switched off
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert changes == [{HELSINKI: [str(kamppi.pk)], TAMPERE: [str(kamppi.pk)]}]
    changes.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:tracking_geofence_changelist"),
            {
                "action": "delete_selected",
                "_selected_action": [kamppi.pk, tampere.pk],
                "post": "yes",
            },
        )
    assert response.status_code == 302
    assert not Geofence.objects.exists()
    # One transaction, one publish: both fences, in the one cell they were in.
    assert changes == [{TAMPERE: sorted([str(kamppi.pk), str(tampere.pk)])}]


def test_switching_fences_off_in_bulk_tells_their_cells_and_stamps_them(
    changes: list[dict[Cell, list[str]]], django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        kamppi = Geofence.objects.create(name="Kamppi", geojson=KAMPPI)
        Geofence.objects.create(name="Tampere", geojson=TAMPERE_SQUARE)
    changes.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert Geofence.objects.filter(name="Kamppi").update(is_active=False) == 1
    assert changes == [{HELSINKI: [str(kamppi.pk)]}]
    kamppi_before = kamppi.updated_at
    kamppi.refresh_from_db()
    assert not kamppi.is_active and kamppi.updated_at > kamppi_before


def test_an_import_tells_every_cell_once_after_its_transaction(
    changes: list[dict[Cell, list[str]]],
    django_capture_on_commit_callbacks: Capture,
    tmp_path: Path,
) -> None:
    collection = {
        "type": "FeatureCollection",
        "features": [
            {**json.loads(KAMPPI), "properties": {"name": "Kamppi"}},
            {**json.loads(TAMPERE_SQUARE), "properties": {"name": "Tampere"}},
        ],
    }
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(collection))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_geofences", str(path), stdout=io.StringIO())
    ids = dict(Geofence.objects.values_list("name", "pk"))
    assert changes == [{HELSINKI: [str(ids["Kamppi"])], TAMPERE: [str(ids["Tampere"])]}]


def test_a_failure_to_publish_is_logged_and_the_fence_is_saved(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Capture,
    admin_client: Client,
) -> None:
    class Broken(RecordingFanOut):
        async def publish(self, records_by_cell: Mapping[Cell, str]) -> int:
            raise ConnectionError("the bus is down")

    monkeypatch.setattr(geofence_changes, "make_fanout", Broken)
    with (
        caplog.at_level(logging.ERROR, logger="tracking.geofences"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(
            reverse("admin:tracking_geofence_add"),
            {"name": "Kamppi", "is_active": "on", "geojson": KAMPPI},
        )
    assert response.status_code == 302
    assert Geofence.objects.filter(name="Kamppi").exists()
    assert any("Could not tell open maps" in r.getMessage() for r in caplog.records)


# --- The messages ---------------------------------------------------------------------------------

GRID = Grid(1.0)


def test_a_fence_across_the_antimeridian_tells_the_cells_on_both_sides() -> None:
    boxes = ((179.5, -17.0, 180.0, -16.5), (-180.0, -17.0, -179.5, -16.5))
    assert sorted(geofence_change_messages({7: boxes}, grid=GRID)) == [
        Cell(-180, -17),
        Cell(179, -17),
    ]


def test_each_cell_lists_only_the_changed_fences_over_it() -> None:
    messages = geofence_change_messages(
        {1: [(24.2, 60.2, 25.5, 60.4)], 2: [(25.2, 60.2, 25.3, 60.3)]}, grid=GRID
    )
    assert messages == {
        Cell(24, 60): '{"type":1,"target":"geofencesChanged","arguments":[["1"]]}' + RS,
        Cell(25, 60): '{"type":1,"target":"geofencesChanged","arguments":[["1","2"]]}' + RS,
    }


def test_a_change_is_told_to_a_bounded_number_of_cells(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("tracking.hub.publishing.MAX_CELLS_PER_CHANGE", 10)
    with caplog.at_level(logging.WARNING):
        messages = geofence_change_messages({3: [(0.5, 0.5, 20.5, 20.5)]}, grid=GRID)
    assert len(messages) == 10
    assert "over 441 map cells" in caplog.text


def test_a_kept_cell_ignores_a_change_of_fences_and_its_viewers_get_it() -> None:
    snapshots = CellSnapshots()
    snapshots.keep([HELSINKI])
    (text,) = geofence_change_messages({1: [(24.2, 60.2, 24.5, 60.4)]}, grid=GRID).values()
    check_cell_message(text)
    assert snapshots.apply(HELSINKI, text) == text
    assert len(snapshots) == 0 and snapshots.records([HELSINKI]) == []


@pytest.mark.redis
def test_an_import_reaches_the_web_processes_over_redis(
    redis_url: str, tmp_path: Path, django_capture_on_commit_callbacks: Capture
) -> None:
    """A command has no event loop of its own: the change goes out on a Redis
    connection made for it, closed after it."""
    import redis

    prefix = f"test-{uuid.uuid4().hex[:10]}"
    path = tmp_path / "kamppi.geojson"
    path.write_text(KAMPPI)
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.subscribe(f"{prefix}.cell.24.60")
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    with (
        override_settings(REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=prefix, HUB_FANOUT="cells"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        call_command("import_geofences", str(path), stdout=io.StringIO())
    message = listener.get_message(timeout=5)
    listener.close()
    kamppi = Geofence.objects.get()
    assert message is not None and message["data"].decode() == (
        f'{{"type":1,"target":"geofencesChanged","arguments":[["{kamppi.pk}"]]}}\x1e'
    )
