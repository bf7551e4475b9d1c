"""Issue 17, point 3: Alto polled for contacts, walking its opaque next-page tokens from
`modified-from`, each person of a contact (joint clients) one NurtureHub contact; the paging
and listing names are connection settings, as the transcriptions disagree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from integrations.sync import SyncWorker
from tests.crm_support import KEYRING, connect
from tests.fake_alto import AGENCY_REF, FakeAlto
from tests.fake_reapit import FakeReapit
from tests.support import LoopThread, Org, Rpc, World, query
from tests.sync_support import SUPPRESSION_KEY, Sync


@pytest.fixture
def alto_sync(loop: LoopThread, database_url: str, reapit: FakeReapit, alto: FakeAlto) -> Iterator[Sync]:
    worker = Sync(loop, database_url, reapit)
    worker.worker = SyncWorker(worker.db, KEYRING, alto.config(), SUPPRESSION_KEY)
    yield worker
    worker.close()


@pytest.fixture
def agency(world: World, hooks: Rpc, database_url: str) -> Iterator[tuple[Org, str]]:
    org = world.org("Alto Sync Agency")
    connection = connect(hooks, org, "alto", {"agencyRef": AGENCY_REF})
    yield org, connection["id"]
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection["id"],))


def couple(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "people": [
            {"id": 1, "forename": "Ada", "surname": f"Byron{n}", "emails": [{"address": f"a{n}@e.co.uk"}]},
            {"id": 2, "forename": "Wil", "surname": f"King{n}", "emails": [f"wil{n}@example.co.uk"]},
        ],
        "contactType": {"category": "Client", "persona": ["Vendor"]},
        **fields,
    }


def held(database_url: str, connection_id: str) -> dict[str, tuple[Any, ...]]:
    rows = query(
        database_url,
        "SELECT external_id, last_name, active_category, archived_at IS NOT NULL FROM contacts"
        " WHERE crm_connection_id = %s",
        (connection_id,),
    )
    return {r[0]: r[1:] for r in rows}


def test_alto_contacts_come_in_by_walking_next_tokens_one_contact_per_person(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str
) -> None:
    _, connection_id = agency
    for n in range(300):
        alto.put(**couple(n))
    alto.tick(600)
    alto_sync.drain(connection_id)
    contacts = held(database_url, connection_id)
    assert len(contacts) == 600
    first = min(alto.contacts)
    assert contacts[f"{first}:1"][:2] == ("Byron0", "active_seller")
    assert alto.reads == 3  # 100 a page (the sync's page size): three pages, tokens walked
    alto.tick(600)
    alto.put(first, archived=True)
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    alto_sync.drain(connection_id)
    assert held(database_url, connection_id)[f"{first}:2"][2] is True
    assert alto.reads == 4  # only what changed since the walk's start less a minute


def test_alto_listing_names_are_connection_settings(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str
) -> None:
    org, connection_id = agency
    hooks.call(
        "crm.updateConnection",
        {"connectionId": connection_id, "settings": {"listKey": "contacts"}},
        org.admin_token,
    )
    alto.put(**couple(1))
    alto_sync.drain(connection_id)
    [(status, error)] = query(
        database_url,
        "SELECT status, error FROM crm_sync_runs WHERE connection_id = %s",
        (connection_id,),
    )
    assert status == "failed" and "not a list" in error  # the fake lists under "items"
    error = hooks.error(
        "crm.updateConnection",
        {"connectionId": connection_id, "settings": {"pageSize": 500}},
        org.admin_token,
    )
    assert error["code"] == -32602 and "pageSize" in str(error["data"])
