"""`nurturehub worker`: deliver the writeback queue to the CRMs.

Each loop claims due events with FOR UPDATE SKIP LOCKED, so any number of workers share the
queue without taking the same event, and holds them under a lease: an event whose worker died
is claimed again once its lease runs out. Only the oldest open event of a (connection, contact)
pair is ever claimable, so one contact's events reach the CRM in the order they were queued.
A delivery ends in one of four outcomes, decided here from the CRM's answer:

    success     2xx                          done; a pending connection becomes active
    retry       408, 425, 429, 5xx, timeout  again later (backoff with jitter, or Retry-After),
                or unreachable               failed once max_attempts are spent
    auth_error  401, 403, refused creds      the connection goes to error; the event waits,
                                             its attempt not spent, until an admin fixes it
    failed      other 4xx, no write API      failed at once: sending it again cannot help

Every delivery leaves an attempt row (status code, duration, an error we wrote ourselves: never
the CRM's response body, a credential or the payload).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import httpx

from integrations.config import CrmConfig
from integrations.events import PAYLOADS
from integrations.limits import Limiter
from integrations.process import prepare, run_until_stopped
from integrations.providers import (
    Adapter,
    AuthRejected,
    Delivery,
    NotDeliverable,
    TransientFailure,
    build_adapters,
    reaching,
)
from integrations.providers.base import retry_after_seconds
from procedures.crm_credentials import open_credentials
from server.crypto import CryptoError, Keyring
from server.db import Database, sql

__all__ = ["Outcome", "Worker", "backoff_delay", "main", "retry_after_seconds"]

log = logging.getLogger("nurturehub.worker")

# Two claims, each walking its own partial index in order and stopping at :limit rows: due
# pending events (by next_attempt_at) and events whose lease ran out (by lease_expires_at).
# Either way only the oldest open event of its (connection, contact) qualifies.
_CLAIM = """
    WITH due AS (
        SELECT q.organisation_id, q.id
          FROM crm_writeback_queue q
          JOIN crm_connections c ON c.organisation_id = q.organisation_id AND c.id = q.connection_id
         WHERE {condition}
           AND c.status IN ('active', 'pending')
           -- Never an event this worker still has in flight (a slow answer outliving the
           -- lease), nor one of a connection already holding its share of this worker's slots.
           AND NOT (q.id = ANY (CAST(:inflight AS uuid[])))
           AND NOT (q.connection_id = ANY (CAST(:busy AS uuid[])))
           AND NOT EXISTS (
               SELECT 1 FROM crm_writeback_queue older
                WHERE older.organisation_id = q.organisation_id
                  AND older.connection_id = q.connection_id
                  AND older.contact_id = q.contact_id
                  AND older.status IN ('pending', 'processing')
                  AND older.seq < q.seq)
         ORDER BY {order}
         LIMIT :limit
           FOR UPDATE OF q SKIP LOCKED
    )
    UPDATE crm_writeback_queue q
       SET status = 'processing', locked_by = :worker, updated_at = now(),
           lease_expires_at = now() + make_interval(secs => :lease),
           -- An expired lease is an attempt whose worker died mid-way (its attempt row says
           -- so): it is spent, so an event that kills every worker still runs out of tries.
           attempts = q.attempts + CASE WHEN q.status = 'processing' THEN 1 ELSE 0 END
      FROM due, crm_connections c, contacts ct
     WHERE q.organisation_id = due.organisation_id AND q.id = due.id
       AND c.organisation_id = q.organisation_id AND c.id = q.connection_id
       AND ct.organisation_id = q.organisation_id AND ct.id = q.contact_id
    RETURNING q.organisation_id, q.id, q.connection_id, q.provider_id, q.event_type, q.payload,
              q.attempts, q.max_attempts, c.encrypted_credentials, c.settings,
              CASE WHEN ct.crm_connection_id = q.connection_id THEN ct.external_id END
                  AS external_contact_id
"""
CLAIM_EXPIRED = sql(
    _CLAIM.format(
        condition="q.status = 'processing' AND q.lease_expires_at <= now()",
        order="q.lease_expires_at",
    )
)
CLAIM_DUE = sql(
    _CLAIM.format(
        condition="q.status = 'pending' AND q.next_attempt_at <= now()",
        order="q.next_attempt_at",
    )
)

_MINE = "organisation_id = :organisation_id AND id = :id AND status = 'processing' AND locked_by = :worker"

FINISH_SUCCESS = sql(f"""
    UPDATE crm_writeback_queue
       SET status = 'success', attempts = attempts + 1, lease_expires_at = NULL, locked_by = NULL,
           last_error = NULL, external_id = :external_id, completed_at = now(), updated_at = now()
     WHERE {_MINE}
    RETURNING attempts
""")
FINISH_RETRY = sql(f"""
    UPDATE crm_writeback_queue
       SET attempts = attempts + 1, lease_expires_at = NULL, locked_by = NULL,
           last_error = :error, updated_at = now(),
           status = CASE WHEN attempts + 1 >= max_attempts THEN 'failed' ELSE 'pending' END,
           completed_at = CASE WHEN attempts + 1 >= max_attempts THEN now() END,
           next_attempt_at = now() + make_interval(secs => :delay)
     WHERE {_MINE}
    RETURNING attempts, status
""")
FINISH_FAILED = sql(f"""
    UPDATE crm_writeback_queue
       SET status = 'failed', attempts = attempts + 1, lease_expires_at = NULL, locked_by = NULL,
           last_error = :error, completed_at = now(), updated_at = now()
     WHERE {_MINE}
    RETURNING attempts
""")
# A rate limit is the CRM's pace, not the event's fault: back to pending, its attempts
# unspent, due when the CRM said (issue 17: eight 429s no longer fail an event).
FINISH_RATE_LIMITED = sql(f"""
    UPDATE crm_writeback_queue
       SET status = 'pending', lease_expires_at = NULL, locked_by = NULL, last_error = :error,
           next_attempt_at = now() + make_interval(secs => :delay), updated_at = now()
     WHERE {_MINE}
    RETURNING attempts + 1 AS attempts, 'pending' AS status
""")
# Back to pending with its attempts unspent: it waits for the connection to be fixed.
RELEASE = sql(f"""
    UPDATE crm_writeback_queue
       SET status = 'pending', lease_expires_at = NULL, locked_by = NULL, updated_at = now(),
           last_error = coalesce(:error, last_error)
     WHERE {_MINE}
    RETURNING attempts + 1 AS attempts
""")
# The attempt row is written as the attempt starts, saying what a worker that dies before the
# answer leaves behind (issue 17: crashed attempts left no row), and completed with the answer.
START_ATTEMPT = sql("""
    INSERT INTO crm_writeback_attempts
           (organisation_id, queue_id, attempt, started_at, duration_ms, outcome, error)
    VALUES (:organisation_id, :queue_id, :attempt, now(), 0, 'retry', :error)
    RETURNING id, started_at
""")
FINISH_ATTEMPT = sql("""
    UPDATE crm_writeback_attempts
       SET attempt = :attempt, duration_ms = :duration_ms, status_code = :status_code,
           outcome = :outcome, error = :error
     WHERE organisation_id = :organisation_id AND id = :id
""")
# A live worker keeps its in-flight events' leases short and renewed; whichever it no longer
# holds (re-claimed after a stall, cancelled) is left out of the answer.
RENEW_LEASES = sql("""
    UPDATE crm_writeback_queue
       SET lease_expires_at = now() + make_interval(secs => :lease)
     WHERE id = ANY (CAST(:ids AS uuid[])) AND status = 'processing' AND locked_by = :worker
    RETURNING id
""")
NO_ANSWER = "no answer recorded: the worker stopped during this attempt"
# Every delivery succeeding on one connection would queue on this row's lock, so it is written
# only to activate a pending connection or when last_synced_at is a minute old.
CONNECTION_OK = sql("""
    UPDATE crm_connections
       SET status = CASE WHEN status = 'pending' THEN 'active' ELSE status END,
           last_synced_at = now(), updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :connection_id
       AND (status = 'pending' OR last_synced_at IS NULL
            OR last_synced_at < now() - interval '1 minute')
""")
CONNECTION_ERROR = sql("""
    UPDATE crm_connections
       SET status = 'error', last_error_message = :error, last_error_at = now(), updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :connection_id
       AND status IN ('active', 'pending')
""")
# A 429 holds back every waiting event of the connection, not just the one that was refused.
HOLD_CONNECTION = sql("""
    UPDATE crm_writeback_queue
       SET next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => :delay))
     WHERE organisation_id = :organisation_id AND connection_id = :connection_id
       AND status = 'pending'
""")


# ... and the connection's next poll (sync.py), which another process runs.
HOLD_SYNC = sql("""
    UPDATE crm_connections
       SET next_sync_at = greatest(coalesce(next_sync_at, now()),
                                   now() + make_interval(secs => :delay))
     WHERE organisation_id = :organisation_id AND id = :connection_id
""")


@dataclass(frozen=True)
class Outcome:
    kind: str  # 'success' | 'retry' | 'auth_error' | 'failed'
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class _Claimed:
    organisation_id: UUID
    id: UUID
    connection_id: UUID
    provider_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    sealed: bytes
    settings: dict[str, Any]
    external_contact_id: str | None

    def __repr__(self) -> str:
        return f"_Claimed(id={self.id})"


@dataclass(frozen=True)
class _Recorded:
    attempt: int
    status: str  # the queue entry's status now
    retry_in: float | None  # seconds until the next try, for a retry


# The entry's status after each outcome, unless the update says (a retry may spend the last try).
_STATUS_AFTER = {"success": "success", "retry": "pending", "auth_error": "pending", "failed": "failed"}
_LOG_MESSAGES = {
    "success": "writeback delivered",
    "retry": "writeback not delivered, will retry",
    "auth_error": "writeback held: the CRM refused the credentials",
    "failed": "writeback failed, no more tries",
}


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds before try `attempt + 1`: base * 4**(attempt-1), capped, with +-25% jitter."""
    delay: float = min(cap, base * 4.0 ** max(0, attempt - 1))
    return delay * random.uniform(0.75, 1.25)


def classify(response: httpx.Response, adapter: Adapter, writeback_max_retry_after: float) -> Outcome:
    code = response.status_code
    name = adapter.name
    if 200 <= code < 300:
        return Outcome("success", code, external_id=adapter.external_id(response))
    if code in (401, 403):
        return Outcome("auth_error", code, f"{name} refused the credentials (HTTP {code})")
    if code == 429:
        wait = retry_after_seconds(response.headers.get("retry-after"), writeback_max_retry_after)
        return Outcome("retry", code, f"{name} is rate limiting (HTTP 429)", retry_after=wait)
    if code in (408, 425) or code >= 500:
        return Outcome("retry", code, f"{name} answered HTTP {code}")
    return Outcome("failed", code, f"{name} rejected the entry (HTTP {code})")


class Worker:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        config: CrmConfig,
        *,
        concurrency: int = 4,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.config = config
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.adapters = build_adapters(config)
        self.delivered = 0
        # What this worker has in flight: event ids, and per connection how many.
        self._events: set[UUID] = set()
        self._per_connection: dict[UUID, int] = {}
        # One connection's hanging CRM may hold at most this many slots, so the others'
        # deliveries still go (issue 17: another agency waited 20.9 s instead of 1.3 s).
        self.share = max(1, concurrency // 2)
        self._release_soon: list[_Claimed] = []
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self.limiter = Limiter("writeback", db.url)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then finish or release what is in flight."""
        timeout = httpx.Timeout(self.config.crm_timeout)
        limits = httpx.Limits(max_connections=max(10, self.concurrency * 2))
        inflight: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        renewing = asyncio.create_task(self._renew_leases())
        # Claim in batches of at least a quarter of the slots: one claim per delivery would
        # spend more time claiming than delivering.
        batch = max(1, self.concurrency // 4)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as http:
            while not stop.is_set():
                free = self.concurrency - len(inflight)
                claimed: list[_Claimed] = []
                if free >= batch or (free > 0 and not inflight):
                    try:
                        claimed = await self._claim(free)
                    except Exception:
                        log.exception("claiming writeback events failed")
                while self._release_soon:
                    await self._release(self._release_soon.pop())
                for event in claimed:
                    task = asyncio.create_task(self._deliver(http, event))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    self._tasks[event.id] = task
                if len(claimed) < free or free < batch:
                    # Nothing more is due: wait for a delivery to end (its successor may now be
                    # due), for the next poll, or for the stop signal.
                    await asyncio.wait(
                        {*inflight, stopping},
                        timeout=self.config.writeback_poll_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            if inflight:
                _, pending = await asyncio.wait(inflight, timeout=self.config.writeback_grace_seconds)
                for task in pending:
                    task.cancel()  # each releases its event as it unwinds
                if pending:
                    await asyncio.wait(pending, timeout=10)
        renewing.cancel()
        stopping.cancel()

    async def _renew_leases(self) -> None:
        """Every third of the lease, renew the leases of what is in flight, so a lease can be
        short (a killed worker's events wait seconds, not a minute) and yet never run out under
        a live delivery. A delivery whose lease was lost is cancelled, so it never overlaps the
        write of whoever holds the event now; so is everything in flight once the leases cannot
        have been renewed for two thirds of the lease (the database is out of reach)."""
        lease = self.config.writeback_lease_seconds
        renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(lease / 3)
            ids = list(self._tasks)
            if not ids:
                renewed_at = time.monotonic()
                continue
            try:
                async with self.db.transaction() as tx:
                    rows = await tx.all(
                        RENEW_LEASES, {"ids": ids, "worker": self.worker_id, "lease": lease}
                    )
                held = {row["id"] for row in rows}
                renewed_at = time.monotonic()
                lost = [i for i in ids if i not in held]
            except Exception:
                log.exception("renewing writeback leases failed")
                lost = ids if time.monotonic() - renewed_at > lease * 2 / 3 else []
            for event_id in lost:
                task = self._tasks.get(event_id)
                if task is not None and event_id in self._events:
                    log.warning("writeback lease lost; the delivery is cancelled")
                    task.cancel()

    async def _claim(self, limit: int) -> list[_Claimed]:
        busy = [c for c, n in self._per_connection.items() if n >= self.share]
        params = {
            "limit": limit,
            "worker": self.worker_id,
            "lease": self.config.writeback_lease_seconds,
            "inflight": list(self._events),
            "busy": busy,
        }
        async with self.db.transaction() as tx:
            rows = list(await tx.all(CLAIM_EXPIRED, params))
            if len(rows) < limit:
                rows += await tx.all(CLAIM_DUE, {**params, "limit": limit - len(rows)})
        claimed = self._within_share(self._claimed(rows))
        for event in claimed:
            self._events.add(event.id)
            self._per_connection[event.connection_id] = self._per_connection.get(event.connection_id, 0) + 1
        return claimed

    def _within_share(self, events: list[_Claimed]) -> list[_Claimed]:
        """The claimed events a connection's share allows; the rest are released unspent."""
        kept, counts = [], dict(self._per_connection)
        for event in events:
            if counts.get(event.connection_id, 0) >= self.share:
                self._release_soon.append(event)
                continue
            counts[event.connection_id] = counts.get(event.connection_id, 0) + 1
            kept.append(event)
        return kept

    def _claimed(self, rows: list[Any]) -> list[_Claimed]:
        return [
            _Claimed(
                organisation_id=row["organisation_id"],
                id=row["id"],
                connection_id=row["connection_id"],
                provider_id=row["provider_id"],
                event_type=row["event_type"],
                payload=row["payload"],
                attempts=row["attempts"],
                sealed=bytes(row["encrypted_credentials"]),
                settings=row["settings"],
                external_contact_id=row["external_contact_id"],
            )
            for row in rows
        ]

    async def _deliver(self, http: httpx.AsyncClient, event: _Claimed) -> None:
        try:
            await self._deliver_one(http, event)
        finally:
            self._events.discard(event.id)
            self._tasks.pop(event.id, None)
            left = self._per_connection.get(event.connection_id, 1) - 1
            if left > 0:
                self._per_connection[event.connection_id] = left
            else:
                self._per_connection.pop(event.connection_id, None)

    async def _deliver_one(self, http: httpx.AsyncClient, event: _Claimed) -> None:
        try:
            async with self.db.transaction() as tx:
                attempt_id = await tx.scalar(
                    START_ATTEMPT,
                    {
                        "organisation_id": event.organisation_id,
                        "queue_id": event.id,
                        "attempt": event.attempts + 1,
                        "error": NO_ANSWER,
                    },
                )
        except asyncio.CancelledError:
            await asyncio.shield(self._release(event))
            raise
        except Exception:
            # Nothing was sent: the event goes back, its attempt unspent.
            log.exception("recording a writeback attempt's start failed")
            await self._release(event)
            return
        started = time.perf_counter()
        try:
            outcome = await self._attempt(http, event)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(event))
            raise
        duration_ms = round((time.perf_counter() - started) * 1000)
        try:
            recorded = await self._finish(event, outcome, attempt_id, duration_ms)
        except Exception:
            # The lease runs out and another worker (or this one) delivers it again.
            log.exception("recording a writeback outcome failed")
            return
        if recorded is not None:
            self._log(event, outcome, recorded, duration_ms)

    def _log(self, event: _Claimed, outcome: Outcome, recorded: _Recorded, duration_ms: int) -> None:
        """One line per delivery: ids, codes and our own reason; never the payload, the
        contact's details or a credential (the reason is written here or by an adapter)."""
        status = recorded.status
        message = _LOG_MESSAGES[outcome.kind if status != "failed" else "failed"]
        log.log(
            logging.INFO if outcome.kind == "success" else logging.WARNING,
            message,
            extra={
                "rpc": {
                    "event": str(event.id),
                    "organisationId": str(event.organisation_id),
                    "connection": str(event.connection_id),
                    "provider": event.provider_id,
                    "eventType": event.event_type,
                    "outcome": outcome.kind,
                    "statusCode": outcome.status_code,
                    "reason": outcome.error,
                    "attempt": recorded.attempt,
                    "status": status,
                    "retryInSeconds": recorded.retry_in,
                    "durationMs": duration_ms,
                    "worker": self.worker_id,
                }
            },
        )

    async def _attempt(self, http: httpx.AsyncClient, event: _Claimed) -> Outcome:
        adapter = self.adapters[event.provider_id]
        if event.external_contact_id is None:
            return Outcome("failed", error="the contact no longer has a record in this CRM")
        try:
            credentials = open_credentials(
                self.keyring, event.organisation_id, event.connection_id, event.sealed
            )
        except CryptoError as exc:
            # The message names a key id at most; it is written for admins.
            return Outcome("auth_error", error=f"credentials cannot be read: {exc}")
        delivery = Delivery(
            event_id=event.id,
            event_type=event.event_type,
            payload=PAYLOADS[event.event_type].model_validate(event.payload),
            external_contact_id=event.external_contact_id,
            credentials=credentials,
            settings=event.settings,
        )
        deadline = self.config.crm_deadline
        gate = self.limiter.gate(event.provider_id, event.connection_id, event.organisation_id)
        try:
            # Within the connection's limits (integrations/limits.py), then one deadline for the
            # whole request: a response that trickles in a byte at a time never trips the
            # per-read timeout.
            async with gate, asyncio.timeout(deadline):
                response = await reaching(adapter.name, adapter.deliver(http, delivery))
        except TimeoutError:
            return Outcome("retry", error=f"{adapter.name} did not finish answering within {deadline:g} s")
        except AuthRejected as exc:
            return Outcome("auth_error", exc.status_code, str(exc))
        except TransientFailure as exc:
            return Outcome("retry", exc.status_code, str(exc))
        except NotDeliverable as exc:
            return Outcome("failed", error=f"not delivered: {exc}")
        except Exception:
            log.exception("writeback delivery failed unexpectedly")
            return Outcome("retry", error="unexpected error in the adapter (see the worker log)")
        outcome = classify(response, adapter, self.config.writeback_max_retry_after)
        if outcome.status_code == 429:
            # The CRM's wait, or the provider's own when it names none (agentOS: 60 s).
            return replace(outcome, retry_after=gate.rate_limited(outcome.retry_after))
        gate.succeeded()
        return outcome

    async def _finish(
        self, event: _Claimed, outcome: Outcome, attempt_id: UUID, duration_ms: int
    ) -> _Recorded | None:
        """Record the outcome; None when the event is no longer ours (cancelled, re-claimed)."""
        mine = {"organisation_id": event.organisation_id, "id": event.id, "worker": self.worker_id}
        scope = {"organisation_id": event.organisation_id, "connection_id": event.connection_id}
        delay: float | None = None
        async with self.db.transaction() as tx:
            if outcome.kind == "success":
                row = await tx.one(FINISH_SUCCESS, {**mine, "external_id": outcome.external_id})
                if row is not None:
                    await tx.execute(CONNECTION_OK, scope)
                    self.delivered += 1
            elif outcome.kind == "retry":
                delay = outcome.retry_after
                if delay is None:
                    c = self.config
                    delay = backoff_delay(
                        event.attempts + 1, c.writeback_backoff_base, c.writeback_backoff_cap
                    )
                if outcome.status_code == 429:
                    if outcome.retry_after is None:
                        delay = self.config.writeback_backoff_base
                    row = await tx.one(FINISH_RATE_LIMITED, {**mine, "error": outcome.error, "delay": delay})
                    if row is not None:
                        await tx.execute(HOLD_CONNECTION, {**scope, "delay": delay})
                        await tx.execute(HOLD_SYNC, {**scope, "delay": delay})
                else:
                    row = await tx.one(FINISH_RETRY, {**mine, "error": outcome.error, "delay": delay})
            elif outcome.kind == "auth_error":
                row = await tx.one(RELEASE, {**mine, "error": outcome.error})
                await tx.execute(CONNECTION_ERROR, {**scope, "error": outcome.error})
            else:
                row = await tx.one(FINISH_FAILED, {**mine, "error": outcome.error})
            if row is None:
                return None  # the event was cancelled or re-claimed meanwhile: nothing to log
            await tx.execute(
                FINISH_ATTEMPT,
                {
                    "organisation_id": event.organisation_id,
                    "id": attempt_id,
                    "attempt": row["attempts"],
                    "duration_ms": duration_ms,
                    "status_code": outcome.status_code,
                    "outcome": outcome.kind,
                    "error": outcome.error[:500] if outcome.error else None,
                },
            )
        status = row.get("status") or _STATUS_AFTER[outcome.kind]
        return _Recorded(row["attempts"], status, delay if status == "pending" else None)

    async def _release(self, event: _Claimed) -> None:
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    RELEASE,
                    {
                        "organisation_id": event.organisation_id,
                        "id": event.id,
                        "worker": self.worker_id,
                        "error": None,
                    },
                )
        except Exception:
            log.exception("releasing a writeback event failed; its lease will run out")


async def _serve(database_url: str, keyring: Keyring, concurrency: int) -> None:
    config = CrmConfig.from_env()
    db = Database(database_url, pool_size=concurrency + 2)
    worker = Worker(db, keyring, config, concurrency=concurrency)
    await run_until_stopped(
        worker,
        db,
        f"NurtureHub worker {worker.worker_id}: delivering CRM writeback "
        f"(concurrency {concurrency}; SIGTERM or Ctrl-C to stop)",
        lambda: f"NurtureHub worker stopped after {worker.delivered} deliveries",
    )


def main(database_url: str, keyring: Keyring, concurrency: int) -> None:
    """The `nurturehub worker` command (loaded by import path from server/cli.py)."""
    prepare("worker", keyring)
    asyncio.run(_serve(database_url, keyring, concurrency))
