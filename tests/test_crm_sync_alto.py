"""Issue 17, point 3: Alto polled for contacts, walking its opaque next-page tokens from
`modified-from`, each person of a contact (joint clients) one NurtureHub contact; the paging
and listing names are connection settings, as the transcriptions disagree. Consent is the
contact's GeneralMarketing preference, read once per contact only when it is new or changed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from integrations import limits
from integrations.sync import SyncWorker
from tests.crm_support import KEYRING, connect
from tests.fake_alto import AGENCY_REF, FakeAlto
from tests.fake_reapit import FakeReapit
from tests.support import LoopThread, Org, Rpc, World, query
from tests.sync_support import SUPPRESSION_KEY, Sync


@pytest.fixture(autouse=True)
def quick_alto_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alto's start rate (2 a second) would make a preference read per contact take minutes
    here; the limiter's own behaviour is tested in tests/test_crm_limits.py."""
    monkeypatch.setitem(limits.BUDGETS, ("alto", "sync"), limits.Budget(1, 500.0, 1.0, adaptive=True))


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
    assert alto.preference_reads == 300  # one a contact, its two people sharing it
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


def consent_of(database_url: str, connection_id: str) -> dict[str, tuple[Any, ...]]:
    rows = query(
        database_url,
        "SELECT external_id, consent_status, consent_timestamp FROM contacts WHERE crm_connection_id = %s",
        (connection_id,),
    )
    return {r[0]: r[1:] for r in rows}


def sync_again(hooks: Rpc, org: Org, connection_id: str, sync: Sync, reset: bool = False) -> None:
    hooks.call("crm.syncNow", {"connectionId": connection_id, "reset": reset}, org.admin_token)
    sync.drain(connection_id)


def at(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC)


def test_alto_consent_is_the_general_marketing_preference_with_its_time_read_once_per_contact(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str
) -> None:
    org, connection_id = agency
    ids = [str(alto.put(**couple(n))["id"]) for n in range(5)]
    denied_at = alto.clock - 86400
    alto.prefer(ids[0], "Denied", when=denied_at)
    alto.prefer(ids[1], "Granted")
    alto.prefer(ids[2], "GrantedOrUnknown")  # not asked is never a grant
    alto.prefer(ids[3], "Denied", kind="PropertyMatching")  # another type: not the consent
    alto.tick(600)
    alto_sync.drain(connection_id)
    held = consent_of(database_url, connection_id)
    statuses = {k: v[0] for k, v in held.items()}
    assert statuses == {
        f"{c}:{p}": s
        for c, s in zip(ids, ["denied", "granted", "unknown", "unknown", "unknown"], strict=True)
        for p in (1, 2)
    }  # each person of the contact takes its consent
    assert held[f"{ids[0]}:1"][1] == at(denied_at)  # Alto's dateActioned, not the sync's time
    assert alto.preference_reads == 5  # one a contact, not one a person

    [contact_id] = query(
        database_url,
        "SELECT id FROM contacts WHERE crm_connection_id = %s AND external_id = %s",
        (connection_id, f"{ids[0]}:2"),
    )[0]
    evidence = hooks.call("contacts.getConsent", {"id": str(contact_id)}, org.member_token)
    [event] = evidence["history"]
    assert (event["status"], event["source"]) == ("denied", "crm_sync")
    assert datetime.fromisoformat(event["consentedAt"]) == at(denied_at)

    # A reconciliation re-reads every contact; none changed, so no preference is read again.
    reads = alto.reads
    sync_again(hooks, org, connection_id, alto_sync, reset=True)
    assert alto.reads > reads and alto.preference_reads == 5
    # One contact changed: its preferences alone are read, once for its two people.
    alto.tick(60)
    alto.put(ids[2], potentialVendor=True)
    alto.prefer(ids[2], "Denied")
    sync_again(hooks, org, connection_id, alto_sync, reset=True)
    assert alto.preference_reads == 6
    assert consent_of(database_url, connection_id)[f"{ids[2]}:2"][0] == "denied"


def test_a_stale_alto_grant_never_beats_a_newer_deny_and_a_newer_grant_does(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str
) -> None:
    org, connection_id = agency
    contact = str(alto.put(**couple(1))["id"])
    denied_at = alto.clock
    alto.prefer(contact, "Denied", when=denied_at)
    alto.tick(600)
    alto_sync.drain(connection_id)
    assert consent_of(database_url, connection_id)[f"{contact}:1"] == ("denied", at(denied_at))

    # A grant actioned before the deny (a late copy, a clock behind): the deny stands.
    alto.put(contact, potentialVendor=True)
    alto.prefer(contact, "Granted", when=denied_at - 3600)
    alto.tick(600)
    sync_again(hooks, org, connection_id, alto_sync)
    assert alto.preference_reads == 2  # read, as the contact changed
    assert consent_of(database_url, connection_id)[f"{contact}:1"] == ("denied", at(denied_at))

    # A grant actioned after the deny: the person opted in again.
    alto.put(contact, potentialLandlord=True)
    granted_at = alto.clock
    alto.prefer(contact, "Granted", when=granted_at)
    alto.tick(600)
    sync_again(hooks, org, connection_id, alto_sync)
    assert consent_of(database_url, connection_id)[f"{contact}:2"] == ("granted", at(granted_at))


@pytest.mark.parametrize(
    "fault, error",
    [
        ((500, None), "HTTP 500"),
        ((200, "malformed"), "not JSON"),
        (("hang", 6), "in time"),  # the drain's client gives up after 5 s
        ((404, None), None),  # the contact is gone: its consent stays unknown, the page applies
        ((204, None), None),  # no preferences at all: unknown
    ],
)
def test_a_failed_alto_preferences_read_fails_its_page_and_the_next_sync_applies_the_consent(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str,
    fault: tuple[Any, Any], error: str | None,
) -> None:  # fmt: skip
    org, connection_id = agency
    first, second = (str(alto.put(**couple(n))["id"]) for n in range(2))
    alto.prefer(first, "Denied")
    alto.prefer(second, "Denied")
    alto.tick(600)
    alto.preferences_script = [(None, None), fault]  # the page's second contact fails
    alto_sync.drain(connection_id)
    [(status, message)] = query(
        database_url, "SELECT status, error FROM crm_sync_runs WHERE connection_id = %s", (connection_id,)
    )
    if error is None:
        assert status == "ok"
        assert {k: v[0] for k, v in consent_of(database_url, connection_id).items()} == {
            f"{first}:1": "denied", f"{first}:2": "denied",
            f"{second}:1": "unknown", f"{second}:2": "unknown",
        }  # fmt: skip
        return
    assert status == "failed" and error in message
    assert consent_of(database_url, connection_id) == {}  # nothing of the page committed
    [(cursor,)] = query(
        database_url, "SELECT sync_cursor FROM crm_connections WHERE id = %s", (connection_id,)
    )
    assert not (cursor or {}).get("streams", {}).get("contacts", {}).get("wm")  # not moved
    sync_again(hooks, org, connection_id, alto_sync)
    assert {v[0] for v in consent_of(database_url, connection_id).values()} == {"denied"}
    assert len(consent_of(database_url, connection_id)) == 4


def test_a_429_on_an_alto_preferences_read_pauses_and_asks_again_within_the_run(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str
) -> None:
    _, connection_id = agency
    contact = str(alto.put(**couple(1))["id"])
    alto.prefer(contact, "Denied")
    alto.tick(600)
    alto.preferences_script = [(429, "1")]
    started = time.monotonic()
    alto_sync.drain(connection_id)
    assert time.monotonic() - started >= 1.0  # Retry-After was waited
    [(status, rate_limited)] = query(
        database_url,
        "SELECT status, rate_limited FROM crm_sync_runs WHERE connection_id = %s",
        (connection_id,),
    )
    assert (status, rate_limited) == ("ok", 1)
    assert alto.preference_reads == 2
    assert {v[0] for v in consent_of(database_url, connection_id).values()} == {"denied"}


def test_a_run_reading_preferences_keeps_its_connection_from_a_second_sync_process(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, loop: LoopThread, database_url: str,
    reapit: FakeReapit, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The reads between two commits outlast the lease (1.5 s here): the run holds it meanwhile,
    so another process does not take the connection and read the same preferences again."""
    _, connection_id = agency
    monkeypatch.setitem(limits.BUDGETS, ("alto", "sync"), limits.Budget(1, 8.0, 1.0, adaptive=True))
    for n in range(24):  # 24 reads at 8 a second: 3 s
        alto.prefer(str(alto.put(**couple(n))["id"]), "Denied")
    alto.tick(600)
    first, second = Sync(loop, database_url, reapit), Sync(loop, database_url, reapit)
    for sync in (first, second):
        sync.worker = SyncWorker(sync.db, KEYRING, alto.config(sync_lease_seconds=1.5), SUPPRESSION_KEY)
        sync.worker.only = [uuid.UUID(connection_id)]

    async def race() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            running = asyncio.ensure_future(first.worker.poll_one(http))
            while alto.preference_reads == 0:  # the first holds the connection and reads
                await asyncio.sleep(0.02)
            while not running.done():  # the other process keeps asking for it
                await second.worker.poll_one(http)
                await asyncio.sleep(0.1)
            await running

    try:
        loop.run(race())
    finally:
        first.close()
        second.close()
    assert alto.preference_reads == 24
    assert {v[0] for v in consent_of(database_url, connection_id).values()} == {"denied"}
    runs = query(database_url, "SELECT status FROM crm_sync_runs WHERE connection_id = %s", (connection_id,))
    assert runs == [("ok",)]


def test_alto_preference_names_are_connection_settings(
    hooks: Rpc, agency: tuple[Org, str], alto: FakeAlto, alto_sync: Sync, database_url: str
) -> None:
    org, connection_id = agency
    hooks.call(
        "crm.updateConnection",
        {"connectionId": connection_id, "settings": {"preferenceType": "PropertyMatching"}},
        org.admin_token,
    )
    contact = str(alto.put(**couple(1))["id"])
    alto.prefer(contact, "Granted")
    alto.prefer(contact, "Denied", kind="PropertyMatching")
    alto.tick(600)
    alto_sync.drain(connection_id)
    assert {v[0] for v in consent_of(database_url, connection_id).values()} == {"denied"}
    error = hooks.error(
        "crm.updateConnection",
        {"connectionId": connection_id, "settings": {"preferencesPath": "/contacts/preferences"}},
        org.admin_token,
    )
    assert error["code"] == -32602 and "preferencesPath" in str(error["data"])  # names no {id}
