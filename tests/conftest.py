"""Fixtures, layered: PostgreSQL server -> test database with the schema -> the real server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from procedures import app_router
from server.db import Database
from tests.crm_support import agency, crm, crm_server, fake  # noqa: F401  (CRM test fixtures)
from tests.support import LoopThread, PostgresServer, Rpc, ServerThread, World
from tests.sync_support import alto, hooks, reapit, street, sync  # noqa: F401  (inbound sync test fixtures)

# The test servers' erasure suppression key: random per session, as a real one must be.
SUPPRESSION_KEY = secrets.token_bytes(32)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def database_url(postgres: PostgresServer, loop: LoopThread) -> str:
    """A database of this session's own, with the schema applied and the providers seeded."""
    return postgres.create_prepared_database(loop)


@pytest.fixture
def fresh_database(postgres: PostgresServer, loop: LoopThread) -> str:
    """A database of the test's own, for a test that must see or touch all of one (rotating
    every credential in it, counting or cutting its connections)."""
    return postgres.create_prepared_database(loop)


@pytest.fixture(scope="session")
def db(database_url: str, loop: LoopThread) -> Iterator[Database]:
    database = Database(database_url, pool_size=4)
    yield database
    loop.run(database.close())


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[ServerThread]:
    thread = ServerThread(database_url, app_router, suppression_key=SUPPRESSION_KEY)
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def world(loop: LoopThread, db: Database) -> World:
    return World(loop, db)


@pytest.fixture
def rpc(server: ServerThread) -> Iterator[Rpc]:
    client = Rpc(server.url)
    yield client
    client.http.close()


@pytest.fixture(scope="session")
def probe_server(database_url: str) -> Iterator[ServerThread]:
    """The app plus test-only probe.* procedures."""
    from tests.probe import probe_router

    thread = ServerThread(database_url, probe_router, suppression_key=SUPPRESSION_KEY)
    yield thread
    thread.stop()


@pytest.fixture
def probe(probe_server: ServerThread) -> Iterator[Rpc]:
    client = Rpc(probe_server.url)
    yield client
    client.http.close()
