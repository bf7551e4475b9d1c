"""No credential or payload in any log line, error message or URL (issue 6).

Canary values are planted in a connection's credentials and in event payloads; the CRM paths are
then driven through success, retries, a 429, an auth failure, a CRM that echoes back what it
was sent, invalid input and a worker process. Every log line (the server's and the workers'),
every response, every stored error and every URL the CRM saw is then searched for them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from server.logs import JsonFormatter
from tests.crm_support import connection_status, entry, make_contact, until, worker
from tests.fake_crm import FakeCrm
from tests.support import LoopThread, Org, Rpc, query
from tests.test_crm_queue import WorkerProcess

SECRET = "canary-secret-" + secrets.token_hex(8)
SECRET_2 = "canary-secret-" + secrets.token_hex(8)
PAYLOAD = "canary-payload-" + secrets.token_hex(8)
CANARIES = (SECRET, SECRET_2, PAYLOAD, SECRET[:-4])  # the hint shows 4 characters at most


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Capture]:
    """Every log record of this process, at every level, formatted as production formats it."""
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(level)


def test_canaries_never_reach_logs_errors_or_urls(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread, logs: Capture
) -> None:
    seen: list[str] = []  # every response body

    def call(method: str, params: dict[str, Any], token: str) -> Any:
        response = crm.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, token)
        seen.append(response.text)
        return response.json().get("result")

    created = call(
        "crm.connect", {"providerId": "street", "credentials": {"apiToken": SECRET}}, agency.admin_token
    )
    cid = created["id"]
    # Refused input that carries canaries: the errors name fields, never values.
    call("crm.connect", {"providerId": "street", "credentials": {"apiToken": SECRET}}, agency.admin_token)
    call(
        "crm.connect",
        {"providerId": "alto", "credentials": {"agencyRef": SECRET, SECRET: 1}},
        agency.admin_token,
    )
    call(
        "crm.updateConnection",
        {"connectionId": cid, "credentials": {"apiToken": 7, "x": SECRET}},
        agency.admin_token,
    )
    contact = make_contact(crm, agency, cid, "5f1c2d3e-aaaa-bbbb-cccc-0000000000c1")
    call(
        "crm.enqueueWriteback",
        {
            "contactId": contact,
            "eventType": "lead_score_update",
            "payload": {"score": PAYLOAD, "reason": PAYLOAD},
        },
        agency.member_token,
    )
    events = [
        ("email_opened", {"subject": PAYLOAD, "openedAt": "2026-03-20T09:00:00Z"}),
        (
            "email_clicked",
            {
                "subject": "s",
                "url": f"https://agency.co.uk/?ref={PAYLOAD}",
                "clickedAt": "2026-03-20T09:00:00Z",
            },
        ),
        ("hot_alert_fired", {"reason": PAYLOAD, "firedAt": "2026-03-20T09:00:00Z"}),
    ]
    ids = [
        call(
            "crm.enqueueWriteback",
            {"contactId": contact, "eventType": t, "payload": p, "idempotencyKey": f"k-{t}"},
            agency.member_token,
        )["entries"][0]["id"]
        for t, p in events
    ]

    # The CRM echoes back everything it was sent, fails, limits, then refuses the credentials.
    fake.script(500, (429, {"Retry-After": "0"}), 503, 401)
    with worker(loop, database_url, fake.config()):
        until(lambda: connection_status(database_url, cid)[0] == "error")
    call(
        "crm.updateConnection",
        {"connectionId": cid, "credentials": {"apiToken": SECRET_2}},
        agency.admin_token,
    )
    fake.script(502)
    process = WorkerProcess(database_url, fake)
    try:
        until(lambda: all(entry(database_url, i)["status"] == "success" for i in ids), timeout=30)
    finally:
        code, out, err = process.stop()
    assert code == 0
    for method in ("crm.listConnections", "crm.listWriteback"):
        call(method, {}, agency.admin_token)

    # The canaries did travel where they belong: to the CRM, in its headers and bodies.
    sent = " ".join(f"{w.headers} {w.body}" for w in fake.writes())
    assert SECRET in sent and SECRET_2 in sent and PAYLOAD in sent
    assert any('"outcome":"retry"' in line for line in logs.lines + err.splitlines())

    stored = query(
        database_url,
        """
        SELECT coalesce(string_agg(q.last_error, ' '), '') FROM crm_writeback_queue q
         WHERE q.organisation_id = %s
        UNION ALL
        SELECT coalesce(string_agg(a.error, ' '), '') FROM crm_writeback_attempts a
         WHERE a.organisation_id = %s
        UNION ALL
        SELECT coalesce(string_agg(c.last_error_message || ' ' || coalesce(c.credentials_hint, ''), ' '), '')
          FROM crm_connections c WHERE c.organisation_id = %s
        UNION ALL
        SELECT coalesce(string_agg(array_to_string(changed_fields, ',') || target_id, ' '), '')
          FROM audit_log WHERE organisation_id = %s""",
        (agency.id,) * 4,
    )
    places = {
        "log lines (server and in-process worker)": "\n".join(logs.lines),
        "worker process output": out + err,
        "responses": "\n".join(seen),
        "stored errors, hints and audit": " ".join(r[0] for r in stored),
        "URLs the CRM saw": " ".join(w.url for w in fake.requests + fake.token_requests),
    }
    assert len(logs.lines) > 10 and "writeback" in places["worker process output"]
    for place, text in places.items():
        for canary in CANARIES:
            assert canary not in text, f"a canary leaked into {place}"
