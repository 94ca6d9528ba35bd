"""The search of the tracker list (tracking/selectors.py tracker_search) finds
each shared case's tracker as tests/cases/search.json says; the map's tracker
list runs the same cases in Chromium (tests/test_tracker_list.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import cases
from tracking.models import Tracker
from tracking.selectors import tracker_page

CASES = cases.load("search")["cases"]


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=cases.case_id)
def test_the_search_finds_a_tracker_as_the_shared_case_says(case: dict[str, Any]) -> None:
    tracker = Tracker.objects.create(id=uuid.UUID(case["id"]), name=case["name"])
    Tracker.objects.create(id=uuid.UUID(int=1), name="Someone else")

    page = tracker_page(search=case["query"], page_size=500)

    assert (tracker in page.object_list) is case["found"]
