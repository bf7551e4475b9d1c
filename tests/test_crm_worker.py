"""The writeback worker against a fake CRM (issue 6): success, retries, 429, auth, hangs."""

from __future__ import annotations

import time

from tests.crm_support import (
    attempts,
    connect,
    connection_status,
    enqueue,
    entry,
    make_contact,
    until,
    worker,
)
from tests.fake_crm import FakeCrm
from tests.support import LoopThread, Org, Rpc


def _one_event(crm: Rpc, agency: Org, database_url: str, provider: str = "reapit") -> tuple[str, str]:
    connection = connect(crm, agency, provider)
    contact = make_contact(crm, agency, connection["id"], "RPT24000001")
    result = enqueue(crm, agency, contact)
    assert result["skipped"] == [] and len(result["entries"]) == 1
    return connection["id"], result["entries"][0]["id"]


def test_success_writes_a_reapit_journal_entry_and_activates_the_connection(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection_id, entry_id = _one_event(crm, agency, database_url)
    assert connection_status(database_url, connection_id)[0] == "pending"
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    (write,) = fake.writes()
    assert write.path == "/reapit/journalEntries/"
    assert write.headers["reapit-customer"] == "SBOX"
    assert write.headers["api-version"] == "2020-01-31"
    assert write.headers["authorization"].startswith("Bearer tok-")
    assert write.body["typeId"] == "MI" and write.body["associatedType"] == "contact"
    assert write.body["associatedId"] == "RPT24000001"
    assert write.body["description"] == (
        "[NurtureHub] Email opened: Spring valuation offer (2026-03-20 09:15 UTC)"
    )
    row = entry(database_url, entry_id)
    assert row["attempts"] == 1 and row["external_id"]  # from the Location header
    assert attempts(database_url, entry_id) == [(1, 201, "success", None)]
    assert connection_status(database_url, connection_id) == ("active", None)
    listed = crm.call("crm.listConnections", {}, agency.member_token)
    assert listed[0]["status"] == "active" and listed[0]["lastSyncedAt"]


def test_token_is_fetched_once_and_reused(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection = connect(crm, agency)
    contacts = [make_contact(crm, agency, connection["id"], f"RPT{i:08d}") for i in range(5)]
    ids = [enqueue(crm, agency, c)["entries"][0]["id"] for c in contacts]
    with worker(loop, database_url, fake.config()):
        until(lambda: all(entry(database_url, i)["status"] == "success" for i in ids))
    assert len(fake.writes()) == 5
    assert len(fake.token_requests) == 1


def test_retry_then_success(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    fake.script(500, 503)
    _, entry_id = _one_event(crm, agency, database_url)
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    assert [a[1:3] for a in attempts(database_url, entry_id)] == [
        (500, "retry"),
        (503, "retry"),
        (201, "success"),
    ]
    assert attempts(database_url, entry_id)[0][3] == "Reapit answered HTTP 500"
    assert entry(database_url, entry_id)["attempts"] == 3


def test_exhausted_attempts_fail_and_an_admin_can_retry(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    fake.default = 500
    _, entry_id = _one_event(crm, agency, database_url)
    with worker(loop, database_url, fake.config(writeback_backoff_base=0.005, writeback_backoff_cap=0.05)):
        until(lambda: entry(database_url, entry_id)["status"] == "failed")
    row = entry(database_url, entry_id)
    assert row["attempts"] == 8 and row["last_error"] == "Reapit answered HTTP 500"
    assert len(fake.writes()) == 8
    failed = crm.call("crm.listWriteback", {"status": "failed"}, agency.admin_token)["items"]
    assert [(e["id"], e["attempts"]) for e in failed] == [(entry_id, 8)]

    fake.default = "ok"
    retried = crm.call("crm.retryWriteback", {"id": entry_id}, agency.admin_token)
    assert retried["status"] == "pending" and retried["attempts"] == 0
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    again = crm.error("crm.retryWriteback", {"id": entry_id}, agency.admin_token)
    assert again["data"]["code"] == "CONFLICT"


def test_non_retryable_rejection_fails_at_once(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    fake.script(422)
    _, entry_id = _one_event(crm, agency, database_url)
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "failed")
    assert attempts(database_url, entry_id) == [(1, 422, "failed", "Reapit rejected the entry (HTTP 422)")]


def test_429_waits_as_told_by_retry_after(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    fake.script((429, {"Retry-After": "2"}))
    _, entry_id = _one_event(crm, agency, database_url)
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    first, second = fake.writes()
    # Backoff alone would have tried again after ~20 ms; Retry-After said 2 seconds.
    assert second.at - first.at >= 1.9
    assert [a[1:3] for a in attempts(database_url, entry_id)] == [(429, "retry"), (201, "success")]


def test_auth_failure_puts_the_connection_in_error_and_spends_no_attempt(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    fake.script(401, 401)  # the adapter refreshes its token once on a 401, then gives up
    connection_id, entry_id = _one_event(crm, agency, database_url)
    with worker(loop, database_url, fake.config()):
        until(lambda: connection_status(database_url, connection_id)[0] == "error")
        time.sleep(0.3)  # several polls: nothing is sent while the connection is in error
        assert len(fake.writes()) == 2
    row = entry(database_url, entry_id)
    assert row["status"] == "pending" and row["attempts"] == 0
    listed = crm.call("crm.listConnections", {}, agency.member_token)[0]
    assert listed["status"] == "error"
    assert listed["lastErrorMessage"] == "Reapit refused the credentials (HTTP 401)"
    assert listed["lastErrorAt"]
    assert [a[2] for a in attempts(database_url, entry_id)] == ["auth_error"]

    # The admin fixes it (new credentials): pending again, and the waiting event is delivered.
    fixed = crm.call(
        "crm.updateConnection",
        {"connectionId": connection_id, "credentials": {"customerId": "SBOX"}},
        agency.admin_token,
    )
    assert fixed["status"] == "pending" and fixed["lastErrorMessage"] is None
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    assert entry(database_url, entry_id)["attempts"] == 1
    assert connection_status(database_url, connection_id)[0] == "active"


def test_refused_platform_client_credentials_are_an_auth_error(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection_id, entry_id = _one_event(crm, agency, database_url)
    with worker(loop, database_url, fake.config(reapit_client_secret="wrong")):
        until(lambda: connection_status(database_url, connection_id)[0] == "error")
    assert fake.writes() == []
    message = connection_status(database_url, connection_id)[1]
    assert message == "Reapit refused the platform's client credentials (HTTP 400 from its token endpoint)"
    assert entry(database_url, entry_id)["attempts"] == 0


def test_a_hanging_crm_times_out_and_is_retried(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    fake.script(("hang", 5))
    _, entry_id = _one_event(crm, agency, database_url)
    started = time.monotonic()
    with worker(loop, database_url, fake.config(crm_timeout=0.5)):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    assert time.monotonic() - started < 4  # did not wait for the hang to end
    assert [a[1:] for a in attempts(database_url, entry_id)] == [
        (None, "retry", "Reapit did not answer in time"),
        (201, "success", None),
    ]


def test_paused_connection_holds_its_events_and_takes_no_new_ones(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection_id, entry_id = _one_event(crm, agency, database_url)
    crm.call("crm.updateConnection", {"connectionId": connection_id, "paused": True}, agency.admin_token)
    contact = make_contact(crm, agency, connection_id, "RPT24000002")
    assert enqueue(crm, agency, contact)["entries"] == []
    with worker(loop, database_url, fake.config()):
        time.sleep(0.3)
        assert fake.writes() == []
        resumed = crm.call(
            "crm.updateConnection", {"connectionId": connection_id, "paused": False}, agency.admin_token
        )
        assert resumed["status"] == "pending"
        until(lambda: entry(database_url, entry_id)["status"] == "success")


def test_alto_and_street_adapters_write_as_documented(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    alto = connect(crm, agency, "alto", {"agencyRef": "0b5a4c1e-1111-4c2b-9d3e-2a6f7c8d9e0f"})
    street = connect(crm, agency, "street", {"apiToken": "street-token-abcdef123456"})
    alto_contact = make_contact(crm, agency, alto["id"], "1234567")
    street_contact = make_contact(crm, agency, street["id"], "5f1c2d3e-aaaa-bbbb-cccc-000000000001")
    sent = {"subject": "New instruction", "sentAt": "2026-03-20T09:00:00Z"}
    alert = {"reason": "Viewed the same flat 5 times", "score": 91, "firedAt": "2026-03-20T10:00:00+01:00"}
    ids = [
        enqueue(crm, agency, alto_contact, "email_sent", sent)["entries"][0]["id"],
        enqueue(crm, agency, street_contact, "email_sent", sent)["entries"][0]["id"],
        enqueue(crm, agency, street_contact, "hot_alert_fired", alert)["entries"][0]["id"],
    ]
    with worker(loop, database_url, fake.config(), concurrency=1):
        until(lambda: all(entry(database_url, i)["status"] == "success" for i in ids))
    (alto_write,) = fake.writes("alto")
    assert alto_write.path == "/alto/file-notes"
    assert alto_write.headers["agencyref"] == "0b5a4c1e-1111-4c2b-9d3e-2a6f7c8d9e0f"
    assert alto_write.body["contactIds"] == [1234567]
    assert alto_write.body["fileNoteType"] == "EMail" and alto_write.body["updateLastContactedDate"] is False
    activity, note = fake.writes("street")  # one contact: in the order they were queued
    assert activity.path == "/street/activity" and note.path == "/street/notes"
    assert activity.headers["authorization"] == "Bearer street-token-abcdef123456"
    assert activity.headers["content-type"] == "application/vnd.api+json"
    assert activity.body["data"]["attributes"]["activity_type"] == "campaign_sent"
    assert note.body["data"]["attributes"]["pinned"] is True
    assert note.body["data"]["attributes"]["body"] == (
        "[NurtureHub] Hot lead alert: Viewed the same flat 5 times (score 91) (2026-03-20 09:00 UTC)"
    )
    assert entry(database_url, ids[0])["external_id"].isdigit()


def test_backoff_grows_fourfold_with_jitter_up_to_the_cap() -> None:
    from integrations.writeback import backoff_delay

    for attempt, nominal in [(1, 10.0), (2, 40.0), (3, 160.0), (7, 6 * 3600.0), (8, 6 * 3600.0)]:
        delays = {backoff_delay(attempt, 10.0, 6 * 3600.0) for _ in range(50)}
        assert all(0.75 * nominal <= d <= 1.25 * nominal for d in delays)
        assert len(delays) > 1  # jittered, so retries of many events do not arrive together


def test_retry_after_is_read_as_seconds_or_a_date_and_capped() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from integrations.writeback import retry_after_seconds

    assert retry_after_seconds("120", 3600) == 120
    assert retry_after_seconds("99999", 3600) == 3600
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_seconds(when, 3600) or 0) <= 30
    assert retry_after_seconds(None, 3600) is None and retry_after_seconds("soon", 3600) is None
