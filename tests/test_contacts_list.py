"""Issue 4: contacts.list: filters, search, newest first, and signed keyset cursors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.contacts_helpers import create
from tests.support import Org, Rpc, query

BASE = datetime(2025, 1, 1, tzinfo=UTC)

# first, last, email, phone, postcode, category, consent, source; created BASE + i hours.
PEOPLE = [
    ("Oliver", "Smith", "oliver.smith@gmail.com", "+447911100001", "SW1A 1AA", "buyer", "granted", "manual"),
    ("Amelia", "Smithson", "amelia@outlook.com", "+447911100002", "M1 1AE", "seller", "denied", "crm_sync"),
    ("Harry", "O'Brien", "h.obrien@icloud.com", "+442079460958", "EH3 9QG", "active_seller", "unknown",
     "apify"),
    ("Isla", "Patel", "isla.patel@sky.com", None, None, "managed_landlord", "pending", "land_registry"),
    ("Noah", "Jones", "noah.j@btinternet.com", "+447911100005", "SW11 2AB", None, "granted", "manual"),
    ("Mia", "Khan", "mia.khan@gmail.com", "+447911100006", "B15 2TT", "buyer", "granted", "crm_sync"),
    ("Leo", "Jones-Smith", "leo@jones.example", "+447911100007", "SW1A 2AA", "active_buyer", "unknown",
     "manual"),
]  # fmt: skip


@pytest.fixture(scope="module")
def org(world: Any, database_url: str) -> Org:
    """An organisation with PEOPLE, the i-th created i hours after BASE (so newest is last)."""
    org = world.org()
    for i, (first, last, email, phone, postcode, category, consent, source) in enumerate(PEOPLE):
        query(
            database_url,
            """
            INSERT INTO contacts (organisation_id, first_name, last_name, email, phone, postcode,
                                  active_category, consent_status, import_source, created_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                org.id,
                first,
                last,
                email,
                phone,
                postcode,
                category,
                consent,
                source,
                BASE + timedelta(hours=i),
            ),
        )
    return org


def names(page: dict[str, Any]) -> list[str]:
    return [item["firstName"] for item in page["items"]]


def listed(rpc: Rpc, org: Org, **params: Any) -> list[str]:
    return names(rpc.call("contacts.list", params, org.member_token))


NEWEST_FIRST = [p[0] for p in reversed(PEOPLE)]


def test_newest_first_with_category_and_group(rpc: Rpc, org: Org) -> None:
    page = rpc.call("contacts.list", {}, org.member_token)
    assert names(page) == NEWEST_FIRST and page["nextCursor"] is None
    leo = page["items"][0]
    assert leo["category"] == "active_buyer" and leo["group"] == "existing_client"
    noah = page["items"][2]
    assert noah["category"] is None and noah["group"] is None
    assert "crmPayload" not in leo


@pytest.mark.parametrize(
    "filters, limit, expected",
    [
        ({}, 3, NEWEST_FIRST),
        # One category walks a statement of its own (issue 7); several, or a group, merge walks.
        ({"category": "buyer"}, 1, ["Mia", "Oliver"]),
        ({"category": ["buyer", "active_seller"]}, 1, ["Mia", "Harry", "Oliver"]),
        ({"group": "prospect"}, 2, ["Mia", "Amelia", "Oliver"]),
    ],
)
def test_keyset_pages_cover_everything_once(
    rpc: Rpc, org: Org, filters: dict[str, Any], limit: int, expected: list[str]
) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {**filters, "limit": limit} | ({"cursor": cursor} if cursor else {})
        page = rpc.call("contacts.list", params, org.member_token)
        assert len(page["items"]) <= limit
        seen += names(page)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == expected


def test_the_page_size_may_change_between_pages(rpc: Rpc, org: Org) -> None:
    first = rpc.call("contacts.list", {"limit": 2}, org.member_token)
    rest = rpc.call("contacts.list", {"limit": 100, "cursor": first["nextCursor"]}, org.member_token)
    assert names(first) + names(rest) == NEWEST_FIRST


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"category": "buyer"}, ["Mia", "Oliver"]),
        ({"category": ["buyer", "active_seller"]}, ["Mia", "Harry", "Oliver"]),
        ({"group": "existing_client"}, ["Leo", "Isla", "Harry"]),
        ({"group": "prospect"}, ["Mia", "Amelia", "Oliver"]),
        ({"group": "prospect", "category": ["buyer", "active_buyer"]}, ["Mia", "Oliver"]),
        ({"consentStatus": "granted"}, ["Mia", "Noah", "Oliver"]),
        ({"importSource": "crm_sync"}, ["Mia", "Amelia"]),
        ({"importSource": "manual", "consentStatus": "unknown"}, ["Leo"]),
        ({"createdAfter": "2025-01-01T02:00:00Z"}, ["Leo", "Mia", "Noah", "Isla"]),
        ({"createdBefore": "2025-01-01T02:00:00Z"}, ["Amelia", "Oliver"]),
        (
            {"createdAfter": "2025-01-01T01:00:00Z", "createdBefore": "2025-01-01T05:00:00+00:00"},
            ["Noah", "Isla", "Harry"],
        ),
        ({"category": "buyer", "consentStatus": "granted", "importSource": "crm_sync"}, ["Mia"]),
    ],
)
def test_filters(rpc: Rpc, org: Org, params: dict[str, Any], expected: list[str]) -> None:
    assert listed(rpc, org, **params) == expected


@pytest.mark.parametrize(
    "search, expected",
    [
        ("smith", ["Leo", "Amelia", "Oliver"]),  # prefix of last names, any case
        ("SMITHSON", ["Amelia"]),
        ("oli", ["Oliver"]),  # first name prefix
        ("obrien", ["Harry"]),
        ("o'brien", ["Harry"]),  # punctuation in names
        ("jones smith", ["Leo"]),  # every word must match
        ("mia.khan@gmail.com", ["Mia"]),  # whole email
        ("isla.patel", ["Isla"]),  # local part
        ("isla.patel@sky", ["Isla"]),  # prefix of the whole email
        ("patel", ["Isla"]),  # a piece of the local part
        ("outlook.com", ["Amelia"]),  # domain
        ("07911 100005", ["Noah"]),  # phone, national form with a space
        ("+44 7911 100006", ["Mia"]),  # phone, international form
        ("020 7946", ["Harry"]),  # phone prefix
        ("sw1a 1aa", ["Oliver"]),  # postcode
        ("SW1A", ["Leo", "Oliver"]),  # outward code
        ("sw112ab", ["Noah"]),  # postcode without its space
        ("nobody", []),
    ],
)
def test_search(rpc: Rpc, org: Org, search: str, expected: list[str]) -> None:
    assert listed(rpc, org, search=search) == expected


def test_search_combines_with_filters_and_pages(rpc: Rpc, org: Org) -> None:
    assert listed(rpc, org, search="smith", group="prospect") == ["Amelia", "Oliver"]
    first = rpc.call("contacts.list", {"search": "smith", "limit": 1}, org.member_token)
    second = rpc.call(
        "contacts.list", {"search": "smith", "limit": 2, "cursor": first["nextCursor"]}, org.member_token
    )
    assert names(first) + names(second) == ["Leo", "Amelia", "Oliver"]


def test_default_limit_is_50(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    query(
        database_url,
        "INSERT INTO contacts (organisation_id, first_name) "
        "SELECT %s, 'P' || i FROM generate_series(1, 51) AS i",
        (org.id,),
    )
    page = rpc.call("contacts.list", {}, org.member_token)
    assert len(page["items"]) == 50 and page["nextCursor"]
    rest = rpc.call("contacts.list", {"cursor": page["nextCursor"]}, org.member_token)
    assert len(rest["items"]) == 1 and rest["nextCursor"] is None


def cursor_error(rpc: Rpc, org: Org, params: dict[str, Any]) -> None:
    error = rpc.error("contacts.list", params, org.member_token)
    assert error["code"] == -32602 and error["data"]["code"] == "BAD_REQUEST"
    assert [issue["path"] for issue in error["data"]["issues"]] == ["cursor"]


def test_a_tampered_cursor_is_refused(rpc: Rpc, org: Org) -> None:
    cursor = rpc.call("contacts.list", {"limit": 2}, org.member_token)["nextCursor"]
    head, _, mac = cursor.partition(".")
    position = base64.urlsafe_b64decode(head + "==")
    forged = base64.urlsafe_b64encode(position.replace(b"2025", b"2024")).rstrip(b"=").decode()
    cursor_error(rpc, org, {"cursor": f"{forged}.{mac}"})
    cursor_error(rpc, org, {"cursor": cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")})
    cursor_error(rpc, org, {"cursor": head})


def test_a_cursor_is_bound_to_its_organisation_and_filters(rpc: Rpc, org: Org, world: Any) -> None:
    cursor = rpc.call("contacts.list", {"limit": 1, "group": "prospect"}, org.member_token)["nextCursor"]
    assert rpc.call("contacts.list", {"group": "prospect", "cursor": cursor}, org.member_token)
    cursor_error(rpc, org, {"cursor": cursor})  # without the filter
    cursor_error(rpc, org, {"group": "existing_client", "cursor": cursor})
    other = world.org()
    create(rpc, other, category="buyer")
    error = rpc.error("contacts.list", {"group": "prospect", "cursor": cursor}, other.member_token)
    assert error["code"] == -32602 and error["data"]["issues"][0]["path"] == "cursor"


def test_a_cursor_survives_new_contacts(rpc: Rpc, world: Any) -> None:
    org = world.org()
    for _ in range(3):
        create(rpc, org)
    first = rpc.call("contacts.list", {"limit": 2}, org.member_token)
    create(rpc, org)  # newer than everything: must not shift the next page
    rest = rpc.call("contacts.list", {"cursor": first["nextCursor"]}, org.member_token)
    assert len(rest["items"]) == 1
    assert rest["items"][0]["id"] not in {item["id"] for item in first["items"]}


def test_created_before_and_a_cursor_together(rpc: Rpc, org: Org) -> None:
    params = {"createdBefore": "2025-01-01T05:00:00Z", "limit": 2}
    first = rpc.call("contacts.list", params, org.member_token)
    rest = rpc.call("contacts.list", {**params, "limit": 10, "cursor": first["nextCursor"]}, org.member_token)
    assert names(first) + names(rest) == ["Noah", "Isla", "Harry", "Amelia", "Oliver"]


def test_a_cursor_holds_for_the_same_instant_in_another_offset(rpc: Rpc, org: Org) -> None:
    first = rpc.call("contacts.list", {"createdAfter": "2025-01-01T00:30:00Z", "limit": 2}, org.member_token)
    params = {"createdAfter": "2025-01-01T01:30:00+01:00", "cursor": first["nextCursor"]}
    assert names(rpc.call("contacts.list", params, org.member_token)) == ["Noah", "Isla", "Harry", "Amelia"]


def test_search_finds_matches_beyond_its_first_window(
    rpc: Rpc, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a window of two rows, step 1 sees only Leo and Mia; the rest must come from step 2.
    monkeypatch.setattr("procedures.contacts.SEARCH_WINDOW", 2)
    assert listed(rpc, org, search="smith") == ["Leo", "Amelia", "Oliver"]
    first = rpc.call("contacts.list", {"search": "smith", "limit": 1}, org.member_token)
    rest = rpc.call("contacts.list", {"search": "smith", "cursor": first["nextCursor"]}, org.member_token)
    assert names(first) + names(rest) == ["Leo", "Amelia", "Oliver"]
    assert listed(rpc, org, search="isla") == ["Isla"]


def test_list_items_are_exactly_what_get_answers(rpc: Rpc, world: Any) -> None:
    """List pages are serialised from their rows, not from models (server/encoded.py); each item
    must still be what get answers, field for field, in the same order and the same formats."""
    org = world.org()
    made = [
        create(
            rpc, org, phone="07911 123456", postcode="sw1a1aa", category="seller", consentStatus="granted"
        ),
        create(rpc, org, firstName=None, lastName="Solo", email=None, consentStatus="pending"),
        # Whole seconds and a non-UTC offset: both paths must write the time the same way.
        create(rpc, org, consentStatus="granted", consentTimestamp="2025-03-01T09:30:00+01:00"),
        create(rpc, org, consentStatus="denied", consentTimestamp="2025-03-01T09:30:00.250000Z"),
    ]
    items = rpc.call("contacts.list", {}, org.member_token)["items"]
    for contact in made:
        detail = rpc.call("contacts.get", {"id": contact["id"]}, org.member_token)
        detail.pop("activeAssignment")
        (item,) = [i for i in items if i["id"] == contact["id"]]
        assert item == detail
        assert list(item) == list(detail)
    timestamps = {i["consentTimestamp"] for i in items}
    assert {"2025-03-01T08:30:00Z", "2025-03-01T09:30:00.250000Z"} <= timestamps
