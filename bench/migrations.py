"""What `nurturehub db migrate` costs on a large database: each step's time, the locks it took,
and how long reads and writes of contacts waited meanwhile.

    python -m bench.migrations [--contacts 1000000] [--database-url URL]

Builds the oldest schema it upgrades (migrations/baseline/) on a new embedded PostgreSQL (or a new
database on DATABASE_URL's server), loads bench.dataset's contacts into it, then runs the
migration runner while a probe reads one contact and updates another every 10 ms on a
connection of its own, and a sampler lists every lock the runner's backend holds (pg_locks,
every 2 ms). Prints one JSON line and writes it to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import dataset
from server.embedded import EmbeddedPostgres
from server.migrate import Migrator
from server.schema import SchemaFiles

# The runner's locks on the application's tables and its advisory lock; the catalog locks and
# those on the scratch schema it compares against (rolled back) say nothing about traffic.
_LOCKS = """
    SELECT coalesce(c.relname, l.locktype), l.mode FROM pg_locks AS l
      JOIN pg_stat_activity AS a ON a.pid = l.pid
      LEFT JOIN pg_class AS c ON c.oid = l.relation
      LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
     WHERE a.application_name = 'nurturehub migrate' AND l.granted
       AND (l.locktype = 'advisory' OR n.nspname = 'public')
"""


class Probe(threading.Thread):
    """Reads one contact and updates another every 10 ms; keeps each call's latency."""

    def __init__(self, url: str, organisation_id: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.organisation_id, self.ids = url, organisation_id, ids
        self.reads: list[float] = []
        self.writes: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            n = 0
            while not self.stop.is_set():
                contact = self.ids[n % len(self.ids)]
                started = time.perf_counter()
                conn.execute("SELECT first_name FROM contacts WHERE organisation_id = %s AND id = %s",
                             (self.organisation_id, contact))
                self.reads.append(time.perf_counter() - started)
                started = time.perf_counter()
                conn.execute("UPDATE contacts SET updated_at = now() WHERE organisation_id = %s AND id = %s",
                             (self.organisation_id, contact))
                self.writes.append(time.perf_counter() - started)
                n += 1
                time.sleep(0.01)


class LockSampler(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: set[tuple[str, str]] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                self.seen.update((str(r[0]), str(r[1])) for r in conn.execute(_LOCKS).fetchall())
                time.sleep(0.002)


def measure(url: str, contacts: int) -> dict[str, Any]:
    files = SchemaFiles.load()
    source = files.oldest
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(files.baseline_text.encode())
    loaded = asyncio.run(dataset.load(url, contacts))
    with psycopg.connect(url, autocommit=True) as conn:
        # One audit row per contact, as contacts.create leaves: steps that touch audit_log (0007
        # re-keys it) are measured on a table of realistic size.
        conn.execute(
            "INSERT INTO audit_log (organisation_id, action, target_type, target_id)"
            " SELECT organisation_id, 'contacts.create', 'contact', id::text FROM contacts"
        )
    main = loaded.organisations[0]
    probe = Probe(url, main.id, loaded.sample_contact_ids)
    sampler = LockSampler(url)
    probe.start()
    sampler.start()
    time.sleep(1)  # the probe's figures before the migration, for comparison
    before = (max(probe.reads), max(probe.writes))
    started = time.perf_counter()
    result = asyncio.run(Migrator(url).migrate())
    total = time.perf_counter() - started
    time.sleep(0.2)
    for thread in (probe, sampler):
        thread.stop.set()
        thread.join(5)
    return {
        "contacts": contacts,
        "from": source,
        "to": files.head,
        "steps": result["applied"],
        "migrateSeconds": round(total, 3),
        "locksSeen": sorted(f"{relation}: {mode}" for relation, mode in sampler.seen),
        "probeWorstMsBefore": _ms(*before),
        "probeWorstMs": _ms(max(probe.reads), max(probe.writes)),
        "probeCalls": len(probe.reads) + len(probe.writes),
    }


def _ms(read: float, write: float) -> dict[str, float]:
    return {"read": round(read * 1000, 2), "write": round(write * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migrations", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    embedded = None
    if args.database_url:
        from tests.support import with_database_name

        name = f"nh_bench_migrations_{int(time.time())}"
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = with_database_name(args.database_url, name)
    else:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="nh-bench-migrations-")), cleanup="delete")
        url = embedded.start()
    try:
        figures = measure(url, args.contacts)
    finally:
        if embedded is not None:
            embedded.stop()
    line = json.dumps(figures)
    print(line)
    out = Path("bench/results") / f"migrations-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
