"""A lean asyncio connection pool: what the server needs of one, and no more.

psycopg_pool's pool spent 14-22 us of CPU per checkout and return (a lock, statistics, reset
checks, a scheduler task), close to a tenth of a `contacts.get`; this one spends about 2 (see
README, Performance). What it keeps:
- connections open when demand needs them, up to `max_size`, and the most recently used one is
  handed out first (warm caches, prepared statements);
- a connection that comes back closed, broken or not idle (a transaction left open, a query
  still running) is closed, not reused; one older than `max_lifetime` is replaced;
- a caller that finds every connection busy waits, first come first served, up to `timeout`,
  then gets PoolTimeout; a caller asking for `priority` is served before every caller waiting
  without it (the dispatcher asks so for an organisation within its share of the pool).
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
        # A waiter's future gets a connection, or None: a slot is free, open your own. Priority
        # waiters are served first; each deque is in arrival order.
        self._waiters: deque[asyncio.Future[C | None]] = deque()
        self._priority_waiters: deque[asyncio.Future[C | None]] = deque()
        self._wait_started: dict[int, float] = {}  # id(waiter) -> loop time it began waiting
        self._closed = False
        # For metrics: callers that had to wait, their seconds waiting, and those who gave up.
        self.waits = 0
        self.wait_seconds = 0.0
        self.timeouts = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def saturated(self) -> bool:
        """Every connection is out: a caller now would wait."""
        return not self._idle and self._size >= self._max_size

    @property
    def in_use(self) -> int:
        return self._size - len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._wait_started)

    def longest_wait(self) -> float:
        """Seconds the longest-waiting caller still waiting has waited (0: nobody waits)."""
        if not self._wait_started:
            return 0.0
        return asyncio.get_running_loop().time() - min(self._wait_started.values())

    async def acquire(self, *, priority: bool = False) -> C:
        if self._closed:
            raise PoolTimeout("the pool is closed")
        while self._idle:
            connection = self._idle.pop()
            if self._usable(connection):
                return connection
            await self._discard(connection)
        if self._size >= self._max_size:
            connection_or_slot = await self._wait(priority)
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
        for waiters in (self._priority_waiters, self._waiters):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    return waiter
        return None

    async def _wait(self, priority: bool) -> C | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[C | None] = loop.create_future()
        (self._priority_waiters if priority else self._waiters).append(waiter)
        # A plain timer, not asyncio.timeout(): under load many callers wait here.
        expiry = loop.call_later(self._timeout, self._expire, waiter)
        self.waits += 1
        started = self._wait_started[id(waiter)] = loop.time()
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
            del self._wait_started[id(waiter)]
            self.wait_seconds += loop.time() - started

    def _expire(self, waiter: asyncio.Future[C | None]) -> None:
        if not waiter.done():
            self.timeouts += 1
            waiter.set_exception(PoolTimeout(f"no connection was free within {self._timeout} s"))
