"""Issue 4: contacts.delete is GDPR erasure: nothing personal left anywhere, imports kept out."""

from __future__ import annotations

import hashlib
import random
import string
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.contacts_helpers import audit_rows, create, unique_email, unique_phone
from tests.support import Org, Rpc, ServerThread, query


def connect_crm(url: str, org: Org, provider: str, error: str | None = None) -> str:
    """A CRM connection row as the crm.* procedures would leave it (credentials are opaque here)."""
    rows = query(
        url,
        """
        INSERT INTO crm_connections (organisation_id, provider_id, status, encrypted_credentials,
                                     last_error_message)
        VALUES (%s, %s, 'active', '\\x00', %s) RETURNING id""",
        (org.id, provider, error),
    )
    return str(rows[0][0])


def queue_writeback(url: str, org: Org, connection_id: str, contact_id: str, payload: str) -> None:
    # The queue's columns belong to the writeback module; fill provider_id when it has one.
    columns = {
        r[0]
        for r in query(
            url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'crm_writeback_queue'"
        )
    }
    if "provider_id" in columns:
        query(
            url,
            """
            INSERT INTO crm_writeback_queue (organisation_id, connection_id, provider_id, contact_id,
                                             event_type, payload)
            SELECT %s, %s, provider_id, %s, 'email_sent', jsonb_build_object('subject', %s::text)
              FROM crm_connections WHERE id = %s""",
            (org.id, connection_id, contact_id, payload, connection_id),
        )
    else:
        query(
            url,
            """
            INSERT INTO crm_writeback_queue (organisation_id, connection_id, contact_id, event_type, payload)
            VALUES (%s, %s, %s, 'email_sent', jsonb_build_object('subject', %s::text))""",
            (org.id, connection_id, contact_id, payload),
        )


def marker(prefix: str) -> str:
    return prefix + "".join(random.choices(string.ascii_lowercase, k=10))


def places_holding(url: str, needles: list[str]) -> list[str]:
    """Every (table.column) of the public schema whose text form contains any needle."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        columns = conn.execute("""
            SELECT c.table_name, c.column_name FROM information_schema.columns AS c
              JOIN information_schema.tables AS t USING (table_schema, table_name)
             WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'""").fetchall()
        for table, column in columns:
            statement = pgsql.SQL(
                "SELECT count(*) FROM {} WHERE lower(CAST({} AS text)) LIKE ANY (%s)"
            ).format(pgsql.Identifier(table), pgsql.Identifier(column))
            patterns = [f"%{needle.lower()}%" for needle in needles]
            if conn.execute(statement, (patterns,)).fetchone()[0]:  # type: ignore[index]
                found.append(f"{table}.{column}")
    return found


def test_erasure_leaves_no_trace_of_the_person(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    first, last, reason = marker("Zfirst"), marker("Zlast"), marker("zreason")
    email, new_email = f"{marker('zmail')}@example.co.uk", f"{marker('znewmail')}@example.co.uk"
    phone = f"+447922{random.randrange(10**6):06d}"
    postcode = f"QZ{random.randrange(10, 99)} {random.randrange(10)}ZZ"
    new_postcode = f"QY{random.randrange(10, 99)} {random.randrange(10)}YY"
    external, payload = marker("RPTZ"), marker("zpayload")
    source = connect_crm(database_url, org, "reapit")
    other_crm = connect_crm(database_url, org, "loop")
    connect_crm(database_url, org, "street")  # connected, but never held this person

    contact = create(
        rpc,
        org,
        firstName=first,
        lastName=last,
        email=email,
        phone=phone,
        postcode=postcode,
        importSource="crm_sync",
        crmConnectionId=source,
        externalId=external,
        category="buyer",
        reason=reason,
        crmPayload={"forename": first, "email": email, "notes": [payload]},
    )
    cid = contact["id"]
    # Touch it with every mutation.
    rpc.call(
        "contacts.update",
        {
            "id": cid,
            "firstName": first + "x",
            "email": new_email,
            "postcode": new_postcode,
            "consentStatus": "granted",
            "crmPayload": {"forename": first, "note": payload},
            "category": "seller",
            "reason": reason,
        },
        org.member_token,
    )
    rpc.call(
        "contacts.assignCategory",
        {"id": cid, "category": "active_seller", "reason": reason},
        org.member_token,
    )
    queue_writeback(database_url, org, other_crm, cid, f"Hello {first} at {new_email}")
    # A CRM's last error quoting the person as they are now (erasure clears errors that mention
    # the identifiers the contact holds when it is erased).
    query(
        database_url,
        "UPDATE crm_connections SET last_error_message = %s WHERE id = %s",
        (f"Reapit refused {new_email.upper()}: duplicate", source),
    )
    needles = [
        first,
        last,
        reason,
        email.split("@")[0],
        new_email.split("@")[0],
        phone[3:],
        postcode,
        new_postcode,
        external,
        payload,
    ]
    assert len(places_holding(database_url, needles)) >= 8  # the probe can see them before

    result = rpc.call("contacts.delete", {"id": cid}, org.admin_token)

    assert places_holding(database_url, needles) == []
    assert result["contactId"] == cid
    assert result["removed"] == {
        "contacts": 1,
        "categoryAssignments": 3,
        "writebackEvents": 1,
        "connectionErrorsCleared": 1,
    }
    assert sorted(result["suppressed"]) == ["email", "external_id", "phone"]
    holders = {h["providerId"]: h for h in result["crmsStillHolding"]}
    assert set(holders) == {"reapit", "loop"}
    assert holders["reapit"]["reason"] == "source" and holders["reapit"]["externalId"] == external
    assert holders["loop"]["reason"] == "writeback" and holders["loop"]["externalId"] is None
    assert holders["reapit"]["connectionId"] == source and holders["reapit"]["providerName"] == "Reapit"

    erasure = [row for row in audit_rows(database_url, org) if row[0] == "contacts.delete"]
    admin = query(
        database_url,
        "SELECT user_id FROM api_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.organisation_id = %s AND u.email LIKE 'admin-%%'",
        (org.id,),
    )
    assert erasure == [("contacts.delete", "contact", cid, [], admin[0][0])]
    error = rpc.error("contacts.get", {"id": cid}, org.member_token)
    assert error["data"]["code"] == "NOT_FOUND"


def test_only_admins_erase(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org)
    error = rpc.error("contacts.delete", {"id": contact["id"]}, org.member_token)
    assert error["data"]["code"] == "FORBIDDEN" and error["code"] == -32003
    assert rpc.call("contacts.get", {"id": contact["id"]}, org.member_token)["id"] == contact["id"]
    assert rpc.call("contacts.delete", {"id": contact["id"]}, org.owner_token)["removed"]["contacts"] == 1


def test_erasing_an_unknown_contact_is_not_found(rpc: Rpc, world: Any) -> None:
    org = world.org()
    error = rpc.error("contacts.delete", {"id": str(uuid.uuid4())}, org.admin_token)
    assert error["data"]["code"] == "NOT_FOUND"


@pytest.fixture
def erased(rpc: Rpc, world: Any, database_url: str) -> dict[str, Any]:
    org = world.org()
    connection = connect_crm(database_url, org, "agentos")
    person = {"email": unique_email("erased"), "phone": unique_phone(), "externalId": marker("AOS")}
    contact = create(rpc, org, **person, crmConnectionId=connection)
    rpc.call("contacts.delete", {"id": contact["id"]}, org.admin_token)
    return {"org": org, "connection": connection, **person}


@pytest.mark.parametrize("source", ["crm_sync", "apify", "land_registry"])
@pytest.mark.parametrize("identifier", ["email", "phone", "externalId"])
def test_an_erased_person_is_not_imported_again(
    rpc: Rpc, erased: dict[str, Any], database_url: str, source: str, identifier: str
) -> None:
    org = erased["org"]
    value = erased[identifier].upper() if identifier == "email" else erased[identifier]
    params: dict[str, Any] = {"importSource": source, identifier: value}
    if identifier == "externalId":
        params["crmConnectionId"] = erased["connection"]
    before = query(database_url, "SELECT count(*) FROM contacts WHERE organisation_id = %s", (org.id,))
    error = rpc.error("contacts.create", params, org.member_token)
    assert error["data"]["code"] == "CONFLICT"
    assert error["data"]["suppressed"] == [{"externalId": "external_id"}.get(identifier, identifier)]
    assert "erased" in error["message"] and str(erased[identifier]) not in error["message"]
    after = query(database_url, "SELECT count(*) FROM contacts WHERE organisation_id = %s", (org.id,))
    assert after == before


def test_suppression_is_per_organisation(rpc: Rpc, erased: dict[str, Any], world: Any) -> None:
    contact = create(rpc, world.org(), email=erased["email"], importSource="crm_sync")
    assert contact["email"] == erased["email"]


def test_the_suppression_list_holds_keyed_hashes_only(erased: dict[str, Any], database_url: str) -> None:
    rows = query(
        database_url,
        "SELECT kind, identifier_hash FROM erasure_suppressions WHERE organisation_id = %s ORDER BY kind",
        (erased["org"].id,),
    )
    assert [kind for kind, _ in rows] == ["email", "external_id", "phone"]
    values = [erased["email"], erased["externalId"], erased["phone"]]
    for (_, digest), value in zip(rows, values, strict=True):
        assert len(digest) == 32
        assert digest != hashlib.sha256(value.encode()).digest()  # keyed, not a plain hash


def test_without_a_key_erasure_and_import_checks_fail_closed(world: Any, database_url: str) -> None:
    from procedures import app_router

    server = ServerThread(database_url, app_router)  # no suppression_key
    try:
        rpc = Rpc(server.url)
        org = world.org()
        contact = create(rpc, org, email=...)  # nothing to check against the list needs no key
        error = rpc.error("contacts.delete", {"id": contact["id"]}, org.admin_token)
        assert error["data"]["code"] == "SERVICE_UNAVAILABLE"
        assert "NURTUREHUB_SUPPRESSION_KEY" in error["message"]
        assert rpc.call("contacts.get", {"id": contact["id"]}, org.member_token)["id"] == contact["id"]
        for source in ("apify", "manual"):  # issue 18: every path is checked, so every path fails
            error = rpc.error(
                "contacts.create", {"email": unique_email(), "importSource": source}, org.member_token
            )
            assert error["data"]["code"] == "SERVICE_UNAVAILABLE"
        # Lists still page (their cursors are signed with a key of this process).
        create(rpc, org, email=...)
        page = rpc.call("contacts.list", {"limit": 1}, org.member_token)
        assert rpc.call("contacts.list", {"limit": 1, "cursor": page["nextCursor"]}, org.member_token)
    finally:
        server.stop()
