"""Issue 18: consent evidence: consent per channel beside the overall status, and every change
kept with when, how and by whom, readable through contacts.getConsent and erased with the person."""

from __future__ import annotations

from typing import Any

from tests.contacts_helpers import create
from tests.support import Rpc, query

GIVEN = "2026-11-20T10:00:00+00:00"


def consent(rpc: Rpc, token: str, contact_id: str) -> dict[str, Any]:
    result: dict[str, Any] = rpc.call("contacts.getConsent", {"id": contact_id}, token)
    return result


def test_consent_given_with_a_create_is_kept_per_channel_with_its_evidence(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, consentStatus="granted", consentTimestamp=GIVEN,
                     consentChannels={"email": "granted", "sms": "denied"})
    held = consent(rpc, org.member_token, contact["id"])
    assert held["status"] == "granted" and held["consentTimestamp"].startswith("2026-11-20T10:00:00")
    assert held["channels"] == {"email": "granted", "sms": "denied", "phone": "unknown", "post": "unknown"}
    # A channel never asked follows the overall consent; a deny on either side wins.
    assert held["effective"] == {"email": "granted", "sms": "denied", "phone": "granted", "post": "granted"}
    events = {e["channel"]: e for e in held["history"]}
    assert set(events) == {"overall", "email", "sms"}
    for event in events.values():
        assert event["source"] == "manual" and event["actorUserId"] == org.member_id
        assert event["actorTokenId"] and event["requestId"]
        assert event["consentedAt"].startswith("2026-11-20T10:00:00")
    assert (events["overall"]["status"], events["sms"]["status"]) == ("granted", "denied")


def test_each_change_adds_to_the_history_and_a_repeat_adds_nothing(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org, consentStatus="granted")
    rpc.call("contacts.update", {"id": contact["id"], "consentStatus": "denied"}, org.admin_token)
    post = {"post": "granted"}
    rpc.call("contacts.update", {"id": contact["id"], "consentChannels": post}, org.member_token)
    rpc.call("contacts.update", {"id": contact["id"], "consentStatus": "denied",
                                 "consentChannels": {"post": "granted"}}, org.member_token)  # no change
    held = consent(rpc, org.member_token, contact["id"])
    assert [(e["channel"], e["status"]) for e in held["history"]] == [
        ("post", "granted"), ("overall", "denied"), ("overall", "granted")]
    assert held["history"][1]["actorUserId"] != held["history"][2]["actorUserId"]  # admin, then member
    # A stale grant on a channel never beats the person's overall deny.
    assert held["effective"]["post"] == "denied" and held["channels"]["post"] == "granted"


def test_the_source_says_how_the_consent_reached_us(rpc: Rpc, world: Any, database_url: str) -> None:
    from tests.test_contacts_erasure import connect_crm

    org = world.org()
    connection = connect_crm(database_url, org, "street")
    imported = create(rpc, org, consentStatus="denied", importSource="apify")
    synced = create(rpc, org, consentStatus="granted", importSource="crm_sync", crmConnectionId=connection,
                    externalId="ST-1")
    assert [e["source"] for e in consent(rpc, org.member_token, imported["id"])["history"]] == ["import"]
    [event] = consent(rpc, org.member_token, synced["id"])["history"]
    assert (event["source"], event["crmConnectionId"]) == ("crm_sync", connection)


def test_consent_never_asked_records_nothing_and_reads_unknown(rpc: Rpc, world: Any) -> None:
    org = world.org()
    contact = create(rpc, org)
    held = consent(rpc, org.member_token, contact["id"])
    assert held["status"] == "unknown" and held["history"] == []
    assert set(held["effective"].values()) == {"unknown"}


def test_erasure_removes_the_consent_history(rpc: Rpc, world: Any, database_url: str) -> None:
    org = world.org()
    contact = create(rpc, org, consentStatus="granted", consentChannels={"email": "granted"})
    rpc.call("contacts.delete", {"id": contact["id"]}, org.admin_token)
    rows = query(database_url, "SELECT count(*) FROM contact_consent_events WHERE contact_id = %s",
                 (contact["id"],))
    assert rows == [(0,)]
    error = rpc.error("contacts.getConsent", {"id": contact["id"]}, org.member_token)
    assert error["data"]["code"] == "NOT_FOUND"


def test_a_channel_takes_only_a_consent_status(rpc: Rpc, world: Any) -> None:
    org = world.org()
    error = rpc.error("contacts.create", {"consentChannels": {"fax": "granted"}}, org.member_token)
    assert error["data"]["issues"][0]["path"].startswith("consentChannels")
    error = rpc.error("contacts.create", {"consentChannels": {"sms": "yes"}}, org.member_token)
    assert error["data"]["issues"][0]["path"] == "consentChannels.sms"
