"""Issue 18: the erasure suppression list, one rule on every write path, and a way back.

An erased person's identifiers stay out of every write (imports, an agent's create, an update
that moves an erased phone onto another contact) until an admin overrides with a reason or lifts
the suppression; both leave evidence and one audit row, and no plaintext identifier anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.contacts_helpers import audit_rows, create, unique_email, unique_phone
from tests.support import Rpc, query

REASON = "Came back on 2026-12-01 and consented to be contacted"


@pytest.fixture
def erased(rpc: Rpc, world: Any) -> dict[str, Any]:
    org = world.org()
    person = {"email": unique_email("erased"), "phone": unique_phone()}
    contact = create(rpc, org, **person)
    rpc.call("contacts.delete", {"id": contact["id"]}, org.admin_token)
    return {"org": org, **person}


def contacts_with(url: str, org_id: str, email: str) -> int:
    return int(query(url, "SELECT count(*) FROM contacts WHERE organisation_id = %s AND email = %s",
                     (org_id, email))[0][0])


def test_a_manual_create_of_an_erased_person_is_refused(
    rpc: Rpc, erased: dict[str, Any], database_url: str
) -> None:
    org = erased["org"]
    for identifier in ("email", "phone"):
        error = rpc.error("contacts.create", {identifier: erased[identifier], "importSource": "manual"},
                          org.member_token)
        assert error["data"]["code"] == "CONFLICT"
        assert error["data"]["suppressed"] == [identifier]
        assert "suppressionOverride" in error["message"] and erased[identifier] not in error["message"]
    assert contacts_with(database_url, org.id, erased["email"]) == 0


def test_an_admin_override_lifts_the_suppression_in_the_same_create(
    rpc: Rpc, erased: dict[str, Any], database_url: str
) -> None:
    org = erased["org"]
    params = {"email": erased["email"], "phone": erased["phone"], "suppressionOverride": {"reason": REASON}}
    contact = rpc.call("contacts.create", params, org.admin_token)
    assert contact["email"] == erased["email"]
    check = rpc.call("contacts.checkSuppression", {"email": erased["email"], "phone": erased["phone"]},
                     org.member_token)
    assert check == {"suppressed": []}
    lifts = query(database_url, "SELECT kind, reason, lifted_by IS NOT NULL FROM erasure_suppression_lifts"
                                " WHERE organisation_id = %s ORDER BY kind", (org.id,))
    assert lifts == [("email", REASON, True), ("phone", REASON, True)]
    creates = [row for row in audit_rows(database_url, org) if row[0] == "contacts.create"]
    assert creates[-1][1:3] == ("contact", contact["id"]) and "suppressionOverride" in creates[-1][3]


@pytest.mark.parametrize(
    ("token", "params", "code"),
    [
        ("member_token", {}, "FORBIDDEN"),
        ("admin_token", {"importSource": "crm_sync"}, "BAD_REQUEST"),
    ],
)
def test_an_override_needs_an_admin_and_a_manual_create(
    rpc: Rpc, erased: dict[str, Any], database_url: str, token: str, params: dict[str, Any], code: str
) -> None:
    org = erased["org"]
    error = rpc.error("contacts.create", {
        "email": erased["email"], "suppressionOverride": {"reason": REASON}, **params,
    }, getattr(org, token))
    assert error["data"]["code"] == code
    assert contacts_with(database_url, org.id, erased["email"]) == 0
    assert rpc.call("contacts.checkSuppression", {"email": erased["email"]}, org.member_token) == {
        "suppressed": ["email"]}


def test_an_update_that_brings_an_erased_identifier_back_is_refused_unless_overridden(
    rpc: Rpc, erased: dict[str, Any], database_url: str
) -> None:
    org = erased["org"]
    other = create(rpc, org)
    for identifier in ("phone", "email"):
        error = rpc.error("contacts.update", {"id": other["id"], identifier: erased[identifier]},
                          org.member_token)
        assert error["data"]["code"] == "CONFLICT" and error["data"]["suppressed"] == [identifier]
    assert rpc.call("contacts.get", {"id": other["id"]}, org.member_token)["phone"] is None
    updated = rpc.call("contacts.update", {
        "id": other["id"], "phone": erased["phone"], "suppressionOverride": {"reason": REASON},
    }, org.admin_token)
    assert updated["phone"] == erased["phone"]
    assert rpc.call("contacts.checkSuppression", {"phone": erased["phone"], "email": erased["email"]},
                    org.member_token) == {"suppressed": ["email"]}


def test_lift_takes_identifiers_off_the_list_so_an_import_comes_in(
    rpc: Rpc, erased: dict[str, Any], database_url: str
) -> None:
    org = erased["org"]
    lift = {"email": erased["email"], "reason": REASON}
    error = rpc.error("contacts.liftSuppression", lift, org.member_token)
    assert error["data"]["code"] == "FORBIDDEN"
    lifted = rpc.call("contacts.liftSuppression", {"email": erased["email"].upper(), "reason": REASON},
                      org.admin_token)
    assert lifted == {"lifted": ["email"]}
    assert rpc.call("contacts.checkSuppression", {"email": erased["email"]}, org.member_token) == {
        "suppressed": []}
    # Still suppressed by phone; by email alone the import now comes in.
    imported = rpc.call("contacts.create", {"email": erased["email"], "importSource": "apify"},
                        org.member_token)
    assert imported["email"] == erased["email"]
    again = rpc.error("contacts.liftSuppression", lift, org.admin_token)
    assert again["data"]["code"] == "NOT_FOUND"
    lifts = [row for row in audit_rows(database_url, org) if row[0] == "contacts.liftSuppression"]
    assert len(lifts) == 1 and lifts[0][1:4] == ("erasure_suppression", None, ["email"])


@pytest.mark.parametrize("params", [{}, {"reason": REASON}])
def test_check_and_lift_need_an_identifier(rpc: Rpc, world: Any, params: dict[str, Any]) -> None:
    org = world.org()
    method = "contacts.liftSuppression" if params else "contacts.checkSuppression"
    error = rpc.error(method, params, org.admin_token)
    assert error["data"]["code"] == "BAD_REQUEST"
    assert error["data"]["issues"][0]["path"] == "email"


def test_no_plaintext_identifier_is_kept_by_an_override_or_a_lift(
    rpc: Rpc, erased: dict[str, Any], database_url: str
) -> None:
    org = erased["org"]
    rpc.call("contacts.liftSuppression", {"phone": erased["phone"], "reason": REASON}, org.admin_token)
    rpc.call("contacts.create", {"email": erased["email"], "suppressionOverride": {"reason": REASON}},
             org.admin_token)
    national = "0" + erased["phone"][3:]
    for table in ("audit_log", "erasure_suppression_lifts", "erasure_suppressions"):
        text = query(database_url, f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} AS t"
                                   " WHERE organisation_id = %s", (org.id,))[0][0]
        for value in (erased["email"], erased["phone"], national, erased["phone"][1:]):
            assert value not in text, (table, value)


def test_an_update_to_an_erased_external_id_is_refused(rpc: Rpc, world: Any, database_url: str) -> None:
    from tests.test_contacts_erasure import connect_crm

    org = world.org()
    connection = connect_crm(database_url, org, "street")
    gone = create(rpc, org, importSource="crm_sync", crmConnectionId=connection, externalId="ST-GONE")
    rpc.call("contacts.delete", {"id": gone["id"]}, org.admin_token)
    other = create(rpc, org, importSource="crm_sync", crmConnectionId=connection, externalId="ST-OTHER")
    error = rpc.error("contacts.update", {"id": other["id"], "externalId": "ST-GONE"}, org.member_token)
    assert error["data"]["code"] == "CONFLICT" and error["data"]["suppressed"] == ["external_id"]
    moved = rpc.call("contacts.update", {"id": other["id"], "externalId": "ST-NEW"}, org.member_token)
    assert moved["externalId"] == "ST-NEW"
    unlinked = create(rpc, org)
    error = rpc.error("contacts.update", {"id": unlinked["id"], "externalId": "ST-X"}, org.member_token)
    assert error["data"]["issues"][0]["path"] == "externalId"
