"""Issue 17, point 4: Street polled for people (newest first, page numbers, `updated_from`)
against a stateful fake on loopback, and a poll that survives what a CRM can send: a 429 with
Retry-After, a 5xx, a hang and a body that is not JSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.sync import SyncWorker
from tests.crm_support import KEYRING, connect
from tests.fake_reapit import FakeReapit
from tests.fake_street import TOKEN, FakeStreet
from tests.support import LoopThread, Org, Rpc, World, query
from tests.sync_support import SUPPRESSION_KEY, Sync


@pytest.fixture
def street_sync(
    loop: LoopThread, database_url: str, reapit: FakeReapit, street: FakeStreet
) -> Iterator[Sync]:
    worker = Sync(loop, database_url, reapit)
    worker.worker = SyncWorker(
        worker.db, KEYRING, reapit.config(street_api_url=street.url, crm_timeout=1.0), SUPPRESSION_KEY
    )
    yield worker
    worker.close()


@pytest.fixture
def agency(world: World, hooks: Rpc, database_url: str) -> Iterator[tuple[Org, str]]:
    org = world.org("Street Sync Agency")
    connection = connect(hooks, org, "street", {"apiToken": TOKEN})
    yield org, connection["id"]
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection["id"],))


def person(**attributes: Any) -> dict[str, Any]:
    base = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email_addresses": [{"value": f"grace.{uuid.uuid4().hex[:8]}@example.co.uk", "primary": True}],
        "telephone_numbers": [{"value": "+447700900123", "primary": True}],
        "address": {"postcode": "M30 9PA"},
        "marketing_consent": True,
        "contact_preferences": {"email": True, "text": False},
        "statuses": {"vendor": None, "landlord": None, "tenant": None},
    }
    return {**base, **attributes}


def held(database_url: str, connection_id: str) -> dict[str, tuple[Any, ...]]:
    rows = query(
        database_url,
        "SELECT external_id, last_name, consent_status, active_category FROM contacts"
        " WHERE crm_connection_id = %s",
        (connection_id,),
    )
    return {r[0]: r[1:] for r in rows}


def due(database_url: str, connection_id: str) -> None:
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))


def test_street_people_come_in_by_walking_every_page_then_only_what_changed(
    hooks: Rpc, agency: tuple[Org, str], street: FakeStreet, street_sync: Sync, database_url: str
) -> None:
    _, connection_id = agency
    people = [street.put(**person(last_name=f"P{n}")) for n in range(230)]
    street.put(**person(statuses={"vendor": "Current"}, marketing_consent=None))
    street.tick(600)
    street_sync.drain(connection_id)
    contacts = held(database_url, connection_id)
    assert len(contacts) == 231
    assert contacts[people[0]["id"]] == ("P0", "granted", None)
    assert sorted(c[2] for c in contacts.values() if c[2]) == ["active_seller"]
    reads = street.reads
    street.tick(600)  # past the last walk's watermark (its start less a minute) and the lookback (300 s)
    street.put(people[5]["id"], last_name="Edited", marketing_consent=False)
    due(database_url, connection_id)
    street_sync.drain(connection_id)
    assert held(database_url, connection_id)[people[5]["id"]] == ("Edited", "denied", None)
    assert street.reads - reads == 1  # one page: only what changed since
    [(cursor,)] = query(
        database_url, "SELECT sync_cursor FROM crm_connections WHERE id = %s", (connection_id,)
    )
    assert cursor["streams"]["contacts"]["phase"] == "incremental"


@pytest.mark.parametrize(
    "fault",
    [(429, "1"), (500, None), ("hang", 3), (200, "malformed")],
    ids=["429 with Retry-After", "5xx", "hang", "malformed JSON"],
)
def test_a_street_poll_survives_what_a_crm_can_send_and_loses_nothing(
    hooks: Rpc,
    agency: tuple[Org, str],
    street: FakeStreet,
    street_sync: Sync,
    database_url: str,
    fault: tuple[Any, Any],
) -> None:
    _, connection_id = agency
    for n in range(150):
        street.put(**person(last_name=f"F{n}"))
    street.read_script = [fault]
    street_sync.drain(connection_id)
    runs = query(
        database_url,
        "SELECT status, rate_limited, error FROM crm_sync_runs WHERE connection_id = %s ORDER BY started_at",
        (connection_id,),
    )
    if fault[0] == 429:
        assert runs[0][:2] == ("ok", 1)  # waited as Retry-After said, then went on
    else:
        assert runs[0][0] == "failed" and runs[0][2]
        assert "F1" not in (runs[0][2] or "")  # no payload in the error
        due(database_url, connection_id)
        street_sync.drain(connection_id)
    assert len(held(database_url, connection_id)) == 150


def test_a_trashed_street_person_archives_the_contact_and_restoring_brings_it_back(
    hooks: Rpc, agency: tuple[Org, str], street: FakeStreet, street_sync: Sync, database_url: str
) -> None:
    """Issue 17: Street soft-deletes people (`trashed`): asked with `filter[trashed]=with`, a
    trashed person's contact is archived, not erased (the attribute is a connection setting, as
    the transcription does not name it)."""
    _, connection_id = agency
    ada = street.put(**person())
    street_sync.drain(connection_id)
    street.tick(600)
    street.trash(ada["id"])
    due(database_url, connection_id)
    street_sync.drain(connection_id)
    [(archived,)] = query(
        database_url,
        "SELECT archived_at IS NOT NULL FROM contacts WHERE crm_connection_id = %s",
        (connection_id,),
    )
    assert archived
    street.tick(600)
    street.put(ada["id"], trashed_at=None)
    due(database_url, connection_id)
    street_sync.drain(connection_id)
    [(archived,)] = query(
        database_url,
        "SELECT archived_at IS NOT NULL FROM contacts WHERE crm_connection_id = %s",
        (connection_id,),
    )
    assert not archived


def test_a_killed_first_street_walk_resumes_at_the_page_after_the_last_it_committed(
    hooks: Rpc, agency: tuple[Org, str], street: FakeStreet, street_sync: Sync, database_url: str
) -> None:
    _, connection_id = agency
    for n in range(250):
        street.put(**person(last_name=f"P{n}"))
    street.fail_at_read = 3  # the walk dies reading page 3
    street_sync.drain(connection_id)
    assert len(held(database_url, connection_id)) == 200
    assert street.pages_read == [1, 2, 3]
    [(cursor,)] = query(
        database_url, "SELECT sync_cursor FROM crm_connections WHERE id = %s", (connection_id,)
    )
    assert cursor["streams"]["contacts"]["walk"]["page"] == 2
    due(database_url, connection_id)
    street_sync.drain(connection_id)
    assert street.pages_read[3:] == [3]  # resumed at page 3, not from page 1
    assert len(held(database_url, connection_id)) == 250
    [(cursor,)] = query(
        database_url, "SELECT sync_cursor FROM crm_connections WHERE id = %s", (connection_id,)
    )
    assert cursor["streams"]["contacts"]["phase"] == "incremental"
    assert "walk" not in cursor["streams"]["contacts"]
