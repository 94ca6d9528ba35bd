"""The admin's geofence pages: the form as the map widget submits it,
importing a GeoJSON file (the use case of ``manage.py import_geofences``),
and the latest visits on a fence's and a tracker's page."""

from __future__ import annotations

import html
import json
import math
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_admin import BOW_TIE, CIRCLE, SQUARE, row_of, seen
from tests.test_geofences import JSON, NEAR_VALID
from tests.test_import_geofences import HELSINKI, collection, square
from tracking.admin import IMPORT_MAX_BYTES, LATEST_VISITS
from tracking.geofences import MAX_RADIUS_M, MAX_VERTICES, parse_geojson_text
from tracking.models import Geofence, Visit

pytestmark = pytest.mark.django_db

IMPORT = reverse("admin:tracking_geofence_import")
GEOFENCES = reverse("admin:tracking_geofence_changelist")


def upload(
    client: Client,
    content: bytes | str | object,
    *,
    replace: bool = False,
    name: str = "fences.geojson",
) -> object:
    raw = (
        content
        if isinstance(content, bytes)
        else (content.encode() if isinstance(content, str) else json.dumps(content).encode())
    )
    data: dict[str, object] = {"file": SimpleUploadedFile(name, raw, "application/geo+json")}
    if replace:
        data["replace"] = "on"
    return client.post(IMPORT, data)


def file_errors(response: object) -> list[str]:
    return list(response.context["form"].errors.get("file", []))  # type: ignore[attr-defined]


def names() -> list[str]:
    return sorted(Geofence.objects.values_list("name", flat=True))


ADD = reverse("admin:tracking_geofence_add")


def compact(geometry: dict[str, object], **properties: object) -> str:
    """A Feature as the map widget writes it: compact JSON, 7 decimals."""
    return json.dumps(
        {"type": "Feature", "properties": properties, "geometry": geometry}, separators=(",", ":")
    )


def ring(*points: tuple[float, float]) -> list[list[float]]:
    return [[lon, lat] for lon, lat in (*points, points[0])]


DRAWN = {
    "rectangle": (
        compact(
            {
                "type": "Polygon",
                "coordinates": [
                    ring((24.9301234, 60.17), (24.9301234, 60.18), (24.94, 60.18), (24.94, 60.17))
                ],
            }
        ),
        "polygon",
        "4 vertices",
    ),
    "circle": (
        compact({"type": "Point", "coordinates": [24.9384, 60.1699]}, radius=312.5),
        "circle",
        "312.5 m",
    ),
    "edited multipolygon with a hole": (
        compact(
            {
                "type": "MultiPolygon",
                "coordinates": [
                    [
                        ring((24.90, 60.15), (24.98, 60.15), (24.98, 60.19), (24.90, 60.19)),
                        ring((24.93, 60.16), (24.95, 60.16), (24.95, 60.18), (24.93, 60.18)),
                    ],
                    [ring((25.00, 60.15), (25.02, 60.15), (25.02, 60.17))],
                ],
            },
            name="kept from the stored feature",
        ),
        "multipolygon of 2",
        "11 vertices, 1 hole",
    ),
}


@pytest.mark.parametrize("drawing", sorted(DRAWN))
def test_a_shape_drawn_on_the_map_is_saved_as_the_widget_wrote_it(
    admin_client: Client, drawing: str
) -> None:
    geojson, shape, size = DRAWN[drawing]

    response = admin_client.post(ADD, {"name": drawing, "is_active": "on", "geojson": geojson})

    assert response.status_code == 302
    assert Geofence.objects.get().geojson == geojson
    row = row_of(admin_client.get(GEOFENCES).content.decode(), drawing)
    assert shape in row and size in row


REFUSED = {
    "crossing itself": (BOW_TIE, "crosses itself"),
    "unclosed": (
        compact(
            {
                "type": "Polygon",
                "coordinates": [[[24.93, 60.17], [24.94, 60.17], [24.94, 60.18], [24.93, 60.18]]],
            }
        ),
        "not closed",
    ),
    "too many vertices": (
        compact(
            {
                "type": "Polygon",
                "coordinates": [
                    ring(
                        *(
                            (
                                24.9 + 0.01 * math.cos(2 * math.pi * k / (MAX_VERTICES + 5)),
                                60.17 + 0.01 * math.sin(2 * math.pi * k / (MAX_VERTICES + 5)),
                            )
                            for k in range(MAX_VERTICES + 5)
                        )
                    )
                ],
            }
        ),
        "too many vertices",
    ),
    "circle too big": (
        compact({"type": "Point", "coordinates": [24.9, 60.17]}, radius=MAX_RADIUS_M * 2),
        "radius",
    ),
    "erased": ("", "This field is required."),
}


@pytest.mark.parametrize("drawing", sorted(REFUSED))
def test_a_refused_drawing_is_answered_beside_the_map_with_the_parsers_message(
    admin_client: Client, drawing: str
) -> None:
    geojson, words = REFUSED[drawing]

    response = admin_client.post(ADD, {"name": drawing, "geojson": geojson})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["geojson"]
    assert words in errors[0]
    page = response.content.decode()
    # Django puts a field's errors at the top of its row: right above the map.
    row = page[page.index('class="form-row errors field-geojson"') :]
    assert row.index("errorlist") < row.index('class="fence-map"')
    assert not Geofence.objects.exists()


def test_the_form_redraws_what_was_refused_so_it_can_be_fixed(admin_client: Client) -> None:
    response = admin_client.post(ADD, {"name": "Bow tie", "geojson": BOW_TIE})
    assert html.escape(BOW_TIE) in response.content.decode()


def test_the_geofence_list_links_to_the_import_page(admin_client: Client) -> None:
    content = admin_client.get(GEOFENCES).content.decode()
    assert f'href="{IMPORT}"' in content and "Import GeoJSON" in content


def test_an_uploaded_collection_becomes_one_fence_per_feature(admin_client: Client) -> None:
    response = upload(admin_client, HELSINKI.read_bytes())

    assert response.status_code == 302  # type: ignore[attr-defined]
    expected = sorted(parsed.name for parsed in parse_geojson_text(HELSINKI.read_bytes()))
    assert names() == expected
    shown = admin_client.get(GEOFENCES).content.decode()
    assert f"Imported {len(expected)} of {len(expected)} geofences from the file." in shown


def test_a_refused_feature_refuses_the_file_and_each_is_named(admin_client: Client) -> None:
    bow_tie = json.loads(BOW_TIE)
    unclosed = square("open")
    unclosed["geometry"]["coordinates"][0][-1] = [24.93, 60.175]  # type: ignore[index]
    content = collection(square("fine"), bow_tie, unclosed)

    response = upload(admin_client, content)

    assert response.status_code == 200  # type: ignore[attr-defined]
    errors = file_errors(response)
    assert len(errors) == 2
    assert errors[0].startswith("feature 1: the shape crosses itself")
    assert errors[1].startswith("feature 2: ") and "not closed" in errors[1]
    page = response.content.decode()  # type: ignore[attr-defined]
    assert "nothing was saved" in page and "feature 1: the shape crosses itself" in page
    assert names() == []


def test_a_name_that_exists_refuses_the_file_unless_replace_is_ticked(
    admin_client: Client,
) -> None:
    Geofence.objects.create(name="depot", geojson=json.dumps(square("depot")), is_active=False)
    moved = collection(square("depot", west=25.0), square("yard", west=25.1))

    refused = upload(admin_client, moved)
    assert file_errors(refused) == ["a geofence named 'depot' exists already"]
    assert names() == ["depot"]

    replaced = upload(admin_client, moved, replace=True)
    assert replaced.status_code == 302  # type: ignore[attr-defined]
    assert names() == ["depot", "yard"]
    depot = Geofence.objects.get(name="depot")
    assert depot.fence.contains(latitude=60.175, longitude=25.005)
    assert not depot.is_active  # kept as it was
    shown = admin_client.get(GEOFENCES).content.decode()
    assert "Imported 1 and updated 1 of 2 geofences from the file." in shown


def test_a_file_over_5_mb_is_refused_saying_its_size(admin_client: Client) -> None:
    padded = json.dumps(square("big")) + " " * IMPORT_MAX_BYTES

    response = upload(admin_client, padded)

    assert file_errors(response) == ["The file is 5.0 MB; at most 5 MB can be imported."]
    assert names() == []


def test_a_feature_without_a_name_is_named_after_the_file(admin_client: Client) -> None:
    upload(admin_client, square(None), name="depots.geojson")
    assert names() == ["depots 1"]


def test_only_staff_who_may_add_geofences_can_import(client: Client) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_geofence"))
    client.force_login(viewer)

    assert client.get(IMPORT).status_code == 403
    assert upload(client, square("sneaky")).status_code == 403  # type: ignore[attr-defined]
    assert "Import GeoJSON" not in client.get(GEOFENCES).content.decode()
    assert names() == []

    viewer.user_permissions.add(Permission.objects.get(codename="add_geofence"))
    assert client.get(IMPORT).status_code == 200


def test_the_import_page_asks_anonymous_visitors_to_sign_in(client: Client) -> None:
    response = client.get(IMPORT)
    assert response.status_code == 302 and "/login/" in response["Location"]


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda data: json.dumps(data).encode()),
        NEAR_VALID.map(lambda data: json.dumps(data).encode()),
        st.lists(NEAR_VALID, min_size=1, max_size=3).map(
            lambda features: json.dumps(collection(*features)).encode()
        ),
    ),
    st.booleans(),
)
def test_any_upload_is_imported_whole_or_answered_with_a_form_error(
    admin_client: Client, raw: bytes, replace: bool
) -> None:
    before = list(Geofence.objects.order_by("pk").values_list("name", "geojson"))

    response = upload(admin_client, raw, replace=replace)

    status = response.status_code  # type: ignore[attr-defined]
    if status == 200:
        assert file_errors(response)
        assert list(Geofence.objects.order_by("pk").values_list("name", "geojson")) == before
    else:
        assert status == 302
        for fence in Geofence.objects.all():
            fence.clean()  # every stored fence is one valid Feature


# --- Latest visits ------------------------------------------------------------------------------


def test_a_fences_page_lists_its_latest_counted_visits_and_links_to_all(
    admin_client: Client,
) -> None:
    fence = Geofence.objects.create(name="Square", geojson=SQUARE)
    now = timezone.now()
    for number in range(LATEST_VISITS + 2):
        Visit.objects.create(
            tracker=seen(f"van {number:02}", 5),
            geofence=fence,
            entered_at=now - timedelta(minutes=number),
            exited_at=now,
        )
    Visit.objects.create(tracker=seen("lingering", 5), geofence=fence, entered_at=now, pending=True)

    content = admin_client.get(reverse("admin:tracking_geofence_change", args=[fence.pk]))
    page = content.content.decode()

    shown = [
        f"van {number:02}" for number in range(LATEST_VISITS + 2) if f">van {number:02}<" in page
    ]
    assert shown == [f"van {number:02}" for number in range(LATEST_VISITS)]
    assert "lingering" not in page  # pending a minimum dwell: not an entry yet
    assert f"?geofence__id__exact={fence.pk}" in page


def test_a_trackers_page_lists_the_fences_it_visited_latest_first(admin_client: Client) -> None:
    van = seen("van", 5)
    square, circle = (
        Geofence.objects.create(name="Square", geojson=SQUARE),
        Geofence.objects.create(name="Circle", geojson=CIRCLE),
    )
    now = timezone.now()
    Visit.objects.create(
        tracker=van, geofence=square, entered_at=now - timedelta(hours=2), exited_at=now
    )
    Visit.objects.create(tracker=van, geofence=circle, entered_at=now - timedelta(hours=1))

    page = admin_client.get(
        reverse("admin:tracking_tracker_change", args=[van.pk])
    ).content.decode()

    table = page[page.index('class="latest-visits"') :]
    assert table.index(">Circle<") < table.index(">Square<")
    assert "inside now" in row_of(table, ">Circle<")
    assert f"?tracker={van.pk}" in page


def test_inside_now_and_the_visit_list_count_only_counted_visits(admin_client: Client) -> None:
    fence = Geofence.objects.create(name="Square", geojson=SQUARE)
    now = timezone.now()
    Visit.objects.create(tracker=seen("van", 5), geofence=fence, entered_at=now)
    Visit.objects.create(tracker=seen("bus", 5), geofence=fence, entered_at=now, pending=True)

    assert ">1</a>" in row_of(admin_client.get(GEOFENCES).content.decode(), "Square")
    listed = admin_client.get(reverse("admin:tracking_visit_changelist")).context["cl"]
    assert [str(visit.tracker) for visit in listed.result_list] == ["van"]
