"""Fixtures and helpers for the CRM tests: a server with an encryption key, the fake CRM, workers."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from integrations.config import CrmConfig
from integrations.writeback import Worker
from procedures import app_router
from server.crypto import Keyring, new_key_entry
from server.db import Database
from tests.fake_crm import FakeCrm
from tests.support import LoopThread, Org, Rpc, ServerThread, World, query, wait_until

KEY_SPEC = new_key_entry()
KEYRING = Keyring.parse(KEY_SPEC)


@pytest.fixture(scope="session")
def crm_server(database_url: str) -> Iterator[ServerThread]:
    """The app with an encryption key configured."""
    thread = ServerThread(
        database_url, app_router, encryption_keys=KEYRING, suppression_key=secrets.token_bytes(32)
    )
    yield thread
    thread.stop()


@pytest.fixture
def crm(crm_server: ServerThread) -> Iterator[Rpc]:
    client = Rpc(crm_server.url)
    yield client
    client.http.close()


@pytest.fixture
def fake() -> Iterator[FakeCrm]:
    server = FakeCrm()
    yield server
    server.stop()


@pytest.fixture
def agency(world: World, database_url: str) -> Iterator[Org]:
    """An organisation whose open writeback events are cancelled afterwards, so no later test's
    worker delivers them."""
    org = world.org("CRM Agency")
    yield org
    query(
        database_url,
        "UPDATE crm_writeback_queue SET status = 'failed', lease_expires_at = NULL,"
        " locked_by = NULL WHERE organisation_id = %s AND status IN ('pending', 'processing')",
        (org.id,),
    )


def make_contact(
    rpc: Rpc, org: Org, connection_id: str | None, external_id: str | None, **fields: Any
) -> str:
    """A contact known to the CRM `connection_id` under `external_id`."""
    params = {"firstName": "Test", "crmConnectionId": connection_id, "externalId": external_id}
    created = rpc.call("contacts.create", {**params, **fields}, org.member_token)
    return str(created["id"])


def connect(
    rpc: Rpc, org: Org, provider: str = "reapit", credentials: dict[str, Any] | None = None, **settings: Any
) -> dict[str, Any]:
    default = {
        "reapit": {"customerId": "SBOX"},
        "alto": {"agencyRef": str(uuid.uuid4())},
        "street": {"apiToken": "street-token-" + uuid.uuid4().hex},
        "agentos": {"apiKey": "agentos-key-" + uuid.uuid4().hex, "shortName": "demo"},
        "loop": {"apiKey": str(uuid.uuid4())},
    }[provider]
    params = {"providerId": provider, "credentials": credentials or default, "settings": settings}
    result: dict[str, Any] = rpc.call("crm.connect", params, org.admin_token)
    return result


def opened(subject: str = "Spring valuation offer") -> dict[str, Any]:
    return {"subject": subject, "openedAt": "2026-03-20T09:15:00Z"}


def enqueue(
    rpc: Rpc,
    org: Org,
    contact_id: str,
    event_type: str = "email_opened",
    payload: dict[str, Any] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "contactId": contact_id,
        "eventType": event_type,
        "payload": payload or opened(),
    }
    if key is not None:
        params["idempotencyKey"] = key
    result: dict[str, Any] = rpc.call("crm.enqueueWriteback", params, org.member_token)
    return result


def entry(database_url: str, entry_id: str) -> dict[str, Any]:
    rows = query(
        database_url,
        "SELECT status, attempts, last_error, external_id, next_attempt_at, lease_expires_at"
        " FROM crm_writeback_queue WHERE id = %s",
        (entry_id,),
    )
    keys = ("status", "attempts", "last_error", "external_id", "next_attempt_at", "lease_expires_at")
    return dict(zip(keys, rows[0], strict=True))


def attempts(database_url: str, entry_id: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT attempt, status_code, outcome, error FROM crm_writeback_attempts"
        " WHERE queue_id = %s ORDER BY started_at, attempt",
        (entry_id,),
    )


def connection_status(database_url: str, connection_id: str) -> tuple[str, str | None]:
    rows = query(
        database_url, "SELECT status, last_error_message FROM crm_connections WHERE id = %s", (connection_id,)
    )
    return rows[0][0], rows[0][1]


class RunningWorker:
    def __init__(
        self,
        loop: LoopThread,
        database_url: str,
        config: CrmConfig,
        keyring: Keyring,
        concurrency: int,
        worker_id: str | None,
    ) -> None:
        self.loop = loop
        self.db = Database(database_url, pool_size=concurrency + 2)
        self.worker = Worker(self.db, keyring, config, concurrency=concurrency, worker_id=worker_id)
        self.stop_event = asyncio.Event()
        self.future = asyncio.run_coroutine_threadsafe(self.worker.run(self.stop_event), loop.loop)

    def stop(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.stop_event.set)
        self.future.result(30)
        self.loop.run(self.db.close())


@contextmanager
def worker(
    loop: LoopThread,
    database_url: str,
    config: CrmConfig,
    *,
    keyring: Keyring = KEYRING,
    concurrency: int = 4,
    worker_id: str | None = None,
) -> Iterator[RunningWorker]:
    running = RunningWorker(loop, database_url, config, keyring, concurrency, worker_id)
    try:
        yield running
    finally:
        running.stop()


def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    assert wait_until(predicate, timeout=timeout), "timed out waiting for the worker"
