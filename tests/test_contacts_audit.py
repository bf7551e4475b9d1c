"""Issue 4: every contacts mutation writes exactly one audit row: field names, never values."""

from __future__ import annotations

from typing import Any

from tests.contacts_helpers import audit_rows, create
from tests.support import Rpc


def test_each_mutation_writes_one_audit_row_naming_fields(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    contact = create(rpc, org, category="buyer", phone="07911 123457")
    cid = contact["id"]
    steps: list[tuple[str, dict[str, Any], list[str]]] = [
        ("contacts.update", {"lastName": "Byron", "phone": None, "firstName": "Ada"}, ["lastName", "phone"]),
        ("contacts.update", {"consentStatus": "granted"}, ["consentStatus", "consentTimestamp"]),
        ("contacts.update", {"category": "seller", "reason": "wants to sell"}, ["category"]),
        ("contacts.update", {"category": "seller"}, []),
        ("contacts.assignCategory", {"category": "active_seller"}, ["category"]),
        ("contacts.assignCategory", {"category": "active_seller"}, []),  # a no-op is still audited
        ("contacts.delete", {}, []),
    ]
    rows = audit_rows(database_url, org)
    assert rows == [
        (
            "contacts.create",
            "contact",
            cid,
            ["category", "email", "firstName", "lastName", "phone"],
            rows[0][4],
        )
    ]
    for method, params, fields in steps:
        token = org.admin_token if method == "contacts.delete" else org.member_token
        rpc.call(method, {"id": cid, **params}, token)
        new = audit_rows(database_url, org)[len(rows) :]
        assert [(r[0], r[1], r[2], r[3]) for r in new] == [(method, "contact", cid, fields)], method
        rows += new
    text = str(rows)
    for value in ("Byron", "Ada", "wants to sell", contact["email"], "123457"):
        assert value not in text


def test_failed_mutations_write_no_audit_row(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    first = create(rpc, org)
    before = audit_rows(database_url, org)
    rpc.error("contacts.create", {"email": first["email"]}, org.member_token)  # conflict
    rpc.error("contacts.delete", {"id": first["id"]}, org.member_token)  # forbidden
    rpc.error("contacts.update", {"id": first["id"], "email": "bad"}, org.member_token)  # invalid
    assert audit_rows(database_url, org) == before
