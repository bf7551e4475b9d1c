"""crm.*: CRM connections (credentials sealed at rest) and the engagement writeback queue.

The queue is delivered by `nurturehub worker` (integrations/writeback.py); which CRMs can
take writeback, and how each is called, is in integrations/providers/.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import httpx
import orjson
import pydantic
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import PAYLOADS, EventType
from integrations.providers import (
    PROVIDERS,
    Adapter,
    AuthRejected,
    NotDeliverable,
    ProviderSpec,
    TransientFailure,
    build_adapters,
    pollable,
    reaching,
)
from procedures.crm_credentials import credentials_hint, open_credentials, seal_credentials
from server.context import Context
from server.crypto import CryptoError, NoEncryptionKey
from server.cursor import cursor_key, decode_cursor, encode_cursor
from server.db import Tx, sql
from server.errors import Conflict, InvalidParams, NotFound, ServiceUnavailable
from server.models import WireModel
from server.procedure import ADMIN, AUTHED, Router, mutation, query
from server.rpc import field_issues

__all__ = ["queue_event", "router"]

ConnectionStatus = Literal["active", "paused", "error", "pending"]
WritebackStatus = Literal["pending", "processing", "success", "failed"]

# Models ------------------------------------------------------------------------------------------


class ListConnectionsParams(WireModel):
    pass


class CrmConnection(WireModel):
    id: UUID
    provider_id: str
    provider_name: str
    status: ConnectionStatus
    credentials_hint: str | None
    settings: dict[str, Any]
    writeback_supported: bool
    last_error_message: str | None
    last_error_at: datetime | None
    last_synced_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Why this connection cannot work as the server is configured (e.g. no platform OAuth2
    # client for Reapit); null when nothing is missing.
    warning: str | None


class ConnectParams(WireModel):
    provider_id: str = Field(min_length=1, max_length=40)
    # Shape per provider (see README, CRM providers): validated against the provider's model.
    credentials: dict[str, Any]
    settings: dict[str, Any] = Field(default_factory=dict)


class UpdateConnectionParams(WireModel):
    connection_id: UUID
    paused: bool | None = None
    credentials: dict[str, Any] | None = None
    # Per provider, writeback's and inbound sync's (pollIntervalSeconds, lookbackSeconds,
    # reconcileIntervalHours, categoryPrecedence, and Reapit's investorCategoryIds, ...).
    settings: dict[str, Any] | None = None
    # Whether `nurturehub sync` polls this connection (webhooks are taken either way).
    sync_enabled: bool | None = None


class DisconnectParams(WireModel):
    connection_id: UUID


class Disconnected(WireModel):
    connection_id: UUID
    cancelled_events: int


def _payload_shapes() -> str:
    shapes = []
    for event_type, model in PAYLOADS.items():
        fields = ", ".join(
            (info.alias or name) + ("" if info.is_required() else "?")
            for name, info in model.model_fields.items()
        )
        shapes.append(f"{event_type}: {{{fields}}}")
    return "Shape per eventType (times ISO 8601 with offset): " + "; ".join(shapes)


class EnqueueWritebackParams(WireModel):
    contact_id: UUID
    event_type: EventType
    # Validated against the event type's model (integrations/events.py) by the handler.
    payload: dict[str, Any] = Field(description=_payload_shapes())
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class WritebackEntry(WireModel):
    id: UUID
    connection_id: UUID | None
    provider_id: str
    contact_id: UUID
    event_type: EventType
    status: WritebackStatus
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    external_id: str | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class SkippedConnection(WireModel):
    connection_id: UUID
    provider_id: str
    reason: str


class Enqueued(WireModel):
    entries: list[WritebackEntry]
    skipped: list[SkippedConnection]


class ListWritebackParams(WireModel):
    status: WritebackStatus | None = None
    event_type: EventType | None = None
    contact_id: UUID | None = None
    connection_id: UUID | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class WritebackPage(WireModel):
    items: list[WritebackEntry]
    next_cursor: str | None


class RetryWritebackParams(WireModel):
    id: UUID


class TestConnectionParams(WireModel):
    connection_id: UUID


class ConnectionCheck(WireModel):
    """What a try of the stored credentials found: `ok`; `refused` (the CRM, or the platform's
    configuration, says no); `failed` (no usable answer: try again later); `not_checked` (this
    CRM offers nothing to try them with). `message` says what was tried or what went wrong."""

    connection_id: UUID
    provider_id: str
    outcome: Literal["ok", "refused", "failed", "not_checked"]
    message: str
    checked_at: datetime


SyncPhase = Literal["backfill", "incremental"]
InboxStatus = Literal["received", "processing", "done", "skipped", "dead", "unrouted"]


class GetSyncStatusParams(WireModel):
    connection_id: UUID


class SyncRun(WireModel):
    id: UUID
    stream: str
    trigger: Literal["schedule", "manual", "reset"]
    status: Literal["running", "ok", "failed"]
    started_at: datetime
    finished_at: datetime | None
    pages: int
    fetched: int
    created: int
    updated: int
    unchanged: int
    suppressed: int
    archived: int
    field_errors: int
    rate_limited: int
    error: str | None


class SyncStream(WireModel):
    stream: str
    phase: SyncPhase | None  # null: never run
    # The CRM's `modified` time up to which every record is committed here, and how far that
    # is behind now.
    watermark: datetime | None
    lag_seconds: float | None
    last_run: SyncRun | None


class InboxBacklog(WireModel):
    waiting: int  # received or being applied
    dead: int  # gave up after its attempts: see crm.listWebhookEvents, crm.replayWebhookEvent


class SyncStatus(WireModel):
    connection_id: UUID
    provider_id: str
    # Whether this CRM is polled by `nurturehub sync` (README, CRM sync: which ones are).
    sync_supported: bool
    sync_enabled: bool
    next_sync_at: datetime | None
    running: bool
    streams: list[SyncStream]
    inbox: InboxBacklog


class SyncNowParams(WireModel):
    connection_id: UUID
    # null: every stream the CRM has (Reapit: contacts and its role streams).
    stream: str | None = Field(
        default=None, pattern=r"^(contacts|applicants|landlords|vendors|tenancies|offers|properties)$"
    )
    # Re-read everything from the start; records already held are matched, not duplicated.
    reset: bool = False


class ListSyncRunsParams(WireModel):
    connection_id: UUID
    limit: int = Field(default=20, ge=1, le=100)


class ListWebhookEventsParams(WireModel):
    connection_id: UUID | None = None
    status: InboxStatus | None = None
    limit: int = Field(default=50, ge=1, le=100)


class WebhookEvent(WireModel):
    """A webhook delivery as the inbox keeps it: what and when, never its payload."""

    id: UUID
    provider_id: str
    connection_id: UUID | None
    topic: str
    entity_id: str | None
    event_time: datetime | None
    status: InboxStatus
    attempts: int
    outcome: str | None
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None


class ReplayWebhookEventParams(WireModel):
    id: UUID


# SQL ---------------------------------------------------------------------------------------------

_CONNECTION_COLUMNS = """
    c.id, c.provider_id, p.name AS provider_name, c.status, c.credentials_hint, c.settings,
    c.last_error_message, c.last_error_at, c.last_synced_at, c.created_at, c.updated_at
"""

SELECT_CONNECTIONS = sql(f"""
    SELECT {_CONNECTION_COLUMNS}
      FROM crm_connections c JOIN crm_providers p ON p.id = c.provider_id
     WHERE c.organisation_id = :organisation_id
     ORDER BY lower(p.name), c.id
""")
SELECT_CONNECTION = sql(f"""
    SELECT {_CONNECTION_COLUMNS}
      FROM crm_connections c JOIN crm_providers p ON p.id = c.provider_id
     WHERE c.organisation_id = :organisation_id AND c.id = :id
""")
SELECT_SEALED = sql("""
    SELECT provider_id, encrypted_credentials, settings FROM crm_connections
     WHERE organisation_id = :organisation_id AND id = :id
""")
PROVIDER_EXISTS = sql("SELECT name FROM crm_providers WHERE id = :id")
INSERT_CONNECTION = sql("""
    INSERT INTO crm_connections
           (organisation_id, id, provider_id, encrypted_credentials, credentials_hint, settings)
    VALUES (:organisation_id, :id, :provider_id, :sealed, :hint, CAST(:settings AS jsonb))
    ON CONFLICT (organisation_id, provider_id) DO NOTHING
    RETURNING id
""")
SET_TENANT_REF = sql("""
    UPDATE crm_connections SET tenant_ref = :tenant_ref
     WHERE organisation_id = :organisation_id AND id = :id
""")
# Webhooks that came before the connection (kept unrouted) are applied now.
CLAIM_UNROUTED = sql("""
    UPDATE crm_webhook_inbox
       SET organisation_id = :organisation_id, connection_id = :id, status = 'received',
           next_attempt_at = now()
     WHERE provider_id = :provider_id AND tenant_ref = :tenant_ref AND status = 'unrouted'
       AND NOT EXISTS (SELECT 1 FROM crm_connections
                        WHERE provider_id = :provider_id AND tenant_ref = :tenant_ref
                          AND id <> :id)
""")
LOCK_CONNECTION = sql("""
    SELECT provider_id, status FROM crm_connections
     WHERE organisation_id = :organisation_id AND id = :id
       FOR UPDATE
""")
UPDATE_CONNECTION = sql("""
    UPDATE crm_connections
       SET status = :status,
           encrypted_credentials = coalesce(:sealed, encrypted_credentials),
           credentials_hint = CASE WHEN CAST(:sealed AS bytea) IS NULL THEN credentials_hint
                                   ELSE :hint END,
           settings = coalesce(CAST(:settings AS jsonb), settings),
           tenant_ref = CASE WHEN CAST(:sealed AS bytea) IS NULL THEN tenant_ref
                             ELSE CAST(:tenant_ref AS text) END,
           sync_enabled = coalesce(CAST(:sync_enabled AS boolean), sync_enabled),
           last_error_message = CASE WHEN :status = 'pending' THEN NULL ELSE last_error_message END,
           last_error_at = CASE WHEN :status = 'pending' THEN NULL ELSE last_error_at END,
           updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
""")
CANCEL_QUEUED = sql("""
    UPDATE crm_writeback_queue
       SET status = 'failed', lease_expires_at = NULL, locked_by = NULL,
           last_error = 'cancelled: the CRM connection was removed',
           completed_at = now(), updated_at = now()
     WHERE organisation_id = :organisation_id AND connection_id = :id
       AND status IN ('pending', 'processing')
""")
# What names the connection is detached first: contacts stay (without their CRM link), events
# and inbox rows stay as history. The foreign keys have no ON DELETE SET NULL, which Citus
# refuses on a key holding organisation_id (docs/citus.md).
DETACH_CONNECTION = (
    sql("""UPDATE contacts SET crm_connection_id = NULL
            WHERE organisation_id = :organisation_id AND crm_connection_id = :id"""),
    sql("""UPDATE crm_writeback_queue SET connection_id = NULL
            WHERE organisation_id = :organisation_id AND connection_id = :id"""),
    sql("""UPDATE crm_webhook_inbox SET connection_id = NULL
            WHERE organisation_id = :organisation_id AND connection_id = :id"""),
)
DELETE_CONNECTION = sql("DELETE FROM crm_connections WHERE organisation_id = :organisation_id AND id = :id")

_ENTRY_COLUMNS = """
    id, connection_id, provider_id, contact_id, event_type, status, attempts, max_attempts,
    CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, last_error,
    external_id, idempotency_key, created_at, updated_at, completed_at
"""

SELECT_CONTACT_LINK = sql("""
    SELECT crm_connection_id, external_id FROM contacts
     WHERE organisation_id = :organisation_id AND id = :contact_id
""")
# Paused connections take no new events; those in error do, and deliver once fixed.
SELECT_WRITEBACK_TARGETS = sql("""
    SELECT id, provider_id FROM crm_connections
     WHERE organisation_id = :organisation_id AND status <> 'paused'
     ORDER BY provider_id
""")
SELECT_BY_IDEMPOTENCY_KEY = sql(f"""
    SELECT {_ENTRY_COLUMNS}, payload FROM crm_writeback_queue
     WHERE organisation_id = :organisation_id AND idempotency_key = :key
     ORDER BY seq
""")
INSERT_ENTRY = sql(f"""
    INSERT INTO crm_writeback_queue
           (organisation_id, connection_id, provider_id, contact_id, event_type, payload,
            idempotency_key)
    VALUES (:organisation_id, :connection_id, :provider_id, :contact_id, :event_type,
            CAST(:payload AS jsonb), :key)
    ON CONFLICT (organisation_id, connection_id, idempotency_key)
       WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {_ENTRY_COLUMNS}
""")
SELECT_ENTRIES = sql(f"""
    SELECT {_ENTRY_COLUMNS}, seq FROM crm_writeback_queue
     WHERE organisation_id = :organisation_id
       AND (CAST(:status AS text) IS NULL OR status = :status)
       AND (CAST(:event_type AS text) IS NULL OR event_type = :event_type)
       AND (CAST(:contact_id AS uuid) IS NULL OR contact_id = :contact_id)
       AND (CAST(:connection_id AS uuid) IS NULL OR connection_id = :connection_id)
       AND (CAST(:before AS bigint) IS NULL OR seq < :before)
     ORDER BY seq DESC
     LIMIT :limit
""")
RETRY_ENTRY = sql(f"""
    UPDATE crm_writeback_queue
       SET status = 'pending', attempts = 0, next_attempt_at = now(), completed_at = NULL,
           updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
       AND status = 'failed' AND connection_id IS NOT NULL
    RETURNING {_ENTRY_COLUMNS}
""")
SELECT_ENTRY = sql(f"""
    SELECT {_ENTRY_COLUMNS} FROM crm_writeback_queue
     WHERE organisation_id = :organisation_id AND id = :id
""")

# Helpers -----------------------------------------------------------------------------------------


def _spec(provider_id: str) -> ProviderSpec:
    spec = PROVIDERS.get(provider_id)
    if spec is None:
        raise InvalidParams.for_field("providerId", f"unknown CRM provider {provider_id[:40]!r}")
    return spec


def _validated(model: type[pydantic.BaseModel], value: dict[str, Any], path: str) -> pydantic.BaseModel:
    """`value` checked against `model` as the framework checks params, issues under `path`."""
    try:
        return model.model_validate_json(orjson.dumps(value), strict=True)
    except pydantic.ValidationError as exc:
        issues = field_issues(exc)
        for issue in issues:
            if issue["type"] == "extra_forbidden":
                # An unknown key may itself be a secret pasted in the wrong place: not repeated.
                issue["path"] = path
                issue["message"] = "has a field this provider does not take (name not repeated)"
            elif issue["path"] != "params":
                issue["path"] = f"{path}.{issue['path']}"
            else:
                issue["path"] = path
        first = issues[0]
        raise InvalidParams(f"Invalid params: {first['path']}: {first['message']}", issues=issues) from None


def _wire(model: pydantic.BaseModel) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _seal(ctx: Context, connection_id: UUID, credentials: pydantic.BaseModel) -> bytes:
    try:
        return seal_credentials(
            ctx.settings.encryption_keys, ctx.organisation_id, connection_id, _wire(credentials)
        )
    except NoEncryptionKey:
        raise ServiceUnavailable(
            "Service unavailable: no encryption key is configured on the server "
            "(NURTUREHUB_ENCRYPTION_KEYS), so CRM credentials cannot be stored"
        ) from None


def _hint(spec: ProviderSpec, credentials: pydantic.BaseModel) -> str:
    return credentials_hint(str(getattr(credentials, spec.hint_field)))


def _tenant_ref(spec: ProviderSpec, credentials: pydantic.BaseModel) -> str | None:
    """The agency's selector in its CRM, kept in plaintext so webhooks can be routed by it."""
    return str(getattr(credentials, spec.tenant_field)) if spec.tenant_field else None


@functools.cache
def _platform() -> tuple[CrmConfig, dict[str, Adapter]]:
    """The CRM configuration and adapters the worker uses, from the same environment, once: the
    adapters keep the platform's OAuth2 tokens between checks."""
    config = CrmConfig.from_env()
    return config, build_adapters(config)


def _connection(row: Any) -> CrmConnection:
    provider_id = row["provider_id"]
    return CrmConnection.model_validate(
        {
            **row,
            "writeback_supported": PROVIDERS[provider_id].unsupported is None,
            "warning": _platform()[1][provider_id].setup_problem(),
        }
    )


async def _get_connection(ctx: Context, connection_id: UUID) -> CrmConnection:
    row = await ctx.db.one(SELECT_CONNECTION, {"organisation_id": ctx.organisation_id, "id": connection_id})
    if row is None:
        raise NotFound("Not found: no CRM connection with this id")
    return _connection(row)


def _entries(rows: Any) -> list[WritebackEntry]:
    return [
        WritebackEntry.model_validate({k: v for k, v in row.items() if k not in ("payload", "seq")})
        for row in rows
    ]


async def queue_event(
    tx: Tx,
    organisation_id: UUID,
    contact_id: UUID,
    event_type: str,
    payload: dict[str, Any],
    idempotency_key: str | None = None,
) -> Enqueued:
    """Queue one event for every CRM connection that can take it, in the caller's transaction.

    `payload` must already match the event's model (PAYLOADS). A connection is skipped, and the
    result says why, when its CRM has no write API or the contact has no record in it.
    """
    scope = {"organisation_id": organisation_id}
    if idempotency_key is not None:
        existing = await tx.all(SELECT_BY_IDEMPOTENCY_KEY, {**scope, "key": idempotency_key})
        if existing:
            first = existing[0]
            if (first["contact_id"], first["event_type"], first["payload"]) != (
                contact_id,
                event_type,
                payload,
            ):
                raise Conflict("Conflict: this idempotency key was already used for a different event")
            return Enqueued(entries=_entries(existing), skipped=[])

    link = await tx.one(SELECT_CONTACT_LINK, {**scope, "contact_id": contact_id})
    if link is None:
        raise NotFound("Not found: no contact with this id")
    entries: list[WritebackEntry] = []
    skipped: list[SkippedConnection] = []
    for target in await tx.all(SELECT_WRITEBACK_TARGETS, scope):
        reason = PROVIDERS[target["provider_id"]].unsupported
        if reason is None and (link["crm_connection_id"] != target["id"] or not link["external_id"]):
            reason = "the contact has no record in this CRM"
        if reason is not None:
            skipped.append(
                SkippedConnection(
                    connection_id=target["id"], provider_id=target["provider_id"], reason=reason
                )
            )
            continue
        row = await tx.one(
            INSERT_ENTRY,
            {
                **scope,
                "connection_id": target["id"],
                "provider_id": target["provider_id"],
                "contact_id": contact_id,
                "event_type": event_type,
                "payload": orjson.dumps(payload).decode(),
                "key": idempotency_key,
            },
        )
        if row is None:  # the same key, enqueued concurrently and committed first
            existing = await tx.all(SELECT_BY_IDEMPOTENCY_KEY, {**scope, "key": idempotency_key})
            return Enqueued(entries=_entries(existing), skipped=[])
        entries.append(WritebackEntry.model_validate(dict(row)))
    return Enqueued(entries=entries, skipped=skipped)


SELECT_SYNC_STATE = sql("""
    SELECT provider_id, sync_enabled, next_sync_at, sync_cursor,
           coalesce(sync_lease_expires_at > now(), false) AS running
      FROM crm_connections WHERE organisation_id = :organisation_id AND id = :id
""")
_RUN_COLUMNS = """
    id, stream, trigger, status, started_at, finished_at, pages, fetched, created, updated,
    unchanged, suppressed, archived, field_errors, rate_limited, error
"""
SELECT_LAST_RUNS = sql(f"""
    SELECT DISTINCT ON (stream) {_RUN_COLUMNS} FROM crm_sync_runs
     WHERE organisation_id = :organisation_id AND connection_id = :id
     ORDER BY stream, started_at DESC, id
""")
SELECT_RUNS = sql(f"""
    SELECT {_RUN_COLUMNS} FROM crm_sync_runs
     WHERE organisation_id = :organisation_id AND connection_id = :id
     ORDER BY started_at DESC, id LIMIT :limit
""")
SELECT_BACKLOG = sql("""
    SELECT count(*) FILTER (WHERE status IN ('received', 'processing')) AS waiting,
           count(*) FILTER (WHERE status = 'dead') AS dead
      FROM crm_webhook_inbox WHERE organisation_id = :organisation_id AND connection_id = :id
""")
# A stream's state is reset (re-read from the start) or marked to run now; the worker reads
# `trigger` for the run's record.
REQUEST_SYNC = sql("""
    UPDATE crm_connections
       SET sync_cursor = jsonb_set(
               coalesce(sync_cursor, '{}'::jsonb) || jsonb_build_object(
                   'streams', coalesce(sync_cursor->'streams', '{}'::jsonb)),
               ARRAY['streams', :stream],
               CASE WHEN :reset THEN jsonb_build_object('trigger', 'reset')
                    ELSE coalesce(sync_cursor->'streams'->:stream, '{}'::jsonb)
                         || jsonb_build_object('trigger', 'manual') END),
           next_sync_at = now(), updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
""")
_EVENT_COLUMNS = """
    id, provider_id, connection_id, topic, entity_id, event_time, status, attempts, outcome,
    last_error, received_at, processed_at
"""
SELECT_EVENTS = sql(f"""
    SELECT {_EVENT_COLUMNS} FROM crm_webhook_inbox
     WHERE organisation_id = :organisation_id
       AND (CAST(:connection_id AS uuid) IS NULL OR connection_id = :connection_id)
       AND (CAST(:status AS text) IS NULL OR status = :status)
     ORDER BY received_at DESC, id LIMIT :limit
""")
# Applied again by `nurturehub sync`; its payload was dropped when it was processed, so the
# record is read from the CRM as it is now.
REPLAY_EVENT = sql(f"""
    UPDATE crm_webhook_inbox
       SET status = 'received', attempts = 0, next_attempt_at = now(), outcome = NULL,
           last_error = NULL, processed_at = NULL
     WHERE organisation_id = :organisation_id AND id = :id
       AND status IN ('done', 'skipped', 'dead') AND connection_id IS NOT NULL
    RETURNING {_EVENT_COLUMNS}
""")
SELECT_EVENT = sql(f"""
    SELECT {_EVENT_COLUMNS} FROM crm_webhook_inbox WHERE organisation_id = :organisation_id AND id = :id
""")


def _pollable(provider_id: str) -> bool:
    return pollable(_platform()[1][provider_id])


def _streams(provider_id: str) -> tuple[str, ...]:
    streams: tuple[str, ...] = getattr(_platform()[1][provider_id], "streams", ("contacts",))
    return streams


def _lag(watermark: datetime | None) -> float | None:
    return None if watermark is None else max(0.0, (datetime.now(UTC) - watermark).total_seconds())


def _watermark(state: dict[str, Any]) -> datetime | None:
    try:
        # A scanned stream (agentOS) has no watermark: its last complete scan stands for one.
        mark = state.get("wm") or state.get("scannedAt")
        return datetime.fromisoformat(mark) if mark else None
    except (TypeError, ValueError):
        return None


async def _sync_status(ctx: Context, connection_id: UUID) -> SyncStatus:
    scope = {"organisation_id": ctx.organisation_id, "id": connection_id}
    row = await ctx.db.one(SELECT_SYNC_STATE, scope)
    if row is None:
        raise NotFound("Not found: no CRM connection with this id")
    runs = {r["stream"]: SyncRun.model_validate(dict(r)) for r in await ctx.db.all(SELECT_LAST_RUNS, scope)}
    states = dict((row["sync_cursor"] or {}).get("streams") or {})
    supported = _pollable(row["provider_id"])
    known = set(_streams(row["provider_id"])) if supported else set()
    streams = []
    for stream in sorted(set(states) | set(runs) | known):
        state = dict(states.get(stream) or {})
        watermark = _watermark(state)
        phase = state.get("phase")
        streams.append(SyncStream(
            stream=stream, phase=phase if phase in ("backfill", "incremental") else None,
            watermark=watermark, lag_seconds=_lag(watermark), last_run=runs.get(stream),
        ))
    backlog = await ctx.db.one(SELECT_BACKLOG, scope)
    return SyncStatus(
        connection_id=connection_id,
        provider_id=row["provider_id"],
        sync_supported=supported,
        sync_enabled=row["sync_enabled"],
        next_sync_at=row["next_sync_at"],
        running=row["running"],
        streams=streams,
        inbox=InboxBacklog(
            waiting=backlog["waiting"] if backlog else 0, dead=backlog["dead"] if backlog else 0
        ),
    )


# Handlers ----------------------------------------------------------------------------------------


@query(guard=AUTHED)
async def list_connections(ctx: Context, params: ListConnectionsParams) -> list[CrmConnection]:
    """The organisation's CRM connections and their health; never their credentials."""
    rows = await ctx.db.all(SELECT_CONNECTIONS, {"organisation_id": ctx.organisation_id})
    return [_connection(row) for row in rows]


@mutation(guard=ADMIN, errors=(Conflict,))
async def connect(ctx: Context, params: ConnectParams) -> CrmConnection:
    """Connect a CRM. Its credentials are encrypted at rest and never returned.

    The connection is pending until the first successful call to the CRM, then active. One
    connection per provider per organisation (CONFLICT otherwise).
    """
    spec = _spec(params.provider_id)
    provider_name = await ctx.db.scalar(PROVIDER_EXISTS, {"id": params.provider_id})
    if provider_name is None:
        raise InvalidParams.for_field("providerId", "this CRM provider is not available")
    credentials = _validated(spec.credentials, params.credentials, "credentials")
    settings = _validated(spec.settings, params.settings, "settings")
    connection_id = uuid4()
    inserted = await ctx.db.scalar(
        INSERT_CONNECTION,
        {
            "organisation_id": ctx.organisation_id,
            "id": connection_id,
            "provider_id": params.provider_id,
            "sealed": _seal(ctx, connection_id, credentials),
            "hint": _hint(spec, credentials),
            "settings": orjson.dumps(_wire(settings)).decode(),
        },
    )
    if inserted is None:
        raise Conflict(f"Conflict: this organisation already has a {provider_name} connection")
    if spec.tenant_field:
        selector = {
            "organisation_id": ctx.organisation_id, "id": connection_id,
            "provider_id": params.provider_id, "tenant_ref": _tenant_ref(spec, credentials),
        }
        await ctx.db.execute(SET_TENANT_REF, selector)
        await ctx.db.execute(CLAIM_UNROUTED, selector)
    ctx.record("crm_connection", connection_id, ["providerId", "credentials", "settings", "status"])
    return await _get_connection(ctx, connection_id)


@mutation(guard=ADMIN, errors=(NotFound,))
async def update_connection(ctx: Context, params: UpdateConnectionParams) -> CrmConnection:
    """Pause or resume a connection, or replace its credentials or settings.

    Resuming, or replacing the credentials of a connection in error, makes it pending: its
    waiting events are delivered again, and the first success makes it active.
    """
    given = (params.paused, params.credentials, params.settings, params.sync_enabled)
    if all(value is None for value in given):
        raise InvalidParams.for_field("params", "give paused, credentials, settings or syncEnabled")
    scope = {"organisation_id": ctx.organisation_id, "id": params.connection_id}
    current = await ctx.db.one(LOCK_CONNECTION, scope)
    if current is None:
        raise NotFound("Not found: no CRM connection with this id")
    spec = _spec(current["provider_id"])
    changed: list[str] = []
    sealed = hint = settings = tenant_ref = None
    if params.credentials is not None:
        credentials = _validated(spec.credentials, params.credentials, "credentials")
        sealed = _seal(ctx, params.connection_id, credentials)
        hint = _hint(spec, credentials)
        tenant_ref = _tenant_ref(spec, credentials)
        changed.append("credentials")
    if params.settings is not None:
        settings = orjson.dumps(_wire(_validated(spec.settings, params.settings, "settings")))
        changed.append("settings")
    status = current["status"]
    if params.paused is True:
        status = "paused"
    elif params.paused is False and status in ("paused", "error"):
        status = "pending"
    elif sealed is not None and status == "error":
        status = "pending"
    if status != current["status"]:
        changed.append("status")
    if params.sync_enabled is not None:
        changed.append("syncEnabled")
    await ctx.db.execute(
        UPDATE_CONNECTION,
        {
            **scope,
            "status": status,
            "sealed": sealed,
            "hint": hint,
            "settings": settings.decode() if settings is not None else None,
            "tenant_ref": tenant_ref,
            "sync_enabled": params.sync_enabled,
        },
    )
    ctx.record("crm_connection", params.connection_id, changed)
    return await _get_connection(ctx, params.connection_id)


@mutation(guard=ADMIN, errors=(NotFound,))
async def disconnect(ctx: Context, params: DisconnectParams) -> Disconnected:
    """Delete a connection and its credentials; its queued events are cancelled, and say so."""
    scope = {"organisation_id": ctx.organisation_id, "id": params.connection_id}
    if await ctx.db.one(LOCK_CONNECTION, scope) is None:
        raise NotFound("Not found: no CRM connection with this id")
    cancelled = await ctx.db.execute(CANCEL_QUEUED, scope)
    for detach in DETACH_CONNECTION:
        await ctx.db.execute(detach, scope)
    await ctx.db.execute(DELETE_CONNECTION, scope)
    ctx.record("crm_connection", params.connection_id, ["deleted"])
    return Disconnected(connection_id=params.connection_id, cancelled_events=cancelled)


@mutation(guard=AUTHED, errors=(NotFound, Conflict))
async def enqueue_writeback(ctx: Context, params: EnqueueWritebackParams) -> Enqueued:
    """Queue an engagement event for the contact's CRMs; the payload's shape follows eventType.

    The same idempotencyKey again enqueues nothing and returns the entries it made the first
    time. Connections that cannot take the event are listed under `skipped` with the reason.
    """
    payload = _validated(PAYLOADS[params.event_type], params.payload, "payload")
    result = await queue_event(
        ctx.db,
        ctx.organisation_id,
        params.contact_id,
        params.event_type,
        _wire(payload),
        params.idempotency_key,
    )
    ctx.record("contact", params.contact_id, ["writeback"])
    return result


@query(guard=ADMIN)
async def list_writeback(ctx: Context, params: ListWritebackParams) -> WritebackPage:
    """Writeback entries, newest first, with their attempts, next attempt and last error.

    Pass `nextCursor` back as `cursor` (with the same filters) for the next page.
    """
    filters = {
        "status": params.status,
        "event_type": params.event_type,
        "contact_id": params.contact_id,
        "connection_id": params.connection_id,
    }
    # The cursor is signed and bound to the organisation and filters (server/cursor.py).
    key = cursor_key(ctx.settings)
    scope = ["crm.listWriteback", str(ctx.organisation_id), filters]
    before = None
    if params.cursor is not None:
        position = decode_cursor(key, scope, params.cursor)
        if len(position) != 1 or not isinstance(position[0], int):
            raise InvalidParams.for_field("cursor", "is not a cursor this list gave out")
        before = position[0]
    rows = await ctx.db.all(
        SELECT_ENTRIES,
        {
            "organisation_id": ctx.organisation_id,
            **filters,
            "before": before,
            "limit": params.limit + 1,
        },
    )
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    cursor = encode_cursor(key, scope, [rows[-1]["seq"]]) if more else None
    return WritebackPage(items=_entries(rows), next_cursor=cursor)


@mutation(guard=ADMIN, errors=(NotFound, Conflict))
async def retry_writeback(ctx: Context, params: RetryWritebackParams) -> WritebackEntry:
    """Send a failed entry again, with a fresh set of attempts."""
    scope = {"organisation_id": ctx.organisation_id, "id": params.id}
    row = await ctx.db.one(RETRY_ENTRY, scope)
    if row is None:
        if await ctx.db.one(SELECT_ENTRY, scope) is None:
            raise NotFound("Not found: no writeback entry with this id")
        raise Conflict("Conflict: only a failed entry of a connected CRM can be retried")
    ctx.record("crm_writeback", params.id, ["status", "attempts"])
    return WritebackEntry.model_validate(dict(row))


@query(guard=ADMIN, errors=(NotFound,))
async def test_connection(ctx: Context, params: TestConnectionParams) -> ConnectionCheck:
    """Try the connection's stored credentials against the CRM now, with a call that changes
    nothing there; the answer says ok or why not, never a credential.

    Writes nothing: the connection's status stays the worker's to set.
    """
    scope = {"organisation_id": ctx.organisation_id, "id": params.connection_id}
    row = await ctx.db.one(SELECT_SEALED, scope)
    if row is None:
        raise NotFound("Not found: no CRM connection with this id")
    config, adapters = _platform()
    adapter = adapters[row["provider_id"]]
    outcome, message = "ok", ""
    try:
        credentials = open_credentials(
            ctx.settings.encryption_keys,
            ctx.organisation_id,
            params.connection_id,
            bytes(row["encrypted_credentials"]),
        )
        async with httpx.AsyncClient(timeout=config.crm_timeout, follow_redirects=False) as http:
            tried = await reaching(adapter.name, adapter.check(http, credentials, row["settings"]))
        message = f"{adapter.name} accepted {tried}"
    except CryptoError as exc:  # names a key id at most
        outcome, message = "failed", f"the stored credentials cannot be read: {exc}"
    except AuthRejected as exc:
        outcome, message = "refused", str(exc)
    except TransientFailure as exc:
        outcome, message = "failed", str(exc)
    except NotDeliverable as exc:
        outcome, message = "not_checked", str(exc)
    return ConnectionCheck(
        connection_id=params.connection_id,
        provider_id=row["provider_id"],
        outcome=outcome,
        message=message,
        checked_at=datetime.now(UTC),
    )


@query(guard=AUTHED, errors=(NotFound,))
async def get_sync_status(ctx: Context, params: GetSyncStatusParams) -> SyncStatus:
    """Inbound sync of one connection: per stream its watermark, lag and last run with its
    counts, and the webhook inbox's backlog."""
    return await _sync_status(ctx, params.connection_id)


@mutation(guard=ADMIN, errors=(NotFound, Conflict))
async def sync_now(ctx: Context, params: SyncNowParams) -> SyncStatus:
    """Poll the connection now (one stream or all); with reset, re-read everything from the
    start: records already held are matched by their CRM id, so nothing is duplicated."""
    scope = {"organisation_id": ctx.organisation_id, "id": params.connection_id}
    current = await ctx.db.one(LOCK_CONNECTION, scope)
    if current is None:
        raise NotFound("Not found: no CRM connection with this id")
    if not _pollable(current["provider_id"]):
        raise Conflict("Conflict: NurtureHub does not poll this CRM yet (README, CRM sync (inbound))")
    known = _streams(current["provider_id"])
    if params.stream and params.stream not in known:
        raise InvalidParams.for_field("stream", "this CRM has no such stream")
    for stream in [params.stream] if params.stream else known:
        await ctx.db.execute(REQUEST_SYNC, {**scope, "stream": stream, "reset": params.reset})
    ctx.record("crm_connection", params.connection_id, ["syncCursor"] if params.reset else ["nextSyncAt"])
    return await _sync_status(ctx, params.connection_id)


@query(guard=AUTHED, errors=(NotFound,))
async def list_sync_runs(ctx: Context, params: ListSyncRunsParams) -> list[SyncRun]:
    """The connection's sync runs, newest first, with what each fetched and did."""
    scope = {"organisation_id": ctx.organisation_id, "id": params.connection_id}
    if await ctx.db.one(SELECT_SYNC_STATE, scope) is None:
        raise NotFound("Not found: no CRM connection with this id")
    rows = await ctx.db.all(SELECT_RUNS, {**scope, "limit": params.limit})
    return [SyncRun.model_validate(dict(row)) for row in rows]


@query(guard=ADMIN)
async def list_webhook_events(ctx: Context, params: ListWebhookEventsParams) -> list[WebhookEvent]:
    """Webhook deliveries from the organisation's CRMs, newest first; never their payloads."""
    rows = await ctx.db.all(SELECT_EVENTS, {
        "organisation_id": ctx.organisation_id, "connection_id": params.connection_id,
        "status": params.status, "limit": params.limit,
    })
    return [WebhookEvent.model_validate(dict(row)) for row in rows]


@mutation(guard=ADMIN, errors=(NotFound, Conflict))
async def replay_webhook_event(ctx: Context, params: ReplayWebhookEventParams) -> WebhookEvent:
    """Apply a processed (done, skipped or dead) webhook event again, reading the record from
    the CRM as it is now."""
    scope = {"organisation_id": ctx.organisation_id, "id": params.id}
    row = await ctx.db.one(REPLAY_EVENT, scope)
    if row is None:
        if await ctx.db.one(SELECT_EVENT, scope) is None:
            raise NotFound("Not found: no webhook event with this id")
        raise Conflict("Conflict: only a processed event of a connected CRM can be replayed")
    ctx.record("crm_webhook_event", params.id, ["status"])
    return WebhookEvent.model_validate(dict(row))


router = Router(
    {
        "listConnections": list_connections,
        "connect": connect,
        "testConnection": test_connection,
        "updateConnection": update_connection,
        "disconnect": disconnect,
        "enqueueWriteback": enqueue_writeback,
        "listWriteback": list_writeback,
        "retryWriteback": retry_writeback,
        "getSyncStatus": get_sync_status,
        "syncNow": sync_now,
        "listSyncRuns": list_sync_runs,
        "listWebhookEvents": list_webhook_events,
        "replayWebhookEvent": replay_webhook_event,
    }
)
