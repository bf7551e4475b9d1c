"""Per-connection request limits for CRM calls, one rule for sync and writeback (issue 17, point 4).

Each CRM's published limit is split between the two directions of a connection (sync reads,
writeback writes), so `nurturehub sync` and `nurturehub worker` together stay within it:

    Reapit   5 in flight per customer, 20 a second   sync 3 and 12/s, writeback 2 and 8/s
    agentOS  50 a minute per key; after a 429 wait   sync 40/min, writeback 10/min; a 429
             (hammering gets the key blocked)          without Retry-After waits 60 s
    Street   600 reads and 100 writes a minute        sync (reads) 500/min, writeback 90/min
    Alto, Loop  none published                        start low (2/s, 1 in flight), halve the
                                                      rate on each 429, creep back after 20 oks

A Gate spaces calls by the rate (no bursts: the CRMs count by the second, or by the minute) and
caps how many are in flight. With a database (Limiter(direction, database_url)), every process on
it shares each connection's budget: a call takes one of the connection's in-flight slots as a
session advisory lock on the limiter's own connection (a killed process's slots free themselves
with its session), then moves the connection's next start time (crm_call_schedule.next_at) on by
one interval in one statement and waits until its own start; a 429's pause is written there too,
so every process waits it out. That is one round trip or two per CRM call, which takes a
hundred times longer. When the database cannot be reached the gate falls back to spacing within
its process (failing open, as server/ratelimit.py does, on the same own-connection helper). The
workers also hold the other direction through the database (writeback.py holds the connection's
queue, sync.py its next poll).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from uuid import UUID

from server.db import sql
from server.ownconn import OwnConnection

__all__ = ["BUDGETS", "Budget", "Direction", "Gate", "Limiter"]

Direction = Literal["sync", "writeback"]

log = logging.getLogger("nurturehub.limits")

# The connection's next start: `wait` is how long this call waits for its own.
RESERVE = sql("""
    INSERT INTO crm_call_schedule AS s (organisation_id, connection_id, direction, next_at)
    VALUES (:organisation_id, :connection_id, :direction,
            clock_timestamp() + make_interval(secs => :interval))
    ON CONFLICT (organisation_id, connection_id, direction) DO UPDATE
       SET next_at = greatest(s.next_at, s.paused_until, clock_timestamp())
                     + make_interval(secs => :interval)
    RETURNING greatest(0, extract(epoch FROM s.next_at - clock_timestamp())::float8 - :interval)
""")
PAUSE = sql("""
    INSERT INTO crm_call_schedule AS s (organisation_id, connection_id, direction, next_at, paused_until)
    VALUES (:organisation_id, :connection_id, :direction, clock_timestamp(),
            clock_timestamp() + make_interval(secs => :wait))
    ON CONFLICT (organisation_id, connection_id, direction) DO UPDATE
       SET paused_until = greatest(s.paused_until, clock_timestamp() + make_interval(secs => :wait))
""")
TRY_SLOT = sql("SELECT pg_try_advisory_lock(:key)")
FREE_SLOT = sql("SELECT pg_advisory_unlock(:key)")
SLOT_WAIT = 0.02  # seconds between tries for a free in-flight slot


@dataclass(frozen=True)
class Budget:
    concurrent: int  # calls in flight at once, per connection
    per_second: float  # the sustained rate, per connection
    after_429: float  # seconds to wait after a 429 that names no Retry-After
    adaptive: bool = False  # no published limit: halve on a 429, recover slowly, never above


_UNPUBLISHED = Budget(1, 2.0, 10.0, adaptive=True)
BUDGETS: dict[tuple[str, Direction], Budget] = {
    ("reapit", "sync"): Budget(3, 12.0, 5.0),
    ("reapit", "writeback"): Budget(2, 8.0, 5.0),
    ("agentos", "sync"): Budget(1, 40 / 60, 60.0),
    ("agentos", "writeback"): Budget(1, 10 / 60, 60.0),
    ("street", "sync"): Budget(2, 500 / 60, 60.0),
    ("street", "writeback"): Budget(2, 90 / 60, 60.0),
    ("alto", "sync"): _UNPUBLISHED,
    ("alto", "writeback"): _UNPUBLISHED,
    ("loop", "sync"): _UNPUBLISHED,
    ("loop", "writeback"): _UNPUBLISHED,
}
_FLOOR = 1 / 60  # an adaptive rate never falls below one call a minute
_RECOVER_AFTER = 20  # successes in a row before an adaptive rate grows a quarter


class Gate:
    """One connection's calls in one direction: `async with gate:` around each CRM call, then
    `gate.rate_limited(retry_after)` on a 429 or `gate.succeeded()` otherwise."""

    def __init__(self, budget: Budget, shared: _Shared | None = None) -> None:
        self.budget = budget
        self.rate = budget.per_second
        self._slots = asyncio.Semaphore(budget.concurrent)
        self._next_at = 0.0  # monotonic time the next call may start
        self._paused_until = 0.0
        self._streak = 0
        self._shared = shared
        self._held: list[int] = []  # the cross-process slots this process's calls hold

    async def __aenter__(self) -> Gate:
        await self._slots.acquire()
        try:
            if self._shared is not None and await self._enter_shared(self._shared):
                return self
            now = time.monotonic()
            start = max(now, self._next_at)
            self._next_at = start + 1 / self.rate
            while True:
                wait = max(start, self._paused_until) - time.monotonic()
                if wait <= 0:
                    return self
                await asyncio.sleep(wait)
        except BaseException:
            self._slots.release()
            raise

    async def _enter_shared(self, shared: _Shared) -> bool:
        """A slot and a start time from the database; False when it cannot be asked (then the
        call is spaced within this process only)."""
        try:
            key = await shared.take_slot(self.budget.concurrent, self._held)
        except Exception as exc:  # any failure: fail open to the process's own spacing
            shared.failed(exc)
            return False
        self._held.append(key)
        try:
            wait = await shared.reserve(1 / self.rate)
        except Exception as exc:
            shared.failed(exc)
            wait = 0.0
        except BaseException:
            await self._free_one()
            raise
        try:
            while True:
                wait = max(wait, self._paused_until - time.monotonic())
                if wait <= 0:
                    return True
                await asyncio.sleep(wait)
                wait = 0.0
        except BaseException:
            await self._free_one()
            raise

    async def _free_one(self) -> None:
        if self._held and self._shared is not None:
            key = self._held.pop()
            try:
                await self._shared.free_slot(key)
            except Exception as exc:  # the session is gone, and its locks with it
                self._shared.failed(exc)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._free_one()
        finally:
            self._slots.release()

    def rate_limited(self, retry_after: float | None) -> float:
        """A 429: no call of this connection before Retry-After (else the provider's own wait)
        has passed; an adaptive rate halves. Returns the wait."""
        wait = self.budget.after_429 if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, time.monotonic() + wait)
        self._streak = 0
        if self._shared is not None:
            self._shared.pause(wait)
        if self.budget.adaptive:
            self.rate = max(_FLOOR, self.rate / 2)
        return wait

    def succeeded(self) -> None:
        if not self.budget.adaptive or self.rate >= self.budget.per_second:
            return
        self._streak += 1
        if self._streak >= _RECOVER_AFTER:
            self._streak = 0
            self.rate = min(self.budget.per_second, self.rate * 1.25)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())


class _Shared:
    """One connection's budget in one direction, as every process on the database shares it."""

    def __init__(
        self, own: OwnConnection, organisation_id: UUID, connection_id: UUID, direction: Direction
    ) -> None:
        self._own = own
        self._scope = {
            "organisation_id": organisation_id, "connection_id": connection_id, "direction": direction,
        }
        self._keys_of = f"crm-call:{connection_id}:{direction}"
        self._tasks: set[asyncio.Task[None]] = set()
        self.failing = False

    def _key(self, slot: int) -> int:
        digest = hashlib.blake2b(f"{self._keys_of}:{slot}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def take_slot(self, concurrent: int, held: list[int]) -> int:
        """One of the connection's `concurrent` in-flight slots, over every process. A session
        may take an advisory lock it holds again, so this process's own (`held`) are skipped."""
        while True:
            for slot in range(concurrent):
                key = self._key(slot)
                if key in held:
                    continue
                row = await self._own.fetchone(TRY_SLOT.query, {"key": key})
                if row is not None and row[0]:
                    self._answered()
                    return key
            await asyncio.sleep(SLOT_WAIT)

    async def free_slot(self, key: int) -> None:
        await self._own.fetchone(FREE_SLOT.query, {"key": key})

    async def reserve(self, interval: float) -> float:
        row = await self._own.fetchone(RESERVE.query, {**self._scope, "interval": interval})
        return float(row[0]) if row is not None else 0.0

    def pause(self, wait: float) -> None:
        task = asyncio.get_running_loop().create_task(self._pause(wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, wait: float) -> None:
        try:
            await self._own.fetchone(PAUSE.query, {**self._scope, "wait": wait})
        except Exception as exc:
            self.failed(exc)

    def _answered(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("CRM call limits: the database answers again; limits are shared again")

    def failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            log.warning(
                "CRM call limits: cannot reach the database (%s); each process spaces its own "
                "calls until it answers", type(exc).__name__,
            )


class Limiter:
    """The gates of one worker process, one per connection, for one direction; with a database
    URL, shared with every other process on that database."""

    def __init__(self, direction: Direction, database_url: str | None = None) -> None:
        self.direction = direction
        self._gates: dict[UUID, Gate] = {}
        self._own = OwnConnection(database_url) if database_url else None

    def gate(self, provider_id: str, connection_id: UUID, organisation_id: UUID | None = None) -> Gate:
        gate = self._gates.get(connection_id)
        if gate is None:
            budget = BUDGETS.get((provider_id, self.direction), _UNPUBLISHED)
            shared = None
            if self._own is not None and organisation_id is not None:
                shared = _Shared(self._own, organisation_id, connection_id, self.direction)
            gate = self._gates[connection_id] = Gate(budget, shared)
        return gate

    async def close(self) -> None:
        if self._own is not None:
            await self._own.close()
