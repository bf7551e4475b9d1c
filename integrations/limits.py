"""Per-connection request limits for CRM calls, one rule for sync and writeback (issue 17, point 4).

Each CRM's published limit is split between the two directions of a connection (sync reads,
writeback writes), so `nurturehub sync` and `nurturehub worker` together stay within it:

    Reapit   5 in flight per customer, 20 a second   sync 3 and 12/s, writeback 2 and 8/s
    agentOS  50 a minute per key; after a 429 wait   sync 40/min, writeback 10/min; a 429
             (hammering gets the key blocked)          without Retry-After waits 60 s
    Street   600 reads and 100 writes a minute        sync (reads) 500/min, writeback 90/min
    Alto, Loop  none published                        start low (2/s, 1 in flight), halve the
                                                      rate on each 429, creep back after 20 oks

A 429's Retry-After (else the provider's own wait) pauses every call of that connection in this
process; the workers also hold the other direction through the database (writeback.py holds the
connection's queue, sync.py its next poll), as a process cannot see another's pause. Within a
process a Gate spaces calls by the rate (no bursts: the CRMs count by the second, or by the
minute) and caps how many are in flight.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from uuid import UUID

__all__ = ["BUDGETS", "Budget", "Direction", "Gate", "Limiter"]

Direction = Literal["sync", "writeback"]


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

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.rate = budget.per_second
        self._slots = asyncio.Semaphore(budget.concurrent)
        self._next_at = 0.0  # monotonic time the next call may start
        self._paused_until = 0.0
        self._streak = 0

    async def __aenter__(self) -> Gate:
        await self._slots.acquire()
        try:
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

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._slots.release()

    def rate_limited(self, retry_after: float | None) -> float:
        """A 429: no call of this connection before Retry-After (else the provider's own wait)
        has passed; an adaptive rate halves. Returns the wait."""
        wait = self.budget.after_429 if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, time.monotonic() + wait)
        self._streak = 0
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


class Limiter:
    """The gates of one worker process, one per connection, for one direction."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self._gates: dict[UUID, Gate] = {}

    def gate(self, provider_id: str, connection_id: UUID) -> Gate:
        gate = self._gates.get(connection_id)
        if gate is None:
            budget = BUDGETS.get((provider_id, self.direction), _UNPUBLISHED)
            gate = self._gates[connection_id] = Gate(budget)
        return gate
