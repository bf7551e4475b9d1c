"""Issue 4: contacts.create, get, update, assignCategory and getCategoryHistory, through /rpc."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.contacts_helpers import create, unique_email, unique_phone
from tests.support import Rpc, query


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_create_normalises_and_defaults(rpc: Rpc, world: Any) -> None:
    org = world.org()
    tag = uuid.uuid4().hex[:8]
    contact = create(
        rpc,
        org,
        firstName="  Ada ",
        email=f"Ada.{tag}@EXAMPLE.Co.UK",
        phone="07911 123456",
        postcode=" sw1a1aa ",
    )
    assert contact["firstName"] == "Ada"
    assert contact["email"] == f"ada.{tag}@example.co.uk"
    assert contact["phone"] == "+447911123456"
    assert contact["postcode"] == "SW1A 1AA"
    assert contact["consentStatus"] == "unknown" and contact["consentTimestamp"] is None
    assert contact["importSource"] == "manual"
    assert contact["category"] is None and contact["group"] is None
    assert contact["activeAssignment"] is None
    assert rpc.call("contacts.get", {"id": contact["id"]}, org.member_token) == contact


def test_create_with_a_category_creates_the_active_assignment(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, category="managed_landlord", reason="first call")
    active = contact["activeAssignment"]
    assert contact["category"] == "managed_landlord" and contact["group"] == "existing_client"
    assert active["category"] == "managed_landlord" and active["group"] == "existing_client"
    assert active["supersededAt"] is None and active["reason"] == "first call"
    assert active["assignedBy"] == org.member_id


def test_consent_timestamp_is_now_when_a_status_comes_without_one(rpc: Rpc, world: Any) -> None:
    org = world.org()
    before = datetime.now(UTC) - timedelta(seconds=5)
    contact = create(rpc, org, consentStatus="granted")
    assert before <= ts(contact["consentTimestamp"]) <= datetime.now(UTC) + timedelta(seconds=5)
    given = create(rpc, org, consentStatus="denied", consentTimestamp="2024-03-01T09:30:00+01:00")
    assert ts(given["consentTimestamp"]) == datetime(2024, 3, 1, 8, 30, tzinfo=UTC)


def test_raw_crm_payload_is_stored_but_never_returned(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    payload = {"id": "RPT123", "notes": "payload-marker-41c2", "nested": {"list": [1, "two"]}}
    contact = create(rpc, org, importSource="crm_sync", crmPayload=payload)
    stored = query(database_url, "SELECT crm_payload FROM contacts WHERE id = %s", (contact["id"],))
    assert stored == [(payload,)]
    for result in (
        contact,
        rpc.call("contacts.get", {"id": contact["id"]}, org.member_token),
        rpc.call("contacts.list", {}, org.member_token),
    ):
        assert "payload-marker-41c2" not in str(result) and "crmPayload" not in str(result)


def test_a_used_email_is_a_conflict_naming_the_existing_contact(rpc: Rpc, world: Any) -> None:
    org = world.org()
    email = unique_email()
    first = create(rpc, org, email=email)
    error = rpc.error("contacts.create", {"email": email.upper()}, org.member_token)
    assert error["data"]["code"] == "CONFLICT"
    assert error["data"]["existingContactId"] == first["id"] and first["id"] in error["message"]
    assert email not in error["message"]
    # Another organisation may hold the same person.
    assert create(rpc, world.org(), email=email)["email"] == email


def test_phones_are_not_unique(rpc: Rpc, world: Any) -> None:
    org = world.org()
    phone = unique_phone()
    assert create(rpc, org, phone=phone)["phone"] == create(rpc, org, phone=phone)["phone"]


def test_get_unknown_contact_is_not_found(rpc: Rpc, world: Any) -> None:
    org = world.org()
    error = rpc.error("contacts.get", {"id": str(uuid.uuid4())}, org.member_token)
    assert error["data"]["code"] == "NOT_FOUND" and error["code"] == -32004


def test_update_is_partial_and_null_clears(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, phone=unique_phone(), postcode="M1 1AE", category="buyer")
    updated = rpc.call(
        "contacts.update", {"id": contact["id"], "lastName": "Byron", "phone": None}, org.member_token
    )
    assert updated["lastName"] == "Byron" and updated["phone"] is None
    unchanged = {"firstName", "email", "postcode", "consentStatus", "category", "createdAt"}
    assert {k: updated[k] for k in unchanged} == {k: contact[k] for k in unchanged}
    assert ts(updated["updatedAt"]) > ts(contact["updatedAt"])


def test_update_email_to_a_used_one_is_a_conflict(rpc: Rpc, world: Any) -> None:
    org = world.org()
    taken = create(rpc, org)
    other = create(rpc, org)
    error = rpc.error("contacts.update", {"id": other["id"], "email": taken["email"]}, org.member_token)
    assert error["data"]["code"] == "CONFLICT" and error["data"]["existingContactId"] == taken["id"]
    # Its own email again is no conflict.
    assert rpc.call("contacts.update", {"id": other["id"], "email": other["email"]}, org.member_token)


def test_a_category_change_supersedes_and_the_same_category_adds_no_history(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, category="seller")
    rpc.call(
        "contacts.update",
        {"id": contact["id"], "category": "active_seller", "reason": "instructed"},
        org.member_token,
    )
    rpc.call("contacts.update", {"id": contact["id"], "category": "active_seller"}, org.member_token)
    history = rpc.call("contacts.getCategoryHistory", {"id": contact["id"]}, org.member_token)
    assert [h["category"] for h in history] == ["active_seller", "seller"]
    assert history[0]["supersededAt"] is None and history[0]["reason"] == "instructed"
    assert history[1]["supersededAt"] == history[0]["assignedAt"]
    assert history[0]["group"] == "existing_client" and history[1]["group"] == "prospect"
    got = rpc.call("contacts.get", {"id": contact["id"]}, org.member_token)
    assert got["category"] == "active_seller" and got["activeAssignment"] == history[0]


def test_category_null_ends_the_active_assignment(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, category="landlord")
    cleared = rpc.call("contacts.update", {"id": contact["id"], "category": None}, org.member_token)
    assert cleared["category"] is None and cleared["activeAssignment"] is None
    history = rpc.call("contacts.getCategoryHistory", {"id": contact["id"]}, org.member_token)
    assert len(history) == 1 and history[0]["supersededAt"] is not None


def test_a_consent_change_moves_the_consent_timestamp(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, consentStatus="pending", consentTimestamp="2024-01-01T00:00:00Z")
    same = rpc.call("contacts.update", {"id": contact["id"], "consentStatus": "pending"}, org.member_token)
    assert same["consentTimestamp"] == contact["consentTimestamp"]
    moved = rpc.call("contacts.update", {"id": contact["id"], "consentStatus": "granted"}, org.member_token)
    assert ts(moved["consentTimestamp"]) > datetime.now(UTC) - timedelta(minutes=1)
    given = rpc.call(
        "contacts.update",
        {"id": contact["id"], "consentStatus": "denied", "consentTimestamp": "2025-06-01T12:00:00Z"},
        org.member_token,
    )
    assert given["consentStatus"] == "denied" and ts(given["consentTimestamp"]) == datetime(
        2025, 6, 1, 12, tzinfo=UTC
    )


def test_assign_category_records_reason_and_assigner(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org)
    assignment = rpc.call(
        "contacts.assignCategory",
        {"id": contact["id"], "category": "btl_investor", "reason": "portfolio call"},
        org.admin_token,
    )
    assert assignment["category"] == "btl_investor" and assignment["group"] == "prospect"
    assert assignment["reason"] == "portfolio call" and assignment["supersededAt"] is None
    again = rpc.call(
        "contacts.assignCategory", {"id": contact["id"], "category": "btl_investor"}, org.member_token
    )
    assert again == assignment  # a no-op that returns the active assignment
    history = rpc.call("contacts.getCategoryHistory", {"id": contact["id"]}, org.member_token)
    assert history == [assignment]


def test_history_is_newest_first_with_every_field(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, category="buyer")
    for category in ("active_buyer", "buyer", "property_investor"):
        rpc.call("contacts.assignCategory", {"id": contact["id"], "category": category}, org.member_token)
    history = rpc.call("contacts.getCategoryHistory", {"id": contact["id"]}, org.member_token)
    assert [h["category"] for h in history] == ["property_investor", "buyer", "active_buyer", "buyer"]
    assert set(history[0]) == {
        "id",
        "category",
        "group",
        "assignedAt",
        "supersededAt",
        "assignedBy",
        "reason",
    }
    for newer, older in zip(history, history[1:], strict=False):
        assert older["supersededAt"] == newer["assignedAt"]
