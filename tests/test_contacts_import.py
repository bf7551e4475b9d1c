"""Issue 18: bulk import: a CSV or JSON Lines file through `nurturehub import`, and a batch of rows
through contacts.import. Rows are validated like contacts.create; a bad row is reported with its
line and field and never stops the others; duplicates by email update or skip; erased people are
refused and counted; nothing is half-written."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUPPRESSION_KEY
from tests.contacts_helpers import create, unique_email, unique_phone
from tests.support import Rpc, query

BIN = Path(sys.executable).parent
KEY = base64.b64encode(SUPPRESSION_KEY).decode()  # the test servers' key, as the CLI takes it


def run_import(url: str, key: str, path: Path, org: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "NURTUREHUB_SUPPRESSION_KEY": key}
    return subprocess.run([str(BIN / "nurturehub"), "import", str(path), "--org", org, *options],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def agency_with_history(rpc: Rpc, world: Any) -> dict[str, Any]:
    """An organisation with one existing contact and one erased person."""
    org = world.org("Import Agency")
    existing = create(rpc, org, email=unique_email("existing"), firstName="Old", category="buyer")
    erased = create(rpc, org, email=unique_email("erased"), phone=unique_phone())
    rpc.call("contacts.delete", {"id": erased["id"]}, org.admin_token)
    return {"org": org, "existing": existing, "erased": erased}


def people(url: str, org_id: str) -> dict[str, tuple[Any, ...]]:
    rows = query(url, "SELECT email, first_name, phone, import_source, active_category FROM contacts"
                      " WHERE organisation_id = %s AND email IS NOT NULL", (org_id,))
    return {row[0]: row[1:] for row in rows}


def write_csv(path: Path, fresh: str, existing: str, erased: str) -> Path:
    path.write_text(
        "First Name,Surname,Email Address,Mobile,Post Code,Consent,Category,Notes\n"  # line 1
        f"Ann,Able,{fresh},07700 900123,sw1a 1aa,granted,seller,likes gardens\n"     # 2: created
        "Bad,Phone,bad.phone@example.co.uk,12345,,,,\n"                              # 3: phone
        f"Old,Updated,{existing},,,denied,active_buyer,\n"                           # 4: duplicate
        f"Erased,Person,{erased},,,,,\n"                                             # 5: suppressed
        "Bad,Category,bad.cat@example.co.uk,,,,wizard,\n"                             # 6: category
        "\n"                                                                         # blank
        f"Ann,Again,{fresh.upper()},,,,,\n"                                          # 8: in-file dup
        ",,,,,,,\n"                                                                  # empty row
        "No,Email,,,,,buyer,\n"                                                      # 10: created
    )
    return path


@pytest.mark.parametrize("mode", ["skip", "update"])
def test_a_csv_import_reports_every_row_and_writes_only_good_ones(
    rpc: Rpc, agency_with_history: dict[str, Any], database_url: str, tmp_path: Path, mode: str
) -> None:
    org, existing, erased = (agency_with_history[k] for k in ("org", "existing", "erased"))
    fresh = unique_email("fresh")
    path = write_csv(tmp_path / "people.csv", fresh, existing["email"], erased["email"])
    done = run_import(database_url, KEY, path, org.id, "--on-duplicate", mode)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {k: summary[k] for k in ("rows", "created", "updated", "skipped", "suppressed", "invalid")} == {
        "rows": 7, "created": 2, "updated": 2 if mode == "update" else 0,
        "skipped": 0 if mode == "update" else 2, "suppressed": 1, "invalid": 2,
    }
    assert [(p["row"], p["field"]) for p in summary["problems"]] == [(3, "phone"), (6, "category")]
    assert "12345" not in done.stdout + done.stderr  # a refused value is never repeated
    found = people(database_url, org.id)
    assert found[fresh][:2] == ("Ann", "+447700900123")
    assert found[fresh][2:] == ("manual", "seller")
    assert erased["email"] not in found and "bad.phone@example.co.uk" not in found
    if mode == "update":
        assert found[existing["email"]][0] == "Old" and found[existing["email"]][3] == "active_buyer"
        history = rpc.call("contacts.getCategoryHistory", {"id": existing["id"]}, org.member_token)
        assert [a["category"] for a in history] == ["active_buyer", "buyer"]
        consent = rpc.call("contacts.getConsent", {"id": existing["id"]}, org.member_token)
        assert consent["status"] == "denied" and consent["history"][0]["source"] == "import"
    else:
        assert found[existing["email"]][3] == "buyer"
    audit = query(database_url, "SELECT count(*) FROM audit_log WHERE organisation_id = %s"
                                " AND action = 'cli.contacts.import'", (org.id,))
    assert audit == [(summary["created"] + summary["updated"],)]


def test_a_dry_run_counts_exactly_and_writes_nothing(
    agency_with_history: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    org, existing, erased = (agency_with_history[k] for k in ("org", "existing", "erased"))
    path = write_csv(tmp_path / "people.csv", unique_email("dry"), existing["email"], erased["email"])
    before = people(database_url, org.id)
    done = run_import(database_url, KEY, path, org.id, "--dry-run")
    summary = json.loads(done.stdout)
    assert summary["dryRun"] is True and (summary["created"], summary["skipped"]) == (2, 2)
    assert people(database_url, org.id) == before


def test_json_lines_and_the_procedure_take_the_same_rows(
    rpc: Rpc, agency_with_history: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    org, erased = agency_with_history["org"], agency_with_history["erased"]
    rows = [
        {"firstName": "Jay", "email": unique_email("jsonl"), "consentStatus": "granted"},
        {"firstName": "Kay", "email": erased["email"]},
        {"firstName": "Lee", "email": "not-an-email"},
        {"firstName": "May", "email": unique_email("jsonl"), "favouriteColour": "blue"},
    ]
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    done = run_import(database_url, KEY, path, org.id,
                      "--source", "apify")
    summary = json.loads(done.stdout)
    assert (summary["created"], summary["suppressed"], summary["invalid"]) == (1, 1, 3)
    assert [(p["row"], p["field"]) for p in summary["problems"]] == [(3, "email"), (4, "favouriteColour"),
                                                                     (5, "row")]
    assert people(database_url, org.id)[rows[0]["email"]][2] == "apify"

    again = [{**rows[0], "firstName": "Jay2"}, {"firstName": "New", "email": unique_email("proc")}]
    result = rpc.call("contacts.import", {"rows": again, "onDuplicate": "update", "source": "land_registry"},
                      org.member_token)
    assert (result["created"], result["updated"], result["invalid"]) == (1, 1, 0)
    assert people(database_url, org.id)[rows[0]["email"]][0] == "Jay2"
    bad = rpc.error("contacts.import", {"rows": []}, org.member_token)
    assert bad["data"]["issues"][0]["path"] == "rows"
