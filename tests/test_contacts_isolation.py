"""Issue 4: organisation B can neither see nor touch organisation A's contacts, by any procedure."""

from __future__ import annotations

from typing import Any

import pytest

from procedures import app_router
from tests.contacts_helpers import count_rows, create
from tests.support import Org, Rpc

# Every contacts procedure that takes a contact id, with the rest of its params.
BY_ID: list[tuple[str, dict[str, Any]]] = [
    ("contacts.get", {}),
    ("contacts.update", {"firstName": "Mallory"}),
    ("contacts.update", {"category": "seller"}),
    ("contacts.assignCategory", {"category": "landlord"}),
    ("contacts.getCategoryHistory", {}),
    ("contacts.getConsent", {}),
    ("contacts.delete", {}),
    ("contacts.export", {}),
]


@pytest.fixture(scope="module")
def orgs(world: Any, server: Any) -> tuple[Org, Org, dict[str, Any]]:
    a, b = world.org("Agency A"), world.org("Agency B")
    contact = create(Rpc(server.url), a, category="buyer", lastName="Isolated", postcode="SW1A 1AA")
    return a, b, contact


def test_every_contacts_procedure_is_covered() -> None:
    covered = {method for method, _ in BY_ID} | {
        "contacts.list",
        "contacts.create",
        "contacts.listCrmProviders",
        "contacts.import",  # per organisation: test below
        "contacts.checkSuppression",  # per organisation: test below
        "contacts.liftSuppression",
    }
    assert covered == {name for name in app_router if name.startswith("contacts.")}


@pytest.mark.parametrize("method, params", BY_ID, ids=[f"{m} {sorted(p)}" for m, p in BY_ID])
def test_another_organisations_id_is_not_found(
    rpc: Rpc, orgs: tuple[Org, Org, dict[str, Any]], database_url: str, method: str, params: dict[str, Any]
) -> None:
    a, b, contact = orgs
    audited = count_rows(database_url, b, "audit_log")
    error = rpc.error(method, {"id": contact["id"], **params}, b.admin_token)
    assert error["data"]["code"] == "NOT_FOUND" and error["code"] == -32004
    # Exactly what an unknown id gets: nothing tells B the id exists.
    unknown = rpc.error(method, {"id": "00000000-0000-4000-8000-000000000000", **params}, b.admin_token)
    assert error["message"] == unknown["message"]
    assert rpc.call("contacts.get", {"id": contact["id"]}, a.member_token) == contact
    assert count_rows(database_url, b, "audit_log") == audited


def test_lists_never_show_another_organisations_rows(rpc: Rpc, orgs: tuple[Org, Org, dict[str, Any]]) -> None:
    a, b, contact = orgs
    mine = create(rpc, b, lastName="Isolated")
    for params in (
        {},
        {"search": "isolated"},
        {"category": "buyer"},
        {"group": "prospect"},
        {"search": contact["email"]},
        {"search": "SW1A"},
        {"importSource": "manual"},
        {"consentStatus": "unknown"},
    ):
        ids = {item["id"] for item in rpc.call("contacts.list", params, b.member_token)["items"]}
        assert contact["id"] not in ids
    assert {i["id"] for i in rpc.call("contacts.list", {}, b.member_token)["items"]} == {mine["id"]}


def test_an_email_used_in_another_organisation_is_no_conflict(
    rpc: Rpc, orgs: tuple[Org, Org, dict[str, Any]]
) -> None:
    _, b, contact = orgs
    assert create(rpc, b, email=contact["email"])["email"] == contact["email"]


def test_another_organisations_crm_connection_cannot_be_used(
    rpc: Rpc, orgs: tuple[Org, Org, dict[str, Any]], database_url: str
) -> None:
    from tests.test_contacts_erasure import connect_crm

    a, b, _ = orgs
    connection = connect_crm(database_url, a, "alto")
    error = rpc.error(
        "contacts.create",
        {"crmConnectionId": connection, "externalId": "X1", "importSource": "crm_sync"},
        b.member_token,
    )
    assert error["code"] == -32602 and error["data"]["issues"][0]["path"] == "crmConnectionId"


def test_another_organisations_suppressions_can_be_neither_seen_nor_lifted(
    rpc: Rpc, world: Any, database_url: str
) -> None:
    """Issue 18: the suppression list is scoped to its organisation."""
    a, b = world.org("Agency A"), world.org("Agency B")
    erased = create(rpc, a)
    rpc.call("contacts.delete", {"id": erased["id"]}, a.admin_token)
    identifier = {"email": erased["email"]}
    assert rpc.call("contacts.checkSuppression", identifier, a.member_token) == {"suppressed": ["email"]}
    assert rpc.call("contacts.checkSuppression", identifier, b.member_token) == {"suppressed": []}
    error = rpc.error("contacts.liftSuppression", {**identifier, "reason": "not ours"}, b.admin_token)
    assert error["data"]["code"] == "NOT_FOUND"
    assert rpc.call("contacts.checkSuppression", identifier, a.member_token) == {"suppressed": ["email"]}


def test_an_import_matches_duplicates_within_its_own_organisation_only(rpc: Rpc, world: Any) -> None:
    """Issue 18: an email held by another organisation is no duplicate, and is never updated."""
    a, b = world.org("Agency A"), world.org("Agency B")
    theirs = create(rpc, a, firstName="Kept")
    result = rpc.call("contacts.import", {"rows": [{"firstName": "Other", "email": theirs["email"]}],
                                          "onDuplicate": "update"}, b.member_token)
    assert (result["created"], result["updated"]) == (1, 0)
    assert rpc.call("contacts.get", {"id": theirs["id"]}, a.member_token)["firstName"] == "Kept"
