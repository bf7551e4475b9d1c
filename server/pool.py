"""A lean asyncio connection pool: what the server needs of one, and no more.

psycopg_pool's pool spent 14-22 us of CPU per checkout and return (a lock, statistics, reset
checks, a scheduler task), close to a tenth of a `contacts.get`; this one spends about 2 (see
README, Performance). What it keeps:
- connections open when demand needs them, up to `max_size`, and the most recently used one is
  handed out first (warm caches, prepared statements);
- a connection that comes back closed, broken or not idle (a transaction left open, a query
  still running) is closed, not reused; one older than `max_lifetime` is replaced;
- a caller that finds every connection busy waits, first come first served, up to `timeout`,
  then gets PoolTimeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

__all__ = ["Pool", "PoolTimeout"]


class PoolTimeout(Exception):
    """No connection became free within the pool's timeout."""


C = TypeVar("C", bound="psycopg.AsyncConnection[Any]")


class Pool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        *,
        max_size: int,
        timeout: float,
        max_lifetime: float = 3600.0,
    ) -> None:
        if max_size < 1:
            raise ValueError("a pool needs at least one connection")
        self._connect = connect
        self._max_size = max_size
        self._timeout = timeout
        self._max_lifetime = max_lifetime
        self._idle: list[C] = []
        self._expires: dict[int, float] = {}  # id(connection) -> when it is due for replacing
        self._size = 0  # connections open or being opened
        # A waiter's future gets a connection, or None: a slot is free, open your own.
        self._waiters: deque[asyncio.Future[C | None]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def acquire(self) -> C:
        if self._closed:
            raise PoolTimeout("the pool is closed")
        while self._idle:
            connection = self._idle.pop()
            if self._usable(connection):
                return connection
            await self._discard(connection)
        if self._size >= self._max_size:
            connection_or_slot = await self._wait()
            if connection_or_slot is not None:
                return connection_or_slot
        else:
            self._size += 1
        return await self._open()

    async def release(self, connection: C) -> None:
        if self._closed or not self._usable(connection):
            await self._discard(connection)
            return
        waiter = self._next_waiter()
        if waiter is None:
            self._idle.append(connection)
        else:
            waiter.set_result(connection)

    async def close(self) -> None:
        """Close idle connections now and the others as they come back; refuse new callers."""
        self._closed = True
        while (waiter := self._next_waiter()) is not None:
            waiter.set_exception(PoolTimeout("the pool is closed"))
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._discard(connection)

    def _usable(self, connection: C) -> bool:
        return (
            not connection.closed
            and not connection.broken
            and connection.pgconn.transaction_status == TransactionStatus.IDLE
            and time.monotonic() < self._expires.get(id(connection), 0.0)
        )

    async def _open(self) -> C:
        """Open a connection in a slot already counted in `_size`."""
        try:
            connection = await self._connect()
        except BaseException:
            self._free_slot()
            raise
        self._expires[id(connection)] = time.monotonic() + self._max_lifetime
        return connection

    async def _discard(self, connection: C) -> None:
        self._expires.pop(id(connection), None)
        self._free_slot()
        try:
            await connection.close()
        except psycopg.Error:
            pass  # it is gone either way

    def _free_slot(self) -> None:
        """A connection closed (or failed to open): its slot goes to a waiter, if any."""
        waiter = self._next_waiter()
        if waiter is None:
            self._size -= 1
        else:
            waiter.set_result(None)  # the waiter opens a connection in this slot

    def _next_waiter(self) -> asyncio.Future[C | None] | None:
        """The longest-waiting caller still waiting (one that timed out or was cancelled is
        done, and skipped), or None."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    async def _wait(self) -> C | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[C | None] = loop.create_future()
        self._waiters.append(waiter)
        # A plain timer, not asyncio.timeout(): under load many callers wait here.
        expiry = loop.call_later(self._timeout, self._expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Cancelled after being handed a connection or a slot: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    await self.release(handed)
            raise
        finally:
            expiry.cancel()

    def _expire(self, waiter: asyncio.Future[C | None]) -> None:
        if not waiter.done():
            waiter.set_exception(PoolTimeout(f"no connection was free within {self._timeout} s"))
