"""Issue 18: a subject access export (UK GDPR Art. 15) holds everything about one person and
nothing of anyone else; an erased person has none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.contacts_helpers import create, unique_email, unique_phone
from tests.crm_support import connect, enqueue
from tests.support import Rpc, query

BIN = Path(sys.executable).parent


def touched_by_everything(crm: Rpc, agency: Any, database_url: str) -> dict[str, Any]:
    """A person touched by every procedure that writes about a contact, and a neighbour."""
    connection = connect(crm, agency, "street")
    person = create(crm, agency, email=unique_email("subject"), phone=unique_phone(), postcode="SW1A 1AA",
                    consentStatus="granted", consentChannels={"email": "granted", "sms": "denied"},
                    category="buyer", importSource="crm_sync", crmConnectionId=connection["id"],
                    externalId="ST-SUBJECT", crmPayload={"id": "ST-SUBJECT", "note": "subject payload"})
    crm.call("contacts.update", {"id": person["id"], "consentStatus": "denied"}, agency.member_token)
    crm.call("contacts.assignCategory", {"id": person["id"], "category": "active_buyer"}, agency.member_token)
    event = enqueue(crm, agency, person["id"])["entries"][0]
    query(database_url,
          "INSERT INTO crm_writeback_attempts (organisation_id, queue_id, attempt, duration_ms, status_code,"
          " outcome, error) VALUES (%s, %s, 1, 40, 503, 'retry', 'HTTP 503')", (agency.id, event["id"]))
    neighbour = create(crm, agency, email=unique_email("neighbour"), importSource="crm_sync",
                       crmConnectionId=connection["id"], externalId="ST-NEIGHBOUR", crmPayload={"n": "other"})
    enqueue(crm, agency, neighbour["id"])
    return {"person": person, "neighbour": neighbour, "connection": connection, "event": event}


def test_the_export_holds_every_piece_and_nothing_of_anyone_else(
    crm: Rpc, agency: Any, database_url: str
) -> None:
    made = touched_by_everything(crm, agency, database_url)
    person, neighbour = made["person"], made["neighbour"]
    export = crm.call("contacts.export", {"id": person["id"]}, agency.admin_token)
    assert (export["format"], export["formatVersion"]) == ("nurturehub.subject-access", 1)
    contact = export["contact"]
    fields = ("id", "email", "phone")
    assert [contact[f] for f in fields] == [person[f] for f in fields]
    assert contact["crmPayload"] == {"id": "ST-SUBJECT", "note": "subject payload"}
    assert [a["category"] for a in export["categoryHistory"]] == ["active_buyer", "buyer"]
    consent = export["consent"]
    assert consent["status"] == "denied" and consent["channels"]["sms"] == "denied"
    assert [(e["channel"], e["status"]) for e in consent["history"]][:1] == [("overall", "denied")]
    assert len(consent["history"]) == 4  # granted, email, sms, then denied
    [event] = export["writebackEvents"]
    assert event["id"] == made["event"]["id"] and event["payload"]["subject"]
    attempts = [(a["attempt"], a["statusCode"], a["outcome"]) for a in event["attemptLog"]]
    assert attempts == [(1, 503, "retry")]
    actions = sorted(e["action"] for e in export["auditEntries"])
    assert actions == [
        "contacts.assignCategory", "contacts.create", "contacts.update", "crm.enqueueWriteback"]
    assert [(h["providerId"], h["reason"], h["externalId"]) for h in export["crmsHolding"]] == [
        ("street", "source", "ST-SUBJECT")]
    text = json.dumps(export)
    for value in (neighbour["id"], neighbour["email"], "ST-NEIGHBOUR", '"other"'):
        assert value not in text
    # The disclosure itself is audited.
    log = crm.call("audit.list", {"action": "contacts.export"}, agency.admin_token)["items"]
    assert [(e["targetId"], e["actorUserId"] is not None) for e in log] == [(person["id"], True)]


def test_the_export_is_for_admins_and_an_erased_person_has_none(crm: Rpc, agency: Any) -> None:
    person = create(crm, agency)
    refused = crm.error("contacts.export", {"id": person["id"]}, agency.member_token)
    assert refused["data"]["code"] == "FORBIDDEN"
    crm.call("contacts.delete", {"id": person["id"]}, agency.admin_token)
    erased = crm.error("contacts.export", {"id": person["id"]}, agency.admin_token)
    assert erased["data"]["code"] == "NOT_FOUND"


def test_the_command_line_export_is_the_same_document(crm: Rpc, agency: Any, database_url: str) -> None:
    made = touched_by_everything(crm, agency, database_url)
    command = [str(BIN / "nurturehub"), "contacts", "export", made["person"]["id"], "--org", agency.id]
    done = subprocess.run(command, env={**os.environ, "DATABASE_URL": database_url}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from_cli = json.loads(done.stdout)
    from_rpc = crm.call("contacts.export", {"id": made["person"]["id"]}, agency.admin_token)
    for document in (from_cli, from_rpc):
        document.pop("exportedAt")
        document["auditEntries"] = [e for e in document["auditEntries"] if "export" not in e["action"]]
    assert from_cli == from_rpc
    elsewhere = [*command[:3], made["person"]["id"], "--org", "00000000-0000-4000-8000-000000000000"]
    other = subprocess.run(elsewhere, env={**os.environ, "DATABASE_URL": database_url}, capture_output=True,
                           text=True, timeout=60)
    assert other.returncode == 1 and "Not found" in other.stderr and other.stdout == ""
