"""Retention (tracking/retention.py, prune_history, migration 0010): history
older than TRACKING_HISTORY_DAYS goes, what is newer stays, and upgrading
keeps every row."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings

from tests.conftest import event_body
from tracking import retention
from tracking.ingest.sources import RawEvent
from tracking.ingest.store import ingest_batch
from tracking.models import Geofence, Position, RejectedEvent, Tracker, Visit

T = TypeVar("T")


def on_partitions(*, days: int, transaction: bool = True) -> Callable[[T], T]:
    """A test of the day partitions (PostgreSQL's), with TRACKING_HISTORY_DAYS=days."""

    def decorate(test: T) -> T:
        marks: tuple[Any, ...] = (
            override_settings(TRACKING_HISTORY_DAYS=days),
            pytest.mark.django_db(transaction=transaction),
            pytest.mark.postgres,
            pytest.mark.skipif(
                connection.vendor != "postgresql", reason="partitions are PostgreSQL's"
            ),
        )
        for mark in marks:
            test = mark(test)
        return test

    return decorate


def day_names() -> set[str]:
    return {part.name for part in retention.partitions() if part.is_day}


def add_positions(tracker: Tracker, moments: list[datetime]) -> None:
    Position.objects.bulk_create(
        Position(tracker=tracker, timestamp=moment, latitude=60.0, longitude=24.0)
        for moment in moments
    )


def hourly(first: datetime, last: datetime) -> list[datetime]:
    moments = []
    while first <= last:
        moments.append(first)
        first += timedelta(hours=1)
    return moments


@pytest.fixture
def tracker() -> Tracker:
    return Tracker.objects.create(id=uuid.uuid4(), name="bus 42")


@on_partitions(days=2)
def test_a_clock_crossing_midnight_at_a_month_end_drops_exactly_the_days_past_the_setting(
    tracker: Tracker,
) -> None:
    # Days of 2031, far from any other test's: 25 Nov to 2 Dec, a position an hour.
    days = [date(2031, 11, 25) + timedelta(days=n) for n in range(8)]
    retention.ensure_days(days)
    add_positions(
        tracker, hourly(datetime(2031, 11, 25, tzinfo=UTC), datetime(2031, 12, 2, 23, tzinfo=UTC))
    )
    named = {day: retention.partition_name(day) for day in days}

    # A second before midnight on 30 November: the cutoff is 28 Nov 23:59:59,
    # so 25, 26 and 27 November are wholly past it; 28 November is not.
    before = retention.prune(now=datetime(2031, 11, 30, 23, 59, 59, tzinfo=UTC))
    assert [name for name, _ in before.dropped if name in named.values()] == [
        named[date(2031, 11, 25)],
        named[date(2031, 11, 26)],
        named[date(2031, 11, 27)],
    ]
    assert [rows for name, rows in before.dropped if name in named.values()] == [24, 24, 24]
    assert {named[day] for day in days[3:]} <= day_names()
    assert Position.objects.filter(timestamp__lt=datetime(2031, 11, 28, tzinfo=UTC)).count() == 0
    assert Position.objects.filter(timestamp__gte=datetime(2031, 11, 28, tzinfo=UTC)).count() == (
        5 * 24
    )

    # Two seconds later it is 1 December: 28 November goes, 29 November stays.
    after = retention.prune(now=datetime(2031, 12, 1, 0, 0, 1, tzinfo=UTC))
    assert [name for name, _ in after.dropped] == [named[date(2031, 11, 28)]]
    remaining = {
        name for name in day_names() if name.startswith(f"{retention.PARTITION_PREFIX}2031")
    }
    # The partitions ahead of the clock were made too: up to 4 December.
    assert remaining == {
        retention.partition_name(date(2031, 11, 29) + timedelta(days=n)) for n in range(6)
    }
    assert Position.objects.count() == 4 * 24
    assert (
        Position.objects.order_by("timestamp").first().timestamp  # type: ignore[union-attr]
        == datetime(2031, 11, 29, tzinfo=UTC)
    )
    # A pass with nothing older to drop drops nothing.
    again = retention.prune(now=datetime(2031, 12, 1, 0, 0, 2, tzinfo=UTC))
    assert again.dropped == [] and again.lines()[-1] == "nothing to prune"


@on_partitions(days=1)
def test_a_partition_is_made_for_a_day_ahead_of_time_and_a_row_lands_in_it(
    tracker: Tracker,
) -> None:
    report = retention.prune(now=datetime(2032, 2, 28, 12, tzinfo=UTC))
    # A leap year: 29 February is a day of its own.
    assert report.made == [
        retention.partition_name(date(2032, 2, 28)),
        retention.partition_name(date(2032, 2, 29)),
        retention.partition_name(date(2032, 3, 1)),
        retention.partition_name(date(2032, 3, 2)),
    ]
    add_positions(tracker, [datetime(2032, 2, 29, 23, 59, 59, tzinfo=UTC)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM tracking_position")
        assert cursor.fetchall() == [(retention.partition_name(date(2032, 2, 29)),)]


@on_partitions(days=1, transaction=False)
def test_a_row_saved_for_a_day_without_a_partition_gets_one(tracker: Tracker) -> None:
    moment = datetime(2033, 5, 5, 5, tzinfo=UTC)
    Position(tracker=tracker, timestamp=moment, latitude=1.0, longitude=2.0).save()
    with connection.cursor() as cursor:
        cursor.execute('SELECT tableoid::regclass::text, "timestamp" FROM tracking_position')
        assert cursor.fetchall() == [(retention.partition_name(date(2033, 5, 5)), moment)]


@on_partitions(days=1)
def test_while_another_process_prunes_a_pass_is_skipped_not_waited_for(
    tracker: Tracker,
) -> None:
    retention.ensure_days([date(2034, 1, 1)])
    add_positions(tracker, [datetime(2034, 1, 1, 12, tzinfo=UTC)])
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [retention.LOCK_KEY])
        report = retention.prune(now=datetime(2034, 1, 5, tzinfo=UTC))
    assert report.skipped and "another process is pruning" in report.lines()[-1]
    assert retention.partition_name(date(2034, 1, 1)) in day_names()
    assert Position.objects.count() == 1
    # Once it has finished, the next pass drops it.
    report = retention.prune(now=datetime(2034, 1, 5, tzinfo=UTC))
    assert (retention.partition_name(date(2034, 1, 1)), 1) in report.dropped


@pytest.mark.sqlite
@pytest.mark.django_db
@override_settings(TRACKING_HISTORY_DAYS=10)
def test_old_rows_go_a_chunk_per_step_and_newer_rows_stay(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On SQLite the rows of the table itself. (On PostgreSQL day partitions
    # are dropped whole; only the old table the migration attached goes in
    # chunks, shown by the migration's test.)
    monkeypatch.setattr(retention, "CHUNK", 3)
    now = datetime(2001, 6, 20, tzinfo=UTC)
    old = [datetime(2001, 6, 1, tzinfo=UTC) + timedelta(minutes=n) for n in range(10)]
    kept = [now - timedelta(days=10) + timedelta(seconds=1), now]
    add_positions(tracker, old + kept)

    steps = retention.pruning(now=now)
    deleted = []
    for report in steps:
        deleted.append(report.deleted[retention.POSITIONS])
    # A chunk per step, none larger than CHUNK, the rows newer than the cutoff untouched.
    assert sorted(set(deleted) - {0}) == [3, 6, 9, 10]
    assert sorted(Position.objects.values_list("timestamp", flat=True)) == kept


@pytest.mark.django_db
@override_settings(TRACKING_HISTORY_DAYS=7)
def test_rejected_events_and_finished_visits_follow_the_same_days(
    tracker: Tracker, now: datetime
) -> None:
    week_ago = now - timedelta(days=7)
    for received_at in (week_ago - timedelta(seconds=1), week_ago - timedelta(days=3)):
        RejectedEvent.objects.create(
            received_at=received_at, source="t", reason="old", body="x", body_bytes=1
        )
    fresh = RejectedEvent.objects.create(
        received_at=week_ago + timedelta(minutes=1),
        source="t",
        reason="new",
        body="x",
        body_bytes=1,
    )
    fence = Geofence.objects.create(
        name="depot",
        geojson='{"type": "Feature", "properties": {"radius": 100}, '
        '"geometry": {"type": "Point", "coordinates": [24.94, 60.17]}}',
    )
    long_ago = now - timedelta(days=30)
    Visit.objects.create(
        tracker=tracker,
        geofence=fence,
        entered_at=long_ago,
        exited_at=week_ago - timedelta(hours=1),
    )
    ended_lately = Visit.objects.create(
        tracker=tracker,
        geofence=fence,
        entered_at=long_ago,
        exited_at=week_ago + timedelta(hours=1),
    )
    # Entered long ago and still inside: not finished, so kept.
    still_inside = Visit.objects.create(tracker=tracker, geofence=fence, entered_at=long_ago)

    report = retention.prune(now=now)

    assert report.deleted[retention.REJECTED] == 2
    assert report.deleted[retention.VISITS] == 1
    assert list(RejectedEvent.objects.all()) == [fresh]
    assert set(Visit.objects.all()) == {ended_lately, still_inside}


@pytest.mark.django_db
@override_settings(TRACKING_HISTORY_DAYS=7)
def test_prune_history_says_what_it_would_delete_then_deletes_it(now: datetime) -> None:
    for days in (8, 9):
        RejectedEvent.objects.create(
            received_at=now - timedelta(days=days), source="t", reason="r", body="", body_bytes=0
        )

    dry = io.StringIO()
    call_command("prune_history", "--dry-run", stdout=dry)
    assert dry.getvalue().splitlines()[0].startswith("cutoff ")
    assert "would delete 2 rejected events" in dry.getvalue().splitlines()
    assert RejectedEvent.objects.count() == 2

    out = io.StringIO()
    call_command("prune_history", stdout=out)
    assert "delete 2 rejected events" in out.getvalue().splitlines()
    assert RejectedEvent.objects.count() == 0

    out = io.StringIO()
    call_command("prune_history", stdout=out)
    assert out.getvalue().splitlines()[-1] == "nothing to prune"


@pytest.mark.django_db
@override_settings(TRACKING_HISTORY_DAYS=0)
def test_with_no_limit_nothing_is_pruned(tracker: Tracker) -> None:
    add_positions(tracker, [datetime(2001, 1, 1, tzinfo=UTC)])
    out = io.StringIO()
    call_command("prune_history", stdout=out)
    assert out.getvalue().strip() == (
        "TRACKING_HISTORY_DAYS is 0: history is kept whole, nothing pruned"
    )
    assert Position.objects.count() == 1


@pytest.fixture
def at_0009() -> Iterator[MigrationExecutor]:
    """The database migrated back to before history was partitioned, and
    forward again at the end whatever happened."""
    executor = MigrationExecutor(connection)
    executor.migrate([("tracking", "0009_visit_pending")])
    try:
        yield MigrationExecutor(connection)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
        # The partitions this process knew of went with the table.
        retention.forget_known_days()


@pytest.mark.django_db(transaction=True)
@override_settings(TRACKING_HISTORY_DAYS=3)
def test_the_migration_keeps_every_row_of_an_unpartitioned_table(
    at_0009: MigrationExecutor, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_apps = at_0009.loader.project_state([("tracking", "0009_visit_pending")]).apps
    old_tracker = old_apps.get_model("tracking", "Tracker")
    old_position = old_apps.get_model("tracking", "Position")
    trackers = [old_tracker.objects.create(id=uuid.uuid4(), name=f"t{n}") for n in range(3)]
    # Six days up to now, each tracker every 20 minutes.
    moments = hourly(now - timedelta(days=6), now)
    old_position.objects.bulk_create(
        old_position(
            tracker=tracker,
            timestamp=moment + timedelta(minutes=20 * n),
            latitude=60.0 + n,
            longitude=24.0,
            received_at=now,
        )
        for tracker in trackers
        for moment in moments
        for n in range(3)
    )
    before = sorted(old_position.objects.values_list("id", "tracker_id", "timestamp", "latitude"))

    at_0009.loader.build_graph()
    at_0009.migrate([("tracking", "0010_history_partitions")])

    after = sorted(Position.objects.values_list("id", "tracker_id", "timestamp", "latitude"))
    assert after == before and len(after) == 3 * 3 * len(moments)
    # New rows get new ids, after the old ones.
    add_positions(Tracker.objects.get(id=trackers[0].id), [now + timedelta(seconds=1)])
    newest = Position.objects.order_by("-id").values_list(
        "id", "tracker_id", "timestamp", "latitude"
    )[0]
    assert newest[0] > max(row[0] for row in before)
    if connection.vendor != "postgresql":
        return
    # The old table is a partition up to the midnight after today; its rows
    # older than the cutoff go in chunks, the rest stay until its range is past.
    [legacy] = [part for part in retention.partitions() if part.name.endswith("_legacy")]
    assert legacy.lower is None
    assert legacy.upper == retention.day_start(now.date() + timedelta(days=1))
    monkeypatch.setattr(retention, "CHUNK", 100)
    limit = now - timedelta(days=3)
    report = retention.prune(now=now)
    kept = [row for row in before if row[2] >= limit]
    assert report.deleted[retention.POSITIONS] == len(before) - len(kept) > 100
    remaining = sorted(Position.objects.values_list("id", "tracker_id", "timestamp", "latitude"))
    assert remaining == sorted([*kept, newest])
    # Once its whole range is past the cutoff, the old table is dropped whole;
    # a day partition after it stays.
    add_positions(Tracker.objects.get(id=trackers[1].id), [now + timedelta(days=3)])
    later = retention.prune(now=now + timedelta(days=5))
    assert legacy.name in [name for name, _ in later.dropped]
    assert list(Position.objects.values_list("timestamp", flat=True)) == [now + timedelta(days=3)]


@on_partitions(days=0)
def test_a_batch_for_a_day_whose_partition_another_process_dropped_is_stored_all_the_same(
    tracker: Tracker,
) -> None:

    moment = datetime(2035, 3, 3, 3, tzinfo=UTC)
    retention.ensure_days([moment.date()])
    # Dropped behind this process's back: it still believes the day is there.
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {retention.partition_name(moment.date())}")
    body = event_body(tracker_id=tracker.id, latitude=60.0, longitude=24.0, at=moment)

    result = ingest_batch(events=[RawEvent(body=body, origin="t")], now=moment)

    assert (result.accepted, result.new) == (1, 1)
    assert retention.partition_name(moment.date()) in day_names()


@on_partitions(days=30)
def test_prune_history_names_each_partition_it_would_drop_then_drops_it(
    tracker: Tracker, now: datetime
) -> None:
    old_day = (now - timedelta(days=40)).date()
    moments = [retention.day_start(old_day) + timedelta(hours=hour) for hour in range(5)]
    add_positions(tracker, moments)
    name = retention.partition_name(old_day)

    dry = io.StringIO()
    call_command("prune_history", "--dry-run", stdout=dry)
    assert f"would drop partition {name} (5 positions)" in dry.getvalue().splitlines()
    assert name in day_names() and Position.objects.count() == 5

    out = io.StringIO()
    call_command("prune_history", stdout=out)
    assert f"drop partition {name} (5 positions)" in out.getvalue().splitlines()
    assert name not in day_names() and Position.objects.count() == 0
