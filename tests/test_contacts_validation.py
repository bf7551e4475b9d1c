"""Issue 4: every bad input is a -32602 naming the field, echoes nothing, and writes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.contacts_helpers import create
from tests.support import Org, Rpc, query

SECRET = "Zq9secretvalue"  # in bad values: must never come back in an error
LONG = "x" * 201
FUTURE = "2999-01-01T00:00:00Z"

CREATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", {"nickname": "Ada"}, "nickname"),
    ("unknown field, snake_case", {"first_name": "Ada"}, "first_name"),
    ("consent enum", {"consentStatus": "maybe"}, "consentStatus"),
    ("source enum", {"importSource": "csv"}, "importSource"),
    ("category enum", {"category": "vendor"}, "category"),
    ("first name over 200", {"firstName": LONG}, "firstName"),
    ("last name over 200", {"lastName": LONG}, "lastName"),
    ("empty name", {"firstName": "   "}, "firstName"),
    ("email over 320", {"email": "a" * 310 + "@example.com"}, "email"),
    ("reason over 500", {"category": "buyer", "reason": "r" * 501}, "reason"),
    ("NUL in a name", {"firstName": f"Ad\x00a{SECRET}"}, "firstName"),
    ("NUL in an email", {"email": f"{SECRET}\x00@example.com"}, "email"),
    ("NUL in a postcode", {"postcode": "SW1A\x001AA"}, "postcode"),
    (
        "NUL in a payload string",
        {"importSource": "crm_sync", "crmPayload": {"notes": [f"{SECRET}\x00"]}},
        "crmPayload",
    ),
    ("NUL in a payload key", {"importSource": "crm_sync", "crmPayload": {"a\x00": 1}}, "crmPayload"),
    ("malformed email", {"email": f"{SECRET}-at-example.com"}, "email"),
    ("email with two @", {"email": f"{SECRET}@@example.com"}, "email"),
    ("email without a domain dot", {"email": f"{SECRET}@localhost"}, "email"),
    ("malformed phone", {"phone": f"call {SECRET}"}, "phone"),
    ("too short a phone", {"phone": "01234"}, "phone"),
    ("mobile a digit short", {"phone": "07700 90012"}, "phone"),
    ("mobile a digit long", {"phone": "07700 9001234"}, "phone"),
    ("UK number of zeros", {"phone": "00000 000000"}, "phone"),
    ("local number without area code", {"phone": "496 0000"}, "phone"),
    ("impossible foreign number", {"phone": "+33 1 42"}, "phone"),
    ("malformed postcode", {"postcode": "SW1A 1A"}, "postcode"),
    ("first name not a string", {"firstName": 5}, "firstName"),
    ("consent status not a string", {"consentStatus": True}, "consentStatus"),
    ("email a list", {"email": ["a@example.com"]}, "email"),
    ("payload a string", {"importSource": "crm_sync", "crmPayload": "{}"}, "crmPayload"),
    ("payload a list", {"importSource": "crm_sync", "crmPayload": [1]}, "crmPayload"),
    ("payload without crm_sync", {"importSource": "manual", "crmPayload": {"id": "1"}}, "crmPayload"),
    ("future consent", {"consentStatus": "granted", "consentTimestamp": FUTURE}, "consentTimestamp"),
    ("naive consent time", {"consentTimestamp": "2024-01-01T10:00:00"}, "consentTimestamp"),
    ("consent time not a time", {"consentTimestamp": "yesterday"}, "consentTimestamp"),
    ("connection id not a UUID", {"crmConnectionId": "conn-1"}, "crmConnectionId"),
    ("unknown connection", {"crmConnectionId": str(uuid.uuid4()), "externalId": "X1"}, "crmConnectionId"),
    ("external id without connection", {"externalId": "RPT1"}, "externalId"),
    ("reason without category", {"reason": "because"}, "reason"),
]

LIST_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("limit 0", {"limit": 0}, "limit"),
    ("limit 10^9", {"limit": 10**9}, "limit"),
    ("limit a string", {"limit": "5"}, "limit"),
    ("limit a float", {"limit": 5.5}, "limit"),
    ("category enum", {"category": "vendor"}, "category"),
    ("category enum in a list", {"category": ["buyer", "vendor"]}, "category"),
    ("empty category list", {"category": []}, "category"),
    ("group enum", {"group": "vip"}, "group"),
    ("consent enum", {"consentStatus": "yes"}, "consentStatus"),
    ("source enum", {"importSource": "csv"}, "importSource"),
    ("search over 200", {"search": "s" * 201}, "search"),
    ("NUL in search", {"search": "ad\x00a"}, "search"),
    ("search of punctuation only", {"search": "%%% ()"}, "search"),
    ("created after not a time", {"createdAfter": "last week"}, "createdAfter"),
    ("garbage cursor", {"cursor": "not-a-cursor"}, "cursor"),
    ("unknown field", {"offset": 100}, "offset"),
]

ID_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("get", "contacts.get", {"id": "123"}, "id"),
    ("get without id", "contacts.get", {}, "id"),
    ("get with numeric id", "contacts.get", {"id": 5}, "id"),
    ("history", "contacts.getCategoryHistory", {"id": "not-a-uuid"}, "id"),
    ("assign", "contacts.assignCategory", {"id": "x", "category": "buyer"}, "id"),
    ("delete", "contacts.delete", {"id": "00000000-0000-0000-0000-00000000000g"}, "id"),
    ("update", "contacts.update", {"id": "zz"}, "id"),
]

# Mutations of an existing contact: {id} is filled in.
EXISTING_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("update unknown field", "contacts.update", {"nickname": "x"}, "nickname"),
    ("update consent null", "contacts.update", {"consentStatus": None}, "consentStatus"),
    ("update bad email", "contacts.update", {"email": f"{SECRET}@"}, "email"),
    ("update bad phone", "contacts.update", {"phone": "999"}, "phone"),
    ("update NUL name", "contacts.update", {"lastName": "a\x00b"}, "lastName"),
    ("update name over 200", "contacts.update", {"lastName": LONG}, "lastName"),
    ("update future consent", "contacts.update", {"consentTimestamp": FUTURE}, "consentTimestamp"),
    ("update payload on manual", "contacts.update", {"crmPayload": {"a": 1}}, "crmPayload"),
    ("update category enum", "contacts.update", {"category": "vendor"}, "category"),
    ("update reason alone", "contacts.update", {"reason": "why"}, "reason"),
    ("assign category enum", "contacts.assignCategory", {"category": "vendor"}, "category"),
    ("assign without category", "contacts.assignCategory", {}, "category"),
    (
        "assign reason over 500",
        "contacts.assignCategory",
        {"category": "seller", "reason": "r" * 501},
        "reason",
    ),
    ("assign NUL reason", "contacts.assignCategory", {"category": "seller", "reason": "a\x00"}, "reason"),
    ("assign category a number", "contacts.assignCategory", {"category": 3}, "category"),
]


@pytest.fixture(scope="module")
def org(world: Any) -> Org:
    return world.org()


@pytest.fixture(scope="module")
def existing(org: Org, server: Any) -> dict[str, Any]:
    return create(Rpc(server.url), org, category="buyer")


def snapshot(url: str, org: Org) -> list[Any]:
    """Everything a call could have written for this organisation."""
    return query(
        url,
        """SELECT (SELECT count(*) FROM contacts WHERE organisation_id = %(o)s),
                  (SELECT max(updated_at) FROM contacts WHERE organisation_id = %(o)s),
                  (SELECT count(*) FROM lead_category_assignments WHERE organisation_id = %(o)s),
                  (SELECT count(*) FROM audit_log WHERE organisation_id = %(o)s),
                  (SELECT count(*) FROM erasure_suppressions WHERE organisation_id = %(o)s)""",
        {"o": org.id},
    )


def assert_invalid(error: dict[str, Any], path: str) -> None:
    assert error["code"] == -32602, error
    assert error["data"]["code"] == "BAD_REQUEST"
    paths = [issue["path"] for issue in error["data"]["issues"]]
    assert any(p == path or p.startswith(path + ".") for p in paths), paths
    assert SECRET not in json.dumps(error)


@pytest.mark.parametrize("params, path", [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_create_refuses_bad_input(
    rpc: Rpc, database_url: str, org: Org, params: dict[str, Any], path: str
) -> None:
    before = snapshot(database_url, org)
    body = {"firstName": "Ada", **params}
    assert_invalid(rpc.error("contacts.create", body, org.member_token), path)
    assert snapshot(database_url, org) == before


@pytest.mark.parametrize("params, path", [c[1:] for c in LIST_CASES], ids=[c[0] for c in LIST_CASES])
def test_list_refuses_bad_input(rpc: Rpc, org: Org, params: dict[str, Any], path: str) -> None:
    assert_invalid(rpc.error("contacts.list", params, org.member_token), path)


@pytest.mark.parametrize("method, params, path", [c[1:] for c in ID_CASES], ids=[c[0] for c in ID_CASES])
def test_invalid_ids_are_refused(
    rpc: Rpc, database_url: str, org: Org, method: str, params: dict[str, Any], path: str
) -> None:
    before = snapshot(database_url, org)
    assert_invalid(rpc.error(method, params, org.admin_token), path)
    assert snapshot(database_url, org) == before


@pytest.mark.parametrize(
    "method, params, path", [c[1:] for c in EXISTING_CASES], ids=[c[0] for c in EXISTING_CASES]
)
def test_mutations_of_a_contact_refuse_bad_input(
    rpc: Rpc,
    database_url: str,
    org: Org,
    existing: dict[str, Any],
    method: str,
    params: dict[str, Any],
    path: str,
) -> None:
    before = snapshot(database_url, org)
    assert_invalid(rpc.error(method, {"id": existing["id"], **params}, org.member_token), path)
    assert snapshot(database_url, org) == before
    assert rpc.call("contacts.get", {"id": existing["id"]}, org.member_token) == existing


def test_params_must_be_an_object(rpc: Rpc, org: Org) -> None:
    error = rpc.error("contacts.list", [1, 2], org.member_token)  # type: ignore[arg-type]
    assert error["code"] == -32602 and error["data"]["issues"][0]["path"] == "params"


# Issue 20: well-formed UK numbers from ranges phonenumbers thinks unallocated were refused.
@pytest.mark.parametrize(
    "phone, stored",
    [
        ("07700 900123", "+447700900123"),  # Ofcom's drama range
        ("07911 555123", "+447911555123"),
        ("+44 (0)7700 900123", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("020 7946 0958", "+442079460958"),
        ("016977 3999", "+44169773999"),  # nine digits after the 0
        ("+33 1 42 68 53 00", "+33142685300"),  # foreign numbers: valid ones, as before
    ],
)
def test_possible_uk_numbers_are_stored_as_e164(rpc: Rpc, org: Org, phone: str, stored: str) -> None:
    assert create(rpc, org, phone=phone)["phone"] == stored


@pytest.mark.parametrize(
    "phone, message",
    [
        ("call me", "is not a phone number"),
        ("01234", "is not a possible UK phone number (wrong length or prefix)"),
        ("+33 1 42", "is not a valid phone number (UK numbers may omit +44)"),
    ],
)
def test_refusals_carry_no_library_prefix(rpc: Rpc, org: Org, phone: str, message: str) -> None:
    error = rpc.error("contacts.create", {"phone": phone}, org.member_token)
    assert error["data"]["issues"] == [{"path": "phone", "message": message, "type": "value_error"}]
    assert error["message"] == f"Invalid params: phone: {message}"
