"""``manage.py demo``: what it says when it cannot start, and the Helsinki
fences it seeds (the page itself is tested in headless Chromium, in test_map_page)."""

from __future__ import annotations

import re
import socket
import sqlite3
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests import support
from tracking.geofences import FenceIndex, crossings, parse_geojson_text
from tracking.management.commands.demo import SAMPLE_GEOFENCES, seed_geofences
from tracking.models import Geofence
from tracking.simulation.fleet import load_routes

HELSINKI_FENCES = ["Helsinki Station", "Iglooconf"]


def test_the_demo_says_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*--port"):
            call_command("demo", "--port", str(port))


def test_the_demo_says_when_its_interface_is_wrong() -> None:
    with pytest.raises(CommandError, match=re.escape("cannot listen on 203.0.113.7:8000")):
        call_command("demo", "--host", "203.0.113.7", "--port", "8000")


@pytest.mark.django_db
def test_a_database_without_geofences_gets_the_helsinki_ones_and_one_line_saying_so() -> None:
    with support.logged_lines() as lines:
        seed_geofences()

    assert sorted(Geofence.objects.values_list("name", flat=True)) == HELSINKI_FENCES
    assert all(fence.is_active for fence in Geofence.objects.all())
    said = [line for line in lines if "geofences" in line]
    assert len(said) == 1, lines
    assert "Helsinki Station, Iglooconf" in said[0] and "NOTICE.md" in said[0]


@pytest.mark.django_db
def test_a_database_with_geofences_keeps_them_and_gets_no_sample() -> None:
    Geofence.objects.create(
        name="Depot",
        geojson='{"type": "Feature", "properties": {"radius": 50},'
        ' "geometry": {"type": "Point", "coordinates": [24.9, 60.2]}}',
        is_active=False,
    )
    with support.logged_lines() as lines:
        seed_geofences()

    assert list(Geofence.objects.values_list("name", flat=True)) == ["Depot"]
    assert not [line for line in lines if "geofences" in line]


def test_the_sample_keeps_its_attribution() -> None:
    notice = (SAMPLE_GEOFENCES.parent / "NOTICE.md").read_text()
    assert "MIT License" in notice and "Copyright (c) 2024 Joonas Westlin" in notice


def test_the_demo_fleet_drives_through_both_helsinki_fences() -> None:
    """Each bundled route driven once, a report every 5 m, through the detector:
    the demo's map shows crossings, not fences nobody visits."""
    fences = {p.name: p.fence for p in parse_geojson_text(SAMPLE_GEOFENCES.read_bytes())}
    index = FenceIndex(fences)
    visited: dict[str, set[str]] = {}
    for route in load_routes():
        inside: frozenset[str] = frozenset()
        for step in range(int(route.length // 5) + 1):
            latitude, longitude = route.position_at(step * 5.0)
            found = crossings(index, inside, latitude=latitude, longitude=longitude)
            inside = (inside - found.exited) | found.entered
            for name in found.entered | found.exited:
                visited.setdefault(route.name, set()).add(name)

    assert visited == {
        "Helsinki loop 1": {"Helsinki Station", "Iglooconf"},
        "Helsinki loop 2": {"Helsinki Station"},
        "Helsinki to Tampere": {"Iglooconf"},
    }


@pytest.mark.slow
def test_the_running_demo_has_seeded_the_helsinki_fences(demo: str, demo_log: Path) -> None:
    support.wait_until(
        lambda: "no geofences yet: seeded Helsinki Station, Iglooconf" in demo_log.read_text(),
        what="the demo's line about the fences it seeded",
    )
    with sqlite3.connect(demo_log.parent / "db.sqlite3") as database:
        names = [row[0] for row in database.execute("SELECT name FROM tracking_geofence")]
    assert sorted(names) == HELSINKI_FENCES
