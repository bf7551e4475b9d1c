"""The writeback queue under real concurrency (issue 6): parallel workers, kill -9, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from integrations.writeback import NO_ANSWER
from tests.crm_support import (
    KEY_SPEC,
    attempts,
    connect,
    enqueue,
    entry,
    make_contact,
    opened,
    until,
    worker,
)
from tests.fake_crm import FakeCrm
from tests.support import LoopThread, Org, Rpc, query, wait_until


class WorkerProcess:
    """`nurturehub worker` in its own process, configured for the fake CRM; output to files, as
    a pipe nobody reads would fill up and stall the worker."""

    def __init__(
        self,
        database_url: str,
        fake: FakeCrm,
        concurrency: int = 4,
        log_level: str | None = "INFO",
        **env: str,
    ) -> None:
        full = {
            **os.environ,
            **fake.env(**env),
            "DATABASE_URL": database_url,
            "NURTUREHUB_ENCRYPTION_KEYS": KEY_SPEC,
        }
        full.pop("NURTUREHUB_ENCRYPTION_KEYS_FILE", None)
        full.pop("NURTUREHUB_LOG_LEVEL", None)
        if log_level is not None:  # None: the command's own default
            full["NURTUREHUB_LOG_LEVEL"] = log_level
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "worker", "--concurrency", str(concurrency)],
            env=full,
            stdout=self.out,
            stderr=self.err,
            text=True,
        )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then the exit code, stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.out.seek(0)
        self.err.seek(0)
        return code, self.out.read(), self.err.read()


def batch(rpc: Rpc, token: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    replies = sorted(rpc.post(payload, token).json(), key=lambda r: r["id"])
    assert all("result" in r for r in replies), replies[:3]
    return [r["result"] for r in replies]


def fill_queue(crm: Rpc, org: Org, connection_id: str, contacts: int, per_contact: int) -> list[str]:
    """`contacts` contacts with `per_contact` events each, interleaved; returns the entry ids."""
    contact_ids: list[str] = []
    for start in range(0, contacts, 50):
        made = batch(
            crm,
            org.member_token,
            [
                (
                    "contacts.create",
                    {"firstName": "Load", "crmConnectionId": connection_id, "externalId": f"RPT{n:08d}"},
                )
                for n in range(start, min(contacts, start + 50))
            ],
        )
        contact_ids += [c["id"] for c in made]
    calls = [
        (
            "crm.enqueueWriteback",
            {
                "contactId": contact_ids[n % contacts],
                "eventType": "email_opened",
                "payload": {"subject": f"event-{n}", "openedAt": "2026-03-20T09:00:00Z"},
            },
        )
        for n in range(contacts * per_contact)
    ]
    ids: list[str] = []
    for start in range(0, len(calls), 50):
        ids += [r["entries"][0]["id"] for r in batch(crm, org.member_token, calls[start : start + 50])]
    return ids


def test_two_workers_deliver_1000_events_once_each_and_in_order_per_contact(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str
) -> None:
    connection = connect(crm, agency, "reapit")
    ids = fill_queue(crm, agency, connection["id"], contacts=100, per_contact=10)
    fake.delay = 0.003  # deliveries overlap, so a double claim would show
    workers = [WorkerProcess(database_url, fake, concurrency=8) for _ in range(2)]

    def successes() -> int:
        count: int = query(
            database_url,
            "SELECT count(*) FROM crm_writeback_queue WHERE organisation_id = %s AND status = 'success'",
            (agency.id,),
        )[0][0]
        return count

    try:
        # The two workers share the connection's writeback budget (Reapit: 8 a second between
        # every process, integrations/limits.py), so 1,000 events take at least 125 s.
        finished = wait_until(lambda: successes() == 1000, timeout=240)
    finally:
        results = [w.stop() for w in workers]
    errors = [line for _, _, err in results for line in err.splitlines() if '"error"' in line]
    assert finished, (successes(), len(fake.writes()), errors[:3])
    assert [code for code, _, _ in results] == [0, 0], errors[:3]
    delivered = [int(out.strip().rsplit("after ", 1)[1].split()[0]) for _, out, _ in results]
    assert sum(delivered) == 1000 and min(delivered) > 0  # both workers took part

    writes = fake.writes("reapit")
    subjects = [w.text.split(": ", 1)[1].split(" (")[0] for w in writes if w.text]
    assert len(writes) == 1000 and len(set(subjects)) == 1000  # each event sent exactly once
    assert fake.overlaps == 0  # never two writes in flight for one contact
    by_contact: dict[str, list[int]] = defaultdict(list)
    for write, subject in zip(writes, subjects, strict=True):
        by_contact[str(write.contact)].append(int(subject.split("-")[1]))
    assert all(order == sorted(order) for order in by_contact.values())  # queued order kept
    rows = query(
        database_url,
        "SELECT count(*), count(DISTINCT queue_id), min(attempt), max(attempt)"
        " FROM crm_writeback_attempts WHERE organisation_id = %s",
        (agency.id,),
    )
    assert rows == [(1000, 1000, 1, 1)]
    assert set(ids) == {
        str(r[0])
        for r in query(
            database_url,
            "SELECT id FROM crm_writeback_queue WHERE organisation_id = %s AND attempts = 1",
            (agency.id,),
        )
    }


def test_killed_worker_mid_delivery_is_redelivered_after_its_lease_and_left_its_attempt_row(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection = connect(crm, agency, "reapit")
    contact = make_contact(crm, agency, connection["id"], "RPT77000001")
    first, second = (
        crm.call(
            "crm.enqueueWriteback",
            {
                "contactId": contact,
                "eventType": "email_opened",
                "payload": {"subject": s, "openedAt": "2026-03-20T09:00:00Z"},
            },
            agency.member_token,
        )["entries"][0]["id"]
        for s in ("first", "second")
    )
    fake.script(("hang", 4))
    doomed = WorkerProcess(
        database_url, fake, NURTUREHUB_CRM_TIMEOUT="1", NURTUREHUB_WRITEBACK_LEASE_SECONDS="3"
    )
    try:
        until(lambda: len(fake.writes()) == 1, timeout=20)
    finally:
        doomed.kill()  # SIGKILL: no chance to release anything
    held = entry(database_url, first)
    assert held["status"] == "processing" and held["attempts"] == 0
    assert entry(database_url, second)["status"] == "pending"

    with worker(loop, database_url, fake.config(), concurrency=4):
        until(lambda: entry(database_url, second)["status"] == "success", timeout=20)
    # Issue 17, point 5: the crashed attempt left its row, written as it started; it is spent.
    crashed, redelivered = query(
        database_url,
        "SELECT attempt, started_at, status_code, outcome, error FROM crm_writeback_attempts"
        " WHERE queue_id = %s ORDER BY started_at",
        (first,),
    )
    assert crashed[0] == 1 and crashed[2:] == (None, "retry", NO_ANSWER)
    assert redelivered[0] == 2 and redelivered[2:4] == (201, "success")
    assert redelivered[1] >= held["lease_expires_at"]  # not taken again before the lease ran out
    assert entry(database_url, first)["status"] == "success"
    texts = [w.text.split(": ", 1)[1].split(" (")[0] for w in fake.writes() if w.text]
    assert texts == ["first", "first", "second"]  # the second waited for the first


def test_sigterm_finishes_in_flight_deliveries_then_exits(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str
) -> None:
    connection = connect(crm, agency, "reapit")
    contact = make_contact(crm, agency, connection["id"], "RPT77000002")
    entry_id = enqueue(crm, agency, contact, payload=opened("s"))["entries"][0]["id"]
    fake.delay = 1.0
    process = WorkerProcess(database_url, fake)
    until(lambda: len(fake.writes()) == 1, timeout=20)
    code, out, _ = process.stop()
    assert code == 0 and "stopped after 1 deliveries" in out
    assert entry(database_url, entry_id)["status"] == "success"


def test_sigterm_releases_what_it_cannot_finish_in_the_grace_period(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str
) -> None:
    connection = connect(crm, agency, "reapit")
    contact = make_contact(crm, agency, connection["id"], "RPT77000003")
    entry_id = enqueue(crm, agency, contact, payload=opened("s"))["entries"][0]["id"]
    fake.script(("hang", 3))
    process = WorkerProcess(database_url, fake, NURTUREHUB_WRITEBACK_GRACE_SECONDS="0.2")
    until(lambda: len(fake.writes()) == 1, timeout=20)
    started = time.monotonic()
    code, out, _ = process.stop()
    assert code == 0 and "stopped after 0 deliveries" in out
    assert time.monotonic() - started < 2.5
    released = entry(database_url, entry_id)
    assert released["status"] == "pending" and released["attempts"] == 0
    assert released["lease_expires_at"] is None


def test_the_worker_logs_each_outcome_with_its_reason_by_default_and_nothing_personal(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str
) -> None:
    """Issue 20: with the default log level (WARNING for commands other than serve) a failed
    delivery left no line in the worker's log."""
    token = "street-secret-" + os.urandom(8).hex()
    connection = connect(crm, agency, "street", {"apiToken": token})
    people = [
        {"firstName": f"Quentin{n}", "lastName": "Zebedee", "email": f"q{n}.zebedee@example.co.uk",
         "phone": f"07700 90{n:04d}"}
        for n in range(4)
    ]  # fmt: skip
    contacts = [make_contact(crm, agency, connection["id"], f"ST-{n}", **p) for n, p in enumerate(people)]
    ids = [enqueue(crm, agency, c, payload=opened(f"Private subject {n}"))["entries"][0]["id"]
           for n, c in enumerate(contacts)]  # fmt: skip
    fake.script("ok", 500, 422, 401)  # claimed one at a time, in the order queued
    process = WorkerProcess(
        database_url, fake, concurrency=1, log_level=None, NURTUREHUB_WRITEBACK_BACKOFF_BASE="60"
    )
    try:
        until(lambda: all(attempts(database_url, i) for i in ids), timeout=30)
    finally:
        code, out, err = process.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    logged = {line["event"]: line for line in lines if line.get("logger") == "nurturehub.worker"}
    assert set(logged) == set(ids), err
    expected = [
        ("success", "info", None),
        ("retry", "warning", "Street answered HTTP 500"),
        ("failed", "warning", "Street rejected the entry (HTTP 422)"),
        ("auth_error", "warning", "Street refused the credentials (HTTP 401)"),
    ]
    for entry_id, (outcome, level, reason) in zip(ids, expected, strict=True):
        line = logged[entry_id]
        assert (line["outcome"], line["level"], line.get("reason")) == (outcome, level, reason), line
        assert line["provider"] == "street" and line["connection"] == connection["id"]
    assert logged[ids[1]]["status"] == "pending" and logged[ids[1]]["retryInSeconds"] > 0
    everything = out + err
    for person in people:
        for value in person.values():
            assert value not in everything
        assert f"+447700{person['phone'][6:].replace(' ', '')}" not in everything  # as stored
    for secret in (token, KEY_SPEC.split(":", 1)[1], "Private subject", "zebedee"):
        assert secret not in everything
