from __future__ import annotations

import re

import pytest

from tracking.grid import (
    Cell,
    Grid,
    InvalidCells,
    TooManyCells,
    group_name,
    normalize_longitude,
    parse_cells,
)

GRID = Grid(1.0)


def test_a_cell_is_numbered_longitude_first() -> None:
    assert GRID.cell_of(latitude=60.17, longitude=24.94) == Cell(x=24, y=60)


def test_negative_coordinates_round_down() -> None:
    assert GRID.cell_of(latitude=-33.87, longitude=151.21) == Cell(151, -34)
    assert GRID.cell_of(latitude=40.71, longitude=-74.01) == Cell(-75, 40)
    assert GRID.cell_of(latitude=-0.5, longitude=-0.5) == Cell(-1, -1)


def test_longitude_180_is_the_cell_of_minus_180() -> None:
    assert GRID.cell_of(latitude=0, longitude=180) == Cell(-180, 0)
    assert GRID.cell_of(latitude=0, longitude=179.999) == Cell(179, 0)


def test_the_north_pole_is_in_the_top_row() -> None:
    assert GRID.cell_of(latitude=90, longitude=0) == Cell(0, 89)
    assert GRID.cell_of(latitude=-90, longitude=0) == Cell(0, -90)


def test_larger_cells_divide_the_world_too() -> None:
    grid = Grid(5.0)
    assert grid.cell_of(latitude=60.17, longitude=24.94) == Cell(4, 12)
    assert grid.contains(Cell(35, 17)) and not grid.contains(Cell(36, 0))


@pytest.mark.parametrize(
    ("longitude", "normal"), [(180, -180), (190, -170), (-190, 170), (540, -180), (0, 0)]
)
def test_longitudes_fold_into_minus_180_to_180(longitude: float, normal: float) -> None:
    assert normalize_longitude(longitude) == normal


def test_a_viewport_rounds_west_and_south_down_and_east_and_north_up_ends_excluded() -> None:
    cells = GRID.cells_covering(west=24.5, south=60.1, east=25.0, north=60.4)
    assert cells == [Cell(24, 60)]
    cells = GRID.cells_covering(west=24.5, south=60.1, east=25.2, north=61.0)
    assert sorted(cells) == [Cell(24, 60), Cell(25, 60)]


def test_a_viewport_across_the_antimeridian_wraps_its_columns() -> None:
    cells = GRID.cells_covering(west=178.5, south=-17.5, east=181.5, north=-16.5)
    assert sorted(cells) == sorted(
        [
            Cell(178, -18),
            Cell(178, -17),
            Cell(179, -18),
            Cell(179, -17),
            Cell(-180, -18),
            Cell(-180, -17),
            Cell(-179, -18),
            Cell(-179, -17),
        ]
    )


def test_a_viewport_wider_than_the_world_covers_each_column_once() -> None:
    cells = GRID.cells_covering(west=-400, south=0, east=400, north=1)
    assert len(cells) == 360 and len(set(cells)) == 360


def test_latitudes_beyond_the_poles_are_clamped() -> None:
    cells = GRID.cells_covering(west=0, south=88.5, east=1, north=95)
    assert cells == [Cell(0, 88), Cell(0, 89)]


def test_group_names_are_valid_for_every_channel_layer_and_distinct() -> None:
    names = {group_name(Cell(x, y)) for x in (-180, -1, 0, 1, 179) for y in (-90, -1, 0, 89)}
    assert len(names) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]{1,99}", name) for name in names)
    assert group_name(Cell(-12, 60)) != group_name(Cell(12, 60))
    assert group_name(Cell(-12, 60)) == "cell.m12.60"


def test_parse_cells_reads_integer_pairs_and_drops_duplicates() -> None:
    cells = parse_cells([[24, 60], [-180, -90], [24, 60]], grid=GRID, name="cells", max_count=50)
    assert cells == [Cell(24, 60), Cell(-180, -90)]


@pytest.mark.parametrize(
    "value",
    [
        "24,60",
        [[24]],
        [[24, 60, 1]],
        [[24.5, 60]],
        [["24", "60"]],
        [[True, 60]],
        [None],
        [[180, 0]],
        [[0, 90]],
        [[-181, 0]],
    ],
)
def test_parse_cells_refuses_anything_but_pairs_of_integers_in_range(value: object) -> None:
    with pytest.raises(InvalidCells):
        parse_cells(value, grid=GRID, name="cells", max_count=50)


def test_parse_cells_refuses_more_than_the_limit_as_a_whole() -> None:
    fifty = [[x, 0] for x in range(50)]
    assert len(parse_cells(fifty, grid=GRID, name="cells", max_count=50)) == 50
    with pytest.raises(TooManyCells, match="51 cells, more than the 50"):
        parse_cells([*fifty, [50, 0]], grid=GRID, name="cells", max_count=50)
