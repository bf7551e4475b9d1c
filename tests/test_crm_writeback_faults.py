"""Issue 17, point 5: writeback under a misbehaving CRM. A rate limit spends no attempt and keeps
per-contact order; one agency's hanging CRM holds at most its share of a worker; a response
that trickles in is cut by one deadline for the whole request and never overlaps a second
write of the same event."""

from __future__ import annotations

import time

import pytest

from tests.crm_support import attempts, connect, enqueue, entry, make_contact, opened, until, worker
from tests.fake_crm import FakeCrm
from tests.support import LoopThread, Org, Rpc, World, query


def test_eight_rate_limits_spend_no_attempt_and_the_contacts_next_event_waits_its_turn(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection = connect(crm, agency)
    contact = make_contact(crm, agency, connection["id"], "RPT-ORDER")
    first = enqueue(crm, agency, contact, payload=opened("first"))["entries"][0]["id"]
    second = enqueue(crm, agency, contact, payload=opened("second"))["entries"][0]["id"]
    fake.script(*[(429, {"Retry-After": "0"})] * 8)
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, second)["status"] == "success")
    assert entry(database_url, first)["status"] == "success"
    assert entry(database_url, first)["attempts"] == 1  # eight 429s, then one real attempt
    texts = [w.text or "" for w in fake.writes()]
    assert all("first" in t for t in texts[:9]) and "second" in texts[9]
    assert [a[1] for a in attempts(database_url, first)] == [429] * 8 + [201]


def test_one_agencys_hanging_crm_holds_at_most_its_share_of_the_worker(
    crm: Rpc, world: World, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    slow, quick = world.org("Hanging CRM Agency"), world.org("Quick CRM Agency")
    slow_connection = connect(crm, slow, "reapit")
    for n in range(4):
        enqueue(crm, slow, make_contact(crm, slow, slow_connection["id"], f"RPT-HANG-{n}"))
    quick_connection = connect(crm, quick, "street")
    quick_entry = enqueue(crm, quick, make_contact(crm, quick, quick_connection["id"], "street-quick"))
    fake.per_provider = {"reapit": ("hang", 30)}
    started = time.monotonic()
    try:
        with worker(loop, database_url, fake.config(crm_timeout=3.0), concurrency=4):
            until(lambda: entry(database_url, quick_entry["entries"][0]["id"])["status"] == "success")
            waited = time.monotonic() - started
            reapit_writes = len(fake.writes("reapit"))
    finally:  # no later test's worker may deliver these
        query(
            database_url,
            "UPDATE crm_writeback_queue SET status = 'failed', lease_expires_at = NULL, locked_by = NULL"
            " WHERE organisation_id IN (%s, %s) AND status IN ('pending', 'processing')",
            (slow.id, quick.id),
        )
    # Before the hanging writes time out (3 s), and while they hold at most two of four slots
    # (Reapit's limits space one connection's writes 125 ms apart: the second may not be out yet).
    assert waited < 3.0
    assert 1 <= reapit_writes <= 2


def test_a_trickling_answer_is_cut_by_one_deadline_and_never_overlaps_a_second_write(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    connection = connect(crm, agency)
    entry_id = enqueue(crm, agency, make_contact(crm, agency, connection["id"], "RPT-TRICKLE"))["entries"][0][
        "id"
    ]
    fake.script(("trickle", 1.0))
    config = fake.config(crm_timeout=2.0, writeback_lease_seconds=5.0)
    with worker(loop, database_url, config, concurrency=2):
        until(lambda: entry(database_url, entry_id)["status"] == "success", timeout=30)
    assert fake.overlaps == 0
    first = attempts(database_url, entry_id)[0]
    assert first[2] == "retry" and "did not finish answering within 4 s" in first[3]


def test_a_live_workers_short_lease_is_renewed_so_a_slow_write_is_never_taken_twice(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread
) -> None:
    """Issue 17, point 5: a lease of 3 s under a write that takes 5 s, with a second worker
    waiting to claim: the first worker renews it, so the CRM sees one write, one attempt row."""
    connection = connect(crm, agency)
    entry_id = enqueue(crm, agency, make_contact(crm, agency, connection["id"], "RPT-RENEW"))["entries"][0][
        "id"
    ]
    fake.delay = 5.0
    config = fake.config(crm_timeout=10.0, writeback_lease_seconds=3.0)
    with worker(loop, database_url, config, worker_id="renewing"):
        until(lambda: entry(database_url, entry_id)["status"] == "processing")
        with worker(loop, database_url, config, worker_id="waiting"):
            until(lambda: entry(database_url, entry_id)["status"] == "success", timeout=30)
    assert len(fake.writes()) == 1 and fake.overlaps == 0
    assert [a[1:3] for a in attempts(database_url, entry_id)] == [(201, "success")]


@pytest.mark.parametrize("provider", ["reapit", "alto", "street"])
def test_a_write_answered_with_malformed_json_is_delivered_once_without_an_id(
    crm: Rpc, agency: Org, fake: FakeCrm, database_url: str, loop: LoopThread, provider: str
) -> None:
    """Issue 17, point 4: every fake CRM can send malformed JSON. A 201 whose body is not JSON
    is a delivery (sending it again would duplicate the note), its CRM id unknown."""
    connection = connect(crm, agency, provider)
    external = {
        "reapit": "RPT-MALFORMED",
        "alto": "7654321",
        "street": "5f1c2d3e-aaaa-bbbb-cccc-00000000beef",
    }
    entry_id = enqueue(crm, agency, make_contact(crm, agency, connection["id"], external[provider]))[
        "entries"
    ][0]["id"]
    fake.script("malformed")
    with worker(loop, database_url, fake.config()):
        until(lambda: entry(database_url, entry_id)["status"] == "success")
    assert len(fake.writes(provider)) == 1
    assert [a[1:3] for a in attempts(database_url, entry_id)] == [(201, "success")]
