"""`nurturehub sync`: apply the webhook inbox and poll each connection's streams.

Both directions of claim follow the writeback worker: FOR UPDATE SKIP LOCKED under a lease, so
any number of sync processes share the work and two never hold one connection (or one event).

Inbox: each event is applied by the one apply path (integrations/inbound.py) in one transaction
with its status; its sealed payload is nulled then, whatever the outcome, so a person's data
does not outlive processing here. An event that carries no record (Reapit sends `new: null` on
archive) or was replayed after its payload was dropped is read again from the CRM.

Poll (the contacts stream; the cursor in crm_connections.sync_cursor, per stream):
    {"wm": last `modified` committed, "phase": "backfill" | "incremental", "reconciledAt"}
A run starts `lookback` before wm and always asks for page 1 with modifiedFrom = the last
modified time seen (inclusive): page-number paging over a changing set skips rows edited
mid-run, seek paging does not. A full page all stamped with one second is swept by page number
within that second. Each page's rows and the cursor commit in one transaction, so the cursor
is never ahead of committed rows and a killed run resumes where it stopped. Rows already held
at the same (modified, eTag) are skipped by the apply path; older ones never win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import orjson

from integrations.config import CrmConfig
from integrations.inbound import (
    Counts,
    apply_page,
    held_as_is,
    linked_people,
    mark_gone,
    mark_missing,
    mark_seen,
    outdated_by_delete,
    refs_of,
    store_refs,
)
from integrations.limits import Limiter
from integrations.process import prepare, run_until_stopped
from integrations.providers import PROVIDERS, build_adapters, pollable
from integrations.providers.base import (
    AuthRejected,
    Consent,
    FetchedPage,
    PersonDraft,
    RateLimited,
    RoleRef,
    SyncSettings,
    TransientFailure,
)
from integrations.webhooks import open_payload
from integrations.writeback import HOLD_CONNECTION
from procedures.crm_credentials import open_credentials
from server.crypto import CryptoError, Keyring
from server.db import Database, Row, Tx, sql
from server.keys import key_from_env

__all__ = ["STREAM", "SyncWorker", "main"]

log = logging.getLogger("nurturehub.sync")

STREAM = "contacts"
ONE_SECOND = timedelta(seconds=1)
# A walk's watermark is the CRM's clock at its start less this: rows committed in the CRM just
# before it started but not yet visible to its reads are read by the next walk.
WALK_LAG = timedelta(seconds=60)

CLAIM_EVENTS = sql("""
    WITH due AS (
        SELECT id FROM crm_webhook_inbox
         WHERE ((status = 'received' AND next_attempt_at <= now())
                OR (status = 'processing' AND lease_expires_at <= now()))
           AND (CAST(:only AS uuid[]) IS NULL OR connection_id = ANY (CAST(:only AS uuid[])))
         ORDER BY next_attempt_at
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    UPDATE crm_webhook_inbox i
       SET status = 'processing', locked_by = :worker,
           lease_expires_at = now() + make_interval(secs => :lease)
      FROM due
     WHERE i.id = due.id
    RETURNING i.id, i.provider_id, i.organisation_id, i.connection_id, i.topic, i.entity_id,
              i.event_time, i.payload, i.attempts
""")
SELECT_CONNECTION = sql("""
    SELECT organisation_id, id, provider_id, status, encrypted_credentials, settings, sync_cursor,
           tenant_ref
      FROM crm_connections WHERE organisation_id = :organisation_id AND id = :id
""")
FINISH_EVENT = sql("""
    UPDATE crm_webhook_inbox
       SET status = :status, outcome = :outcome, payload = NULL, lease_expires_at = NULL,
           locked_by = NULL, attempts = attempts + 1, processed_at = now(), last_error = NULL
     WHERE id = :id AND locked_by = :worker
""")
RETRY_EVENT = sql("""
    UPDATE crm_webhook_inbox
       SET attempts = attempts + 1, lease_expires_at = NULL, locked_by = NULL,
           last_error = :error,
           status = CASE WHEN attempts + 1 >= :max_attempts THEN 'dead' ELSE 'received' END,
           payload = CASE WHEN attempts + 1 >= :max_attempts THEN NULL ELSE payload END,
           next_attempt_at = now() + make_interval(secs => :delay)
     WHERE id = :id AND locked_by = :worker
""")

CLAIM_CONNECTION = sql("""
    WITH due AS (
        SELECT organisation_id, id FROM crm_connections
         WHERE sync_enabled AND status IN ('active', 'pending')
           AND provider_id = ANY (CAST(:providers AS text[]))
           AND (CAST(:only AS uuid[]) IS NULL OR id = ANY (CAST(:only AS uuid[])))
           AND coalesce(next_sync_at, '-infinity') <= now()
           AND coalesce(sync_lease_expires_at, '-infinity') <= now()
         ORDER BY next_sync_at NULLS FIRST
         LIMIT 1
           FOR UPDATE SKIP LOCKED)
    UPDATE crm_connections c
       SET sync_locked_by = :worker,
           sync_lease_expires_at = now() + make_interval(secs => :lease)
      FROM due
     WHERE c.organisation_id = due.organisation_id AND c.id = due.id
    RETURNING c.organisation_id, c.id, c.provider_id, c.encrypted_credentials, c.settings,
              c.sync_cursor, c.tenant_ref
""")
# Only while this process still holds the lease: a run that outlived it stops committing.
SAVE_CURSOR = sql("""
    UPDATE crm_connections
       SET sync_cursor = CAST(:cursor AS jsonb),
           sync_lease_expires_at = now() + make_interval(secs => :lease)
     WHERE organisation_id = :organisation_id AND id = :id AND sync_locked_by = :worker
    RETURNING id
""")
# A run making many calls between commits (a consent read per record) keeps its lease meanwhile.
HOLD_LEASE = sql("""
    UPDATE crm_connections SET sync_lease_expires_at = now() + make_interval(secs => :lease)
     WHERE organisation_id = :organisation_id AND id = :id AND sync_locked_by = :worker
    RETURNING id
""")
RELEASE_CONNECTION = sql("""
    UPDATE crm_connections
       SET sync_locked_by = NULL, sync_lease_expires_at = NULL,
           next_sync_at = now() + make_interval(secs => :delay),
           last_synced_at = CASE WHEN :ok THEN now() ELSE last_synced_at END,
           tenant_ref = coalesce(tenant_ref, :tenant_ref)
     WHERE organisation_id = :organisation_id AND id = :id AND sync_locked_by = :worker
""")
START_RUN = sql("""
    INSERT INTO crm_sync_runs (organisation_id, connection_id, stream, trigger)
    VALUES (:organisation_id, :connection_id, :stream, :trigger)
    RETURNING id
""")
UPDATE_RUN = sql("""
    UPDATE crm_sync_runs
       SET pages = :pages, fetched = :fetched, created = :created, updated = :updated,
           unchanged = :unchanged, suppressed = :suppressed, archived = :archived,
           field_errors = :field_errors, rate_limited = :rate_limited,
           status = :status, error = :error,
           finished_at = CASE WHEN :status = 'running' THEN NULL ELSE now() END
     WHERE organisation_id = :organisation_id AND id = :id
""")


@dataclass
class _Run:
    id: UUID
    counts: Counts
    pages: int = 0
    rate_limited: int = 0


@dataclass
class _Stream:
    """One stream's cursor during a run: the connection's whole cursor, the streams' states
    within it, this stream's, and when the run started."""

    name: str
    cursor_all: dict[str, Any]
    streams: dict[str, Any]
    state: dict[str, Any]
    now: datetime
    reconciled: datetime | None


@dataclass(frozen=True)
class _ScanPage:
    """A full scan's page: on its last, the stream's records not seen since `gone_before` (the
    previous complete scan's start; None after the first) are gone from the CRM."""

    gone_before: datetime | None = None


class LeaseLost(Exception):
    """Another process holds this connection now: stop without committing more."""


def _cursor_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class SyncWorker:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        config: CrmConfig,
        suppression_key: bytes,
        *,
        worker_id: str | None = None,
        only: list[UUID] | None = None,
    ) -> None:
        self.db = db
        self.only = only  # these connections alone (`nurturehub sync --connection`), else all
        self.keyring = keyring
        self.config = config
        self.suppression_key = suppression_key
        self.worker_id = worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.adapters = build_adapters(config)
        self.pollable = [pid for pid, a in self.adapters.items() if pollable(a)]
        self.applied = 0
        self.limiter = Limiter("sync", db.url)
        self._cursor_after: dict[str, Any] = {}  # the cursor as the last stream's run left it

    # The loop ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Apply the inbox and poll due connections until `stop` is set; what is in flight then
        gets the grace period, and what is not committed is read again by the next run.

        The inbox and the polls are two loops, so a long backfill never holds back a webhook
        (an opt-out must apply within seconds, not after a 10,000-contact read)."""
        async with httpx.AsyncClient(timeout=self.config.crm_timeout, follow_redirects=False) as http:
            await asyncio.gather(
                self._loop(stop, lambda: self.process_inbox(http), "inbox"),
                self._loop(stop, lambda: self.poll_one(http), "poll"),
            )

    async def _loop(self, stop: asyncio.Event, step: Callable[[], Awaitable[Any]], name: str) -> None:
        while not stop.is_set():
            task = asyncio.ensure_future(step())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                done, _ = await asyncio.wait({task}, timeout=self.config.sync_grace_seconds)
                if not done:
                    task.cancel()
                    await asyncio.wait({task}, timeout=10)
            stopping.cancel()
            busy = False
            if task.done() and not task.cancelled():
                if task.exception() is not None:
                    log.error("sync %s round failed", name, exc_info=task.exception())
                else:
                    busy = bool(task.result())
            if not busy and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.config.sync_poll_interval)

    async def run_once(self, http: httpx.AsyncClient) -> bool:
        """One round: the inbox's due events, then one due connection. True if it did anything."""
        events = await self.process_inbox(http)
        polled = await self.poll_one(http)
        return bool(events or polled)

    # The inbox ---------------------------------------------------------------------------------

    async def process_inbox(self, http: httpx.AsyncClient, limit: int = 50) -> int:
        async with self.db.transaction() as tx:
            rows = list(
                await tx.all(
                    CLAIM_EVENTS,
                    {
                        "limit": limit,
                        "worker": self.worker_id,
                        "lease": self.config.sync_lease_seconds,
                        "only": self.only,
                    },
                )
            )
        for row in rows:
            await self._process_event(http, row)
        return len(rows)

    async def _process_event(self, http: httpx.AsyncClient, event: Row) -> None:
        mine = {"id": event["id"], "worker": self.worker_id}
        try:
            async with self.db.transaction() as tx:
                connection = await tx.one(
                    SELECT_CONNECTION,
                    {"organisation_id": event["organisation_id"], "id": event["connection_id"]},
                )
            if connection is None:
                await self._finish_event(mine, "skipped", "the connection was removed")
                return
            adapter: Any = self.adapters[event["provider_id"]]
            body: dict[str, Any] = {}
            if event["payload"] is not None:
                raw = open_payload(self.keyring, event["provider_id"], event["id"], bytes(event["payload"]))
                body = orjson.loads(raw)
            topic = event["topic"]
            if topic.split(".")[0] in getattr(adapter, "streams", ())[1:]:
                await self._apply_role_event(http, adapter, connection, topic, body, mine)
                return
            if not topic.startswith(getattr(adapter, "contact_topics", ("contacts.",))):
                await self._finish_event(mine, "skipped", "a topic this sync does not apply yet")
                return
            found: PersonDraft | list[PersonDraft] | None = adapter.draft_from_webhook(
                body, connection["settings"]
            )
            if found is None and event["entity_id"]:
                # No record in the event (thin, archived, or a replay after its payload was
                # dropped): what the CRM holds now is the truth. One record may be several
                # people (an Alto contact's joint clients).
                found = await self._gated(
                    connection, adapter.fetch_person, http, self._credentials(connection),
                    connection["settings"], event["entity_id"],
                )  # fmt: skip
                if found is None:  # the CRM answers that it holds no such record: deleted there
                    await self._gone(connection, event["entity_id"], event["event_time"], mine)
                    return
            drafts = found if isinstance(found, list) else [found] if found is not None else []
            drafts = await self._with_consent(http, adapter, connection, drafts)
            if not drafts:
                await self._finish_event(mine, "skipped", "the CRM holds no such contact")
                return
            counts = Counts()
            opted_out = topic == "contacts.optedout"
            async with self.db.transaction() as tx:
                # A record the CRM has deleted since this version: a late delivery, not applied.
                outdated = await outdated_by_delete(tx, **_scope(connection), drafts=drafts)
                drafts = [d for d in drafts if d.external_id not in outdated]
                if not drafts:
                    await tx.execute(FINISH_EVENT, {**mine, "status": "done", "outcome": "stale"})
                    return
                outcomes = await self._apply(
                    tx,
                    connection,
                    [_opted_out(d) if opted_out else d for d in drafts],
                    counts,
                    consent_at=event["event_time"] if opted_out else None,
                )
                outcome = ",".join(sorted(set(outcomes)))[:100]
                await tx.execute(FINISH_EVENT, {**mine, "status": "done", "outcome": outcome})
        except (TransientFailure, RateLimited, AuthRejected, CryptoError, Exception) as exc:
            if not isinstance(exc, TransientFailure | RateLimited | AuthRejected | CryptoError):
                log.exception("applying a webhook event failed")
            error = (
                str(exc)[:500]
                if isinstance(exc, TransientFailure | AuthRejected | CryptoError)
                else (
                    "rate limited by the CRM"
                    if isinstance(exc, RateLimited)
                    else "unexpected error (see the sync log)"
                )
            )
            delay = min(3600.0, 5.0 * 4 ** int(event["attempts"])) * random.uniform(0.75, 1.25)
            async with self.db.transaction() as tx:
                await tx.execute(
                    RETRY_EVENT,
                    {
                        **mine,
                        "error": error,
                        "delay": delay,
                        "max_attempts": int(self.config.inbox_max_attempts),
                    },
                )

    async def _apply_role_event(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        connection: Row,
        topic: str,
        body: dict[str, Any],
        mine: dict[str, Any],
    ) -> None:
        """A role's webhook (applicants.*, tenancies.*, properties.*, ...): the record is kept
        (crm_external_refs) and the contacts it relates to, before and after the change, and
        those of the records it concerns (a tenancy's landlord, a property's vendors and offers)
        are read again and applied, so their categories follow at once. A replayed event, its
        payload dropped, names none: the next poll does it."""
        ref: RoleRef | None = adapter.ref_from_webhook(topic, body)
        refs = [ref] if ref is not None else []
        related = adapter.related_from_webhook(body)
        related += [c for c in await self._linked(connection, refs) if c not in related]
        related = related[: int(self.config.sync_page_size)]
        if not related:
            # Kept all the same: a property no vendor or offer links to yet is read by them later.
            async with self.db.transaction() as tx:
                await store_refs(tx, **_scope(connection), refs=refs)
                await tx.execute(
                    FINISH_EVENT, {**mine, "status": "skipped", "outcome": "the role event names no contact"}
                )
            return
        page = await self._gated(
            connection, adapter.fetch_people, http, self._credentials(connection),
            connection["settings"], ids=related,
        )  # fmt: skip
        async with self.db.transaction() as tx:
            await store_refs(tx, **_scope(connection), refs=refs)
            await self._apply(tx, connection, page.drafts, Counts())
            await tx.execute(FINISH_EVENT, {**mine, "status": "done", "outcome": "roles"})

    async def _gone(
        self, connection: Row, external_id: str, event_time: datetime | None, mine: dict[str, Any]
    ) -> None:
        """A record the CRM no longer holds: its contact, if we have one, is archived and its
        CRM payload dropped (integrations/inbound.py, MARK_GONE), never erased."""
        async with self.db.transaction() as tx:
            changed = await mark_gone(
                tx, **_scope(connection), external_ids=[external_id], counts=Counts(), gone_at=event_time
            )
            status, outcome = ("done", "gone") if changed else ("skipped", "the CRM holds no such contact")
            await tx.execute(FINISH_EVENT, {**mine, "status": status, "outcome": outcome})

    def _credentials(self, connection: Row) -> dict[str, Any]:
        return open_credentials(
            self.keyring,
            connection["organisation_id"],
            connection["id"],
            bytes(connection["encrypted_credentials"]),
        )

    async def _gated(
        self,
        connection: Row,
        call: Callable[..., Awaitable[Any]],
        *args: Any,
        run: _Run | None = None,
        **kwargs: Any,
    ) -> Any:
        """One CRM call within the connection's limits (integrations/limits.py); a 429 pauses
        both directions as Retry-After says. In a poll's run the call is then asked again, a few
        times, unless the wait is longer than a run should hold its lease: then the run ends and
        the next one waits. Outside one (a webhook event) the 429 goes up: the event waits."""
        gate = self.limiter.gate(connection["provider_id"], connection["id"], connection["organisation_id"])
        for _ in range(5 if run is not None else 1):
            async with gate:
                try:
                    result = await call(*args, **kwargs)
                except RateLimited as exc:
                    wait = gate.rate_limited(exc.retry_after)
                    await self._rate_limited(connection, wait)
                    if run is None:
                        raise
                    run.rate_limited += 1
                    if wait > 60:
                        raise
                    continue
            gate.succeeded()
            return result
        raise RateLimited(60.0)

    async def _with_consent(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        connection: Row,
        drafts: list[PersonDraft],
        credentials: dict[str, Any] | None = None,
        run: _Run | None = None,
    ) -> list[PersonDraft]:
        """`drafts`, those whose consent the CRM keeps apart (`consent_ref`) with it read by the
        adapter's `fetch_consent`: once per record (its people share it), each read within the
        connection's limits. In a poll (`run`) only drafts new or changed since they were
        applied are read (one query a page), so a re-read of unchanged records costs no call;
        a webhook's always are, as it says the record changed. A failed read fails the page."""
        wanted = [d for d in drafts if d.consent_ref is not None]
        if not wanted or not hasattr(adapter, "fetch_consent"):
            return drafts
        if run is not None:
            async with self.db.transaction() as tx:
                held = await held_as_is(tx, **_scope(connection), drafts=wanted)
            wanted = [d for d in wanted if d.external_id not in held]
        credentials = credentials if credentials is not None else self._credentials(connection)
        read: dict[str | None, Consent | None] = {}
        held_at = time.monotonic()
        for ref in dict.fromkeys(d.consent_ref for d in wanted):
            if run is not None and time.monotonic() - held_at > self.config.sync_lease_seconds / 3:
                await self._hold_lease(connection)
                held_at = time.monotonic()
            read[ref] = await self._gated(
                connection, adapter.fetch_consent, http, credentials, connection["settings"], ref, run=run
            )  # fmt: skip
        return [
            replace(d, consent=c.status, consent_at=c.at) if (c := read.get(d.consent_ref)) else d
            for d in drafts
        ]

    async def _hold_lease(self, connection: Row) -> None:
        async with self.db.transaction() as tx:
            held = await tx.scalar(
                HOLD_LEASE,
                {
                    "organisation_id": connection["organisation_id"],
                    "id": connection["id"],
                    "worker": self.worker_id,
                    "lease": self.config.sync_lease_seconds,
                },
            )
        if held is None:
            raise LeaseLost()

    async def _finish_event(self, mine: dict[str, Any], status: str, outcome: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(FINISH_EVENT, {**mine, "status": status, "outcome": outcome[:100]})

    # Polling -----------------------------------------------------------------------------------

    async def poll_one(self, http: httpx.AsyncClient) -> bool:
        async with self.db.transaction() as tx:
            connection = await tx.one(
                CLAIM_CONNECTION,
                {
                    "worker": self.worker_id,
                    "lease": self.config.sync_lease_seconds,
                    "providers": self.pollable,
                    "only": self.only,
                },
            )
        if connection is None:
            return False
        adapter: Any = self.adapters[connection["provider_id"]]
        scope = {"organisation_id": connection["organisation_id"], "id": connection["id"]}
        ok, delay, tenant_ref = False, 300.0, None
        try:
            settings = adapter.settings_model.model_validate(connection["settings"])
            assert isinstance(settings, SyncSettings)
            delay = float(settings.poll_interval_seconds)
            credentials = open_credentials(
                self.keyring,
                connection["organisation_id"],
                connection["id"],
                bytes(connection["encrypted_credentials"]),
            )
            field = _tenant_field(connection["provider_id"])
            tenant_ref = str(credentials.get(_camel(field))) if field else None
            for stream in getattr(adapter, "streams", (STREAM,)):
                if getattr(adapter, "paging", "seek") in ("walk", "tokens"):
                    await self._walk_stream(http, adapter, connection, credentials, settings)
                elif getattr(adapter, "paging", "seek") == "scan":
                    await self._scan_stream(http, adapter, connection, credentials, settings, stream)
                else:
                    await self._run_stream(http, adapter, connection, credentials, settings, stream)
                # Each stream's run re-reads the cursor the one before committed.
                connection = {**connection, "sync_cursor": self._cursor_after}
            ok = True
        except LeaseLost:
            return True
        except RateLimited as exc:
            delay = exc.retry_after or 60.0
        except (TransientFailure, AuthRejected, CryptoError) as exc:
            log.warning("sync run failed: %s", exc, extra={"rpc": {"connection": str(connection["id"])}})
            delay = min(delay, 300.0)
        except Exception:
            log.exception("sync run failed unexpectedly")
            delay = min(delay, 300.0)
        async with self.db.transaction() as tx:
            await tx.execute(
                RELEASE_CONNECTION,
                {**scope, "worker": self.worker_id, "delay": delay, "ok": ok, "tenant_ref": tenant_ref},
            )
        return True

    async def _open_stream(
        self, connection: Row, stream: str, settings: SyncSettings
    ) -> tuple[_Stream, _Run]:
        """The stream's cursor state (a due reconciliation starts it over) and its run row."""
        cursor_all: dict[str, Any] = dict(connection["sync_cursor"] or {})
        self._cursor_after = cursor_all
        streams = dict(cursor_all.get("streams") or {})
        state = dict(streams.get(stream) or {})
        now = datetime.now(UTC)
        reconciled = _cursor_time(state.get("reconciledAt"))
        trigger = state.pop("trigger", "schedule")
        if state.get("phase") == "incremental" and (
            reconciled is None or now - reconciled > timedelta(hours=settings.reconcile_interval_hours)
        ):
            state = {"phase": "backfill", "reconciling": True}
        scope = {"organisation_id": connection["organisation_id"], "connection_id": connection["id"]}
        async with self.db.transaction() as tx:
            run = _Run(await tx.scalar(START_RUN, {**scope, "stream": stream, "trigger": trigger}), Counts())
        return _Stream(stream, cursor_all, streams, state, now, reconciled), run

    async def _close_run(self, connection: Row, run: _Run, status: str, error: str | None) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(UPDATE_RUN, _run_params(connection, run, status, error))

    @contextlib.asynccontextmanager
    async def _recorded(self, connection: Row, run: _Run) -> AsyncIterator[None]:
        """A stream's run, closed as ok, or failed with the CRM's failure (which goes on up)."""
        status, error = "failed", None
        try:
            yield
            status = "ok"
        except (TransientFailure, RateLimited, AuthRejected) as exc:
            error = str(exc)[:500]
            raise
        finally:
            await self._close_run(connection, run, status, error)

    def _finished(self, s: _Stream) -> None:
        """A stream read to its end: incremental from now on, reconciled if it was due."""
        s.state["phase"] = "incremental"
        if s.state.pop("reconciling", False) or s.reconciled is None:
            s.state["reconciledAt"] = s.now.isoformat()

    async def _walk_stream(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        connection: Row,
        credentials: dict[str, Any],
        settings: SyncSettings,
    ) -> None:
        """A CRM that lists changes newest first with no sort to ask for (Street): every page
        from `updated_from` is read by number. An edit mid-walk moves its row to page 1, read
        already, and the rows behind shift a place later: read twice, never skipped. The
        watermark moves only once the walk is complete, to the CRM's clock at its start less a
        minute. A killed walk resumes at the page after the last it committed (`walk` in the
        cursor: that page and the walk's start), from the same `updated_from`: the rows behind it
        have only moved later since (edits move rows to page 1), so none is skipped.
        A CRM that pages by an opaque token (Alto, `paging = "tokens"`) is walked the same way,
        each page asking for the token the one before gave, to the end; as what a token means
        later is not documented, a killed token walk starts over from the watermark."""
        s, run = await self._open_stream(connection, STREAM, settings)
        wm = _cursor_time(s.state.get("wm"))
        updated_from = None if wm is None else wm - timedelta(seconds=settings.lookback_seconds)
        by_token = getattr(adapter, "paging", "walk") == "tokens"
        walk: dict[str, Any] = {} if by_token else s.state.get("walk") or {}
        started = _cursor_time(walk.get("started"))
        first = int(walk.get("page", 0)) + 1 if started is not None else 1
        page_size = int(self.config.sync_page_size)
        token: str | None = None
        async with self._recorded(connection, run):
            for number in range(first, 100_000):
                marker = {"page_token": token} if by_token else {"page_number": number}
                page = await self._fetch(
                    http,
                    adapter.fetch_people,
                    credentials,
                    connection,
                    run,
                    modified_from=updated_from,
                    page_size=page_size,
                    **marker,
                )
                started = started or page.server_time or datetime.now(UTC)
                drafts = await self._with_consent(http, adapter, connection, page.drafts, credentials, run)
                token = page.next_token
                more = token is not None if by_token else page.page_size >= page_size
                if more:
                    s.state.setdefault("phase", "backfill")
                    if not by_token:
                        s.state["walk"] = {"page": number, "started": started.isoformat()}
                else:
                    s.state.pop("walk", None)
                    s.state["wm"] = (started - WALK_LAG).isoformat()
                    self._finished(s)
                await self._commit_page(
                    connection, run, drafts, page.bad_records, s.cursor_all, s.streams, STREAM, s.state
                )
                if not more:
                    break

    async def _scan_stream(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        connection: Row,
        credentials: dict[str, Any],
        settings: SyncSettings,
        stream: str,
    ) -> None:
        """A CRM with no change filter (agentOS): every record of the stream by offset, each
        page's records applied only where their content hash changed since they were last read.
        The offset is kept in the cursor with each page, so a killed scan resumes there.

        Each record read is marked seen. A record that two complete scans in a row did not see
        is gone from the CRM, and its contact is archived: a record deleted mid-scan shifts the
        offsets behind it, so one scan can miss a live record, never two running."""
        s, run = await self._open_stream(connection, stream, settings)
        offset = int(s.state.get("offset", 0))
        if offset == 0:
            s.state["scanStarted"] = s.now.isoformat()
        page_size = int(getattr(settings, "page_size", self.config.sync_page_size))
        scan = _fetcher(adapter, stream)
        async with self._recorded(connection, run):
            while True:
                page = await self._fetch(http, scan, credentials, connection, run, offset=offset)
                offset += page.page_size
                full = page.page_size >= page_size > 0
                gone_before = None
                if full:
                    s.state.setdefault("phase", "backfill")
                    s.state["offset"] = offset
                else:
                    s.state.pop("offset", None)
                    s.state["scannedAt"] = s.now.isoformat()
                    # Gone: not seen by the scan before this one (from its start) nor by this.
                    gone_before = _cursor_time(s.state.get("lastScanStarted"))
                    s.state["lastScanStarted"] = s.state.pop("scanStarted", s.now.isoformat())
                    self._finished(s)
                await self._commit_page(
                    connection, run, page.drafts, page.bad_records, s.cursor_all, s.streams, stream,
                    s.state, page.refs, scan=_ScanPage(gone_before),
                )  # fmt: skip
                if not full:
                    break

    async def _run_stream(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        connection: Row,
        credentials: dict[str, Any],
        settings: SyncSettings,
        stream: str = STREAM,
    ) -> None:
        s, run = await self._open_stream(connection, stream, settings)
        cursor_all, streams, state = s.cursor_all, s.streams, s.state
        wm = _cursor_time(state.get("wm"))
        modified_from = None if wm is None else wm - timedelta(seconds=settings.lookback_seconds)
        if state.get("phase") == "backfill" and wm is not None:
            modified_from = wm  # a backfill resumes where it stopped
        page_size = int(self.config.sync_page_size)
        fetcher = _fetcher(adapter, stream)
        seen: set[tuple[str, str | None, datetime | None]] = set()
        async with self._recorded(connection, run):
            while True:
                page = await self._fetch(
                    http,
                    fetcher,
                    credentials,
                    connection,
                    run,
                    modified_from=modified_from,
                    modified_to=None,
                    page_number=1,
                    page_size=page_size,
                )
                drafts = page.drafts + await self._related(http, adapter, credentials, connection, run, page)
                tie_sweep: list[PersonDraft] = []
                swept_refs: list[RoleRef] = []
                stamps = page.times()
                last = max(stamps) if stamps else None
                full = page.page_size >= page_size
                if (
                    full
                    and last is not None
                    and modified_from is not None
                    and all(t == modified_from for t in stamps)
                ):
                    # A whole page of one second: read that second by page number, then go on
                    # from the next second.
                    tie_sweep, swept_refs = await self._sweep_second(
                        http, adapter, fetcher, credentials, connection, run, modified_from, page_size
                    )
                    last = modified_from + ONE_SECOND
                # Everything up to the old watermark was committed by earlier pages or runs.
                wm = max(t for t in (last, wm) if t is not None) if (last or wm) else None
                state["wm"] = wm.isoformat() if wm else None
                if not full:
                    self._finished(s)
                else:
                    state.setdefault("phase", "backfill")
                # The next page starts at this page's last second, inclusive: what this run has
                # just committed at that second is not applied twice.
                fresh = [d for d in drafts + tie_sweep if (d.external_id, d.etag, d.modified) not in seen]
                run.counts.fetched += len(drafts) + len(tie_sweep) - len(fresh)
                run.counts.unchanged += len(drafts) + len(tie_sweep) - len(fresh)
                await self._commit_page(
                    connection, run, fresh, page.bad_records, cursor_all, streams, stream, state,
                    page.refs + swept_refs,
                )  # fmt: skip
                if stream == STREAM:  # a role stream's people are not stamped by its cursor
                    seen = {(d.external_id, d.etag, d.modified) for d in fresh if d.modified == last}
                if not full:
                    break
                if last is not None:
                    modified_from = last

    async def _related(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        credentials: dict[str, Any],
        connection: Row,
        run: _Run,
        page: FetchedPage,
    ) -> list[PersonDraft]:
        """The people a role page relates to, and those of the records its records concern (a
        tenancy's landlord, a property's vendors and offers), read by id a page at a time: their
        category is derived again from their roles as they are now."""
        drafts: list[PersonDraft] = []
        size = int(self.config.sync_page_size)
        linked = await self._linked(connection, page.refs)
        related = page.related + [c for c in linked if c not in page.related]
        for start in range(0, len(related), size):
            people = await self._fetch(
                http,
                adapter.fetch_people,
                credentials,
                connection,
                run,
                ids=related[start : start + size],
            )
            drafts += people.drafts
            run.counts.field_errors += people.bad_records
        return drafts

    async def _linked(self, connection: Row, refs: list[RoleRef]) -> list[str]:
        """The people, besides those `refs` name, whose category they change (as kept): of the
        records they link to (a tenancy's landlord) and of the records linking to them (a
        property's vendors and offers)."""
        if not refs:
            return []
        named = sorted({key for ref in refs for key in ref.links})
        async with self.db.transaction() as tx:
            return await linked_people(
                tx, **_scope(connection), named=named, linked_to=sorted({ref.key for ref in refs})
            )

    async def _fetch(
        self,
        http: httpx.AsyncClient,
        fetcher: Callable[..., Awaitable[FetchedPage]],
        credentials: dict[str, Any],
        connection: Row,
        run: _Run,
        **page: Any,
    ) -> FetchedPage:
        """One page, within the connection's limits, a 429 asked again (`_gated`)."""
        settings = connection["settings"]
        result = await self._gated(connection, fetcher, http, credentials, settings, run=run, **page)
        run.pages += 1
        return result  # type: ignore[no-any-return]

    async def _rate_limited(self, connection: Row, wait: float) -> None:
        """The CRM's pause holds the connection's writeback too (another process)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                HOLD_CONNECTION,
                {
                    "organisation_id": connection["organisation_id"],
                    "connection_id": connection["id"],
                    "delay": wait,
                },
            )

    async def _sweep_second(
        self,
        http: httpx.AsyncClient,
        adapter: Any,
        fetcher: Callable[..., Awaitable[FetchedPage]],
        credentials: dict[str, Any],
        connection: Row,
        run: _Run,
        second: datetime,
        page_size: int,
    ) -> tuple[list[PersonDraft], list[RoleRef]]:
        """Every record stamped `second`, by page number: its people and (a role stream) its
        records, kept with the page that found the tie."""
        found: list[PersonDraft] = []
        refs: list[RoleRef] = []
        number = 1
        while True:
            page = await self._fetch(
                http,
                fetcher,
                credentials,
                connection,
                run,
                modified_from=second,
                modified_to=second,
                page_number=number,
                page_size=page_size,
            )
            found += page.drafts + await self._related(http, adapter, credentials, connection, run, page)
            refs += page.refs
            if page.page_size < page_size:
                return found, refs
            number += 1

    async def _commit_page(
        self,
        connection: Row,
        run: _Run,
        drafts: list[PersonDraft],
        bad: int,
        cursor_all: dict[str, Any],
        streams: dict[str, Any],
        stream: str,
        state: dict[str, Any],
        refs: list[RoleRef] | None = None,
        scan: _ScanPage | None = None,
    ) -> None:
        """The page's role records and rows, the cursor and the run's counts in one transaction.
        `scan`: the drafts are the records themselves (a full scan): they are marked seen, and
        those whose kept content hash is the same are counted unchanged, not applied, unless
        they come back from gone; on a scan's last page, what it did not see is gone."""
        run.counts.field_errors += bad
        streams[stream] = state
        cursor_all["streams"] = streams
        async with self.db.transaction() as tx:
            written = await store_refs(tx, **_scope(connection), refs=refs) if refs else set()
            if scan is not None:
                ids = [d.external_id for d in drafts]
                back = await mark_seen(tx, **_scope(connection), record_type=stream, external_ids=ids)
                changed = [d for d in drafts if (stream, d.external_id) in written or d.external_id in back]
                run.counts.fetched += len(drafts) - len(changed)
                run.counts.unchanged += len(drafts) - len(changed)
                drafts = changed
            await self._apply(tx, connection, _newest_per_record(drafts), run.counts)
            if scan is not None and scan.gone_before is not None:
                gone = await mark_missing(
                    tx, **_scope(connection), record_type=stream, before=scan.gone_before
                )
                await mark_gone(tx, **_scope(connection), external_ids=gone, counts=run.counts)
            saved = await tx.scalar(
                SAVE_CURSOR,
                {
                    "organisation_id": connection["organisation_id"],
                    "id": connection["id"],
                    "cursor": orjson.dumps(cursor_all).decode(),
                    "worker": self.worker_id,
                    "lease": self.config.sync_lease_seconds,
                },
            )
            if saved is None:
                raise LeaseLost()
            await tx.execute(UPDATE_RUN, _run_params(connection, run, "running", None))

    async def _apply(
        self,
        tx: Tx,
        connection: Row,
        drafts: list[PersonDraft],
        counts: Counts,
        consent_at: datetime | None = None,
    ) -> list[str]:
        """The one apply path (integrations/inbound.py), for this connection's records, each
        person's category derived from their role records as kept, where the provider does so."""
        if not drafts:
            return []
        adapter: Any = self.adapters.get(connection["provider_id"])
        if hasattr(adapter, "categorise"):
            held = await refs_of(tx, **_scope(connection), people=[d.external_id for d in drafts])
            drafts = [
                adapter.categorise(d, held.get(d.external_id, []), connection["settings"]) for d in drafts
            ]
        outcomes = await apply_page(
            tx,
            suppression_key=self.suppression_key,
            organisation_id=connection["organisation_id"],
            connection_id=connection["id"],
            provider_id=connection["provider_id"],
            drafts=drafts,
            counts=counts,
            consent_at=consent_at,
        )
        self.applied += len(drafts)
        return outcomes


def _run_params(connection: Row, run: _Run, status: str, error: str | None) -> dict[str, Any]:
    return {
        "organisation_id": connection["organisation_id"],
        "id": run.id,
        "pages": run.pages,
        **run.counts.as_params(),
        "rate_limited": run.rate_limited,
        "status": status,
        "error": error,
    }


def _scope(connection: Row) -> dict[str, Any]:
    return {"organisation_id": connection["organisation_id"], "connection_id": connection["id"]}


def _fetcher(adapter: Any, stream: str) -> Callable[..., Awaitable[FetchedPage]]:
    """A stream's page reader: the contacts stream's, else a role stream's or a scanned one's."""
    if stream == STREAM:
        return adapter.fetch_people  # type: ignore[no-any-return]

    fetch = adapter.fetch_scan if getattr(adapter, "paging", "seek") == "scan" else adapter.fetch_roles

    async def roles(
        http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any], **page: Any
    ) -> FetchedPage:
        return await fetch(http, credentials, settings, stream=stream, **page)  # type: ignore[no-any-return]

    return roles


def _newest_per_record(drafts: list[PersonDraft]) -> list[PersonDraft]:
    """One draft per record (overlapping pages repeat rows), the newest."""
    newest: dict[str, PersonDraft] = {}
    for draft in drafts:
        held = newest.get(draft.external_id)
        if held is None or (draft.modified or datetime.min.replace(tzinfo=UTC)) >= (
            held.modified or datetime.min.replace(tzinfo=UTC)
        ):
            newest[draft.external_id] = draft
    return list(newest.values())


def _opted_out(draft: PersonDraft) -> PersonDraft:
    return replace(draft, consent="denied")


def _tenant_field(provider_id: str) -> str | None:
    return PROVIDERS[provider_id].tenant_field


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def _serve(database_url: str, keyring: Keyring, only: list[UUID] | None) -> None:
    config = CrmConfig.from_env()
    key = key_from_env()
    if key is None:
        raise SystemExit("nurturehub sync: NURTUREHUB_SUPPRESSION_KEY is needed (erasure suppression)")
    db = Database(database_url, pool_size=4)
    worker = SyncWorker(db, keyring, config, key, only=only)
    await run_until_stopped(
        worker,
        db,
        f"NurtureHub sync {worker.worker_id}: applying CRM webhooks and polling (SIGTERM or Ctrl-C to stop)",
        lambda: f"NurtureHub sync stopped after applying {worker.applied} records",
    )


def main(database_url: str, keyring: Keyring, only: list[UUID] | None = None) -> None:
    """The `nurturehub sync` command (loaded by import path from server/cli.py)."""
    prepare("sync", keyring)
    asyncio.run(_serve(database_url, keyring, only))
