"""Issue 18: audit.list, the audit log for compliance admins: filters, keyset pages, no personal value."""

from __future__ import annotations

import json
from typing import Any

from tests.contacts_helpers import create
from tests.support import Rpc


def entries(rpc: Rpc, token: str, **params: Any) -> list[dict[str, Any]]:
    """Every entry for these filters, page by page."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        more = {"cursor": cursor} if cursor else {}
        page = rpc.call("audit.list", {**params, "limit": 2, **more}, token)
        found += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return found


def test_admins_page_through_their_own_organisations_log_only(rpc: Rpc, world: Any) -> None:
    a, b = world.org("Audit A"), world.org("Audit B")
    contacts = [create(rpc, a) for _ in range(3)]
    rpc.call("contacts.assignCategory", {"id": contacts[0]["id"], "category": "seller"}, a.member_token)
    create(rpc, b)
    log = entries(rpc, a.admin_token)
    assert len({e["id"] for e in log}) == len(log)  # no entry twice across pages
    assert [e["createdAt"] for e in log] == sorted((e["createdAt"] for e in log), reverse=True)
    mine = [e for e in log if e["action"].startswith("contacts.")]  # the rest: its tokens' issue
    assert [e["action"] for e in mine] == ["contacts.assignCategory"] + ["contacts.create"] * 3
    assert {e["targetId"] for e in mine} == {c["id"] for c in contacts}
    assert rpc.error("audit.list", {}, a.member_token)["data"]["code"] == "FORBIDDEN"


def test_filters_by_actor_action_target_and_time(rpc: Rpc, world: Any) -> None:
    org = world.org("Audit Filters")
    first = create(rpc, org)
    rpc.call("contacts.update", {"id": first["id"], "lastName": "Changed"}, org.admin_token)
    second = create(rpc, org)
    everything = entries(rpc, org.admin_token)
    by_action = entries(rpc, org.admin_token, action="contacts.update")
    assert [(e["targetId"], e["changedFields"]) for e in by_action] == [(first["id"], ["lastName"])]
    by_target = entries(rpc, org.admin_token, targetType="contact", targetId=first["id"])
    assert [e["action"] for e in by_target] == ["contacts.update", "contacts.create"]
    by_actor = entries(rpc, org.admin_token, actorUserId=org.member_id)
    assert {e["targetId"] for e in by_actor} == {first["id"], second["id"]}
    assert all(e["action"] == "contacts.create" for e in by_actor)
    middle = by_action[0]["createdAt"]
    since = entries(rpc, org.admin_token, since=middle)
    until = entries(rpc, org.admin_token, until=middle)
    assert len(since) + len(until) == len(everything) and until[0]["targetId"] == first["id"]
    error = rpc.error("audit.list", {"since": middle, "until": middle}, org.admin_token)
    assert error["data"]["issues"][0]["path"] == "until"


def test_a_cursor_works_only_with_the_filters_that_made_it(rpc: Rpc, world: Any) -> None:
    org = world.org("Audit Cursor")
    for _ in range(3):
        create(rpc, org)
    page = rpc.call("audit.list", {"limit": 1}, org.admin_token)
    other_filters = {"limit": 1, "cursor": page["nextCursor"], "action": "contacts.create"}
    error = rpc.error("audit.list", other_filters, org.admin_token)
    assert error["data"]["issues"][0]["path"] == "cursor"


def test_no_personal_value_is_in_the_log(rpc: Rpc, world: Any) -> None:
    org = world.org("Audit Private")
    contact = create(rpc, org, phone="07700 900123", postcode="SW1A 1AA", lastName="Privatesurname")
    rpc.call("contacts.update", {"id": contact["id"], "email": "new.address@example.co.uk"}, org.member_token)
    rpc.call("contacts.delete", {"id": contact["id"]}, org.admin_token)
    text = json.dumps(entries(rpc, org.admin_token))
    for value in (contact["email"], "new.address", "+447700900123", "SW1A", "Privatesurname"):
        assert value not in text
    assert "contacts.delete" in text
