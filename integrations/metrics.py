"""The CRM queues' gauges for GET /metrics, measured when scraped: the writeback queue and the
sync's webhook inbox, each by status and provider, and how long the longest-due entry has waited.

Depth counts only the open statuses (writeback: pending, processing; inbox: received, processing,
and unrouted, which waits for a connection to claim it): each has a partial index, so the count
reads the index and not the table's history; finished entries are listed by crm.listWriteback and
crm.listWebhookEvents. Labels are the status and the provider id, both closed sets in the schema.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.db import Statement, Tx, sql
from server.metrics import Gauge

__all__ = ["collect"]

WRITEBACK_OPEN = ("pending", "processing")
INBOX_OPEN = ("received", "processing", "unrouted")

WRITEBACK_DEPTH = sql("""
    SELECT status, provider_id, count(*) AS entries
      FROM crm_writeback_queue
     WHERE status IN ('pending', 'processing')
     GROUP BY status, provider_id
""")
INBOX_DEPTH = sql("""
    SELECT status, provider_id, count(*) AS entries
      FROM crm_webhook_inbox
     WHERE status IN ('received', 'processing', 'unrouted')
     GROUP BY status, provider_id
""")
# Due now and not yet claimed: how far behind the workers are.
WRITEBACK_OLDEST_DUE = sql("""
    SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS age
      FROM crm_writeback_queue
     WHERE status = 'pending' AND next_attempt_at <= now()
""")
INBOX_OLDEST_DUE = sql("""
    SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS age
      FROM crm_webhook_inbox
     WHERE status = 'received' AND next_attempt_at <= now()
""")
PROVIDERS = sql("SELECT id FROM crm_providers ORDER BY id")


async def _depth(
    tx: Tx, query: Statement, statuses: Sequence[str], providers: Sequence[str], name: str, about: str
) -> Gauge:
    counts = {(row["status"], row["provider_id"]): row["entries"] for row in await tx.all(query)}
    return Gauge(
        name,
        about,
        [
            ({"status": status, "provider": provider}, float(counts.get((status, provider), 0)))
            for status in statuses
            for provider in providers
        ],
    )


async def _oldest(tx: Tx, query: Statement, name: str, about: str) -> Gauge:
    return Gauge(name, about, [({}, float(await tx.scalar(query) or 0.0))])


async def collect(tx: Tx) -> Sequence[Gauge]:
    providers = [row["id"] for row in await tx.all(PROVIDERS)]
    return [
        await _depth(
            tx, WRITEBACK_DEPTH, WRITEBACK_OPEN, providers, "nurturehub_writeback_queue_entries",
            "Writeback events not yet delivered or given up, by status and provider.",
        ),
        await _oldest(
            tx, WRITEBACK_OLDEST_DUE, "nurturehub_writeback_oldest_due_age_seconds",
            "Seconds the longest-due pending writeback event has waited past its due time.",
        ),
        await _depth(
            tx, INBOX_DEPTH, INBOX_OPEN, providers, "nurturehub_sync_inbox_entries",
            "Webhook events not yet applied, by status (unrouted: no connection yet) and provider.",
        ),
        await _oldest(
            tx, INBOX_OLDEST_DUE, "nurturehub_sync_inbox_oldest_due_age_seconds",
            "Seconds the longest-due received webhook event has waited past its due time.",
        ),
    ]
