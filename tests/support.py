"""Test plumbing: a real PostgreSQL per test session, the real server on a real port, raw HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import uvicorn

from server.accounts import create_organisation, issue_token
from server.app import create_app
from server.db import Database
from server.embedded import EmbeddedPostgres
from server.http import PROTOCOL as HTTP_PROTOCOL
from server.procedure import Router
from server.settings import Settings

T = TypeVar("T")


def with_database_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class PostgresServer:
    """The PostgreSQL the tests use: DATABASE_URL's server, else a throwaway embedded one."""

    def __init__(self) -> None:
        self._embedded: EmbeddedPostgres | None = None
        url = os.environ.get("DATABASE_URL")
        if not url:
            self._tmp = tempfile.mkdtemp(prefix="nh-test-")
            self._embedded = EmbeddedPostgres(Path(self._tmp), cleanup="delete")
            url = self._embedded.start()
        self.admin_url = url
        self._created: list[str] = []

    def create_database(self) -> str:
        """A new, empty database on this server; dropped when the session ends."""
        name = f"nh_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database_name(self.admin_url, name)

    def create_prepared_database(self, loop: LoopThread) -> str:
        """A new database with the schema applied and the CRM providers seeded."""
        from seeds.crm_providers import seed
        from server.migrate import Migrator

        url = self.create_database()

        async def prepare() -> None:
            await Migrator(url).init()
            db = Database(url, pool_size=1)
            try:
                await seed(db)
            finally:
                await db.close()

        loop.run(prepare())
        return url

    def close(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self._created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if self._embedded is not None:
            self._embedded.stop()


class LoopThread:
    """An event loop on a thread, so plain test functions can run coroutines against one engine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_loopback(app: Any, port: int, name: str, **options: Any) -> tuple[uvicorn.Server, threading.Thread]:
    """A fake's `app` under uvicorn on 127.0.0.1:`port`, in a daemon thread, once it listens."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {name} did not start")
        time.sleep(0.01)
    return server, thread


class ServerThread:
    """The real app under uvicorn on 127.0.0.1, in a background thread."""

    def __init__(self, database_url: str, router: Router, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Results a handler serialised itself are checked against their model in every test.
        settings.setdefault("verify_encoded_results", True)
        extra_routes = settings.pop("extra_routes", None)
        collectors = settings.pop("collectors", ())
        app = create_app(
            Settings(database_url=database_url, **settings),
            router,
            extra_routes=extra_routes,
            collectors=collectors,
        )
        self.app = app
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            http=HTTP_PROTOCOL,  # as `nurturehub serve` runs it
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@dataclass
class RpcError(Exception):
    error: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.error["data"]["code"])


class Rpc:
    """Raw JSON-RPC over HTTP, as the web app speaks it."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def post(self, payload: Any, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.http.post("/rpc", json=payload, headers=self.headers(token), **kwargs)

    def raw(self, body: bytes | str, token: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json", **self.headers(token)}
        return self.http.post("/rpc", content=body, headers=headers)

    def call(self, method: str, params: dict[str, Any] | None = None, token: str | None = None) -> Any:
        """The result, or RpcError carrying the error object."""
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            payload["params"] = params
        body = self.post(payload, token).json()
        if "error" in body:
            raise RpcError(body["error"])
        return body["result"]

    def error(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """The error object of a call that must fail."""
        try:
            result = self.call(method, params, token)
        except RpcError as exc:
            return exc.error
        raise AssertionError(f"{method} succeeded but should have failed: {result!r}")

    def as_(self, token: str) -> Rpc:
        return Rpc(self.base_url, token)


@dataclass(frozen=True)
class Org:
    id: str
    owner_token: str
    admin_token: str
    member_token: str
    owner_id: str
    member_id: str


class World:
    """Creates organisations and tokens through the same code the CLI uses."""

    def __init__(self, loop: LoopThread, db: Database) -> None:
        self.loop = loop
        self.db = db

    def org(self, name: str = "Test Agency") -> Org:
        async def make() -> Org:
            suffix = uuid.uuid4().hex[:8]
            async with self.db.transaction() as tx:
                owner = await create_organisation(tx, f"{name} {suffix}", f"owner-{suffix}@agency.co.uk")
                admin = await issue_token(tx, owner.organisation_id, f"admin-{suffix}@agency.co.uk", "admin")
                member = await issue_token(
                    tx, owner.organisation_id, f"member-{suffix}@agency.co.uk", "member"
                )
            return Org(
                str(owner.organisation_id),
                owner.token,
                admin.token,
                member.token,
                str(owner.user_id),
                str(member.user_id),
            )

        return self.loop.run(make())


@contextmanager
def sql_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with sql_connection(url) as conn:
        cursor = conn.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description is not None else []


def wait_until(predicate: Callable[[], bool], timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
