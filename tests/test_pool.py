"""server/pool.py against real connections: the hand-offs that HTTP tests cannot time."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from server.pool import Pool, PoolTimeout
from tests.support import LoopThread

Connection = psycopg.AsyncConnection[tuple[object, ...]]


def _pool(url: str, *, max_size: int, timeout: float = 2.0) -> tuple[Pool[Connection], list[int]]:
    opened: list[int] = []

    async def connect() -> Connection:
        connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        opened.append(connection.pgconn.backend_pid)
        return connection

    return Pool(connect, max_size=max_size, timeout=timeout), opened


def test_a_waiter_cancelled_after_the_hand_off_passes_the_connection_on(
    fresh_database: str, loop: LoopThread
) -> None:
    async def scenario() -> None:
        pool, opened = _pool(fresh_database, max_size=1)
        held = await pool.acquire()
        first = asyncio.create_task(pool.acquire())
        second = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.05)  # both are waiting now
        await pool.release(held)  # handed to `first`...
        first.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        got = await asyncio.wait_for(second, 1)
        assert got is held and len(opened) == 1 and pool.size == 1
        await pool.release(got)
        await pool.close()

    loop.run(scenario())


def test_a_timed_out_waiter_gets_pool_timeout_and_the_pool_stays_whole(
    fresh_database: str, loop: LoopThread
) -> None:
    async def scenario() -> None:
        pool, opened = _pool(fresh_database, max_size=1, timeout=0.1)
        held = await pool.acquire()
        with pytest.raises(PoolTimeout):
            await pool.acquire()
        await pool.release(held)
        again = await pool.acquire()
        assert again is held and len(opened) == 1 and pool.size == 1
        await pool.release(again)
        await pool.close()

    loop.run(scenario())


def test_connections_open_on_demand_up_to_the_limit_and_bad_ones_are_replaced(
    fresh_database: str, loop: LoopThread
) -> None:
    async def scenario() -> None:
        pool, opened = _pool(fresh_database, max_size=3)

        async def use() -> None:
            connection = await pool.acquire()
            await connection.execute("SELECT pg_sleep(0.05)")
            await pool.release(connection)

        await asyncio.gather(*(use() for _ in range(9)))
        assert len(opened) == 3 and pool.size == 3

        # Left inside a transaction, or closed: not reused, and its slot is opened again.
        stuck = await pool.acquire()
        await stuck.execute("BEGIN")
        await pool.release(stuck)
        assert stuck.closed and pool.size == 2
        gone = await pool.acquire()
        await gone.close()
        await pool.release(gone)
        assert pool.size == 1
        await asyncio.gather(*(use() for _ in range(6)))
        assert pool.size == 3 and len(opened) == 5
        await pool.close()
        with pytest.raises(PoolTimeout):
            await pool.acquire()

    loop.run(scenario())


def test_a_waiter_gets_the_slot_of_a_connection_that_failed_to_come_back(
    fresh_database: str, loop: LoopThread
) -> None:
    async def scenario() -> None:
        pool, opened = _pool(fresh_database, max_size=1)
        held = await pool.acquire()
        waiting = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.05)
        await held.close()
        await pool.release(held)  # discarded: the waiter opens a new one in its slot
        fresh = await asyncio.wait_for(waiting, 2)
        assert fresh is not held and not fresh.closed and len(opened) == 2 and pool.size == 1
        await pool.release(fresh)
        await pool.close()

    loop.run(scenario())
