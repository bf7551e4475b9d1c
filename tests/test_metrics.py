"""Issue 20, point 2: GET /metrics, behind its token, summed across `serve --workers N`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from procedures import app_router
from server.ratelimit import POLICIES
from tests.support import Rpc, ServerThread
from tests.test_serve import BIN, Serve

TOKEN = "scrape-token-for-tests"
SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        found.append((match["name"], labels, float(match["value"])))
    return found


def calls(text: str, method: str) -> float:
    return sum(
        value for name, labels, value in samples(text)
        if name == "nurturehub_rpc_calls_total" and labels["method"] == method
    )


@pytest.fixture(scope="module")
def metered(database_url: str) -> Iterator[ServerThread]:
    thread = ServerThread(database_url, app_router, metrics_token=TOKEN)
    yield thread
    thread.stop()


def scrape(url: str) -> str:
    response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def test_metrics_are_off_unless_a_token_is_set(server: ServerThread) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 404


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_metrics_refuse_a_scraper_without_the_token(metered: ServerThread, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(metered.url + "/metrics", headers=headers)
    assert response.status_code == 401
    assert TOKEN not in response.text


def test_calls_are_counted_by_procedure_and_outcome(metered: ServerThread, world) -> None:
    org = world.org()
    rpc = Rpc(metered.url, org.member_token)
    before = scrape(metered.url)
    for _ in range(7):
        rpc.call("auth.whoami")
    rpc.error("contacts.get", {"id": "00000000-0000-0000-0000-000000000000"})
    rpc.error("no.suchMethod")
    assert rpc.raw(b"{not json").status_code == 400
    assert rpc.post({"jsonrpc": "1.0", "id": 1, "method": "auth.whoami"}).status_code == 400
    after = scrape(metered.url)
    assert calls(after, "auth.whoami") - calls(before, "auth.whoami") == 7
    by_code = {
        (labels["method"], labels["code"]): value for name, labels, value in samples(after)
        if name == "nurturehub_rpc_calls_total"
    }
    assert by_code[("contacts.get", "NOT_FOUND")] >= 1
    assert by_code[("other", "METHOD_NOT_FOUND")] >= 1
    assert by_code[("other", "PARSE_ERROR")] >= 1 and by_code[("other", "BAD_REQUEST")] >= 1
    count = {labels["method"]: value for name, labels, value in samples(after)
             if name == "nurturehub_rpc_call_duration_seconds_count"}
    assert count["auth.whoami"] >= 7


def test_labels_come_from_closed_sets_only(metered: ServerThread, world) -> None:
    org = world.org()
    Rpc(metered.url, org.owner_token).call("auth.whoami")
    text = scrape(metered.url)
    assert org.id not in text and org.owner_token not in text
    methods = {*app_router, "rpc.discover", "other"}
    for _, labels, _ in samples(text):
        assert set(labels) <= {"method", "code", "le", "status", "provider", "scope"}
        assert labels.get("method", "other") in methods
        assert labels.get("scope", "token") in POLICIES
    names = {name for name, _, _ in samples(text)}
    assert {
        "nurturehub_db_pool_connections_in_use", "nurturehub_db_pool_waiting",
        "nurturehub_db_pool_timeouts_total", "nurturehub_auth_cache_hits_total",
        "nurturehub_rate_limited_total", "nurturehub_rate_limit_fail_open_total", "nurturehub_shed_total",
    } <= names


def test_the_sync_inbox_backlog_is_counted_by_status_and_provider(fresh_database: str) -> None:
    """Webhook events waiting to be applied, and unrouted ones, show as gauges when scraped."""
    from integrations.metrics import collect
    from tests.support import query

    for status, minutes_due in (("received", 3), ("received", 1), ("unrouted", 0), ("done", 9)):
        query(fresh_database, """
            INSERT INTO crm_webhook_inbox (provider_id, dedupe_key, topic, status, next_attempt_at)
            VALUES ('reapit', gen_random_uuid()::text, 'contacts.modified', %s,
                    now() - make_interval(mins => %s))
        """, (status, minutes_due))
    thread = ServerThread(fresh_database, app_router, metrics_token=TOKEN, collectors=[collect])
    try:
        found = samples(scrape(thread.url))
    finally:
        thread.stop()
    inbox = {(labels["status"], labels["provider"]): value
             for name, labels, value in found if name == "nurturehub_sync_inbox_entries"}
    assert inbox[("received", "reapit")] == 2 and inbox[("unrouted", "reapit")] == 1
    assert inbox[("processing", "reapit")] == 0 and inbox[("received", "street")] == 0
    assert ("done", "reapit") not in inbox
    [oldest] = [value for name, _, value in found if name == "nurturehub_sync_inbox_oldest_due_age_seconds"]
    assert 180 <= oldest < 240


def test_serve_with_two_workers_sums_every_workers_calls(postgres) -> None:
    url = postgres.create_database()
    env = {**os.environ, "DATABASE_URL": url, "NURTUREHUB_METRICS_TOKEN": TOKEN}
    server = Serve(env, "--workers", "2")
    try:
        created = subprocess.run(
            [str(BIN / "nurturehub"), "org", "create", "Metered Agency", "--owner-email", "o@metered.co.uk"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )
        token = json.loads(created.stdout)["token"]
        calls_made = 60
        for _ in range(calls_made):  # a new connection each: the kernel spreads them over workers
            reply = httpx.post(
                server.url + "/rpc",
                headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                json={"jsonrpc": "2.0", "id": 1, "method": "auth.whoami"},
            )
            assert reply.status_code == 200
        for _ in range(4):  # whichever worker answers the scrape, it sums both
            text = scrape(server.url)
            assert calls(text, "auth.whoami") == calls_made
            processes = [v for n, _, v in samples(text) if n == "nurturehub_processes"]
            assert processes == [2]
            queue = [labels for n, labels, _ in samples(text) if n == "nurturehub_writeback_queue_entries"]
            assert {"status": "pending", "provider": "reapit"} in queue
            assert "nurturehub_writeback_oldest_due_age_seconds" in text
        # Each worker looked the token up once, then used its cache: both served calls.
        misses = [v for n, _, v in samples(text) if n == "nurturehub_auth_cache_misses_total"]
        assert misses[0] >= 2
    finally:
        assert server.stop() == 0
