"""The CRM webhook receivers, `POST /webhooks/crm/{provider}`, mounted by `nurturehub serve`.

A delivery is checked by its provider (signature, replay window) before anything is stored,
routed to its connection by the plaintext tenant selector (never by decrypting credentials),
sealed into crm_webhook_inbox with the provider's event identity as its dedupe key, and
answered at once: no CRM call but the (cached) signing-key fetch. `nurturehub sync` applies it.

    202  stored (or a duplicate of one stored, or unrouted: kept until a connection claims it)
    200  a test ping, stored nowhere
    400  not an event of this provider; 401 forged, stale or unsigned: never retried by the CRM
    404  a connection path that names no connection (nothing to check it by: nothing stored)
    410  a provider that documents no webhooks; 413 a body over the limit
    503  the signing key or the database cannot be had now: the CRM retries

Street signs nothing it documents, so its deliveries are checked by a secret held (sealed) on
each connection: its path names the connection, `/webhooks/crm/street/{connection id}`, the
selector in plaintext, and the connection's settings say how the secret is sent. A path naming
no connection cannot be checked, so it is refused with 404 and nothing is stored; a checked
payload is still never trusted: Street's events are applied by reading the person again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson
import psycopg
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from integrations.config import CrmConfig
from integrations.providers import PROVIDERS, build_adapters
from integrations.providers.base import InboundEvent, WebhookRefused
from procedures.crm_credentials import open_credentials
from server.crypto import CryptoError, Keyring, NoEncryptionKey, associated_data
from server.db import Database, Row, sql
from server.errors import RPCError
from server.settings import Settings

__all__ = ["INBOX_PAYLOAD", "Receiver", "open_payload", "routes", "seal_payload"]

log = logging.getLogger("nurturehub.webhooks")

INBOX_TABLE, INBOX_PAYLOAD = "crm_webhook_inbox", "payload"

ROUTE = sql("""
    SELECT organisation_id, id FROM crm_connections
     WHERE provider_id = :provider_id AND tenant_ref = :tenant_ref
     LIMIT 2
""")
CONNECTION = sql("""
    SELECT organisation_id, id, encrypted_credentials, settings FROM crm_connections
     WHERE provider_id = :provider_id AND id = :id
""")
STORE = sql("""
    INSERT INTO crm_webhook_inbox
           (id, provider_id, organisation_id, connection_id, tenant_ref, dedupe_key, topic,
            entity_id, event_time, status, payload)
    VALUES (:id, :provider_id, :organisation_id, :connection_id, :tenant_ref, :dedupe_key,
            :topic, :entity_id, :event_time, :status, :payload)
    ON CONFLICT (provider_id, dedupe_key) DO NOTHING
    RETURNING id
""")


def _aad(provider_id: str, event_id: object) -> bytes:
    # Bound to the row, not to an organisation: an unrouted event gains one later.
    return associated_data(provider_id, INBOX_TABLE, INBOX_PAYLOAD, event_id)


def seal_payload(keyring: Keyring, provider_id: str, event_id: object, body: bytes) -> bytes:
    return keyring.encrypt(body, _aad(provider_id, event_id))


def open_payload(keyring: Keyring, provider_id: str, event_id: object, sealed: bytes) -> bytes:
    return keyring.decrypt(sealed, _aad(provider_id, event_id))


def _answer(code: int, **body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


class Receiver:
    def __init__(self, db: Database, keyring: Keyring, config: CrmConfig) -> None:
        self.db = db
        self.keyring = keyring
        self.config = config
        self.adapters = build_adapters(config)
        self.limit = int(config.webhook_max_body_bytes)
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        # Only for the signing-key fetch, which is cached: a short timeout keeps the answer fast.
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=min(self.config.crm_timeout, 3.0), follow_redirects=False)
        return self._http

    def endpoint(self, provider_id: str) -> Any:
        async def receive(request: Request) -> Response:
            return await self.receive(provider_id, request)

        return receive

    def connection_endpoint(self, provider_id: str) -> Any:
        async def receive(request: Request) -> Response:
            return await self.receive(provider_id, request, request.path_params["ref"])

        return receive

    async def receive(self, provider_id: str, request: Request, ref: str | None = None) -> Response:
        adapter: Any = self.adapters[provider_id]
        verify = getattr(adapter, "verify_webhook", None)
        by_connection = hasattr(adapter, "check_webhook")
        if verify is None and not (by_connection and ref is not None):
            reason = PROVIDERS[provider_id].no_webhooks or f"{adapter.name} webhooks are not taken yet"
            if by_connection:
                reason = f"{adapter.name} webhooks are taken at /webhooks/crm/{provider_id}/{{connection id}}"
            return _answer(410, error=reason)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return _answer(413, error=f"the body may be at most {self.limit} bytes")
        try:
            body = await self._body(request)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            return _answer(413, error=f"the body may be at most {self.limit} bytes")
        route: Row | None = None
        try:
            if ref is None:
                assert verify is not None
                event: InboundEvent = await verify(self.http, dict(request.headers), body)
            else:
                try:
                    connection_id = UUID(ref)
                except ValueError:
                    return _answer(404, error="no such connection path")
                route = await self._connection(provider_id, connection_id)
                if route is None:
                    # Without its connection there is no secret to check it by: storing it
                    # would let anyone write to the inbox.
                    return _answer(404, error="no such connection path")
                credentials = open_credentials(
                    self.keyring, route["organisation_id"], route["id"],
                    bytes(route["encrypted_credentials"]),
                )  # fmt: skip
                adapter.check_webhook(dict(request.headers), body, credentials, route["settings"])
                event = adapter.parse_webhook(dict(request.headers), body, str(connection_id))
        except WebhookRefused as exc:
            if exc.status >= 500:
                log.warning("webhook not taken: %s", exc.reason, extra={"rpc": {"provider": provider_id}})
            return _answer(exc.status, error=exc.reason)
        except (NoEncryptionKey, CryptoError, RPCError, psycopg.Error, OSError):
            log.exception("a webhook's connection could not be read")
            return _answer(503, error="the event cannot be checked now; try again")
        if event.tenant_ref is None:
            return _answer(200, status="ignored", reason="a test ping")
        try:
            stored = await self._store(provider_id, event, body, route)
        except (NoEncryptionKey, RPCError, psycopg.Error, OSError):
            log.exception("a webhook could not be stored")
            return _answer(503, error="the event cannot be stored now; try again")
        return _answer(202, status=stored)

    def routes(self) -> list[BaseRoute]:
        """One route per provider at its registry webhook path (seeds/crm_providers.py), and one
        per connection for a provider whose secret is the connection's (Street)."""
        found: list[BaseRoute] = [
            Route(f"/webhooks/crm/{provider_id}", self.endpoint(provider_id), methods=["POST"])
            for provider_id in PROVIDERS
        ]
        found += [
            Route(f"/webhooks/crm/{pid}/{{ref}}", self.connection_endpoint(pid), methods=["POST"])
            for pid, adapter in self.adapters.items()
            if hasattr(adapter, "check_webhook")
        ]
        return found

    async def _connection(self, provider_id: str, connection_id: UUID) -> Row | None:
        async with self.db.transaction() as tx:
            return await tx.one(CONNECTION, {"provider_id": provider_id, "id": connection_id})

    async def _body(self, request: Request) -> bytes | None:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _store(
        self, provider_id: str, event: InboundEvent, body: bytes, checked: Row | None = None
    ) -> str:
        """Sealed into the inbox, routed to `checked` (the connection whose secret passed) or
        else by the tenant selector."""
        event_id = uuid4()
        sealed = seal_payload(self.keyring, provider_id, event_id, body)
        async with self.db.transaction() as tx:
            route = checked
            if route is None and not hasattr(self.adapters[provider_id], "check_webhook"):
                found = await tx.all(ROUTE, {"provider_id": provider_id, "tenant_ref": event.tenant_ref})
                # Several organisations naming one selector (a shared sandbox): routed to none.
                route = found[0] if len(found) == 1 else None
            stored = await tx.scalar(
                STORE,
                {
                    "id": event_id,
                    "provider_id": provider_id,
                    "organisation_id": route["organisation_id"] if route else None,
                    "connection_id": route["id"] if route else None,
                    "tenant_ref": event.tenant_ref,
                    "dedupe_key": event.dedupe_key,
                    "topic": event.topic,
                    "entity_id": event.entity_id,
                    "event_time": event.event_time,
                    "status": "received" if route else "unrouted",
                    "payload": sealed,
                },
            )
        if stored is None:
            return "duplicate"
        return "accepted" if route else "unrouted"


def routes(db: Database, settings: Settings) -> Sequence[BaseRoute]:
    """The receivers `nurturehub serve` mounts, configured from the environment."""
    return Receiver(db, settings.encryption_keys, CrmConfig.from_env()).routes()
