"""Inbound CRM sync figures (issue 17): `python -m bench.sync_throughput`.

Against the stateful fake Reapit of the tests (tests/fake_reapit.py) with its published limits
enforced (5 requests in flight per customer, 20 a second, 429 beyond), in a fresh embedded
database:

  backfill   contacts a minute for one connection's first full read, and the most requests
             it had in flight at once, and the 429s it drew
  apply      records a second through the apply path alone (integrations/inbound.py), one
             page of 100 per transaction: new records, then changed ones, then unchanged
  webhooks   acknowledgement latency (p50, p99) of signed contacts.modified deliveries sent at
             --rate a second to the real server's receiver
  opt-out    seconds from a contacts.optedout delivery's 202 to the contact being denied, with
             `nurturehub sync`'s worker running its loop

Not a test: these machines are shared and noisy; compare the figures of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from integrations.inbound import Counts, apply_page
from integrations.providers.base import PersonDraft
from integrations.sync import SyncWorker
from integrations.webhooks import Receiver
from procedures import app_router
from procedures.crm_credentials import seal_credentials
from seeds.crm_providers import seed
from server.crypto import Keyring, new_key_entry
from server.db import Database
from server.embedded import EmbeddedPostgres
from server.migrate import Migrator
from tests.fake_reapit import FakeReapit
from tests.support import ServerThread

SUPPRESSION_KEY = secrets.token_bytes(32)


def connection(url: str, keyring: Keyring, customer: str) -> tuple[str, str]:
    org, conn_id = uuid.uuid4(), uuid.uuid4()
    sealed = seal_credentials(keyring, org, conn_id, {"customerId": customer})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES (%s, %s)", (org, f"Bench {customer}"))
        conn.execute(
            "INSERT INTO crm_connections (organisation_id, id, provider_id, status, encrypted_credentials,"
            " tenant_ref) VALUES (%s, %s, 'reapit', 'active', %s, %s)",
            (org, conn_id, sealed, customer),
        )
    return str(org), str(conn_id)


def fill(fake: FakeReapit, count: int) -> None:
    for n in range(count):
        if n % 50 == 0:
            fake.tick()
        fake.put(
            forename=f"B{n}",
            surname="Bench",
            email=f"bench{n}.{uuid.uuid4().hex[:6]}@example.co.uk",
            mobilePhone="07700 900123",
            primaryAddress={"postcode": "SW1A 1AA"},
            marketingConsent="grant",
        )


def backfill(url: str, keyring: Keyring, fake: FakeReapit, contacts: int) -> dict[str, Any]:
    fill(fake, contacts)
    _, conn_id = connection(url, keyring, "BACKFILL")
    fake.enforce_limits = True

    async def go() -> float:
        db = Database(url, pool_size=3)
        worker = SyncWorker(db, keyring, fake.config(), SUPPRESSION_KEY, only=[uuid.UUID(conn_id)])
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=10) as http:
            await worker.poll_one(http)
        elapsed = time.perf_counter() - started
        await db.close()
        return elapsed

    seconds = asyncio.run(go())
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM contacts WHERE crm_connection_id = %s", (conn_id,)
        ).fetchone()
    held = int(row[0]) if row else 0
    return {
        "contacts": held,
        "seconds": round(seconds, 2),
        "contacts_per_minute": round(held / seconds * 60),
        "max_in_flight": fake.max_in_flight,
        "http_429": fake.too_many,
        "requests": fake.contact_reads,
    }


def apply_rate(url: str, keyring: Keyring, records: int) -> dict[str, Any]:
    """Three passes over one page-sized stream of records: all new, all changed (a new
    modified time and eTag, a new postcode), all unchanged (the lookback's re-reads)."""
    org, conn_id = connection(url, keyring, "APPLY")
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def drafts(version: int) -> list[PersonDraft]:
        return [
            PersonDraft(
                external_id=f"A{n:07d}",
                modified=base + timedelta(days=version, seconds=n // 50),
                etag=f'"{n}-{version}"',
                first_name="Apply",
                last_name=f"N{n}",
                email=f"apply{n}@example.co.uk",
                phone="07700 900123",
                postcode="SW1A 1AA" if version == 0 else "EC1A 1BB",
                consent="granted",
                record={"id": f"A{n:07d}", "version": version},
            )
            for n in range(records)
        ]

    async def go(page: list[PersonDraft]) -> float:
        db = Database(url, pool_size=2)
        started = time.perf_counter()
        for start in range(0, records, 100):
            async with db.transaction() as tx:
                await apply_page(
                    tx,
                    suppression_key=SUPPRESSION_KEY,
                    organisation_id=uuid.UUID(org),
                    connection_id=uuid.UUID(conn_id),
                    provider_id="reapit",
                    drafts=page[start : start + 100],
                    counts=Counts(),
                )
        elapsed = time.perf_counter() - started
        await db.close()
        return elapsed

    result: dict[str, Any] = {"records": records}
    for name, page in (("create", drafts(0)), ("update", drafts(1)), ("unchanged", drafts(1))):
        seconds = asyncio.run(go(page))
        result[name] = {"seconds": round(seconds, 2), "records_per_s": round(records / seconds)}
    # The first pass, as earlier runs reported it.
    result["seconds"] = result["create"]["seconds"]
    result["records_per_s"] = result["create"]["records_per_s"]
    return result


def webhooks(url: str, keyring: Keyring, fake: FakeReapit, rate: float, duration: float) -> dict[str, Any]:
    fake.enforce_limits = False
    org, conn_id = connection(url, keyring, "HOOKS")
    server = ServerThread(
        url,
        app_router,
        encryption_keys=keyring,
        suppression_key=SUPPRESSION_KEY,
        extra_routes=lambda db, settings: Receiver(db, settings.encryption_keys, fake.config()).routes(),
    )
    latencies: list[float] = []
    record = fake.put(forename="Hook", surname="Bench", email="hook@example.co.uk")
    try:
        with httpx.Client(timeout=5) as http:
            target = f"{server.url}/webhooks/crm/reapit"
            warm = fake.event("contacts.modified", record, customer="HOOKS")
            http.post(target, content=warm, headers=fake.signed(warm))  # the key fetch, once
            total = int(rate * duration)
            started = time.perf_counter()
            for n in range(total):
                due = started + n / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                body = fake.event("contacts.modified", record, customer="HOOKS")
                sent = time.perf_counter()
                answer = http.post(target, content=body, headers=fake.signed(body))
                latencies.append((time.perf_counter() - sent) * 1000)
                assert answer.status_code == 202, answer.status_code
            # Opt-out: the sync worker runs its loop; time from the 202 to the contact denied.
            opt_out = opt_out_latency(url, keyring, fake, http, target, org, conn_id)
    finally:
        server.stop()
    latencies.sort()
    return {
        "events": len(latencies),
        "rate_per_s": rate,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
        "max_ms": round(latencies[-1], 1),
        "opt_out_seconds": opt_out,
    }


def opt_out_latency(
    url: str, keyring: Keyring, fake: FakeReapit, http: httpx.Client, target: str, org: str, conn_id: str
) -> float:
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    db_holder: dict[str, Any] = {}

    async def run() -> None:
        db = Database(url, pool_size=3)
        db_holder["db"] = db
        worker = SyncWorker(
            db, keyring, fake.config(sync_poll_interval=1.0), SUPPRESSION_KEY, only=[uuid.UUID(conn_id)]
        )
        await worker.run(stop)
        await db.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(run()), daemon=True)
    thread.start()
    try:
        time.sleep(2)  # the backlog of the ack measurement is applied first
        record = fake.put(
            forename="Opt", surname="Out", email="optout@example.co.uk", marketingConsent="deny"
        )
        body = fake.event("contacts.optedout", record, customer="HOOKS")
        sent = time.perf_counter()
        assert http.post(target, content=body, headers=fake.signed(body)).status_code == 202
        with psycopg.connect(url, autocommit=True) as conn:
            while time.perf_counter() - sent < 60:
                row = conn.execute(
                    "SELECT consent_status FROM contacts WHERE crm_connection_id = %s AND external_id = %s",
                    (conn_id, record["id"]),
                ).fetchone()
                if row and row[0] == "denied":
                    return round(time.perf_counter() - sent, 2)
                time.sleep(0.05)
        return float("inf")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--apply", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["backfill", "apply", "webhooks"],
        default=["backfill", "apply", "webhooks"],
    )
    args = parser.parse_args()
    keyring_spec = new_key_entry()
    keyring = Keyring.parse(keyring_spec)
    embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="nh-bench-sync-")), cleanup="delete")
    url = embedded.start()

    async def prepare() -> None:
        db = Database(url, pool_size=1)
        await Migrator(db.url).init()
        await seed(db)
        await db.close()

    fake = FakeReapit()
    try:
        asyncio.run(prepare())
        results: dict[str, Any] = {}
        if "backfill" in args.only:
            results["backfill"] = backfill(url, keyring, fake, args.contacts)
        if "apply" in args.only:
            results["apply"] = apply_rate(url, keyring, args.apply)
        if "webhooks" in args.only:
            results["webhooks"] = webhooks(url, keyring, fake, args.rate, args.duration)
    finally:
        fake.stop()
        embedded.stop()
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results" / f"sync-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    os.sync()


if __name__ == "__main__":
    main()
