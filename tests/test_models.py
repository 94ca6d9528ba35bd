"""tracking/models.py: a tracker's status, pinned by tests/cases/status.json (shared with status.js).

``Tracker.status`` (in Python) and ``Tracker.objects.with_status`` (in the
database) must put every case in the same status.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from tests import cases
from tracking.geofences import FenceError, parse_geojson
from tracking.models import Geofence, Tracker, TrackerStatus, Visit

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CASES = cases.load("status")["cases"]


def use_thresholds(settings, case: dict[str, Any]) -> None:
    settings.TRACKING_ONLINE_SECONDS = case["onlineSeconds"]
    settings.TRACKING_OFFLINE_SECONDS = case["offlineSeconds"]


def last_seen(case: dict[str, Any]) -> datetime | None:
    return None if case["ageMs"] is None else NOW - timedelta(milliseconds=case["ageMs"])


@pytest.mark.parametrize("case", CASES, ids=cases.case_id)
def test_a_tracker_has_the_status_its_case_says(settings, case: dict[str, Any]) -> None:
    use_thresholds(settings, case)
    tracker = Tracker(name="van", position_at=last_seen(case))
    assert tracker.status(now=NOW) == case["status"]


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=cases.case_id)
def test_the_database_finds_a_tracker_by_the_status_its_case_says(
    settings, case: dict[str, Any]
) -> None:
    use_thresholds(settings, case)
    tracker = Tracker.objects.create(name="van", position_at=last_seen(case))

    found = {
        status.value
        for status in TrackerStatus
        if Tracker.objects.with_status(status, now=NOW).filter(pk=tracker.pk).exists()
    }

    assert found == {case["status"]}


@pytest.mark.django_db
def test_with_status_narrows_any_tracker_queryset(settings) -> None:
    settings.TRACKING_ONLINE_SECONDS, settings.TRACKING_OFFLINE_SECONDS = 60, 900
    Tracker.objects.create(name="active", position_at=NOW - timedelta(seconds=5))
    Tracker.objects.create(name="inactive", position_at=NOW - timedelta(seconds=5), is_active=False)
    Tracker.objects.create(name="old", position_at=NOW - timedelta(hours=1))

    online = Tracker.objects.filter(is_active=True).with_status(TrackerStatus.ONLINE, now=NOW)

    assert [tracker.name for tracker in online] == ["active"]


# --- Names ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_tracker_saved_without_a_name_is_named_after_its_device_id() -> None:
    tracker = Tracker.objects.create(id="6f1c2a4e-3b0d-4c7e-9a51-0e2d8f7b9c10", name="  ")
    tracker.refresh_from_db()
    assert tracker.name == "Tracker 6f1c2a4e" == str(tracker)
    named = Tracker.objects.create(name="Van 12")
    assert str(named) == "Van 12"


@pytest.mark.django_db(transaction=True)
def test_the_migration_names_the_trackers_that_had_no_name() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        [("tracking", "0004_tracker_rows_updated_in_place")],
        [("tracking", "0005_tracker_names")],
    )
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old_tracker = executor.loader.project_state(before).apps.get_model("tracking", "Tracker")
    old_tracker.objects.create(id="0b7e0000-0000-4000-8000-000000000001", name="")
    old_tracker.objects.create(id="0b7e0000-0000-4000-8000-000000000002", name="Bus 4")

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    try:
        assert dict(Tracker.objects.values_list("id", "name")) == {
            uuid.UUID("0b7e0000-0000-4000-8000-000000000001"): "Tracker 0b7e0000",
            uuid.UUID("0b7e0000-0000-4000-8000-000000000002"): "Bus 4",
        }
    finally:  # later tests expect every migration applied
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


# --- Geofences and visits -----------------------------------------------------------------------

SQUARE = {
    "type": "Feature",
    "properties": {"name": "square"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [[24.93, 60.17], [24.94, 60.17], [24.94, 60.18], [24.93, 60.18], [24.93, 60.17]]
        ],
    },
}


def square_fence(name: str = "square") -> Geofence:
    return Geofence.objects.create(name=name, geojson=json.dumps(SQUARE))


def test_a_geofence_gives_the_fence_of_its_geojson() -> None:
    fence = Geofence(name="square", geojson=json.dumps(SQUARE)).fence
    assert fence.contains(latitude=60.175, longitude=24.935)
    assert not fence.contains(latitude=60.19, longitude=24.935)


def test_a_self_intersecting_geofence_is_refused_with_the_parsers_message() -> None:
    bow_tie = json.loads(json.dumps(SQUARE))
    bow_tie["geometry"]["coordinates"] = [
        [[24.93, 60.17], [24.94, 60.18], [24.94, 60.17], [24.93, 60.18], [24.93, 60.17]]
    ]
    with pytest.raises(FenceError) as expected:
        parse_geojson(bow_tie)

    with pytest.raises(ValidationError) as refused:
        Geofence(name="bow tie", geojson=json.dumps(bow_tie)).clean()

    assert refused.value.message_dict == {"geojson": [str(expected.value)]}


def test_a_geofence_is_one_feature_not_a_collection() -> None:
    collection = {"type": "FeatureCollection", "features": [SQUARE, SQUARE]}
    with pytest.raises(ValidationError) as refused:
        Geofence(name="two", geojson=json.dumps(collection)).clean()
    assert "one Feature" in refused.value.message_dict["geojson"][0]


@pytest.mark.django_db
def test_a_tracker_has_at_most_one_open_visit_per_fence() -> None:
    tracker, fence = Tracker.objects.create(name="van"), square_fence()
    Visit.objects.create(tracker=tracker, geofence=fence, entered_at=NOW)

    with pytest.raises(IntegrityError), transaction.atomic():
        Visit.objects.create(tracker=tracker, geofence=fence, entered_at=NOW + timedelta(minutes=1))

    assert Visit.objects.filter(exited_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_closed_visits_and_other_fences_do_not_count_against_the_open_one() -> None:
    tracker, fence, other = Tracker.objects.create(name="van"), square_fence(), square_fence("b")
    for hour in range(3):
        Visit.objects.create(
            tracker=tracker,
            geofence=fence,
            entered_at=NOW + timedelta(hours=hour),
            exited_at=NOW + timedelta(hours=hour, minutes=30),
        )
    Visit.objects.create(tracker=tracker, geofence=fence, entered_at=NOW + timedelta(hours=4))
    Visit.objects.create(tracker=tracker, geofence=other, entered_at=NOW + timedelta(hours=4))
    Visit.objects.create(tracker=Tracker.objects.create(name="bus"), geofence=fence, entered_at=NOW)

    assert Visit.objects.filter(tracker=tracker, geofence=fence).count() == 4
    assert Visit.objects.filter(exited_at__isnull=True).count() == 3
