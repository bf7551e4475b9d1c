"""A process's own autocommit connection for small coordinating statements (leases, schedules),
apart from the request pool: short timeouts, dropped on any error, and not retried for a second
after a failure, so callers that fail open are not held up by a database that is away."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg

from server.db import conninfo

__all__ = ["OwnConnection"]

CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 2000  # a lease stuck behind a lock fails (open) rather than hold the rest


class OwnConnection:
    def __init__(self, database_url: str) -> None:
        self._conninfo = conninfo(database_url)
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0  # no connection attempt before this (monotonic), after a failure

    async def fetchone(self, query: str, params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """One statement's first row, one statement at a time; any error drops the connection."""
        async with self._lock:
            connection = await self._connect()
            try:
                cursor = await connection.execute(query, params)
                return await cursor.fetchone() if cursor.description else None
            except BaseException:  # psycopg's errors, or a cancellation half-way through a statement
                await self._drop()
                raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        if time.monotonic() < self._down_until:
            raise psycopg.OperationalError("the database was unreachable a moment ago")
        try:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            )
        except psycopg.Error:
            self._down_until = time.monotonic() + 1.0
            raise
        return self._connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._down_until = time.monotonic() + 1.0
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
