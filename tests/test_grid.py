from __future__ import annotations

import re
from typing import Any

import pytest

from tests import cases
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


# The rules the browser shares (grid.js) are pinned by tests/cases/grid.json,
# which test_map_page.py also runs against grid.js in Chromium.
CASES = cases.load("grid")


@pytest.mark.parametrize("case", CASES["cellOf"], ids=cases.case_id)
def test_a_point_is_in_the_cell_its_case_names(case: dict[str, Any]) -> None:
    cell = Grid(case["size"]).cell_of(latitude=case["latitude"], longitude=case["longitude"])
    assert cell == Cell(*case["cell"])


@pytest.mark.parametrize("case", CASES["wrapX"], ids=cases.case_id)
def test_a_column_number_wraps_into_the_grid_as_its_case_says(case: dict[str, Any]) -> None:
    assert Grid(case["size"]).wrap_x(case["x"]) == case["wrapped"]


@pytest.mark.parametrize("case", CASES["cellsCovering"], ids=cases.case_id)
def test_a_viewport_is_covered_by_the_cells_its_case_lists(case: dict[str, Any]) -> None:
    grid = Grid(case["size"])
    covering = grid.cells_covering(**case["bounds"])
    if case["cells"] is None:
        # Where the browser gives up, the server would refuse the cells too.
        with pytest.raises(TooManyCells):
            parse_cells(
                [list(cell) for cell in covering],
                grid=grid,
                name="cells",
                max_count=case["maxCells"],
            )
    else:
        assert covering == [Cell(*cell) for cell in case["cells"]]
        if "maxCells" in case:
            joined = parse_cells(case["cells"], grid=grid, name="cells", max_count=case["maxCells"])
            assert joined == covering


def test_cell_numbers_outside_the_grid_are_not_cells() -> None:
    grid = Grid(5.0)
    assert grid.contains(Cell(35, 17)) and grid.contains(Cell(-36, -18))
    assert not grid.contains(Cell(36, 0)) and not grid.contains(Cell(0, 18))


@pytest.mark.parametrize(
    ("longitude", "normal"), [(180, -180), (190, -170), (-190, 170), (540, -180), (0, 0)]
)
def test_longitudes_fold_into_minus_180_to_180(longitude: float, normal: float) -> None:
    assert normalize_longitude(longitude) == normal


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
