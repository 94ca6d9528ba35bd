"""Cases shared by a rule's Python and JavaScript twins (STYLE 13).

Each JSON file here is read by the Python tests of the rule and, in
tests/test_map_page.py, run against the map's ES module in Chromium, so the
two implementations cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def load(name: str) -> dict[str, Any]:
    """The cases of ``name`` (e.g. ``"grid"`` for grid.json)."""
    cases: dict[str, Any] = json.loads((FOLDER / f"{name}.json").read_text(encoding="utf-8"))
    return cases


def case_id(case: dict[str, Any]) -> str:
    """A short test id: the case's reason if it has one, else its values."""
    return str(case.get("why") or ",".join(f"{k}={v}" for k, v in case.items()))
