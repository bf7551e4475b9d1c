"""Issue 17, point 3: agentOS polled by full scans (no changed-since filter documented), each
record's content hash kept so only changed records are applied, within agentOS's 50 requests a
minute (a fake that enforces it and blocks a key that keeps calling after a 429)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.sync import SyncWorker
from tests.crm_support import KEYRING, connect
from tests.fake_agentos import API_KEY, SHORT_NAME, FakeAgentOs
from tests.fake_reapit import FakeReapit
from tests.support import LoopThread, Org, Rpc, World, query
from tests.sync_support import SUPPRESSION_KEY, Sync


@pytest.fixture
def agentos() -> Iterator[FakeAgentOs]:
    fake = FakeAgentOs()
    yield fake
    fake.stop()


@pytest.fixture
def agentos_sync(
    loop: LoopThread, database_url: str, reapit: FakeReapit, agentos: FakeAgentOs
) -> Iterator[Sync]:
    worker = Sync(loop, database_url, reapit)
    worker.worker = SyncWorker(worker.db, KEYRING, agentos.config(), SUPPRESSION_KEY)
    yield worker
    worker.close()


@pytest.fixture
def agency(world: World, hooks: Rpc, database_url: str) -> Iterator[tuple[Org, str]]:
    org = world.org("agentOS Sync Agency")
    connection = connect(hooks, org, "agentos", {"apiKey": API_KEY, "shortName": SHORT_NAME})
    yield org, connection["id"]
    query(database_url, "UPDATE crm_connections SET sync_enabled = false WHERE id = %s", (connection["id"],))


def person(n: int) -> dict[str, Any]:
    return {
        "OID": f"{n:06d}",
        "Forename": "Mary",
        "Surname": f"Somerville{n}",
        "Email": f"mary.{uuid.uuid4().hex[:8]}@example.co.uk",
        "MobilePhone": "07700 900456",
        "Postcode": "EH1 1YZ",
    }


def runs(database_url: str, connection_id: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT stream, status, created, updated, unchanged, rate_limited FROM crm_sync_runs"
        " WHERE connection_id = %s ORDER BY started_at, stream",
        (connection_id,),
    )


def test_agentos_is_scanned_in_full_and_only_changed_records_are_applied(
    hooks: Rpc, agency: tuple[Org, str], agentos: FakeAgentOs, agentos_sync: Sync, database_url: str
) -> None:
    org, connection_id = agency
    agentos.records["lettings/landlords"] = [person(n) for n in range(1200)]
    agentos.records["lettings/tenants"] = [person(n) for n in range(5000, 5300)]
    started = time.monotonic()
    agentos_sync.drain(connection_id)
    assert (agentos.too_many, agentos.banned) == (0, False)
    assert [r[:3] for r in agentos.requests] == [
        ("lettings/landlords", 0, 1000), ("lettings/landlords", 1000, 1000),
        ("lettings/tenants", 0, 1000), ("lettings/applicants", 0, 1000),
    ]  # fmt: skip
    # 40 requests a minute (the sync's share of 50): one every 1.5 s, never a burst.
    assert time.monotonic() - started >= 3 * 1.5 * 0.9
    held = query(
        database_url,
        "SELECT external_id, active_category FROM contacts WHERE crm_connection_id = %s",
        (connection_id,),
    )
    assert len(held) == 1500
    assert dict(held)["landlords/000007"] == "managed_landlord"
    assert dict(held)["tenants/005007"] == "active_tenant"
    status = hooks.call("crm.getSyncStatus", {"connectionId": connection_id}, org.member_token)
    by_name = {s["stream"]: s for s in status["streams"]}
    assert status["syncSupported"] and sorted(by_name) == ["applicants", "landlords", "tenants"]
    assert by_name["landlords"]["phase"] == "incremental" and by_name["landlords"]["watermark"]
    # The next scan: one landlord edited; the rest are the same and are not applied again.
    agentos.records["lettings/landlords"][7]["Surname"] = "Edited"
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    agentos_sync.drain(connection_id)
    last = [r for r in runs(database_url, connection_id) if r[0] == "landlords"][-1]
    assert last[1:] == ("ok", 0, 1, 1199, 0)
    [(surname,)] = query(
        database_url,
        "SELECT last_name FROM contacts WHERE crm_connection_id = %s AND external_id = 'landlords/000007'",
        (connection_id,),
    )
    assert surname == "Edited"
    assert (agentos.too_many, agentos.banned) == (0, False)


def scan(agentos_sync: Sync, database_url: str, connection_id: str) -> None:
    query(database_url, "UPDATE crm_connections SET next_sync_at = now() WHERE id = %s", (connection_id,))
    agentos_sync.drain(connection_id)


def test_a_record_gone_from_two_complete_scans_archives_its_contact_until_it_comes_back(
    hooks: Rpc, agency: tuple[Org, str], agentos: FakeAgentOs, agentos_sync: Sync, database_url: str
) -> None:
    """agentOS documents no deletes, so a person deleted there is known only by absence. One
    scan can miss a live record (a delete earlier in the list shifts the offsets behind it), so
    the contact is archived, its CRM payload dropped, only after two complete scans in a row
    without it; archived, not erased, and back as it was when the record returns."""
    org, connection_id = agency
    hooks.call(
        "crm.updateConnection",
        {"connectionId": connection_id, "settings": {"landlordsPath": None, "applicantsPath": None}},
        org.admin_token,
    )
    tenants = [person(n) for n in range(6000, 6003)]
    agentos.records["lettings/tenants"] = list(tenants)
    agentos_sync.drain(connection_id)
    listed = hooks.call("contacts.list", {"limit": 50}, org.member_token)["items"]
    by_ref = {c["externalId"]: c for c in listed}
    assert sorted(by_ref) == ["tenants/006000", "tenants/006001", "tenants/006002"]
    gone_id = by_ref["tenants/006001"]["id"]

    def held() -> tuple[Any, ...]:
        [row] = query(
            database_url,
            "SELECT archived_at IS NOT NULL, crm_payload IS NOT NULL, last_name FROM contacts WHERE id = %s",
            (gone_id,),
        )
        return tuple(row)

    agentos.records["lettings/tenants"] = [tenants[0], tenants[2]]
    scan(agentos_sync, database_url, connection_id)
    assert held() == (False, True, "Somerville6001")  # one scan without it proves nothing

    scan(agentos_sync, database_url, connection_id)
    assert held() == (True, False, "Somerville6001")  # archived, payload dropped, not erased
    listed = hooks.call("contacts.list", {"limit": 50}, org.member_token)["items"]
    assert sorted(c["externalId"] for c in listed) == ["tenants/006000", "tenants/006002"]
    archived = hooks.call("contacts.list", {"limit": 50, "archived": True}, org.member_token)["items"]
    assert [c["id"] for c in archived] == [gone_id]
    [audit] = query(
        database_url,
        "SELECT changed_fields FROM audit_log WHERE organisation_id = %s AND target_id = %s"
        " AND 'crmPayload' = ANY (changed_fields)",
        (org.id, gone_id),
    )
    assert audit[0] == ["archivedAt", "crmPayload"]
    last = [r for r in runs(database_url, connection_id) if r[0] == "tenants"][-1]
    assert last[1] == "ok"
    [(archived_count,)] = query(
        database_url,
        "SELECT archived FROM crm_sync_runs WHERE connection_id = %s AND stream = 'tenants'"
        " ORDER BY started_at DESC LIMIT 1",
        (connection_id,),
    )
    assert archived_count == 1
    # A further scan does not archive it again (one audit row per change, not per scan).
    scan(agentos_sync, database_url, connection_id)
    assert len(query(database_url, "SELECT 1 FROM audit_log WHERE target_id = %s"
                     " AND 'crmPayload' = ANY (changed_fields)", (gone_id,))) == 1

    # Back in the CRM unchanged: the contact is restored with its payload, though its content
    # hash is what was kept before.
    agentos.records["lettings/tenants"] = list(tenants)
    scan(agentos_sync, database_url, connection_id)
    assert held() == (False, True, "Somerville6001")
    assert (agentos.too_many, agentos.banned) == (0, False)


def test_the_fake_agentos_blocks_a_key_that_keeps_calling_after_a_429() -> None:
    import httpx

    fake = FakeAgentOs(per_minute=2)
    try:
        url = f"{fake.url}/v4/corporate/{SHORT_NAME}/lettings/landlords"
        codes = [httpx.get(url, headers={"api_key": API_KEY}).status_code for _ in range(6)]
        assert codes == [200, 200, 429, 429, 429, 403]  # the third call while limited: blocked
        assert httpx.get(url, params={"api_key": API_KEY}).status_code == 401  # never in the URL
    finally:
        fake.stop()
