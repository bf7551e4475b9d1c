"""crm.* procedures (issue 6): connections, credentials never returned, the queue's admin view."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from integrations.providers import build_adapters
from tests.crm_support import KEYRING, connect, connection_status, enqueue, make_contact, opened
from tests.fake_crm import FakeCrm
from tests.support import Org, Rpc, ServerThread, World, free_port, query

STREET_TOKEN = "street-token-0123456789abcdef"


def test_connect_seals_the_credentials_and_never_returns_them(
    crm: Rpc, agency: Org, database_url: str
) -> None:
    created = connect(crm, agency, "street", {"apiToken": STREET_TOKEN})
    assert created["status"] == "pending" and created["providerName"] == "Street"
    assert created["credentialsHint"] == "…cdef"
    assert "credentials" not in created and STREET_TOKEN not in str(created)
    listed = crm.call("crm.listConnections", {}, agency.member_token)
    assert [c["id"] for c in listed] == [created["id"]]
    assert STREET_TOKEN not in str(listed) and listed[0]["writebackSupported"] is True

    (sealed,) = query(
        database_url, "SELECT encrypted_credentials FROM crm_connections WHERE id = %s", (created["id"],)
    )[0]
    sealed = bytes(sealed)
    for form in (STREET_TOKEN.encode(), base64.b64encode(STREET_TOKEN.encode()), b"street-token"):
        assert form not in sealed
    assert sealed[0] == 1 and sealed[2 : 2 + sealed[1]].decode() == KEYRING.primary_id


def test_one_connection_per_provider_per_organisation(crm: Rpc, agency: Org, world: World) -> None:
    connect(crm, agency, "reapit")
    error = crm.error(
        "crm.connect", {"providerId": "reapit", "credentials": {"customerId": "ABC"}}, agency.admin_token
    )
    assert error["data"]["code"] == "CONFLICT"
    assert error["message"] == "Conflict: this organisation already has a Reapit connection"
    other = world.org("Other Agency")
    connect(crm, other, "reapit")  # another organisation may connect the same CRM


def test_members_read_but_only_admins_change_connections(crm: Rpc, agency: Org) -> None:
    connection = connect(crm, agency, "reapit")
    cid = connection["id"]
    for method, params in [
        ("crm.connect", {"providerId": "alto", "credentials": {"agencyRef": "x"}}),
        ("crm.updateConnection", {"connectionId": cid, "paused": True}),
        ("crm.disconnect", {"connectionId": cid}),
        ("crm.listWriteback", {}),
        ("crm.retryWriteback", {"id": cid}),
    ]:
        assert crm.error(method, params, agency.member_token)["data"]["code"] == "FORBIDDEN", method
    assert len(crm.call("crm.listConnections", {}, agency.member_token)) == 1


def test_credentials_are_checked_against_the_providers_shape(crm: Rpc, agency: Org) -> None:
    secret = "not-the-right-shape-secret-value"
    error = crm.error(
        "crm.connect", {"providerId": "reapit", "credentials": {"apiKey": secret}}, agency.admin_token
    )
    assert error["data"]["code"] == "BAD_REQUEST"
    paths = {issue["path"] for issue in error["data"]["issues"]}
    assert paths == {"credentials.customerId", "credentials"}  # unknown names are not echoed
    assert secret not in str(error)
    error = crm.error(
        "crm.connect", {"providerId": "alto", "credentials": {"agencyRef": secret}}, agency.admin_token
    )
    assert [i["path"] for i in error["data"]["issues"]] == ["credentials.agencyRef"]
    assert secret not in str(error)
    error = crm.error("crm.connect", {"providerId": "salesforce", "credentials": {}}, agency.admin_token)
    assert error["data"]["issues"][0]["path"] == "providerId"
    error = crm.error(
        "crm.connect",
        {"providerId": "reapit", "credentials": {"customerId": "SBOX"}, "settings": {"typeId": "email"}},
        agency.admin_token,
    )
    assert error["data"]["issues"][0]["path"] == "settings.typeId"


def test_connect_fails_closed_without_an_encryption_key(database_url: str, world: World) -> None:
    from procedures import app_router

    org = world.org("No Key Agency")
    server = ServerThread(database_url, app_router)
    try:
        rpc = Rpc(server.url)
        error = rpc.error(
            "crm.connect",
            {"providerId": "street", "credentials": {"apiToken": STREET_TOKEN}},
            org.admin_token,
        )
    finally:
        server.stop()
    assert error["data"]["code"] == "SERVICE_UNAVAILABLE"
    assert "NURTUREHUB_ENCRYPTION_KEYS" in error["message"]
    assert query(
        database_url, "SELECT count(*) FROM crm_connections WHERE organisation_id = %s", (org.id,)
    ) == [(0,)]


def test_update_connection_pauses_resumes_and_replaces_credentials(
    crm: Rpc, agency: Org, database_url: str
) -> None:
    cid = connect(crm, agency, "street", {"apiToken": STREET_TOKEN})["id"]
    before = query(database_url, "SELECT encrypted_credentials FROM crm_connections WHERE id = %s", (cid,))
    paused = crm.call("crm.updateConnection", {"connectionId": cid, "paused": True}, agency.admin_token)
    assert paused["status"] == "paused"
    replaced = crm.call(
        "crm.updateConnection",
        {
            "connectionId": cid,
            "credentials": {"apiToken": "street-token-zzzzzzzzzzzz9876"},
            "settings": {"authorId": "3f0e0000-0000-0000-0000-000000000001"},
        },
        agency.admin_token,
    )
    assert replaced["status"] == "paused"  # replacing credentials does not resume
    assert replaced["credentialsHint"] == "…9876"
    assert replaced["settings"]["authorId"] == "3f0e0000-0000-0000-0000-000000000001"
    assert replaced["settings"]["pollIntervalSeconds"] == 300  # Street's sync defaults (issue 17)
    after = query(database_url, "SELECT encrypted_credentials FROM crm_connections WHERE id = %s", (cid,))
    assert before != after
    resumed = crm.call("crm.updateConnection", {"connectionId": cid, "paused": False}, agency.admin_token)
    assert resumed["status"] == "pending"
    nothing = crm.error("crm.updateConnection", {"connectionId": cid}, agency.admin_token)
    assert nothing["data"]["code"] == "BAD_REQUEST"
    audit = query(
        database_url, "SELECT action, changed_fields FROM audit_log WHERE target_id = %s ORDER BY id", (cid,)
    )
    assert audit[0] == ("crm.connect", ["credentials", "providerId", "settings", "status"])
    assert audit[2] == ("crm.updateConnection", ["credentials", "settings"])
    assert STREET_TOKEN not in str(audit)


def test_disconnect_deletes_credentials_and_cancels_queued_events(
    crm: Rpc, agency: Org, database_url: str
) -> None:
    cid = connect(crm, agency, "reapit")["id"]
    contact = make_contact(crm, agency, cid, "RPT00000001")
    ids = [enqueue(crm, agency, contact)["entries"][0]["id"] for _ in range(2)]
    result = crm.call("crm.disconnect", {"connectionId": cid}, agency.admin_token)
    assert result == {"connectionId": cid, "cancelledEvents": 2}
    assert crm.call("crm.listConnections", {}, agency.member_token) == []
    assert query(database_url, "SELECT count(*) FROM crm_connections WHERE id = %s", (cid,)) == [(0,)]
    # The contact stays, without its link to the CRM that is gone.
    kept = crm.call("contacts.get", {"id": contact}, agency.member_token)
    assert (kept["crmConnectionId"], kept["externalId"]) == (None, "RPT00000001")
    items = crm.call("crm.listWriteback", {"status": "failed"}, agency.admin_token)["items"]
    assert sorted(i["id"] for i in items) == sorted(ids)
    assert {(i["connectionId"], i["providerId"], i["lastError"]) for i in items} == {
        (None, "reapit", "cancelled: the CRM connection was removed")
    }
    # A cancelled event has no CRM to go to, so it cannot be retried.
    assert crm.error("crm.retryWriteback", {"id": ids[0]}, agency.admin_token)["data"]["code"] == "CONFLICT"
    again = crm.error("crm.disconnect", {"connectionId": cid}, agency.admin_token)
    assert again["data"]["code"] == "NOT_FOUND"


def test_enqueue_is_idempotent_by_key(crm: Rpc, agency: Org, database_url: str) -> None:
    cid = connect(crm, agency, "reapit")["id"]
    contact = make_contact(crm, agency, cid, "RPT00000002")
    first = enqueue(crm, agency, contact, key="open-123")
    second = enqueue(crm, agency, contact, key="open-123")
    assert [e["id"] for e in first["entries"]] == [e["id"] for e in second["entries"]]
    assert len(first["entries"]) == 1 and first["entries"][0]["idempotencyKey"] == "open-123"
    assert query(
        database_url,
        "SELECT count(*) FROM crm_writeback_queue WHERE idempotency_key ="
        " 'open-123' AND organisation_id = %s",
        (agency.id,),
    ) == [(1,)]
    error = crm.error(
        "crm.enqueueWriteback",
        {
            "contactId": contact,
            "eventType": "email_opened",
            "payload": opened("Another subject"),
            "idempotencyKey": "open-123",
        },
        agency.member_token,
    )
    assert error["data"]["code"] == "CONFLICT"


def test_enqueue_checks_the_payload_of_each_event_type(crm: Rpc, agency: Org) -> None:
    cid = connect(crm, agency, "reapit")["id"]
    contact = make_contact(crm, agency, cid, "RPT00000003")
    cases = [
        ("lead_score_update", {"score": "high", "scoredAt": "2026-03-20T09:00:00Z"}, "payload.score"),
        ("lead_score_update", {"score": 101, "scoredAt": "2026-03-20T09:00:00Z"}, "payload.score"),
        (
            "email_clicked",
            {"subject": "s", "url": "javascript:alert(1)", "clickedAt": "2026-03-20T09:00:00Z"},
            "payload.url",
        ),
        ("email_sent", {"subject": "s", "sentAt": "2026-03-20T09:00:00"}, "payload.sentAt"),  # naive
        (
            "journey_completed",
            {"journeyName": "x", "completedAt": "2026-03-20T09:00:00Z", "extra": 1},
            "payload",
        ),
        ("hot_alert_fired", {}, "payload.reason"),
    ]
    for event_type, payload, path in cases:
        error = crm.error(
            "crm.enqueueWriteback",
            {"contactId": contact, "eventType": event_type, "payload": payload},
            agency.member_token,
        )
        assert error["data"]["code"] == "BAD_REQUEST", event_type
        assert path in [i["path"] for i in error["data"]["issues"]], (event_type, error)
    error = crm.error(
        "crm.enqueueWriteback",
        {"contactId": contact, "eventType": "email_bounced", "payload": {}},
        agency.member_token,
    )
    assert error["data"]["issues"][0]["path"] == "eventType"
    good = {
        "email_sent": {"subject": "s", "sentAt": "2026-03-20T09:00:00Z"},
        "email_opened": opened(),
        "email_clicked": {
            "subject": "s",
            "url": "https://agency.co.uk/x",
            "clickedAt": "2026-03-20T09:00:00Z",
        },
        "lead_score_update": {"previousScore": 40, "score": 67, "scoredAt": "2026-03-20T09:00:00Z"},
        "journey_completed": {"journeyName": "Vendor nurture", "completedAt": "2026-03-20T09:00:00Z"},
        "hot_alert_fired": {"reason": "Booked a valuation", "firedAt": "2026-03-20T09:00:00Z"},
    }
    for event_type, payload in good.items():
        assert len(enqueue(crm, agency, contact, event_type, payload)["entries"]) == 1


def test_enqueue_skips_connections_that_cannot_take_the_event(crm: Rpc, agency: Org, world: World) -> None:
    reapit = connect(crm, agency, "reapit")
    agentos = connect(crm, agency, "agentos")
    assert agentos["writebackSupported"] is False
    linked = make_contact(crm, agency, reapit["id"], "RPT00000004")
    result = enqueue(crm, agency, linked)
    assert [e["connectionId"] for e in result["entries"]] == [reapit["id"]]
    assert result["skipped"] == [
        {
            "connectionId": agentos["id"],
            "providerId": "agentos",
            "reason": "agentOS publishes no API for writing notes or events on a person",
        }
    ]
    unlinked = make_contact(crm, agency, None, None)
    result = enqueue(crm, agency, unlinked)
    assert result["entries"] == []
    assert {(s["providerId"], s["reason"]) for s in result["skipped"]} >= {
        ("reapit", "the contact has no record in this CRM")
    }
    other = world.org("Other Agency")
    assert (
        crm.error(
            "crm.enqueueWriteback",
            {"contactId": linked, "eventType": "email_opened", "payload": opened()},
            other.member_token,
        )["data"]["code"]
        == "NOT_FOUND"
    )


def test_list_writeback_filters_and_pages(crm: Rpc, agency: Org) -> None:
    cid = connect(crm, agency, "reapit")["id"]
    one = make_contact(crm, agency, cid, "RPT00000005")
    two = make_contact(crm, agency, cid, "RPT00000006")
    made = [enqueue(crm, agency, c)["entries"][0]["id"] for c in (one, two, one, two, one)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = crm.call("crm.listWriteback", params, agency.admin_token)
        seen += [i["id"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))  # newest first, every entry once
    only_one = crm.call("crm.listWriteback", {"contactId": one}, agency.admin_token)["items"]
    assert [i["id"] for i in only_one] == [made[4], made[2], made[0]]
    assert only_one[0]["status"] == "pending" and only_one[0]["nextAttemptAt"]
    assert crm.call("crm.listWriteback", {"eventType": "email_sent"}, agency.admin_token)["items"] == []
    assert len(crm.call("crm.listWriteback", {"connectionId": cid}, agency.admin_token)["items"]) == 5
    bad = crm.error("crm.listWriteback", {"cursor": "nonsense"}, agency.admin_token)
    assert bad["data"]["issues"][0]["path"] == "cursor"
    filtered = crm.call("crm.listWriteback", {"contactId": one, "limit": 1}, agency.admin_token)
    moved = crm.error("crm.listWriteback", {"cursor": filtered["nextCursor"]}, agency.admin_token)
    assert moved["data"]["issues"][0]["path"] == "cursor"  # bound to the filters it was made for


def test_erasing_a_contact_removes_its_queued_events(crm: Rpc, agency: Org, database_url: str) -> None:
    cid = connect(crm, agency, "reapit")["id"]
    contact = make_contact(crm, agency, cid, "RPT00000007", email="erase.me@example.co.uk")
    keep = make_contact(crm, agency, cid, "RPT00000008")
    for _ in range(3):
        enqueue(crm, agency, contact)
    enqueue(crm, agency, keep)
    crm.call("contacts.delete", {"id": contact}, agency.admin_token)
    assert query(
        database_url, "SELECT count(*) FROM crm_writeback_queue WHERE contact_id = %s", (contact,)
    ) == [(0,)]
    remaining = crm.call("crm.listWriteback", {}, agency.admin_token)["items"]
    assert [i["contactId"] for i in remaining] == [keep]


# Issue 20: crm.connect accepted a connection that cannot work, and nothing could try one.


@pytest.fixture
def platform(fake: FakeCrm, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the server's CRM adapters at the fake CRM (with `overrides` to its configuration)."""
    import procedures.crm

    def use(**overrides: Any) -> None:
        config = fake.config(**overrides)
        adapters = build_adapters(config)
        monkeypatch.setattr(procedures.crm, "_platform", lambda: (config, adapters))

    use()
    return use


def check(crm: Rpc, org: Org, connection_id: str) -> dict[str, Any]:
    result: dict[str, Any] = crm.call("crm.testConnection", {"connectionId": connection_id}, org.admin_token)
    assert result["connectionId"] == connection_id and result["checkedAt"]
    return result


def test_test_connection_tries_the_stored_credentials_and_writes_nothing(
    crm: Rpc, agency: Org, fake: FakeCrm, platform: Callable[..., None], database_url: str
) -> None:
    token = "street-token-" + uuid.uuid4().hex
    connection = connect(crm, agency, "street", {"apiToken": token})
    assert connection["warning"] is None
    ok = check(crm, agency, connection["id"])
    assert (ok["outcome"], ok["providerId"]) == ("ok", "street")
    (read,) = fake.reads
    assert read.path == "/street/people" and read.headers["authorization"] == f"Bearer {token}"

    fake.script_reads(401, 503)
    refused = check(crm, agency, connection["id"])
    assert refused["outcome"] == "refused"
    assert refused["message"] == "Street refused the credentials (HTTP 401)"
    failed = check(crm, agency, connection["id"])
    assert (failed["outcome"], failed["message"]) == ("failed", "Street answered HTTP 503")
    assert token not in str([ok, refused, failed])
    assert fake.writes() == []  # a check writes nothing to the CRM
    assert connection_status(database_url, connection["id"]) == ("pending", None)  # nor here
    audited = "SELECT count(*) FROM audit_log WHERE organisation_id = %s AND action = 'crm.testConnection'"
    assert query(database_url, audited, (agency.id,)) == [(0,)]

    params = {"connectionId": connection["id"]}
    assert crm.error("crm.testConnection", params, agency.member_token)["data"]["code"] == "FORBIDDEN"
    unknown = {"connectionId": str(uuid.uuid4())}
    assert crm.error("crm.testConnection", unknown, agency.admin_token)["data"]["code"] == "NOT_FOUND"


def test_reapit_check_takes_the_platform_token_and_reads_as_the_customer(
    crm: Rpc, agency: Org, fake: FakeCrm, platform: Callable[..., None]
) -> None:
    connection = connect(crm, agency, "reapit", {"customerId": "SBOX"})
    assert connection["warning"] is None
    assert check(crm, agency, connection["id"])["outcome"] == "ok"
    (read,) = fake.reads
    assert read.path == "/reapit/journalEntries/" and read.headers["reapit-customer"] == "SBOX"
    assert read.headers["authorization"].startswith("Bearer tok-") and len(fake.token_requests) == 1


def test_reapit_without_the_platform_credentials_is_a_warning_and_a_refusal(
    crm: Rpc, agency: Org, fake: FakeCrm, platform: Callable[..., None]
) -> None:
    platform(reapit_client_id="", reapit_client_secret="")
    connection = connect(crm, agency, "reapit")
    warning = (
        "the platform's Reapit client credentials are not configured on the server "
        "(NURTUREHUB_REAPIT_CLIENT_ID and NURTUREHUB_REAPIT_CLIENT_SECRET): "
        "nothing reaches Reapit until they are"
    )
    assert connection["warning"] == warning
    assert crm.call("crm.listConnections", {}, agency.member_token)[0]["warning"] == warning
    refused = check(crm, agency, connection["id"])
    assert refused["outcome"] == "refused" and "not configured" in refused["message"]
    assert fake.reads == [] and fake.token_requests == []

    platform()  # configured: the warning goes, and the check passes
    assert crm.call("crm.listConnections", {}, agency.member_token)[0]["warning"] is None
    assert check(crm, agency, connection["id"])["outcome"] == "ok"


def test_an_unreachable_crm_fails_the_check_and_agentos_is_not_checked(
    crm: Rpc, agency: Org, platform: Callable[..., None]
) -> None:
    platform(street_api_url=f"http://127.0.0.1:{free_port()}/street")
    street = connect(crm, agency, "street")
    failed = check(crm, agency, street["id"])
    assert (failed["outcome"], failed["message"]) == ("failed", "Street could not be reached (ConnectError)")
    agentos = connect(crm, agency, "agentos")
    skipped = check(crm, agency, agentos["id"])
    assert skipped["outcome"] == "not_checked" and "agentOS" in skipped["message"]
