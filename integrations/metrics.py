"""The writeback queue's gauges for GET /metrics, measured when scraped.

Depth counts only the open statuses (pending, processing): each has a partial index, so the
count reads the index and not the table's history of delivered events; failed events are listed
by crm.listWriteback. Labels are the status and the provider id, both closed sets in the schema.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.db import Tx, sql
from server.metrics import Gauge

__all__ = ["collect"]

OPEN_STATUSES = ("pending", "processing")

QUEUE_DEPTH = sql("""
    SELECT status, provider_id, count(*) AS entries
      FROM crm_writeback_queue
     WHERE status IN ('pending', 'processing')
     GROUP BY status, provider_id
""")
# Due now and not yet claimed: how far behind the workers are.
OLDEST_DUE = sql("""
    SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS age
      FROM crm_writeback_queue
     WHERE status = 'pending' AND next_attempt_at <= now()
""")
PROVIDERS = sql("SELECT id FROM crm_providers ORDER BY id")


async def collect(tx: Tx) -> Sequence[Gauge]:
    counts = {(row["status"], row["provider_id"]): row["entries"] for row in await tx.all(QUEUE_DEPTH)}
    providers = [row["id"] for row in await tx.all(PROVIDERS)]
    depth = Gauge(
        "nurturehub_writeback_queue_entries",
        "Writeback events not yet delivered or given up, by status and provider.",
        [
            ({"status": status, "provider": provider}, float(counts.get((status, provider), 0)))
            for status in OPEN_STATUSES
            for provider in providers
        ],
    )
    age = await tx.scalar(OLDEST_DUE)
    oldest = Gauge(
        "nurturehub_writeback_oldest_due_age_seconds",
        "Seconds the longest-due pending writeback event has waited past its due time.",
        [({}, float(age or 0.0))],
    )
    return [depth, oldest]
