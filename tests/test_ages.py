"""tracking/ages.py: the wording of ages, pinned by tests/cases/ages.json (shared with ages.js)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import cases
from tracking.ages import ago

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("case", cases.load("ages")["cases"], ids=cases.case_id)
def test_an_age_reads_as_its_case_says(case: dict[str, Any]) -> None:
    moment = NOW - timedelta(milliseconds=case["ageMs"])
    assert ago(moment, now=NOW) == case["text"]


def test_an_age_counts_microseconds_too() -> None:
    assert ago(NOW - timedelta(seconds=59, microseconds=999_999), now=NOW) == "59 s ago"
    assert ago(NOW - timedelta(seconds=60, microseconds=1), now=NOW) == "1 min ago"
