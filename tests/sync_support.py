"""Fixtures and helpers for the inbound sync tests (issue 17): the fake Reapit, the server with
the webhook receivers pointed at it, and `nurturehub sync`'s worker run round by round."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from integrations.config import CrmConfig
from integrations.sync import SyncWorker
from integrations.webhooks import Receiver
from procedures import app_router
from server.db import Database
from tests.crm_support import KEYRING
from tests.fake_alto import FakeAlto
from tests.fake_reapit import FakeReapit
from tests.fake_street import FakeStreet
from tests.support import LoopThread, Rpc, ServerThread

SUPPRESSION_KEY = secrets.token_bytes(32)


@pytest.fixture
def reapit() -> Iterator[FakeReapit]:
    fake = FakeReapit()
    yield fake
    fake.stop()


@pytest.fixture
def street() -> Iterator[FakeStreet]:
    fake = FakeStreet()
    yield fake
    fake.stop()


@pytest.fixture
def alto() -> Iterator[FakeAlto]:
    fake = FakeAlto()
    yield fake
    fake.stop()


def receiving(database_url: str, config: CrmConfig) -> Iterator[Rpc]:
    """The app with the webhook receivers, configured by `config` (a fixture's body)."""
    thread = ServerThread(
        database_url,
        app_router,
        encryption_keys=KEYRING,
        suppression_key=SUPPRESSION_KEY,
        extra_routes=lambda db, settings: Receiver(db, settings.encryption_keys, config).routes(),
    )
    client = Rpc(thread.url)
    yield client
    client.http.close()
    thread.stop()


@pytest.fixture
def hooks(database_url: str, reapit: FakeReapit) -> Iterator[Rpc]:
    """The app with the webhook receivers, pointed at the fake Reapit."""
    yield from receiving(database_url, reapit.config())


class Sync:
    """`nurturehub sync`'s worker, run round by round until it has nothing left to do."""

    def __init__(self, loop: LoopThread, database_url: str, reapit: FakeReapit) -> None:
        self.loop = loop
        self.db = Database(database_url, pool_size=3)
        self.worker = SyncWorker(self.db, KEYRING, reapit.config(), SUPPRESSION_KEY)

    def drain(self, *connection_ids: str) -> None:
        """Rounds until nothing is left, for these connections only (other tests' connections
        in the shared database are not this test's to sync)."""
        self.worker.only = [uuid.UUID(c) for c in connection_ids]

        async def go() -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                for _ in range(200):
                    if not await self.worker.run_once(http):
                        return

        self.loop.run(go())

    def close(self) -> None:
        self.loop.run(self.worker.limiter.close())
        self.loop.run(self.db.close())


@pytest.fixture
def sync(loop: LoopThread, database_url: str, reapit: FakeReapit) -> Iterator[Sync]:
    worker = Sync(loop, database_url, reapit)
    yield worker
    worker.close()


def post_hook(rpc: Rpc, body: bytes, headers: dict[str, str], provider: str = "reapit") -> httpx.Response:
    return rpc.http.post(f"{rpc.base_url}/webhooks/crm/{provider}", content=body, headers=headers)


def person(**fields: Any) -> dict[str, Any]:
    """A Reapit contact's fields; each person their own email and phone (an erasure suppresses
    both, and a household's shared phone would keep its other members out too)."""
    base = {
        "forename": "Ada",
        "surname": "Lovelace",
        "email": f"ada.{uuid.uuid4().hex[:8]}@example.co.uk",
        "mobilePhone": f"07700 9{secrets.randbelow(100000):05d}",
        "primaryAddress": {"postcode": "sw1a 1aa"},
    }
    return {**base, **fields}
