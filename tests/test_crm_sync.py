"""Issue 17: CRM sync, inbound. Reapit webhooks through the real server's receiver, polls against
a stateful fake Reapit, both applied by `nurturehub sync`'s worker; checked through the
procedures, the webhook routes and the database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.crm_support import connect
from tests.fake_reapit import FakeReapit
from tests.support import Org, Rpc, World, query
from tests.sync_support import SUPPRESSION_KEY, Sync, person, post_hook


@pytest.fixture
def agency(world: World, hooks: Rpc, database_url: str) -> Iterator[tuple[Org, str, str]]:
    """An organisation connected to Reapit under its own customer id."""
    org = world.org("Sync Agency")
    customer = "C" + uuid.uuid4().hex[:10].upper()
    connection = connect(hooks, org, "reapit", {"customerId": customer})
    yield org, connection["id"], customer
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection["id"],))


def contacts_of(rpc: Rpc, org: Org, **filters: Any) -> list[dict[str, Any]]:
    page = rpc.call("contacts.list", {"limit": 100, **filters}, org.member_token)
    items: list[dict[str, Any]] = page["items"]
    return items


def inbox(database_url: str, customer: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT status, outcome, payload IS NULL FROM crm_webhook_inbox"
        " WHERE tenant_ref = %s ORDER BY received_at",
        (customer,),
    )


# Webhook receiver verdicts -----------------------------------------------------------------------


def test_a_signed_reapit_webhook_is_stored_at_once_then_applied_once_however_often_it_comes(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, customer = agency
    record = reapit.put(
        **person(
            marketingConsent="grant", mobilePhone="07700 900123", relationships=[{"associatedType": "vendor"}]
        )
    )
    body = reapit.event("contacts.created", record, customer=customer)
    first = post_hook(hooks, body, reapit.signed(body))
    again = post_hook(hooks, body, reapit.signed(body))
    assert (first.status_code, first.json()["status"]) == (202, "accepted")
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")
    assert [row[0] for row in inbox(database_url, customer)] == ["received"]
    sync.drain(connection_id)
    [contact] = contacts_of(hooks, org)
    assert contact["externalId"] == record["id"] and contact["crmConnectionId"] == connection_id
    assert contact["importSource"] == "crm_sync" and contact["consentStatus"] == "granted"
    assert (contact["phone"], contact["postcode"], contact["category"]) == (
        "+447700900123",
        "SW1A 1AA",
        "seller",
    )
    # Processed: the person's payload does not stay in the inbox.
    assert inbox(database_url, customer) == [("done", "created", True)]
    consent = query(
        database_url,
        "SELECT source, channel, status FROM contact_consent_events WHERE contact_id = %s",
        (contact["id"],),
    )
    assert ("crm_sync", "overall", "granted") in consent


def test_one_change_sent_once_per_role_under_one_event_id_is_kept_once_per_topic(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, database_url: str
) -> None:
    _, connection_id, customer = agency
    record = reapit.put(**person())
    event_id = str(uuid.uuid4())
    for topic in ("contacts.modified", "applicants.modified", "contacts.modified"):
        body = reapit.event(topic, record, customer=customer, event_id=event_id)
        assert post_hook(hooks, body, reapit.signed(body)).status_code == 202
    assert len(inbox(database_url, customer)) == 2


@pytest.mark.parametrize("forge", ["bad_signature", "other_key", "no_header", "stale", "unknown_key"])
def test_a_forged_or_stale_webhook_is_refused_with_401_and_nothing_is_stored(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, database_url: str, forge: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, connection_id, customer = agency
    body = reapit.event("contacts.created", reapit.put(**person()), customer=customer)
    headers = reapit.signed(body)
    if forge == "bad_signature":
        headers = reapit.signed(body.replace(b"Ada", b"Eve"))
    elif forge == "other_key":
        headers = reapit.signed(body, key=Ed25519PrivateKey.generate())
    elif forge == "no_header":
        headers = {"Content-Type": "application/json"}
    elif forge == "stale":
        headers = reapit.signed(body, stamp=int(time.time()) - 7200)
    elif forge == "unknown_key":
        headers["X-Signature"] = headers["X-Signature"].replace("test-key-1", "test-key-9")
    answer = post_hook(hooks, body, headers)
    assert answer.status_code == 401 and answer.json()["error"]
    assert "Ada" not in answer.text and customer not in answer.text
    assert inbox(database_url, customer) == []


def test_a_signing_key_that_cannot_be_fetched_answers_503_so_reapit_retries(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, database_url: str
) -> None:
    _, connection_id, customer = agency
    reapit.signing_fails = True
    body = reapit.event("contacts.created", reapit.put(**person()), customer=customer)
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 503
    assert inbox(database_url, customer) == []
    reapit.signing_fails = False
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 202


def test_receiver_edges_oversize_malformed_unrouted_ping_and_providers_without_webhooks(
    hooks: Rpc, reapit: FakeReapit, database_url: str
) -> None:
    big = b'{"x": "' + b"a" * 300_000 + b'"}'
    assert post_hook(hooks, big, reapit.signed(big)).status_code == 413
    junk = b"not json"
    assert post_hook(hooks, junk, reapit.signed(junk)).status_code == 400
    stranger = "C" + uuid.uuid4().hex[:10].upper()
    body = reapit.event("contacts.created", reapit.put(**person()), customer=stranger)
    answer = post_hook(hooks, body, reapit.signed(body))
    assert (answer.status_code, answer.json()["status"]) == (202, "unrouted")
    assert [row[0] for row in inbox(database_url, stranger)] == ["unrouted"]
    ping = reapit.event("contacts.created", None, customer="webhook-test")
    assert post_hook(hooks, ping, reapit.signed(ping)).status_code == 200
    for provider in ("agentos", "loop"):
        refused = post_hook(hooks, b"{}", {"Content-Type": "application/json"}, provider)
        assert refused.status_code == 410 and "documents no webhooks" in refused.json()["error"]


def test_an_unrouted_event_is_applied_once_its_agency_connects(
    hooks: Rpc, world: World, reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    customer = "C" + uuid.uuid4().hex[:10].upper()
    body = reapit.event("contacts.created", reapit.put(**person()), customer=customer)
    assert post_hook(hooks, body, reapit.signed(body)).json()["status"] == "unrouted"
    org = world.org("Late Agency")
    connection = connect(hooks, org, "reapit", {"customerId": customer})
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection["id"],))
    sync.drain(connection["id"])
    assert len(contacts_of(hooks, org)) == 1


# Polling -------------------------------------------------------------------------------------------


def test_backfill_then_incremental_brings_every_contact_once_and_keeps_them_current(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, _ = agency
    made = []
    for index in range(230):
        if index % 40 == 0:
            reapit.tick()
        made.append(reapit.put(**person(forename=f"P{index}")))
    # 150 in one second: more than a page, so the same second is swept by page number.
    reapit.tick()
    for index in range(150):
        made.append(reapit.put(**person(forename=f"Q{index}")))
    sync.drain(connection_id)
    held = query(
        database_url, "SELECT external_id FROM contacts WHERE crm_connection_id = %s", (connection_id,)
    )
    assert sorted(row[0] for row in held) == sorted(r["id"] for r in made)
    cursor = query(database_url, "SELECT sync_cursor FROM crm_connections WHERE id = %s", (connection_id,))[
        0
    ][0]
    assert cursor["streams"]["contacts"]["phase"] == "incremental"
    # Edits come in on the next poll; nothing is duplicated.
    reapit.tick()
    edited = reapit.put(made[3]["id"], surname="Byron")
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    rows = query(
        database_url,
        "SELECT last_name FROM contacts WHERE crm_connection_id = %s AND external_id = %s",
        (connection_id, edited["id"]),
    )
    assert rows == [("Byron",)]
    assert query(
        database_url, "SELECT count(*) FROM contacts WHERE crm_connection_id = %s", (connection_id,)
    ) == [(380,)]
    runs = query(
        database_url,
        "SELECT status, created, updated FROM crm_sync_runs"
        " WHERE connection_id = %s AND stream = 'contacts' ORDER BY started_at",
        (connection_id,),
    )
    assert runs[0] == ("ok", 380, 0) and runs[-1][0] == "ok" and runs[-1][2] == 1
    assert len(contacts_of(hooks, org)) == 100


def test_a_field_our_validation_refuses_drops_alone_and_an_archived_record_archives(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, _ = agency
    odd = reapit.put(**person(mobilePhone="12", primaryAddress={"postcode": "NOT A CODE"}))
    gone = reapit.put(**person(active=False, archivedOn="2026-01-01"))
    sync.drain(connection_id)
    [run] = query(
        database_url,
        "SELECT created, field_errors, archived FROM crm_sync_runs"
        " WHERE connection_id = %s AND stream = 'contacts'",
        (connection_id,),
    )
    assert run == (2, 2, 1)
    listed = {c["externalId"]: c for c in contacts_of(hooks, org)}
    assert gone["id"] not in listed  # archived contacts are left out unless asked for
    assert listed[odd["id"]]["phone"] is None and listed[odd["id"]]["postcode"] is None
    archived = contacts_of(hooks, org, archived=True)
    assert [c["externalId"] for c in archived] == [gone["id"]] and archived[0]["archivedAt"]


def test_a_contact_deleted_in_reapit_is_archived_with_its_payload_dropped_never_erased(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    """Reapit sends `new: null` when a contact is archived or deleted; a read then says which.
    A deleted one (404) archives our contact and drops its CRM payload; it is not erased (only
    contacts.delete does that) and nothing is suppressed: the person may come back."""
    org, connection_id, customer = agency
    record = reapit.put(**person(surname="Deleted"))
    kept = reapit.put(**person(surname="Kept"))
    sync.drain(connection_id)
    [contact] = [c for c in contacts_of(hooks, org) if c["externalId"] == record["id"]]
    reapit.tick()
    edited = reapit.put(record["id"], surname="Edited")  # its webhook comes late, below
    late = reapit.event("contacts.modified", edited, customer=customer)
    reapit.tick()
    del reapit.contacts[record["id"]]
    body = reapit.event("contacts.modified", None, customer=customer, old=edited)
    post_hook(hooks, body, reapit.signed(body))
    sync.drain(connection_id)
    assert inbox(database_url, customer)[-1] == ("done", "gone", True)
    # The edit's webhook, delivered after the delete: older than the delete, it brings nothing back.
    post_hook(hooks, late, reapit.signed(late))
    sync.drain(connection_id)
    assert inbox(database_url, customer)[-1][:2] == ("done", "stale")
    assert [c["externalId"] for c in contacts_of(hooks, org)] == [kept["id"]]
    got = hooks.call("contacts.get", {"id": contact["id"]}, org.member_token)
    assert (got["lastName"], got["archivedAt"] is not None) == ("Deleted", True)
    [(payload,)] = query(database_url, "SELECT crm_payload FROM contacts WHERE id = %s", (contact["id"],))
    assert payload is None
    assert query(database_url, "SELECT count(*) FROM erasure_suppressions WHERE organisation_id = %s",
                 (org.id,)) == [(0,)]
    # Deleted before we ever held it: the delete changes nothing here, yet the record's webhook
    # from before it, delivered late, does not bring the person in.
    never = reapit.put(**person(surname="NeverHeld"))
    created = reapit.event("contacts.created", never, customer=customer)
    reapit.tick()
    del reapit.contacts[never["id"]]
    body = reapit.event("contacts.modified", None, customer=customer, old=never)
    post_hook(hooks, body, reapit.signed(body))
    sync.drain(connection_id)
    assert inbox(database_url, customer)[-1] == ("skipped", "the CRM holds no such contact", True)
    post_hook(hooks, created, reapit.signed(created))
    sync.drain(connection_id)
    assert inbox(database_url, customer)[-1] == ("done", "stale", True)
    assert [c for c in contacts_of(hooks, org, archived=None) if c["externalId"] == never["id"]] == []


def test_a_429_waits_as_retry_after_says_and_a_5xx_leaves_the_cursor_where_rows_were_committed(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    _, connection_id, _ = agency
    for _ in range(120):
        reapit.put(**person())
    reapit.read_script = [(429, "1"), (200, None)]
    reapit.read_script = [(429, "1")]
    sync.drain(connection_id)
    assert query(
        database_url, "SELECT count(*) FROM contacts WHERE crm_connection_id = %s", (connection_id,)
    ) == [(120,)]
    assert query(
        database_url,
        "SELECT rate_limited FROM crm_sync_runs WHERE connection_id = %s AND stream = 'contacts'",
        (connection_id,),
    ) == [(1,)]


# The apply path's rules -----------------------------------------------------------------------------


def test_an_older_version_never_overwrites_a_newer_one_but_an_opt_out_applies_at_once(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, customer = agency
    old = reapit.put(**person(surname="Old", marketingConsent="grant"))
    reapit.tick()
    new = reapit.put(old["id"], surname="New")
    for record in (new, old):  # delivered out of order
        body = reapit.event("contacts.modified", record, customer=customer)
        post_hook(hooks, body, reapit.signed(body))
    sync.drain(connection_id)
    [contact] = contacts_of(hooks, org)
    assert contact["lastName"] == "New" and contact["consentStatus"] == "granted"
    optout = reapit.event("contacts.optedout", old, customer=customer)  # an old record, but a deny
    post_hook(hooks, optout, reapit.signed(optout))
    sync.drain(connection_id)
    [contact] = contacts_of(hooks, org)
    assert contact["consentStatus"] == "denied" and contact["lastName"] == "New"
    # A stale grant never beats the newer deny.
    post_hook(hooks, body := reapit.event("contacts.modified", new, customer=customer), reapit.signed(body))
    sync.drain(connection_id)
    assert contacts_of(hooks, org)[0]["consentStatus"] == "denied"


def test_an_erased_person_never_comes_back_by_webhook_or_poll_and_their_payload_is_dropped(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, customer = agency
    record = reapit.put(**person())
    sync.drain(connection_id)
    [contact] = contacts_of(hooks, org)
    hooks.call("contacts.delete", {"id": contact["id"]}, org.admin_token)
    reapit.tick()
    edited = reapit.put(record["id"], surname="Again")
    body = reapit.event("contacts.modified", edited, customer=customer)
    post_hook(hooks, body, reapit.signed(body))
    query(
        database_url,
        "UPDATE crm_connections SET next_sync_at = now(), sync_cursor = NULL WHERE id = %s",
        (connection_id,),
    )
    sync.drain(connection_id)
    assert contacts_of(hooks, org) == []
    assert inbox(database_url, customer)[-1] == ("done", "suppressed", True)


def test_an_agents_own_category_stands_until_the_crm_derived_category_changes(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, _ = agency
    record = reapit.put(**person(relationships=[{"associatedType": "landlord"}]))
    sync.drain(connection_id)
    [contact] = contacts_of(hooks, org)
    assert contact["category"] == "landlord"
    hooks.call(
        "contacts.assignCategory", {"id": contact["id"], "category": "managed_landlord"}, org.member_token
    )
    reapit.tick()
    reapit.put(record["id"], surname="Same roles")
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    assert contacts_of(hooks, org)[0]["category"] == "managed_landlord"
    reapit.tick()
    reapit.put(record["id"], relationships=[{"associatedType": "vendor"}])
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    assert contacts_of(hooks, org)[0]["category"] == "seller"


def test_a_crm_person_matches_an_existing_contact_by_email_instead_of_duplicating(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync
) -> None:
    org, connection_id, _ = agency
    mine = hooks.call(
        "contacts.create", {"firstName": "Ada", "email": "ada.match@example.co.uk"}, org.member_token
    )
    reapit.put(**person(email="Ada.Match@Example.co.uk", surname="Lovelace"))
    sync.drain(connection_id)
    [contact] = contacts_of(hooks, org)
    assert contact["id"] == mine["id"] and contact["crmConnectionId"] == connection_id
    assert contact["lastName"] == "Lovelace" and contact["importSource"] == "manual"


def test_a_page_is_applied_as_a_set_yet_each_record_keeps_the_apply_rules(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    """Issue 17 (apply 2,000 records a second): one page, one lookup, one insert, one update;
    an erased person, two records sharing an email and an edit taking a held email in it."""
    org, connection_id, _ = agency
    erased, kept = reapit.put(**person()), reapit.put(**person())
    sync.drain(connection_id)
    listed = {c["externalId"]: c for c in contacts_of(hooks, org)}
    hooks.call("contacts.delete", {"id": listed[erased["id"]]["id"]}, org.admin_token)
    shared = f"shared.{uuid.uuid4().hex[:8]}@example.co.uk"
    reapit.tick()
    reapit.put(erased["id"], surname="Back")
    first, second = reapit.put(**person(email=shared)), reapit.put(**person(email=shared))
    reapit.put(kept["id"], email=shared, surname="Edited")
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    run = query(
        database_url,
        "SELECT created, updated, suppressed, field_errors FROM crm_sync_runs"
        " WHERE connection_id = %s AND stream = 'contacts' ORDER BY started_at DESC LIMIT 1",
        (connection_id,),
    )
    assert run == [(2, 1, 1, 2)]
    listed = {c["externalId"]: c for c in contacts_of(hooks, org)}
    assert set(listed) == {kept["id"], first["id"], second["id"]}
    assert [c["email"] for c in listed.values()].count(shared) == 1
    assert listed[kept["id"]]["lastName"] == "Edited"  # the person came in, the email did not


def test_reapit_role_streams_give_categories_even_when_the_contact_itself_does_not_change(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    """Issue 17, point 3: applicants, landlords, vendors and tenancies are streams of their own
    (a role that changes need not bump its contact's `modified`); their people are read again
    by id and their category derived from their roles, an agent's choice standing until then."""
    org, connection_id, _ = agency
    ada, bob = reapit.put(**person()), reapit.put(**person())
    sync.drain(connection_id)
    assert {c["category"] for c in contacts_of(hooks, org)} == {None}
    reapit.tick()
    reapit.put_role("landlords", contacts=[ada["id"]], active=True)
    tenancy = reapit.put_role("tenancies", contacts=[bob["id"]], status="current")
    assert reapit.contacts[ada["id"]]["modified"] == ada["modified"]  # the contact did not move
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    listed = {c["externalId"]: c for c in contacts_of(hooks, org)}
    assert (listed[ada["id"]]["category"], listed[bob["id"]]["category"]) == ("landlord", "active_tenant")
    hooks.call(
        "contacts.assignCategory", {"id": listed[bob["id"]]["id"], "category": "buyer"}, org.member_token
    )
    reapit.tick()
    reapit.put_role("tenancies", tenancy["id"], contacts=[bob["id"]], status="current", note="same role")
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    assert {c["externalId"]: c for c in contacts_of(hooks, org)}[bob["id"]]["category"] == "buyer"
    reapit.tick()
    reapit.put_role("tenancies", tenancy["id"], contacts=[bob["id"]], fromArchive=True)
    reapit.put_role("vendors", contacts=[bob["id"]])
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    assert {c["externalId"]: c for c in contacts_of(hooks, org)}[bob["id"]]["category"] == "seller"
    runs = query(
        database_url,
        "SELECT DISTINCT stream FROM crm_sync_runs WHERE connection_id = %s AND status = 'ok'",
        (connection_id,),
    )
    streams = ["applicants", "contacts", "landlords", "offers", "properties", "tenancies", "vendors"]
    assert sorted(r[0] for r in runs) == streams


def test_a_role_webhook_reads_its_contacts_again_and_their_category_follows_at_once(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    """Issue 17, point 3: a tenancies.modified event (no poll due) re-derives the category of
    the contacts its record relates to, before and after the change."""
    org, connection_id, customer = agency
    bob = reapit.put(**person())
    sync.drain(connection_id)  # the next poll is an hour away now
    reapit.tick()
    tenancy = reapit.put_role("tenancies", contacts=[bob["id"]], status="current")
    body = reapit.event("tenancies.modified", tenancy, customer=customer)
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 202
    sync.drain(connection_id)
    assert contacts_of(hooks, org)[0]["category"] == "active_tenant"
    assert inbox(database_url, customer)[-1] == ("done", "roles", True)
    ended = reapit.put_role("tenancies", tenancy["id"], contacts=[bob["id"]], fromArchive=True)
    body = reapit.event("tenancies.modified", ended, customer=customer, old=tenancy)
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 202
    sync.drain(connection_id)
    [(crm_category,)] = query(
        database_url, "SELECT crm_category FROM contacts WHERE crm_connection_id = %s", (connection_id,)
    )
    assert crm_category is None  # the CRM's roles give none now (the assignment stays, as history)


def test_a_page_that_is_not_json_fails_the_run_without_moving_the_cursor_and_the_next_run_reads_it(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    """Issue 17, point 4: a CRM that sends malformed JSON; the sync survives it."""
    org, connection_id, _ = agency
    for _ in range(3):
        reapit.put(**person())
    reapit.read_script = [(200, "malformed")]
    sync.drain(connection_id)
    [failed] = query(
        database_url,
        "SELECT status, error FROM crm_sync_runs WHERE connection_id = %s AND stream = 'contacts'",
        (connection_id,),
    )
    assert failed[0] == "failed" and "not a list" in failed[1] and '"_embedded"' not in failed[1]
    assert contacts_of(hooks, org) == []
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    sync.drain(connection_id)
    assert len(contacts_of(hooks, org)) == 3


# Procedures ------------------------------------------------------------------------------------------


def test_sync_status_runs_and_sync_now_with_a_reset_that_duplicates_nothing(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync, database_url: str
) -> None:
    org, connection_id, _ = agency
    before = hooks.call("crm.getSyncStatus", {"connectionId": connection_id}, org.member_token)
    assert before["syncSupported"] is True and before["streams"][0]["phase"] is None
    for _ in range(30):
        reapit.put(**person())
    sync.drain(connection_id)
    status = hooks.call("crm.getSyncStatus", {"connectionId": connection_id}, org.member_token)
    by_name = {s["stream"]: s for s in status["streams"]}
    assert sorted(by_name) == [
        "applicants", "contacts", "landlords", "offers", "properties", "tenancies", "vendors",
    ]  # fmt: skip
    stream = by_name["contacts"]
    assert stream["phase"] == "incremental" and stream["watermark"] and stream["lagSeconds"] >= 0
    assert (stream["lastRun"]["status"], stream["lastRun"]["created"]) == ("ok", 30)
    assert status["inbox"] == {"waiting": 0, "dead": 0}
    refused = hooks.error("crm.syncNow", {"connectionId": connection_id}, org.member_token)
    assert refused["data"]["code"] == "FORBIDDEN"
    reset = hooks.call("crm.syncNow", {"connectionId": connection_id, "reset": True}, org.admin_token)
    assert reset["nextSyncAt"] is not None
    sync.drain(connection_id)
    runs = hooks.call("crm.listSyncRuns", {"connectionId": connection_id}, org.member_token)
    runs = [r for r in runs if r["stream"] == "contacts"]
    assert [(r["trigger"], r["created"], r["unchanged"]) for r in runs[:2]] == [
        ("reset", 0, 30),
        ("schedule", 30, 0),
    ]
    assert query(
        database_url, "SELECT count(*) FROM contacts WHERE crm_connection_id = %s", (connection_id,)
    ) == [(30,)]
    audit = query(
        database_url,
        "SELECT action FROM audit_log WHERE organisation_id = %s AND action = 'crm.syncNow'",
        (org.id,),
    )
    assert audit == [("crm.syncNow",)]


def test_webhook_events_are_listed_without_payloads_and_a_replay_reads_the_crm_again(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, sync: Sync
) -> None:
    org, connection_id, customer = agency
    record = reapit.put(**person(surname="First"))
    body = reapit.event("contacts.created", record, customer=customer)
    post_hook(hooks, body, reapit.signed(body))
    sync.drain(connection_id)
    [event] = hooks.call("crm.listWebhookEvents", {"connectionId": connection_id}, org.admin_token)
    assert (event["status"], event["outcome"], event["entityId"]) == ("done", "created", record["id"])
    assert "payload" not in event and "First" not in str(event)
    reapit.tick()
    reapit.put(record["id"], surname="Since")
    replayed = hooks.call("crm.replayWebhookEvent", {"id": event["id"]}, org.admin_token)
    assert replayed["status"] == "received"
    sync.drain(connection_id)
    assert contacts_of(hooks, org)[0]["lastName"] == "Since"
    again = hooks.error("crm.replayWebhookEvent", {"id": str(uuid.uuid4())}, org.admin_token)
    assert again["data"]["code"] == "NOT_FOUND"


# The command ---------------------------------------------------------------------------------------


def test_nurturehub_sync_brings_contacts_in_and_stops_cleanly_on_sigterm(
    hooks: Rpc, agency: tuple[Org, str, str], reapit: FakeReapit, database_url: str
) -> None:
    import base64
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from tests.crm_support import KEY_SPEC
    from tests.support import wait_until

    org, connection_id, customer = agency
    for _ in range(5):
        reapit.put(**person())
    body = reapit.event("contacts.optedout", reapit.put(**person(marketingConsent="deny")), customer=customer)
    assert post_hook(hooks, body, reapit.signed(body)).status_code == 202
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NURTUREHUB_ENCRYPTION_KEYS": KEY_SPEC,
        "NURTUREHUB_SUPPRESSION_KEY": base64.b64encode(SUPPRESSION_KEY).decode(),
        "NURTUREHUB_REAPIT_API_URL": reapit.url,
        "NURTUREHUB_REAPIT_TOKEN_URL": f"{reapit.url}/token",
        "NURTUREHUB_REAPIT_CLIENT_ID": "platform-client",
        "NURTUREHUB_REAPIT_CLIENT_SECRET": "platform-secret",
        "NURTUREHUB_SYNC_POLL_INTERVAL": "0.1",
    }
    env.pop("NURTUREHUB_ENCRYPTION_KEYS_FILE", None)
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "sync", "--connection", connection_id],
        env=env,
        stdout=out,
        stderr=err,
        text=True,
    )
    try:
        assert wait_until(lambda: len(contacts_of(hooks, org)) == 6, timeout=20)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    out.seek(0)
    err.seek(0)
    output, errors = out.read(), err.read()
    assert code == 0, errors
    assert "NurtureHub sync" in output and "stopped after applying" in output
    assert "Lovelace" not in output + errors and "@example.co.uk" not in output + errors
    assert sum(c["consentStatus"] == "denied" for c in contacts_of(hooks, org)) == 1


# Alto ------------------------------------------------------------------------------------------------


def test_alto_webhooks_are_checked_by_their_shared_secret_and_kept_once_by_event_id(
    database_url: str, world: World, reapit: FakeReapit
) -> None:
    from integrations.webhooks import Receiver
    from procedures import app_router
    from tests.crm_support import KEYRING
    from tests.support import ServerThread

    def routes(secret: str) -> Any:
        config = reapit.config(alto_webhook_secret=secret)
        return lambda db, settings: Receiver(db, settings.encryption_keys, config).routes()

    thread = ServerThread(
        database_url,
        app_router,
        encryption_keys=KEYRING,
        suppression_key=SUPPRESSION_KEY,
        extra_routes=routes("alto-shared-secret"),
    )
    unset = ServerThread(database_url, app_router, encryption_keys=KEYRING, extra_routes=routes(""))
    rpc = Rpc(thread.url)
    try:
        org = world.org("Alto Agency")
        agency_ref = str(uuid.uuid4())
        connect(rpc, org, "alto", {"agencyRef": agency_ref})
        event = {
            "specversion": "1.0",
            "id": f"{uuid.uuid4()}|integration",
            "type": "Contact.Modified",
            "source": "alto",
            "time": "2026-12-05T10:00:00Z",
            "data": {"agencyRef": agency_ref, "contactId": 123},
        }
        body = orjson.dumps(event)
        good = {"x-signature": "alto-shared-secret", "Content-Type": "application/json"}
        assert post_hook(rpc, body, good, "alto").json()["status"] == "accepted"
        assert post_hook(rpc, body, good, "alto").json()["status"] == "duplicate"
        forged = post_hook(rpc, body, {**good, "x-signature": "guess"}, "alto")
        assert forged.status_code == 401 and "alto-shared-secret" not in forged.text
        assert post_hook(Rpc(unset.url), body, good, "alto").status_code == 503
        stored = query(
            database_url,
            "SELECT topic, entity_id, status FROM crm_webhook_inbox WHERE tenant_ref = %s",
            (agency_ref,),
        )
        assert stored == [("Contact.Modified", "123", "received")]
        assert post_hook(rpc, b"{}", good, "street").status_code == 410
    finally:
        rpc.http.close()
        thread.stop()
        unset.stop()
        query(
            database_url,
            "UPDATE crm_webhook_inbox SET status = 'skipped', payload = NULL"
            " WHERE provider_id = 'alto' AND status = 'received'",
        )
