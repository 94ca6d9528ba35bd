"""``manage.py import_geofences``: fences from a GeoJSON file, all or nothing."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_geofences import JSON, NEAR_VALID
from tracking.geofences import FenceError, parse_geojson_text
from tracking.models import Geofence, Tracker, Visit

HELSINKI = Path(__file__).resolve().parent.parent / "tracking/geofence_samples/helsinki.geojson"

pytestmark = pytest.mark.django_db


def square(name: str | None, west: float = 24.93) -> dict[str, object]:
    ring = [[west, 60.17], [west + 0.01, 60.17], [west + 0.01, 60.18], [west, 60.18], [west, 60.17]]
    return {
        "type": "Feature",
        "properties": {} if name is None else {"name": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def collection(*features: dict[str, object]) -> dict[str, object]:
    return {"type": "FeatureCollection", "features": list(features)}


def write(tmp_path: Path, content: object, name: str = "fences.geojson") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def run(path: Path, *arguments: str) -> str:
    out = StringIO()
    call_command("import_geofences", str(path), *arguments, stdout=out)
    return out.getvalue()


def refusal(path: Path) -> str:
    with pytest.raises(CommandError) as refused:
        run(path)
    return str(refused.value)


def test_the_helsinki_sample_imports_one_fence_per_feature_by_name() -> None:
    output = run(HELSINKI)

    names = [parsed.name for parsed in parse_geojson_text(HELSINKI.read_bytes())]
    assert sorted(Geofence.objects.values_list("name", flat=True)) == sorted(names)
    assert all(f"Imported {name}" in output for name in names)
    station = Geofence.objects.get(name="Helsinki Station")
    assert station.is_active
    assert station.fence.contains(latitude=60.1705, longitude=24.941)


def test_importing_a_fence_again_updates_it_and_says_so(tmp_path: Path) -> None:
    run(write(tmp_path, square("depot")))
    moved = square("depot", west=25.0)

    output = run(write(tmp_path, moved))

    assert "Updated depot" in output
    fence = Geofence.objects.get()
    assert fence.fence.contains(latitude=60.175, longitude=25.005)
    assert not fence.fence.contains(latitude=60.175, longitude=24.935)


def test_a_feature_without_a_name_is_named_after_the_file_and_its_number(tmp_path: Path) -> None:
    run(write(tmp_path, collection(square(None), square(" ", west=25.0)), "depots.geojson"))
    assert set(Geofence.objects.values_list("name", flat=True)) == {"depots 1", "depots 2"}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param(
            collection(
                square("fine"),
                {
                    "type": "Feature",
                    "properties": {"name": "bow tie"},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                    },
                },
            ),
            id="self-intersecting",
        ),
        pytest.param(
            collection(
                square("fine"),
                {
                    "type": "Feature",
                    "properties": {"name": "open"},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0.5]]],
                    },
                },
            ),
            id="unclosed",
        ),
    ],
)
def test_an_invalid_file_is_refused_whole_with_the_parsers_message(
    tmp_path: Path, content: object
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(FenceError) as expected:
        parse_geojson_text(path.read_bytes())

    assert refusal(path) == f"{path}: {expected.value}"
    assert not Geofence.objects.exists()


def test_a_name_used_twice_in_a_file_is_refused(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, collection(square("depot"), square("depot", west=25.0))))
    assert "feature 1: the name 'depot' is used twice" in message
    assert not Geofence.objects.exists()


def test_a_missing_file_is_refused_by_its_name(tmp_path: Path) -> None:
    assert str(tmp_path / "nowhere.geojson") in refusal(tmp_path / "nowhere.geojson")


def test_replace_deletes_the_fences_the_file_does_not_name(tmp_path: Path) -> None:
    run(write(tmp_path, collection(square("old"), square("kept", west=25.0))))
    old = Geofence.objects.get(name="old")
    Visit.objects.create(
        tracker=Tracker.objects.create(name="van"), geofence=old, entered_at=old.created_at
    )

    output = run(write(tmp_path, square("kept", west=25.0)), "--replace")

    assert "Deleted old" in output
    assert list(Geofence.objects.values_list("name", flat=True)) == ["kept"]
    assert not Visit.objects.exists()


def test_importing_the_same_fence_again_says_it_is_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, square("depot"))
    run(path)
    Geofence.objects.update(is_active=False)

    assert "Unchanged depot" in run(path)
    assert not Geofence.objects.get().is_active


def test_without_replace_the_other_fences_stay(tmp_path: Path) -> None:
    run(write(tmp_path, square("old")))
    run(write(tmp_path, square("new", west=25.0)))
    assert set(Geofence.objects.values_list("name", flat=True)) == {"old", "new"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(JSON, NEAR_VALID))
def test_any_json_file_is_imported_whole_or_refused_whole(tmp_path: Path, data: object) -> None:
    path = write(tmp_path, json.dumps(data))
    before = list(Geofence.objects.order_by("pk").values_list("name", "geojson"))
    try:
        run(path)
    except CommandError:
        assert list(Geofence.objects.order_by("pk").values_list("name", "geojson")) == before
        return
    for fence in Geofence.objects.all():
        fence.clean()  # every stored fence is one valid Feature


def test_a_name_with_a_nul_character_is_refused(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, square("de\x00pot")))
    assert "NUL" in message
    assert not Geofence.objects.exists()
