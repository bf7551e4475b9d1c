"""Issue 17, point 1: Street's webhooks, checked by the secret held on each connection (Svix's
scheme, or a custom header), routed by the connection id in the path and applied by reading the
person again; and Alto's Contact.Created/Modified events applied by reading the contact by id.
Real PostgreSQL, the real server over HTTP, the fakes on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import orjson
import pytest

from integrations.config import CrmConfig
from integrations.sync import SyncWorker
from tests.crm_support import KEYRING, connect
from tests.fake_alto import FakeAlto
from tests.fake_reapit import FakeReapit
from tests.fake_street import TOKEN, WEBHOOK_SECRET, FakeStreet
from tests.support import LoopThread, Org, Rpc, World, query
from tests.sync_support import SUPPRESSION_KEY, Sync, receiving

ALTO_SECRET = "alto-shared-secret-for-tests"


@pytest.fixture
def config(street: FakeStreet, alto: FakeAlto) -> CrmConfig:
    return alto.config(street_api_url=street.url, alto_webhook_secret=ALTO_SECRET, crm_timeout=2.0)


@pytest.fixture
def server(database_url: str, config: CrmConfig) -> Iterator[Rpc]:
    """The app with the receivers, reading the fake Street and Alto."""
    yield from receiving(database_url, config)


@pytest.fixture
def worker(loop: LoopThread, database_url: str, reapit: FakeReapit, config: CrmConfig) -> Iterator[Sync]:
    sync = Sync(loop, database_url, reapit)
    sync.worker = SyncWorker(sync.db, KEYRING, config, SUPPRESSION_KEY)
    yield sync
    sync.close()


def street_agency(world: World, server: Rpc, database_url: str, **settings: Any) -> tuple[Org, str]:
    org = world.org(f"Street Hooks {uuid.uuid4().hex[:6]}")
    credentials = {"apiToken": TOKEN, "webhookSecret": WEBHOOK_SECRET}
    connection_id = str(connect(server, org, "street", credentials, **settings)["id"])
    # No polling: what arrives here arrives by webhook.
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection_id,))
    return org, connection_id


def inbox(database_url: str, connection_id: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT topic, entity_id, status, outcome, last_error FROM crm_webhook_inbox"
        " WHERE connection_id = %s ORDER BY received_at",
        (connection_id,),
    )


def held(database_url: str, connection_id: str) -> dict[str, tuple[Any, ...]]:
    rows = query(
        database_url,
        "SELECT external_id, last_name, consent_status FROM contacts WHERE crm_connection_id = %s",
        (connection_id,),
    )
    return {r[0]: r[1:] for r in rows}


def grace(**attributes: Any) -> dict[str, Any]:
    return {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email_addresses": [{"value": f"grace.{uuid.uuid4().hex[:8]}@example.co.uk", "primary": True}],
        "marketing_consent": True,
        **attributes,
    }


def test_street_webhook_verdicts_and_a_signed_one_applied_by_reading_the_person(
    server: Rpc, world: World, street: FakeStreet, worker: Sync, database_url: str
) -> None:
    _, connection_id = street_agency(world, server, database_url)
    url = f"{server.base_url}/webhooks/crm/street/{connection_id}"
    person = street.put(**grace())["id"]

    other = "whsec_Zm9yZ2VkLXNlY3JldC0wMTIzNDU2Nzg5"
    forged = street.send_webhook(url, person, "person.updated", secret=other)
    assert forged.status_code == 401
    unsigned = httpx.post(url, content=b'{"type": "person.updated", "data": {"id": "x"}}', timeout=5)
    assert unsigned.status_code == 401
    stale = street.send_webhook(url, person, "person.updated", stamp=int(time.time()) - 3600)
    assert stale.status_code == 401 and "replay" in stale.text
    assert inbox(database_url, connection_id) == []  # nothing refused is stored

    good = street.send_webhook(url, person, "person.created", message_id="msg_one")
    assert good.status_code == 202 and good.json()["status"] == "accepted"
    again = street.send_webhook(url, person, "person.created", message_id="msg_one")
    assert again.json()["status"] == "duplicate"
    for answer in (forged, unsigned, stale, good):
        assert WEBHOOK_SECRET not in answer.text
        assert WEBHOOK_SECRET.removeprefix("whsec_") not in answer.text

    worker.drain(connection_id)
    assert held(database_url, connection_id) == {person: ("Hopper", "granted")}
    assert inbox(database_url, connection_id) == [("person.created", person, "done", "created", None)]

    # Not a connection id, or a connection id nobody holds: 404, and nothing stored (there is no
    # secret to check such a delivery by).
    assert street.send_webhook(f"{server.base_url}/webhooks/crm/street/nope", person).status_code == 404
    stranger = str(uuid.uuid4())
    refused = street.send_webhook(f"{server.base_url}/webhooks/crm/street/{stranger}", person)
    assert refused.status_code == 404
    assert query(
        database_url, "SELECT count(*) FROM crm_webhook_inbox WHERE tenant_ref = %s", (stranger,)
    ) == [(0,)]
    # The old path still says where Street's deliveries go.
    assert httpx.post(f"{server.base_url}/webhooks/crm/street", content=b"{}", timeout=5).status_code == 410


def test_a_street_connection_may_take_its_secret_in_a_custom_header_and_never_shows_it(
    server: Rpc, world: World, street: FakeStreet, worker: Sync, database_url: str
) -> None:
    org, connection_id = street_agency(
        world, server, database_url, webhookScheme="header", webhookHeader="X-Agency-Hook"
    )
    url = f"{server.base_url}/webhooks/crm/street/{connection_id}"
    person = street.put(**grace())["id"]
    wrong = street.send_webhook(url, person, "person.updated", scheme="header", header="X-Agency-Hook",
                                secret="not-the-secret-at-all")  # fmt: skip
    assert wrong.status_code == 401 and WEBHOOK_SECRET not in wrong.text
    right = street.send_webhook(url, person, "person.updated", scheme="header", header="X-Agency-Hook")
    assert right.status_code == 202
    worker.drain(connection_id)
    assert held(database_url, connection_id)[person][1] == "granted"
    # The secret is a credential: sealed, never in settings, the connection's listing or the inbox.
    listed = orjson.dumps(server.call("crm.listConnections", {}, org.admin_token)).decode()
    stored = query(
        database_url, "SELECT settings::text, coalesce(tenant_ref, '') FROM crm_connections WHERE id = %s",
        (connection_id,),
    )  # fmt: skip
    for text in (listed, *stored[0], str(inbox(database_url, connection_id))):
        assert WEBHOOK_SECRET not in text


def test_a_street_opt_out_webhook_applies_within_ten_seconds(
    server: Rpc, world: World, street: FakeStreet, worker: Sync, loop: LoopThread, database_url: str
) -> None:
    _, connection_id = street_agency(world, server, database_url)
    url = f"{server.base_url}/webhooks/crm/street/{connection_id}"
    person = street.put(**grace())["id"]
    assert street.send_webhook(url, person, "person.created").status_code == 202
    worker.drain(connection_id)
    assert held(database_url, connection_id)[person][1] == "granted"

    worker.worker.only = [uuid.UUID(connection_id)]
    stop = asyncio.Event()
    running = asyncio.run_coroutine_threadsafe(worker.worker.run(stop), loop.loop)
    try:
        street.tick(5)
        street.put(person, marketing_consent=False)
        started = time.monotonic()
        assert street.send_webhook(url, person).status_code == 202
        while held(database_url, connection_id)[person][1] != "denied":
            assert time.monotonic() - started < 10, "the opt-out was not applied within 10 s"
            time.sleep(0.2)
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        running.result(30)
    topics = [row[0] for row in inbox(database_url, connection_id)]
    assert topics == ["person.created", "person.marketing-preferences.updated"]


def alto_agency(world: World, server: Rpc, alto: FakeAlto, database_url: str) -> tuple[str, str]:
    """An Alto connection taking webhooks only, and its agency: one of its own, since a selector
    other tests' connections share routes to none."""
    org = world.org(f"Alto Hooks {uuid.uuid4().hex[:6]}")
    alto.agency_ref = agency = str(uuid.uuid4())
    connection_id = str(connect(server, org, "alto", {"agencyRef": agency})["id"])
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection_id,))
    return agency, connection_id


def alto_event(agency: str, contact: str, kind: str) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "type": kind, "source": "alto",
        "time": "2026-12-05T10:00:00Z", "data": {"agencyRef": agency, "contactId": int(contact)},
    })  # fmt: skip


def test_an_alto_modified_event_applies_the_contact_read_by_id(
    server: Rpc, world: World, alto: FakeAlto, worker: Sync, database_url: str
) -> None:
    agency, connection_id = alto_agency(world, server, alto, database_url)
    people = [
        {"id": 1, "forename": "Ada", "surname": "Byron", "emails": [f"ada.{uuid.uuid4().hex[:6]}@e.co.uk"]},
        {"id": 2, "forename": "Wil", "surname": "King", "emails": [f"wil.{uuid.uuid4().hex[:6]}@e.co.uk"]},
    ]
    contact = str(alto.put(people=people)["id"])
    event = partial(alto_event, agency, contact)
    headers = {"x-signature": ALTO_SECRET, "Content-Type": "application/json"}
    hook = f"{server.base_url}/webhooks/crm/alto"
    try:
        assert httpx.post(hook, content=event("Contact.Created"), headers=headers).status_code == 202
        worker.drain(connection_id)
        assert {k: v[0] for k, v in held(database_url, connection_id).items()} == {
            f"{contact}:1": "Byron", f"{contact}:2": "King",
        }  # fmt: skip
        alto.tick(60)
        people[0]["surname"] = "Lovelace"
        alto.put(contact, people=people)
        assert httpx.post(hook, content=event("Contact.Modified"), headers=headers).status_code == 202
        worker.drain(connection_id)
        assert held(database_url, connection_id)[f"{contact}:1"][0] == "Lovelace"
        statuses = [(row[0], row[2]) for row in inbox(database_url, connection_id)]
        assert statuses == [("Contact.Created", "done"), ("Contact.Modified", "done")]
    finally:
        query(database_url, "DELETE FROM crm_webhook_inbox WHERE connection_id = %s", (connection_id,))


def test_an_alto_modified_event_reads_the_contacts_preferences_and_applies_an_opt_out(
    server: Rpc, world: World, alto: FakeAlto, worker: Sync, database_url: str
) -> None:
    agency, connection_id = alto_agency(world, server, alto, database_url)
    email = f"ada.{uuid.uuid4().hex[:6]}@e.co.uk"
    person = {"id": 1, "forename": "Ada", "surname": "Byron", "emails": [email]}
    contact = str(alto.put(people=[person])["id"])
    alto.prefer(contact, "Granted", when=alto.clock - 600)
    event = partial(alto_event, agency, contact)
    headers = {"x-signature": ALTO_SECRET, "Content-Type": "application/json"}
    hook = f"{server.base_url}/webhooks/crm/alto"
    try:
        assert httpx.post(hook, content=event("Contact.Created"), headers=headers).status_code == 202
        worker.drain(connection_id)
        assert held(database_url, connection_id)[f"{contact}:1"][1] == "granted"
        # The person opts out in Alto: only the preference changes, not the contact's own record.
        alto.tick(60)
        alto.prefer(contact, "Denied")
        assert httpx.post(hook, content=event("Contact.Modified"), headers=headers).status_code == 202
        assert held(database_url, connection_id)[f"{contact}:1"][1] == "granted"  # until processed
        worker.drain(connection_id)
        assert held(database_url, connection_id)[f"{contact}:1"][1] == "denied"
        assert alto.preference_reads == 2  # one for each event
        outcomes = [(row[0], row[2], row[3]) for row in inbox(database_url, connection_id)]
        assert outcomes == [("Contact.Created", "done", "created"), ("Contact.Modified", "done", "updated")]
    finally:
        query(database_url, "DELETE FROM crm_webhook_inbox WHERE connection_id = %s", (connection_id,))
