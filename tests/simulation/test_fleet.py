from __future__ import annotations

import itertools
import re
import types
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from tracking.events import LocationEvent, parse_event
from tracking.grid import Grid
from tracking.simulation.fleet import (
    Fleet,
    Route,
    encode_event,
    format_timestamp,
    haversine_distance,
    load_routes,
)

START = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


def parsed(body: dict[str, object]) -> LocationEvent:
    return parse_event(encode_event(body), now=START + timedelta(days=365), max_future=timedelta(0))


def tracks(events: list[dict[str, object]]) -> dict[str, list[LocationEvent]]:
    by_tracker: dict[str, list[LocationEvent]] = defaultdict(list)
    for body in events:
        by_tracker[str(body["Id"])].append(parsed(body))
    return by_tracker


def metres(a: LocationEvent, b: LocationEvent) -> float:
    return haversine_distance(
        latitude1=a.latitude,
        longitude1=a.longitude,
        latitude2=b.latitude,
        longitude2=b.longitude,
    )


def seconds(a: LocationEvent, b: LocationEvent) -> float:
    return (b.timestamp - a.timestamp).total_seconds()


def bundled(name: str) -> Route:
    return next(route for route in load_routes() if route.name == name)


def antimeridian_route() -> Route:
    (route,) = [
        r
        for r in load_routes()
        if min(lng for _, lng in r.points) < 180 < max(lng for _, lng in r.points)
    ]
    return route


# A straight line due north along a meridian, where interpolating in degrees
# is exactly the great circle.
NORTHBOUND = Route(
    name="Northbound",
    points=((60.0, 25.0), (60.005, 25.0), (60.01, 25.0), (60.018, 25.0)),
    closed=False,
)
SQUARE = Route(
    name="Square",
    points=((0.0, 0.0), (0.0, 0.005), (0.005, 0.005), (0.005, 0.0)),
    closed=True,
)


# Determinism


def test_the_same_seed_gives_the_same_trackers_and_the_same_reports() -> None:
    def run() -> tuple[object, list[dict[str, object]]]:
        fleet = Fleet(routes=load_routes(), trackers=20, seed=7, start=START)
        return fleet.trackers, fleet.events_until(START + timedelta(seconds=30))

    assert run() == run()


def test_different_seeds_give_different_trackers_and_positions() -> None:
    one = Fleet(routes=load_routes(), trackers=5, seed=1, start=START)
    two = Fleet(routes=load_routes(), trackers=5, seed=2, start=START)

    assert {t.tracker_id for t in one.trackers}.isdisjoint(t.tracker_id for t in two.trackers)
    moment = START + timedelta(seconds=1)
    assert one.events_until(moment) != two.events_until(moment)


def test_a_fleet_started_again_with_its_seed_carries_on_where_its_trackers_are() -> None:
    """A restarted demo: each tracker's first report is where the first run's
    tracker is by then, not back where it started."""
    routes = load_routes()
    first = Fleet(routes=routes, trackers=30, seed=1, start=START)
    restart = START + timedelta(minutes=7, seconds=13)
    again = Fleet(routes=routes, trackers=30, seed=1, start=restart)
    went_on = tracks(first.events_until(restart + timedelta(seconds=2)))
    came_back = tracks(again.events_until(restart + timedelta(seconds=2)))

    assert went_on.keys() == came_back.keys()
    for tracker in first.trackers:
        resumed = came_back[str(tracker.tracker_id)][0]
        nearest = min(went_on[str(tracker.tracker_id)], key=lambda e: abs(seconds(e, resumed)))
        # About as far as it drives between the two reports (open routes turn back at
        # their ends, so never further; steps are straight in degrees, not on the sphere).
        allowed = 1.1 * tracker.speed_kmh / 3.6 * abs(seconds(nearest, resumed)) + 1.0
        assert metres(nearest, resumed) <= allowed, tracker.name


def test_reports_are_the_same_however_the_calls_are_chunked() -> None:
    routes = load_routes()
    whole = Fleet(routes=routes, trackers=15, seed=3, start=START)
    pieces = Fleet(routes=routes, trackers=15, seed=3, start=START)

    expected = whole.events_until(START + timedelta(seconds=20))
    got: list[dict[str, object]] = []
    for step in range(1, 81):
        got += pieces.events_until(START + timedelta(seconds=step / 4))

    assert got == expected


def test_tracker_ids_are_version_4_uuids_and_bodies_carry_them() -> None:
    fleet = Fleet(routes=load_routes(), trackers=10, seed=5, start=START)
    events = fleet.events_until(START + timedelta(seconds=1))

    assert all(t.tracker_id.version == 4 for t in fleet.trackers)
    assert {uuid.UUID(str(body["Id"])) for body in events} == {t.tracker_id for t in fleet.trackers}


# The fleet


def test_trackers_are_dealt_to_routes_round_robin_with_unique_names() -> None:
    routes = load_routes()
    fleet = Fleet(routes=routes, trackers=len(routes) + 3, seed=1, start=START)

    names = [t.name for t in fleet.trackers]
    assert len(set(names)) == len(names)
    assert {t.route_name for t in fleet.trackers} == {r.name for r in routes}
    assert names[0] == f"{routes[0].name} #01"
    assert names[len(routes)] == f"{routes[0].name} #02"


def test_tracker_speeds_vary_at_most_ten_percent_around_the_fleet_speed() -> None:
    fleet = Fleet(routes=load_routes(), trackers=200, speed_kmh=40.0, seed=1, start=START)
    speeds = [t.speed_kmh for t in fleet.trackers]

    assert all(36.0 <= speed <= 44.0 for speed in speeds)
    assert len(set(speeds)) > 20
    events = fleet.events_until(START + timedelta(seconds=1))
    by_id = {str(t.tracker_id): t.speed_kmh for t in fleet.trackers}
    assert all(body["Speed"] == by_id[str(body["Id"])] for body in events)


def test_a_fleet_refuses_nonsense_settings() -> None:
    routes = load_routes()
    with pytest.raises(ValueError, match="tracker"):
        Fleet(routes=routes, trackers=0, start=START)
    with pytest.raises(ValueError, match="route"):
        Fleet(routes=[], trackers=1, start=START)
    with pytest.raises(ValueError, match="interval"):
        Fleet(routes=routes, trackers=1, interval=0, start=START)
    with pytest.raises(ValueError, match="jitter"):
        Fleet(routes=routes, trackers=1, jitter=1.0, start=START)
    with pytest.raises(ValueError, match="timezone"):
        Fleet(routes=routes, trackers=1, start=datetime(2026, 11, 26))


# Timing


def test_each_tracker_reports_every_interval_within_the_jitter_bounds() -> None:
    fleet = Fleet(
        routes=load_routes(),
        trackers=20,
        interval=2.0,
        jitter=0.25,
        seed=11,
        start=START,
    )
    gaps = [
        seconds(a, b)
        for track in tracks(fleet.events_until(START + timedelta(minutes=5))).values()
        for a, b in itertools.pairwise(track)
    ]

    assert all(1.5 - 1e-6 <= gap <= 2.5 + 1e-6 for gap in gaps)
    assert min(gaps) < 1.55
    assert max(gaps) > 2.45
    assert sum(gaps) / len(gaps) == pytest.approx(2.0, abs=0.02)


def test_without_jitter_reports_come_exactly_every_interval() -> None:
    fleet = Fleet(routes=load_routes(), trackers=5, interval=0.5, jitter=0, seed=1, start=START)
    for track in tracks(fleet.events_until(START + timedelta(seconds=30))).values():
        for a, b in itertools.pairwise(track):
            assert seconds(a, b) == pytest.approx(0.5, abs=2e-6)


def test_first_reports_are_spread_over_the_first_interval() -> None:
    fleet = Fleet(routes=load_routes(), trackers=100, interval=1.0, seed=2, start=START)
    events = fleet.events_until(START + timedelta(seconds=0.999999))
    firsts = [track[0].timestamp for track in tracks(events).values()]

    assert len(firsts) == 100
    assert all(START <= first < START + timedelta(seconds=1) for first in firsts)
    assert max(firsts) - min(firsts) > timedelta(seconds=0.8)


def test_reports_come_in_time_order_up_to_and_including_the_moment() -> None:
    fleet = Fleet(routes=load_routes(), trackers=30, seed=4, start=START)
    moment = START + timedelta(seconds=10)
    times = [parsed(body).timestamp for body in fleet.events_until(moment)]

    assert times == sorted(times)
    assert times[-1] <= moment
    assert fleet.next_due() > moment


def test_next_due_is_the_time_of_the_next_report() -> None:
    fleet = Fleet(routes=load_routes(), trackers=30, seed=4, start=START)
    fleet.events_until(START + timedelta(seconds=3))
    due = fleet.next_due()

    assert fleet.events_until(due - timedelta(microseconds=1)) == []
    first, *_ = fleet.events_until(due)
    assert first["Ts"] == format_timestamp(due)


# Movement


def test_a_tracker_moves_its_speed_times_the_gap_along_the_route() -> None:
    fleet = Fleet(routes=[NORTHBOUND], trackers=5, speed_kmh=50, seed=8, start=START)
    for track in tracks(fleet.events_until(START + timedelta(seconds=20))).values():
        for a, b in itertools.pairwise(track):
            assert a.speed is not None
            expected = a.speed / 3.6 * seconds(a, b)
            moved = metres(a, b)
            # Less only where the tracker turned back at an end in between.
            turned = a.heading != b.heading
            assert moved == pytest.approx(expected, abs=0.3) or (turned and moved < expected)


def test_no_tracker_jumps_further_than_it_drives_between_reports() -> None:
    fleet = Fleet(routes=load_routes(), trackers=70, seed=9, start=START)
    for track in tracks(fleet.events_until(START + timedelta(minutes=2))).values():
        for a, b in itertools.pairwise(track):
            assert a.speed is not None
            assert metres(a, b) <= a.speed / 3.6 * seconds(a, b) + 0.3


def test_a_tracker_on_a_closed_loop_wraps_around_past_its_first_point() -> None:
    # About 2.2 km round; at 50 km/h a tracker laps it in under three minutes.
    fleet = Fleet(routes=[SQUARE], trackers=4, speed_kmh=50, seed=1, start=START)
    for track in tracks(fleet.events_until(START + timedelta(minutes=10))).values():
        headings = {event.heading for event in track}
        # Four sides, all driven, in one direction only.
        assert len(headings) == 4
        for a, b in itertools.pairwise(track):
            assert a.speed is not None
            assert metres(a, b) <= a.speed / 3.6 * seconds(a, b) + 0.3
        # The closing side (from the last point back to the first) is driven too.
        on_closing_side = [e for e in track if abs(e.longitude) < 1e-9 and 0 < e.latitude < 0.005]
        assert on_closing_side


def test_a_tracker_on_an_open_route_turns_back_at_its_ends() -> None:
    fleet = Fleet(routes=[NORTHBOUND], trackers=3, speed_kmh=50, seed=6, start=START)
    for track in tracks(fleet.events_until(START + timedelta(minutes=10))).values():
        assert all(60.0 <= event.latitude <= 60.018 for event in track)
        assert {event.heading for event in track} == {0.0, 180.0}
        for a, b in itertools.pairwise(track):
            if a.heading != b.heading:
                assert a.speed is not None
                reach = a.speed / 3.6 * seconds(a, b)
                end = 60.018 if a.heading == 0.0 else 60.0
                to_end = haversine_distance(
                    latitude1=a.latitude,
                    longitude1=25.0,
                    latitude2=end,
                    longitude2=25.0,
                )
                assert to_end <= reach


def test_heading_is_the_bearing_of_the_segment_in_the_direction_of_travel() -> None:
    eastbound = Route(name="Equator", points=((0.0, 10.0), (0.0, 10.2)), closed=False)
    fleet = Fleet(routes=[eastbound], trackers=10, seed=3, start=START)
    events = fleet.events_until(START + timedelta(seconds=5))

    assert {body["Heading"] for body in events} == {90.0, 270.0}


def test_every_heading_is_in_0_to_360_and_every_position_in_range() -> None:
    fleet = Fleet(routes=load_routes(), trackers=100, seed=12, start=START)
    for body in fleet.events_until(START + timedelta(seconds=30)):
        assert isinstance(body["Heading"], float)
        assert isinstance(body["Lat"], float)
        assert isinstance(body["Lng"], float)
        assert 0.0 <= body["Heading"] < 360.0
        assert -90.0 <= body["Lat"] <= 90.0
        assert -180.0 <= body["Lng"] < 180.0


# The antimeridian


def test_a_tracker_crossing_the_antimeridian_reports_longitudes_in_range() -> None:
    fleet = Fleet(
        routes=[antimeridian_route()],
        trackers=300,
        speed_kmh=50,
        seed=21,
        start=START,
    )
    events = fleet.events_until(START + timedelta(minutes=5))
    grid = Grid(1.0)

    assert all(-180.0 <= body["Lng"] < 180.0 for body in events)  # type: ignore[operator]
    crossings = 0
    for track in tracks(events).values():
        for a, b in itertools.pairwise(track):
            # Interpolation takes the short way across 180: no jump round the globe.
            assert metres(a, b) < 1000
            assert a.speed is not None
            assert metres(a, b) <= a.speed / 3.6 * seconds(a, b) + 0.3
            if (a.longitude > 0) != (b.longitude > 0):
                crossings += 1
                assert abs(a.longitude) > 179.9
                assert abs(b.longitude) > 179.9
    assert crossings > 0
    columns = {
        grid.cell_of(latitude=e.latitude, longitude=e.longitude).x
        for track in tracks(events).values()
        for e in track
    }
    assert {179, -180} <= columns


def test_loading_unwraps_longitudes_so_a_route_crosses_180_the_short_way() -> None:
    route = Route(
        name="Dateline ferry",
        points=((-16.7, 179.95), (-16.75, -179.95), (-16.8, -179.9)),
        closed=False,
    )

    assert [lng for _, lng in route.points] == pytest.approx([179.95, 180.05, 180.1])
    assert route.length < 20_000
    assert route.position_at(route.cumulative[1])[1] == pytest.approx(-179.95)


def test_a_closed_route_across_180_closes_the_short_way() -> None:
    # The way back from the last point to the first crosses 180 degrees.
    loop = Route(
        name="Dateline loop",
        points=((-16.7, -179.95), (-16.8, -179.95), (-16.8, 179.95), (-16.7, 179.95)),
        closed=True,
    )
    closing_side = loop.length - loop.cumulative[3]

    assert closing_side < 11_000
    assert loop.position_at(loop.cumulative[3] + closing_side / 2) == pytest.approx((-16.7, -180.0))


# Routes


def test_every_bundled_route_loads_with_a_unique_name_and_a_sensible_length() -> None:
    routes = load_routes()

    assert len(routes) >= 6
    assert len({r.name for r in routes}) == len(routes)
    for route in routes:
        assert len(route.points) >= 2
        assert 1_000 < route.length < 500_000
        assert route.cumulative[-1] == route.length
        assert all(-90 <= lat <= 90 for lat, _ in route.points)
        lngs = [lng for _, lng in route.points]
        assert all(abs(b - a) < 1 for a, b in itertools.pairwise(lngs))


def test_the_helsinki_loops_are_the_mirrored_systems_closed_loops() -> None:
    one, two = bundled("Helsinki loop 1"), bundled("Helsinki loop 2")

    assert one.closed and two.closed
    assert (len(one.points), len(two.points)) == (41, 34)
    assert one.length == pytest.approx(6_200, rel=0.05)
    assert two.length == pytest.approx(3_600, rel=0.05)
    assert one.points[0] == (60.170421, 24.941072)  # (latitude, longitude)


def test_the_bundled_routes_cover_cells_on_every_side_of_the_globe() -> None:
    grid = Grid(1.0)
    cells_by_route = {
        route.name: {grid.cell_of(latitude=lat, longitude=lng) for lat, lng in route.points}
        for route in load_routes()
    }
    cells = set().union(*cells_by_route.values())

    assert len(cells) >= 6
    assert any(cell.y < 0 for cell in cells)  # south of the equator
    assert any(cell.x < 0 and cell.x != -180 for cell in cells)  # west of Greenwich
    assert any(cell.x == 179 for cell in cells)  # just west of 180
    assert any(cell.x == -180 for cell in cells)  # just east of 180
    assert max(len(c) for c in cells_by_route.values()) >= 3  # an intercity route
    assert any(not route.closed for route in load_routes())


def test_a_closed_routes_repeated_first_point_is_dropped() -> None:
    square = Route(name="Square again", points=(*SQUARE.points, (0.0, 0.0)), closed=True)

    assert square.points == SQUARE.points
    assert square.length == pytest.approx(SQUARE.length)


def test_position_at_wraps_a_closed_route_and_clamps_an_open_one() -> None:
    assert SQUARE.position_at(SQUARE.length + 10) == pytest.approx(SQUARE.position_at(10))
    assert NORTHBOUND.position_at(-5) == (60.0, 25.0)
    assert NORTHBOUND.position_at(NORTHBOUND.length + 5) == pytest.approx((60.018, 25.0))


def write(folder: Path, name: str, content: object) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return path


def feature(
    coordinates: object, *, name: object = "Test", closed: object = False
) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"name": name, "closed": closed},
        "geometry": {"type": "LineString", "coordinates": coordinates},
    }


def collection(*features: object) -> dict[str, object]:
    return {"type": "FeatureCollection", "features": list(features)}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not a readable JSON"),
        ({"type": "Feature"}, "FeatureCollection"),
        (collection(), "no features"),
        (collection({"type": "Feature", "properties": {}}), "'name'"),
        (collection(feature([[24.9, 60.1], [24.8, 60.2]], closed="yes")), "closed"),
        (
            collection(
                {
                    "type": "Feature",
                    "properties": {"name": "Point", "closed": False},
                    "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},
                }
            ),
            "LineString",
        ),
        (collection(feature([[24.9, 60.1]])), "two distinct points"),
        (collection(feature([[24.9, 60.1], [24.9, 60.1]])), "two distinct points"),
        (collection(feature([[60.1, 24.9], [200.0, 24.8]])), "longitude 200"),
        (collection(feature([[24.9, 60.1], [24.8, 95.0]])), "latitude 95"),
        (collection(feature([[24.9, 60.1], "24.8,60.2"])), "not [longitude, latitude]"),
    ],
)
def test_a_malformed_route_file_is_refused_with_its_name(
    tmp_path: Path, content: object, reason: str
) -> None:
    path = write(tmp_path, "broken.geojson", content)

    with pytest.raises(ValueError, match=re.escape(reason)) as raised:
        load_routes(tmp_path)
    assert str(path) in str(raised.value)


def test_route_names_must_be_unique_across_files(tmp_path: Path) -> None:
    line = feature([[24.9, 60.1], [24.8, 60.2]], name="Twice")
    write(tmp_path, "a.geojson", collection(line))
    second = write(tmp_path, "b.geojson", collection(line))

    with pytest.raises(ValueError, match="Twice") as raised:
        load_routes(tmp_path)
    assert str(second) in str(raised.value)


def test_a_folder_without_routes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("no *.geojson")):
        load_routes(tmp_path)


def test_routes_load_from_a_folder_in_file_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.geojson", collection(feature([[1, 1], [1, 2]], name="B")))
    write(tmp_path, "a.geojson", collection(feature([[1, 1], [2, 1]], name="A")))
    (tmp_path / "NOTICE.md").write_text("not a route")

    assert [r.name for r in load_routes(tmp_path)] == ["A", "B"]
    assert load_routes(tmp_path)[0].points == ((1.0, 1.0), (1.0, 2.0))  # (lat, lng)


# Wire format


def test_every_body_passes_the_event_parser() -> None:
    fleet = Fleet(routes=load_routes(), trackers=50, seed=13, start=START)
    events = fleet.events_until(START + timedelta(seconds=20))

    assert len(events) > 50 * 18
    for body in events:
        assert list(body) == ["Id", "Lat", "Lng", "Ts", "Speed", "Heading"]
        event = parse_event(
            encode_event(body),
            now=START + timedelta(seconds=20),
            max_future=timedelta(minutes=5),
        )
        assert event.tracker_id == uuid.UUID(str(body["Id"]))
        assert (event.latitude, event.longitude) == (body["Lat"], body["Lng"])
        assert format_timestamp(event.timestamp) == body["Ts"]
        assert event.speed == body["Speed"]
        assert event.heading == body["Heading"]


def test_encode_event_writes_one_compact_json_line() -> None:
    body = {"Id": "x", "Lat": 60.1, "Lng": -0.5, "Ts": "t", "Speed": 50.0}

    encoded = encode_event(types.MappingProxyType(body))

    assert encoded == b'{"Id":"x","Lat":60.1,"Lng":-0.5,"Ts":"t","Speed":50.0}'
    assert orjson.loads(encoded) == body


def test_format_timestamp_writes_seven_fractional_digits_and_z() -> None:
    moment = datetime(2026, 11, 26, 11, 12, 40, 123456, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-11-26T11:12:40.1234560Z"
    assert format_timestamp(moment.replace(microsecond=0)) == ("2026-11-26T11:12:40.0000000Z")
    helsinki = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_timestamp(helsinki) == "2026-11-26T11:12:40.1234560Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", format_timestamp(moment))


def test_format_timestamp_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2026, 11, 26, 11, 12, 40))


def test_the_commands_drive_the_same_fleet_each_time_unless_given_another_seed() -> None:
    """A restarted demo (or simulator) on the same database carries on with its
    trackers instead of registering a new fleet beside the old one."""
    import argparse

    from tracking.management.simulator_options import add_simulator_arguments, fleet_from_options

    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser, trackers=12)  # type: ignore[arg-type]

    def tracker_ids(*arguments: str) -> list[object]:
        options = vars(parser.parse_args(list(arguments)))
        return [tracker.tracker_id for tracker in fleet_from_options(options, start=START).trackers]

    first_start = tracker_ids()
    assert tracker_ids() == first_start
    # A larger fleet keeps the trackers of the smaller one.
    assert tracker_ids("--trackers", "20")[:12] == first_start
    assert set(tracker_ids("--seed", "99")).isdisjoint(first_start)
