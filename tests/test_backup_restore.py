"""Issue 18: erasures survive a restore: every erasure (and every lift) is journaled outside the
database, and `nurturehub db restore` replays those made after the backup before anything serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procedures import app_router
from tests.contacts_helpers import create, unique_email, unique_phone
from tests.support import Rpc, ServerThread, World, query

BIN = Path(sys.executable).parent
KEY = b"r" * 32


def cli(url: str, journal: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": url, "NURTUREHUB_ERASURE_JOURNAL": str(journal)}
    done = subprocess.run([str(BIN / "nurturehub"), *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def setting(fresh_database: str, loop: Any, tmp_path: Path) -> dict[str, Any]:
    from server.db import Database

    journal = tmp_path / "erasures.jsonl"
    server = ServerThread(fresh_database, app_router, suppression_key=KEY, erasure_journal=journal)
    db = Database(fresh_database, pool_size=1)
    org = World(loop, db).org()
    yield {"url": fresh_database, "journal": journal, "server": server, "org": org, "tmp": tmp_path}
    server.stop()
    loop.run(db.close())


def contacts(url: str) -> set[str]:
    return {str(row[0]) for row in query(url, "SELECT id FROM contacts")}


def test_backup_erase_restore_the_erased_person_stays_erased(setting: dict[str, Any]) -> None:
    url, journal, org = setting["url"], setting["journal"], setting["org"]
    rpc = Rpc(setting["server"].url)
    kept = create(rpc, org)
    person = {"email": unique_email("restored"), "phone": unique_phone()}
    erased = create(rpc, org, **person)
    backup = cli(url, journal, "db", "backup", "--out", str(setting["tmp"] / "before.dump"))
    assert backup["bytes"] > 1000 and Path(backup["path"]).with_name("before.dump.json").exists()
    rpc.call("contacts.delete", {"id": erased["id"]}, org.admin_token)
    [entry] = [json.loads(line) for line in journal.read_text().splitlines()]
    assert (entry["type"], entry["contactId"]) == ("erasure", erased["id"])
    assert person["email"] not in journal.read_text() and person["phone"] not in journal.read_text()
    setting["server"].stop()

    restored = cli(url, journal, "db", "restore", backup["path"])
    assert restored["erasuresReplayed"] == {
        "entries": 1, "contactsRemoved": 1, "suppressionsAdded": 2, "suppressionsLifted": 0}
    assert contacts(url) == {kept["id"]}

    again = ServerThread(url, app_router, suppression_key=KEY, erasure_journal=journal)
    try:
        params = {**person, "importSource": "crm_sync"}
        error = Rpc(again.url).error("contacts.create", params, org.member_token)
        assert error["data"]["code"] == "CONFLICT" and error["data"]["suppressed"] == ["email", "phone"]
    finally:
        again.stop()

    # Replaying twice changes nothing, and audits nothing more.
    audit = query(url, "SELECT count(*) FROM audit_log")
    twice = cli(url, journal, "erasures", "replay", "--since", backup["takenAt"])
    assert twice == {"entries": 1, "contactsRemoved": 0, "suppressionsAdded": 0, "suppressionsLifted": 0}
    assert query(url, "SELECT count(*) FROM audit_log") == audit and contacts(url) == {kept["id"]}


def test_a_lift_after_the_backup_is_replayed_too(setting: dict[str, Any]) -> None:
    url, journal, org = setting["url"], setting["journal"], setting["org"]
    rpc = Rpc(setting["server"].url)
    person = create(rpc, org, email=unique_email("lifted"))
    rpc.call("contacts.delete", {"id": person["id"]}, org.admin_token)
    backup = cli(url, journal, "db", "backup", "--out", str(setting["tmp"] / "after-erasure.dump"))
    lift = {"email": person["email"], "reason": "consented again"}
    rpc.call("contacts.liftSuppression", lift, org.admin_token)
    setting["server"].stop()
    restored = cli(url, journal, "db", "restore", backup["path"])
    assert restored["erasuresReplayed"]["suppressionsLifted"] == 1
    assert query(url, "SELECT count(*) FROM erasure_suppressions") == [(0,)]


def test_a_restore_without_its_start_time_is_refused(setting: dict[str, Any]) -> None:
    url, journal = setting["url"], setting["journal"]
    backup = cli(url, journal, "db", "backup", "--out", str(setting["tmp"] / "bare.dump"))
    Path(backup["path"] + ".json").unlink()
    env = {**os.environ, "DATABASE_URL": url, "NURTUREHUB_ERASURE_JOURNAL": str(journal)}
    done = subprocess.run([str(BIN / "nurturehub"), "db", "restore", backup["path"]], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--since" in done.stderr and len(done.stderr.splitlines()) == 1
