from __future__ import annotations

import html
import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tracking.admin import RECENT_POSITIONS
from tracking.admin_map import TRAIL_POSITIONS
from tracking.geofences import FenceError, parse_geojson_text
from tracking.models import Geofence, Position, RejectedEvent, Tracker, Visit
from tracking.selectors import uuid_prefix_range

pytestmark = pytest.mark.django_db

TRACKERS = reverse("admin:tracking_tracker_changelist")
POSITIONS = reverse("admin:tracking_position_changelist")
REJECTED = reverse("admin:tracking_rejectedevent_changelist")


@pytest.fixture(autouse=True)
def thresholds(settings) -> None:
    """Online up to a minute, stale up to 15 minutes, whatever the environment says."""
    settings.TRACKING_ONLINE_SECONDS = 60
    settings.TRACKING_OFFLINE_SECONDS = 900


def seen(name: str, seconds_ago: float | None, **fields: object) -> Tracker:
    position_at = None
    if seconds_ago is not None:
        position_at = timezone.now() - timedelta(seconds=seconds_ago)
        fields = {"latitude": 60.1699, "longitude": 24.9384, "cell_x": 24, "cell_y": 60, **fields}
    return Tracker.objects.create(name=name, position_at=position_at, **fields)


def names(response) -> set[str]:
    return {str(tracker) for tracker in response.context["cl"].result_list}


def names_in_order(response) -> list[str]:
    return [str(tracker) for tracker in response.context["cl"].result_list]


def row_of(content: str, text: str) -> str:
    """The changelist table row that mentions ``text``."""
    rows = [row for row in re.findall(r"<tr.*?</tr>", content, re.S) if text in row]
    assert len(rows) == 1, f"{len(rows)} rows mention {text!r}"
    return rows[0]


def sort_link(content: str, header: str) -> str:
    """Where clicking the changelist column headed ``header`` leads (it sorts by that column)."""
    # A sortable header is <div class="text"><a href="?o=...">Header</a></div>.
    links = re.findall(r'<div class="text"><a href="([^"]*)">([^<]*)</a>', content)
    hrefs = [html.unescape(href) for href, text in links if text.strip().lower() == header.lower()]
    assert len(hrefs) == 1, f"{len(hrefs)} sortable columns headed {header!r}"
    return TRACKERS + hrefs[0]


def delete_counting(admin_client: Client, url: str, **counted: int) -> None:
    """Open a delete page, check it counts each kind of dependent (``positions=30``)
    without listing one, and confirm the deletion."""
    content = admin_client.get(url).content.decode()
    for plural, count in counted.items():
        assert f"{count} {plural}" in content and f"{plural.capitalize()}: {count}" in content
        assert not re.search(rf"/tracking/{plural[:-1]}/\d+/change/", content)
    admin_client.post(url, {"post": "yes"})


def positions_of(tracker: Tracker, count: int, *, newest: datetime) -> list[Position]:
    """``count`` positions a minute apart; the i-th newest has latitude 10.00i."""
    return Position.objects.bulk_create(
        Position(
            tracker=tracker,
            timestamp=newest - timedelta(minutes=index),
            latitude=10 + index / 1000,
            longitude=20.0,
        )
        for index in range(count)
    )


# --- Tracker list ---------------------------------------------------------------------------------


def test_the_changelist_shows_each_tracker_with_the_status_of_its_last_position(
    admin_client: Client,
) -> None:
    seen("van-online", 10)
    seen("van-stale", 5 * 60)
    seen("van-offline", 2 * 3600)
    seen("van-never", None)

    content = admin_client.get(TRACKERS).content.decode()

    assert "Online" in row_of(content, "van-online")
    assert "Stale" in row_of(content, "van-stale")
    assert "Offline" in row_of(content, "van-offline")
    assert "Never seen" in row_of(content, "van-never")


def test_the_changelist_shows_when_a_tracker_was_last_seen_and_where(
    admin_client: Client,
) -> None:
    seen("van-1", 3 * 60 + 5, latitude=60.1699, longitude=24.9384, speed=42.25, heading=90)

    row = row_of(admin_client.get(TRACKERS).content.decode(), "van-1")

    assert "3 min ago" in row
    # Latitude first, then longitude.
    assert row.index("60.169900") < row.index("24.938400")
    assert "24, 60" in row and "42.2" in row and ">90<" in row


def test_a_tracker_without_a_name_is_listed_by_the_start_of_its_device_id(
    admin_client: Client,
) -> None:
    tracker = seen("", None)
    content = admin_client.get(TRACKERS).content.decode()
    assert f'/change/">Tracker {str(tracker.id)[:8]}</a>' in content


def test_the_changelist_can_be_ordered_by_last_seen(admin_client: Client) -> None:
    seen("a-old", 3600)
    seen("b-new", 10)
    seen("c-middle", 600)

    oldest_first = admin_client.get(
        sort_link(admin_client.get(TRACKERS).content.decode(), "last seen")
    )
    # Clicking the header again turns the order round.
    newest_first = admin_client.get(sort_link(oldest_first.content.decode(), "last seen"))

    assert names_in_order(oldest_first) == ["a-old", "c-middle", "b-new"]
    assert names_in_order(newest_first) == ["b-new", "c-middle", "a-old"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("online", {"seen-10s", "seen-55s"}),
        ("stale", {"seen-65s", "seen-890s"}),
        ("offline", {"seen-910s", "seen-1d"}),
        ("never", {"never-seen"}),
    ],
)
def test_the_status_filter_finds_trackers_by_the_age_of_their_last_position(
    admin_client: Client, status: str, expected: set[str]
) -> None:
    for seconds in (10, 55, 65, 890, 910):
        seen(f"seen-{seconds}s", seconds)
    seen("seen-1d", 86400)
    seen("never-seen", None)

    response = admin_client.get(TRACKERS, {"status": status})

    assert names(response) == expected
    assert {t.status().value for t in response.context["cl"].result_list} == {status}


def test_the_status_filter_follows_the_configured_thresholds(
    admin_client: Client, settings
) -> None:
    settings.TRACKING_ONLINE_SECONDS = 600
    seen("five-minutes-ago", 300)
    assert names(admin_client.get(TRACKERS, {"status": "online"})) == {"five-minutes-ago"}


def test_the_changelist_filters_by_active(admin_client: Client) -> None:
    seen("on", None)
    seen("off", None, is_active=False)
    assert names(admin_client.get(TRACKERS, {"is_active__exact": "0"})) == {"off"}


# --- Tracker search -------------------------------------------------------------------------------


def test_searching_finds_a_tracker_by_part_of_its_name(admin_client: Client) -> None:
    seen("Delivery van 7", None)
    seen("Forklift", None)
    assert names(admin_client.get(TRACKERS, {"q": "van"})) == {"Delivery van 7"}


@pytest.mark.parametrize(
    "search",
    [
        "0f8b2c1d",
        "0F8B2C1D-9",
        "0f8b2c1d-9e7a-4c3b-8a21-5d6e7f809a1b",
        "0f8b2c1d9e7a4c3b8a215d6e7f809a1b",
    ],
)
def test_searching_finds_a_tracker_by_its_device_id_or_a_prefix_of_it(
    admin_client: Client, search: str
) -> None:
    Tracker.objects.create(id=uuid.UUID("0f8b2c1d-9e7a-4c3b-8a21-5d6e7f809a1b"), name="wanted")
    Tracker.objects.create(id=uuid.UUID("0f8b2c1e-0000-4000-8000-000000000000"), name="neighbour")
    Tracker.objects.create(id=uuid.UUID("ff8b2c1d-9e7a-4c3b-8a21-5d6e7f809a1b"), name="other")

    assert names(admin_client.get(TRACKERS, {"q": search})) == {"wanted"}


@pytest.mark.parametrize("search", ["not-a-uuid", "0f8b-zz", "-", "0" * 33, "'quoted name'"])
def test_searching_with_text_that_is_not_a_uuid_does_not_fail(
    admin_client: Client, search: str
) -> None:
    seen("quoted name", None)
    response = admin_client.get(TRACKERS, {"q": search})
    assert response.status_code == 200


def test_a_uuid_prefix_spans_every_uuid_that_starts_with_it() -> None:
    assert uuid_prefix_range("ab-C") == (
        uuid.UUID("abc00000-0000-0000-0000-000000000000"),
        uuid.UUID("abcfffff-ffff-ffff-ffff-ffffffffffff"),
    )
    assert uuid_prefix_range("van") is None
    assert uuid_prefix_range("") is None


# --- Tracker actions ------------------------------------------------------------------------------


def test_the_deactivate_action_deactivates_the_selected_trackers_and_logs_it(
    admin_client: Client,
) -> None:
    chosen, other = seen("chosen", None), seen("other", None)

    response = admin_client.post(
        TRACKERS, {"action": "deactivate", "_selected_action": [str(chosen.pk)]}, follow=True
    )

    chosen.refresh_from_db()
    other.refresh_from_db()
    assert (chosen.is_active, other.is_active) == (False, True)
    assert "1 tracker deactivated." in response.content.decode()
    entry = LogEntry.objects.get(object_id=str(chosen.pk))
    assert entry.action_flag == CHANGE and entry.get_change_message() == "Changed Active."


def test_the_activate_action_activates_the_selected_trackers(admin_client: Client) -> None:
    trackers = [seen(f"off-{index}", None, is_active=False) for index in range(3)]

    admin_client.post(
        TRACKERS,
        {"action": "activate", "_selected_action": [str(t.pk) for t in trackers[:2]]},
    )

    assert list(Tracker.objects.order_by("name").values_list("is_active", flat=True)) == [
        True,
        True,
        False,
    ]


# --- Tracker pages --------------------------------------------------------------------------------


def test_the_change_page_shows_the_20_newest_positions_newest_first(admin_client: Client) -> None:
    tracker = seen("van", 10)
    positions_of(tracker, 25, newest=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:tracking_tracker_change", args=[tracker.pk]))
    content = response.content.decode()

    shown = [float(latitude) for latitude in re.findall(r"<td>(10\.0\d\d000)</td>", content)]
    assert shown == [10 + index / 1000 for index in range(20)]
    # The page asks for 20 rows for the table and a bounded trail, never the whole history.
    history_reads = [q["sql"] for q in queries.captured_queries if "tracking_position" in q["sql"]]
    limits = sorted(int(re.findall(r"LIMIT (\d+)", sql)[-1]) for sql in history_reads)
    assert limits == [RECENT_POSITIONS, TRAIL_POSITIONS]
    assert f"{POSITIONS}?tracker={tracker.pk}" in content


def test_the_change_page_of_a_tracker_never_seen_says_it_has_no_positions(
    admin_client: Client,
) -> None:
    tracker = seen("new", None)
    response = admin_client.get(reverse("admin:tracking_tracker_change", args=[tracker.pk]))
    assert "No positions yet." in response.content.decode()


def test_an_operator_can_register_a_tracker_by_its_uuid_before_it_reports(
    admin_client: Client,
) -> None:
    device = uuid.uuid4()

    response = admin_client.post(
        reverse("admin:tracking_tracker_add"),
        {"id": str(device), "name": "Van 7", "is_active": "on"},
    )

    assert response.status_code == 302
    tracker = Tracker.objects.get(id=device)
    assert (tracker.name, tracker.is_active, tracker.position_at) == ("Van 7", True, None)


def test_registering_a_device_id_that_exists_is_refused(admin_client: Client) -> None:
    existing = seen("existing", None)

    response = admin_client.post(
        reverse("admin:tracking_tracker_add"), {"id": str(existing.pk), "name": "copy"}
    )

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Tracker.objects.get().name == "existing"


def test_the_device_id_cannot_be_changed_once_the_tracker_exists(admin_client: Client) -> None:
    tracker = seen("van", None)
    url = reverse("admin:tracking_tracker_change", args=[tracker.pk])

    assert 'name="id"' not in admin_client.get(url).content.decode()
    admin_client.post(url, {"id": str(uuid.uuid4()), "name": "renamed", "is_active": "on"})

    assert list(Tracker.objects.values_list("id", "name")) == [(tracker.pk, "renamed")]


def test_deleting_a_tracker_counts_its_history_instead_of_listing_it(
    admin_client: Client,
) -> None:
    tracker = seen("doomed", 10)
    positions_of(tracker, 30, newest=timezone.now())
    url = reverse("admin:tracking_tracker_delete", args=[tracker.pk])

    delete_counting(admin_client, url, positions=30)

    assert not Tracker.objects.exists() and not Position.objects.exists()


def test_the_tracker_changelist_does_not_query_per_tracker(
    admin_client: Client, django_assert_max_num_queries
) -> None:
    seen("first", 10)
    admin_client.get(TRACKERS)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(TRACKERS)
    for index in range(30):
        seen(f"more-{index}", index * 100 or None)

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(TRACKERS)
    assert len(response.context["cl"].result_list) == 31


# --- Position history -----------------------------------------------------------------------------


def test_positions_are_listed_with_their_tracker(admin_client: Client) -> None:
    tracker = seen("van", 10)
    positions_of(tracker, 3, newest=timezone.now())

    response = admin_client.get(POSITIONS)

    assert len(response.context["cl"].result_list) == 3
    assert "van" in response.content.decode()


def test_the_history_of_one_tracker_is_linked_from_its_page(admin_client: Client) -> None:
    wanted, other = seen("wanted", 10), seen("other", 10)
    positions_of(wanted, 2, newest=timezone.now())
    positions_of(other, 3, newest=timezone.now())

    response = admin_client.get(POSITIONS, {"tracker": str(wanted.pk)})

    assert {p.tracker_id for p in response.context["cl"].result_list} == {wanted.pk}
    assert len(response.context["cl"].result_list) == 2


@pytest.mark.parametrize("unknown", ["not-a-uuid", "2f0e0c5e-8a5b-4f55-9d1c-0a4f7c1b2e3d"])
def test_the_history_of_an_unknown_tracker_is_empty_not_everything(
    admin_client: Client, unknown: str
) -> None:
    positions_of(seen("van", 10), 2, newest=timezone.now())
    response = admin_client.get(POSITIONS, {"tracker": unknown})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_each_position_links_its_tracker_to_that_trackers_history(admin_client: Client) -> None:
    tracker = seen("van", 10)
    positions_of(tracker, 1, newest=timezone.now())
    content = admin_client.get(POSITIONS).content.decode()
    assert f'<a href="{POSITIONS}?tracker={tracker.pk}"' in content


def test_the_history_can_be_searched_by_tracker_name_and_id_prefix(admin_client: Client) -> None:
    wanted = Tracker.objects.create(id=uuid.UUID("abcd0000-0000-4000-8000-000000000001"), name="x")
    other = Tracker.objects.create(name="Forklift")
    positions_of(wanted, 2, newest=timezone.now())
    positions_of(other, 1, newest=timezone.now())

    by_id = admin_client.get(POSITIONS, {"q": "ABCD"}).context["cl"].result_list
    by_name = admin_client.get(POSITIONS, {"q": "fork"}).context["cl"].result_list

    assert {p.tracker_id for p in by_id} == {wanted.pk}
    assert {p.tracker_id for p in by_name} == {other.pk}


def test_positions_cannot_be_added_or_changed(admin_client: Client) -> None:
    (position,) = positions_of(seen("van", 10), 1, newest=timezone.now())
    url = reverse("admin:tracking_position_change", args=[position.pk])

    assert admin_client.get(reverse("admin:tracking_position_add")).status_code == 403
    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url, {"latitude": "1"}).status_code == 403
    position.refresh_from_db()
    assert position.latitude == 10


def test_only_superusers_may_delete_positions(admin_client: Client) -> None:
    (position,) = positions_of(seen("van", 10), 1, newest=timezone.now())
    url = reverse("admin:tracking_position_delete", args=[position.pk])
    staff = User.objects.create_user("operator", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__endswith="_position"))
    operator = Client()
    operator.force_login(staff)

    assert operator.post(url, {"post": "yes"}).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Position.objects.exists()


def test_the_history_list_does_not_query_per_position(
    admin_client: Client, django_assert_max_num_queries
) -> None:
    positions_of(seen("first", 10), 1, newest=timezone.now())
    admin_client.get(POSITIONS)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(POSITIONS)
    for index in range(20):
        positions_of(seen(f"more-{index}", 10), 2, newest=timezone.now())

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(POSITIONS)
    assert len(response.context["cl"].result_list) == 41


# --- Rejected events ------------------------------------------------------------------------------


def rejected(body: str, **fields: object) -> RejectedEvent:
    defaults: dict[str, object] = {
        "source": "file:events.jsonl",
        "reason": "missing Lat",
        "body_bytes": len(body.encode()),
    }
    return RejectedEvent.objects.create(body=body, **{**defaults, **fields})


def test_rejected_events_are_listed_with_a_preview_of_their_body(admin_client: Client) -> None:
    rejected('{"Id": "x"}')
    rejected("y" * 500, reason="not JSON")

    content = admin_client.get(REJECTED).content.decode()

    assert "missing Lat" in content and "file:events.jsonl" in content
    assert "{&quot;Id&quot;: &quot;x&quot;}" in content
    assert "y" * 79 + "…" in content and "y" * 81 not in content


def test_rejected_events_can_be_searched_by_reason_source_and_body(
    admin_client: Client,
) -> None:
    rejected("alpha", reason="unknown tracker", source="eventhub:0")
    rejected("beta", reason="not JSON", source="file:x")

    def found(q: str) -> set[str]:
        return {e.body for e in admin_client.get(REJECTED, {"q": q}).context["cl"].result_list}

    assert found("unknown") == {"alpha"}
    assert found("eventhub") == {"alpha"}
    assert found("bet") == {"beta"}


def test_rejected_events_can_be_filtered_by_the_day_they_arrived(admin_client: Client) -> None:
    rejected("today")
    rejected("old", received_at=timezone.now() - timedelta(days=30))

    # The filter's own "Past 7 days" link.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    response = admin_client.get(
        REJECTED,
        {
            "received_at__gte": str(today - timedelta(days=7)),
            "received_at__lt": str(today + timedelta(days=1)),
        },
    )

    assert {e.body for e in response.context["cl"].result_list} == {"today"}


def test_a_rejected_body_with_a_script_tag_is_shown_escaped(admin_client: Client) -> None:
    event = rejected('{"Id": "<script>alert(1)</script>"}')

    listing = admin_client.get(REJECTED).content.decode()
    detail = admin_client.get(
        reverse("admin:tracking_rejectedevent_change", args=[event.pk])
    ).content.decode()

    for page in (listing, detail):
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<pre" in detail


def test_the_detail_says_when_the_stored_body_was_truncated(admin_client: Client) -> None:
    event = rejected("z" * 100, body_bytes=5000)
    url = reverse("admin:tracking_rejectedevent_change", args=[event.pk])
    assert "the first 100 characters of 5000 bytes" in admin_client.get(url).content.decode()


def test_rejected_events_cannot_be_added_or_changed_but_can_be_deleted(
    admin_client: Client,
) -> None:
    event = rejected("junk")
    change = reverse("admin:tracking_rejectedevent_change", args=[event.pk])

    assert admin_client.get(reverse("admin:tracking_rejectedevent_add")).status_code == 403
    assert admin_client.post(change, {"reason": "edited"}).status_code == 403
    response = admin_client.post(
        REJECTED, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )
    assert response.status_code == 302
    assert not RejectedEvent.objects.exists()


# --- Site -----------------------------------------------------------------------------------------


def test_the_admin_is_titled_tracker_map_administration(admin_client: Client) -> None:
    content = admin_client.get(reverse("admin:index")).content.decode()
    assert "Tracker map administration" in content


@pytest.mark.django_db
def test_event_hub_partitions_are_listed_read_only(admin_client: Client) -> None:
    from tracking.ingest.sources import eventhub_checkpoints as checkpoints

    claim = {
        "fully_qualified_namespace": "ns",
        "eventhub_name": "fleet",
        "consumer_group": "$Default",
        "partition_id": "3",
        "owner_id": "owner-7",
    }
    checkpoints.claim_ownership(claims=[claim])
    checkpoints.update_checkpoint(checkpoint={**claim, "offset": "4096", "sequence_number": 41})

    ownership_page = admin_client.get("/admin/tracking/eventhubownership/").content.decode()
    assert "owner-7" in ownership_page
    checkpoint_page = admin_client.get("/admin/tracking/eventhubcheckpoint/").content.decode()
    assert "4096" in checkpoint_page and "41" in checkpoint_page
    assert admin_client.get("/admin/tracking/eventhubcheckpoint/add/").status_code == 403


# --- Branding ------------------------------------------------------------------------------------


def test_every_admin_page_carries_the_maps_name_icon_and_a_link_back_to_the_map(
    admin_client: Client,
) -> None:
    for url in (reverse("admin:index"), TRACKERS, POSITIONS):
        content = admin_client.get(url).content.decode()
        assert re.search(
            r'<div id="site-name">.*favicon[^"]*\.svg.*Tracker map administration', content, re.S
        )
        assert f'<a href="{reverse("maps:index")}">Live map</a>' in content
        assert "View site" not in content


def test_a_trackers_page_links_to_the_live_map_over_its_latest_position(
    admin_client: Client,
) -> None:
    tracker = seen("Van 7", 30, latitude=60.171234, longitude=24.941234)
    never = seen("Van 8", None)
    page = admin_client.get(reverse("admin:tracking_tracker_change", args=[tracker.pk]))
    assert '<a href="/#16/60.17123/24.94123">Show on the live map</a>' in page.content.decode()
    page = admin_client.get(reverse("admin:tracking_tracker_change", args=[never.pk]))
    assert "Show on the live map" not in page.content.decode()


# --- API tokens ------------------------------------------------------------------------------------

TOKENS = reverse("admin:tracking_apitoken_changelist")


def test_a_token_added_in_the_admin_is_shown_once_and_signs_its_user_in(
    admin_client: Client, settings
) -> None:
    from tracking.models import ApiToken

    settings.MAP_PUBLIC = False
    user = User.objects.create_user("fleet-script")
    form = admin_client.get(reverse("admin:tracking_apitoken_add"))
    expires = form.context["adminform"].form.initial["expires_at"]
    assert timedelta(days=89) < expires - timezone.now() <= timedelta(days=90)
    answer = admin_client.post(
        reverse("admin:tracking_apitoken_add"),
        {
            "user": user.pk,
            "name": "depot screen",
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": expires.strftime("%H:%M:%S"),
        },
    )
    assert answer.status_code == 200
    shown = re.search(r'<code id="api-token"[^>]*>([^<]+)</code>', answer.content.decode())
    assert shown is not None
    text = shown[1]
    token = ApiToken.objects.get()
    assert token.user == user and text.startswith(f"tmap_{token.prefix}_")
    signed_in = Client().get("/api/trackers", headers={"Authorization": f"Bearer {text}"})
    assert signed_in.status_code == 200
    # Never again: not on the token's page, not in the list.
    for page in (TOKENS, reverse("admin:tracking_apitoken_change", args=[token.pk])):
        content = admin_client.get(page).content.decode()
        assert token.prefix in content and text not in content


def test_revoking_tokens_in_the_admin_ends_them(admin_client: Client) -> None:
    from tracking.api_tokens import issue_token
    from tracking.models import ApiToken

    user = User.objects.create_user("fleet-script")
    token, text = issue_token(user=user)
    answer = admin_client.post(
        TOKENS, {"action": "revoke_tokens", "_selected_action": [token.pk]}, follow=True
    )
    assert "Revoked 1 token." in answer.content.decode()
    assert ApiToken.objects.get().revoked_at is not None
    assert "revoked" in row_of(admin_client.get(TOKENS).content.decode(), token.prefix)
    assert (
        Client().get("/api/trackers", headers={"Authorization": f"Bearer {text}"}).status_code
        == 401
    )


def test_the_token_list_filters_by_the_state_it_shows(admin_client: Client) -> None:
    from tracking.api_tokens import issue_token, revoke
    from tracking.models import ApiToken

    user = User.objects.create_user("fleet-script")
    now = timezone.now()
    active, _ = issue_token(user=user, name="active one")
    expired, _ = issue_token(user=user, name="expired one", now=now - timedelta(days=2))
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(days=1))
    revoked, _ = issue_token(user=user, name="revoked one")
    revoke([revoked])
    for state, token in (("active", active), ("expired", expired), ("revoked", revoked)):
        page = admin_client.get(TOKENS, {"state": state}).content.decode()
        shown = {t.prefix for t in (active, expired, revoked) if t.prefix in page}
        assert shown == {token.prefix}, state


# --- Geofences and visits -----------------------------------------------------------------------

GEOFENCES = reverse("admin:tracking_geofence_changelist")
VISITS = reverse("admin:tracking_visit_changelist")


def feature(geometry: dict[str, object], **properties: object) -> str:
    return json.dumps({"type": "Feature", "properties": properties, "geometry": geometry})


SQUARE = feature(
    {
        "type": "Polygon",
        "coordinates": [
            [[24.93, 60.17], [24.94, 60.17], [24.94, 60.18], [24.93, 60.18], [24.93, 60.17]]
        ],
    }
)
CIRCLE = feature({"type": "Point", "coordinates": [24.94, 60.17]}, radius=250)
BOW_TIE = feature(
    {
        "type": "Polygon",
        "coordinates": [
            [[24.93, 60.17], [24.94, 60.18], [24.94, 60.17], [24.93, 60.18], [24.93, 60.17]]
        ],
    }
)


def test_an_operator_can_add_a_geofence_by_its_geojson(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:tracking_geofence_add"),
        {"name": "Depot", "is_active": "on", "geojson": SQUARE},
    )

    assert response.status_code == 302
    fence = Geofence.objects.get()
    assert fence.name == "Depot"
    assert fence.fence.contains(latitude=60.175, longitude=24.935)


def test_a_bare_polygon_added_in_the_admin_is_kept_as_its_feature(admin_client: Client) -> None:
    polygon = json.loads(SQUARE)["geometry"]

    admin_client.post(
        reverse("admin:tracking_geofence_add"), {"name": "Bare", "geojson": json.dumps(polygon)}
    )

    stored = json.loads(Geofence.objects.get().geojson)
    assert stored == {"type": "Feature", "properties": {}, "geometry": polygon}
    assert "4 vertices" in row_of(admin_client.get(GEOFENCES).content.decode(), "Bare")


def test_the_geojson_box_says_what_it_takes(admin_client: Client) -> None:
    content = admin_client.get(reverse("admin:tracking_geofence_add")).content.decode()
    assert '<textarea name="geojson"' in content
    assert str(Geofence._meta.get_field("geojson").help_text) in content


def test_adding_a_self_intersecting_geofence_shows_what_is_wrong(admin_client: Client) -> None:
    with pytest.raises(FenceError) as expected:
        parse_geojson_text(BOW_TIE)

    response = admin_client.post(
        reverse("admin:tracking_geofence_add"), {"name": "Bow tie", "geojson": BOW_TIE}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"geojson": [str(expected.value)]}
    assert html.escape(str(expected.value)) in response.content.decode()
    assert not Geofence.objects.exists()


def test_adding_text_that_is_not_json_shows_that_it_is_not(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:tracking_geofence_add"), {"name": "Typo", "geojson": '{"type": "Feat'}
    )

    assert "not GeoJSON: not JSON" in response.context["adminform"].form.errors["geojson"][0]
    assert not Geofence.objects.exists()


def test_the_geofence_list_shows_each_shape_its_size_and_who_is_inside(
    admin_client: Client,
) -> None:
    square = Geofence.objects.create(name="Square", geojson=SQUARE)
    Geofence.objects.create(name="Circle", geojson=CIRCLE, is_active=False)
    now = timezone.now()
    for name in ("van", "bus"):
        Visit.objects.create(tracker=seen(name, 5), geofence=square, entered_at=now)
    Visit.objects.create(tracker=seen("car", 5), geofence=square, entered_at=now, exited_at=now)

    content = admin_client.get(GEOFENCES).content.decode()

    square_row = row_of(content, "Square")
    assert "polygon" in square_row and "4 vertices" in square_row
    assert re.search(r">2</a>", square_row)
    circle_row = row_of(content, "Circle")
    assert "circle" in circle_row and "250 m" in circle_row


def test_visits_are_listed_per_tracker_and_fence_and_by_open_or_left(
    admin_client: Client,
) -> None:
    square = Geofence.objects.create(name="Square", geojson=SQUARE)
    circle = Geofence.objects.create(name="Circle", geojson=CIRCLE)
    van, bus = seen("van", 5), seen("bus", 5)
    now = timezone.now()
    Visit.objects.create(tracker=van, geofence=square, entered_at=now - timedelta(hours=1))
    Visit.objects.create(
        tracker=van, geofence=circle, entered_at=now - timedelta(hours=2), exited_at=now
    )
    Visit.objects.create(tracker=bus, geofence=square, entered_at=now - timedelta(hours=3))

    def listed(query: str) -> set[tuple[str, str]]:
        response = admin_client.get(f"{VISITS}?{query}")
        return {(str(v.tracker), str(v.geofence)) for v in response.context["cl"].result_list}

    assert listed(f"tracker={van.pk}") == {("van", "Square"), ("van", "Circle")}
    assert listed(f"geofence__id__exact={square.pk}") == {("van", "Square"), ("bus", "Square")}
    assert listed("open=yes") == {("van", "Square"), ("bus", "Square")}
    assert listed("open=no") == {("van", "Circle")}
    assert "inside now" in row_of(admin_client.get(VISITS).content.decode(), "bus")


def test_visits_cannot_be_added_or_changed(admin_client: Client) -> None:
    visit = Visit.objects.create(
        tracker=seen("van", 5),
        geofence=Geofence.objects.create(name="Square", geojson=SQUARE),
        entered_at=timezone.now(),
    )

    assert admin_client.get(reverse("admin:tracking_visit_add")).status_code == 403
    change = reverse("admin:tracking_visit_change", args=[visit.pk])
    assert admin_client.post(change, {"exited_at_0": "2026-01-01"}).status_code == 403
    assert Visit.objects.get().exited_at is None


def test_deleting_a_tracker_counts_its_visits_too(admin_client: Client) -> None:
    tracker = seen("doomed", 10)
    fence = Geofence.objects.create(name="Square", geojson=SQUARE)
    now = timezone.now()
    for hour in range(3):
        Visit.objects.create(
            tracker=tracker, geofence=fence, entered_at=now - timedelta(hours=hour), exited_at=now
        )
    url = reverse("admin:tracking_tracker_delete", args=[tracker.pk])

    delete_counting(admin_client, url, visits=3)

    assert not Visit.objects.exists() and Geofence.objects.exists()


def test_deleting_a_geofence_counts_its_visits_instead_of_listing_them(
    admin_client: Client,
) -> None:
    fence = Geofence.objects.create(name="Square", geojson=SQUARE)
    now = timezone.now()
    for name in ("van", "bus"):
        Visit.objects.create(tracker=seen(name, 5), geofence=fence, entered_at=now)
    url = reverse("admin:tracking_geofence_delete", args=[fence.pk])

    delete_counting(admin_client, url, visits=2)

    assert not Geofence.objects.exists() and not Visit.objects.exists()
    assert Tracker.objects.count() == 2


@pytest.mark.parametrize("changelist", [GEOFENCES, VISITS])
def test_the_geofence_and_visit_lists_do_not_query_per_row(
    admin_client: Client, django_assert_max_num_queries, changelist: str
) -> None:
    def visits(count: int) -> None:
        now = timezone.now()
        for _ in range(count):
            fence = Geofence.objects.create(name=str(uuid.uuid4()), geojson=CIRCLE)
            Visit.objects.create(tracker=seen("van", 5), geofence=fence, entered_at=now)

    visits(1)
    admin_client.get(changelist)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(changelist)
    visits(20)

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(changelist)
    assert len(response.context["cl"].result_list) == 21
