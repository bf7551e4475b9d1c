"""Writeback delivery throughput: `python -m bench.writeback_throughput`.

Queues N events (Reapit connection, events spread over many contacts) in a fresh database,
starts `nurturehub worker` processes against the fake CRM of the tests (tests/fake_crm.py) on
127.0.0.1, and reports events per second from the first delivery to the last (process start-up
excluded), for each worker count and each simulated CRM latency. Each configuration runs on a
freshly filled queue; the table shows the median of --rounds. Not a test: these machines are
shared and noisy, so compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from procedures.crm_credentials import seal_credentials
from seeds.crm_providers import seed
from server.crypto import Keyring, new_key_entry
from server.db import Database
from server.embedded import EmbeddedPostgres
from server.migrate import Migrator
from tests.fake_crm import FakeCrm


def fill(url: str, keyring: Keyring, events: int, contacts: int) -> str:
    """A new organisation, its Reapit connection, `contacts` contacts and `events` events."""
    org, connection = uuid.uuid4(), uuid.uuid4()
    sealed = seal_credentials(keyring, org, connection, {"customerId": "SBOX"})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES (%s, 'Bench Agency')", (org,))
        conn.execute(
            "INSERT INTO crm_connections (organisation_id, id, provider_id, status,"
            " encrypted_credentials) VALUES (%s, %s, 'reapit', 'active', %s)",
            (org, connection, sealed),
        )
        conn.execute(
            "INSERT INTO contacts (organisation_id, import_source, crm_connection_id, external_id)"
            " SELECT %s, 'crm_sync', %s, 'RPT' || lpad(n::text, 8, '0')"
            " FROM generate_series(1, %s) AS n",
            (org, connection, contacts),
        )
        conn.execute(
            "INSERT INTO crm_writeback_queue (organisation_id, connection_id, provider_id,"
            " contact_id, event_type, payload)"
            " SELECT %s, %s, 'reapit', c.id, 'email_opened',"
            "   jsonb_build_object('subject', 'bench ' || n, 'openedAt', '2026-03-20T09:00:00Z')"
            " FROM generate_series(1, %s) AS n"
            " JOIN LATERAL (SELECT id FROM contacts WHERE organisation_id = %s"
            "   ORDER BY id OFFSET (n %% %s) LIMIT 1) AS c ON true",
            (org, connection, events, org, contacts),
        )
    return str(org)


def delivered(url: str, org: str) -> tuple[int, float]:
    """How many events of `org` succeeded, and seconds from the first completion to the last."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(completed_at) - min(completed_at))"
            " FROM crm_writeback_queue WHERE organisation_id = %s AND status = 'success'",
            (org,),
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


def measure(
    url: str, keyring_spec: str, fake: FakeCrm, args: argparse.Namespace, workers: int
) -> dict[str, Any]:
    org = fill(url, Keyring.parse(keyring_spec), args.events, args.contacts)
    env = {
        **os.environ,
        **fake.env(),
        "DATABASE_URL": url,
        "NURTUREHUB_ENCRYPTION_KEYS": keyring_spec,
        "NURTUREHUB_LOG_LEVEL": "WARNING",
    }
    env.pop("NURTUREHUB_ENCRYPTION_KEYS_FILE", None)
    command = [sys.executable, "-m", "server.cli", "worker", "--concurrency", str(args.concurrency)]
    logs = tempfile.TemporaryFile()
    processes = [subprocess.Popen(command, env=env, stdout=logs, stderr=logs) for _ in range(workers)]
    deadline = time.monotonic() + args.timeout
    try:
        while delivered(url, org)[0] < args.events:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {delivered(url, org)[0]} of {args.events} delivered")
            time.sleep(0.2)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    count, seconds = delivered(url, org)
    return {
        "workers": workers,
        "events": count,
        "seconds": seconds,
        "events_per_s": (count - 1) / seconds if seconds else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8, help="deliveries in flight per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--latency-ms", type=float, nargs="+", default=[0, 50], help="the fake CRM's answer time"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    embedded = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="nh-bench-wb-")), cleanup="delete")
        url = embedded.start()

    async def prepare() -> None:
        db = Database(url, pool_size=1)
        await Migrator(db.url).init()
        await seed(db)
        await db.close()

    fake = FakeCrm()
    try:
        asyncio.run(prepare())
        spec = new_key_entry()
        print(
            f"{args.events} events over {args.contacts} contacts, {args.concurrency} in flight "
            f"per worker, fake Reapit on 127.0.0.1, {os.cpu_count()} CPUs (shared)"
        )
        print(f"{'CRM latency':>12} {'workers':>8} {'events/s':>10}   rounds")
        for latency in args.latency_ms:
            fake.delay = latency / 1000
            medians: dict[int, float] = {}
            for workers in args.workers:
                rates = [measure(url, spec, fake, args, workers)["events_per_s"] for _ in range(args.rounds)]
                medians[workers] = statistics.median(rates)
                print(
                    f"{latency:>10.0f}ms {workers:>8} {medians[workers]:>10.0f}   "
                    + ", ".join(f"{r:.0f}" for r in rates),
                    flush=True,
                )
            low, high = min(args.workers), max(args.workers)
            print(f"{'':>12} {high} vs {low} workers: x{medians[high] / medians[low]:.2f}")
    finally:
        fake.stop()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
