"""Issue 17, point 2: every process on one database shares each connection's CRM budget
(integrations/limits.py on crm_call_schedule and advisory locks), so several `nurturehub sync`
or `worker` processes on one connection together stay within it. Each limiter here runs in a
thread of its own with its own event loop and its own database session, as a process would."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integrations.limits import BUDGETS, Limiter
from tests.support import free_port, serve_loopback


@dataclass
class LimitedCrm:
    """A fake CRM on loopback enforcing Reapit's published limits (usage-guidelines): at most
    `per_second` calls in any second and `concurrent` in flight, else 429 with Retry-After."""

    per_second: int = 20
    concurrent: int = 5
    hold: float = 0.05
    starts: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    most_in_flight: int = 0
    ok: int = 0
    too_many: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    async def contacts(self, request: Request) -> JSONResponse:
        with self._lock:
            now = time.monotonic()
            while self.starts and now - self.starts[0] >= 1.0:
                self.starts.popleft()
            if len(self.starts) >= self.per_second or self.in_flight >= self.concurrent:
                self.too_many += 1
                return JSONResponse({"error": "too many requests"}, 429, headers={"Retry-After": "1"})
            self.starts.append(now)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.hold)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.ok += 1
        return JSONResponse({"_embedded": []})


@pytest.fixture
def crm() -> Iterator[tuple[LimitedCrm, str]]:
    fake = LimitedCrm()
    port = free_port()
    app = Starlette(routes=[Route("/contacts/", fake.contacts)])
    server, thread = serve_loopback(app, port, "limited CRM")
    try:
        yield fake, f"http://127.0.0.1:{port}/contacts/"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def process(database_url: str | None, organisation_id: uuid.UUID, connection_id: uuid.UUID,
            url: str, calls: int, width: int, statuses: list[int]) -> threading.Thread:
    """A 'process': its own limiter, loop and session, `calls` reads `width` at a time."""

    async def main() -> None:
        limiter = Limiter("sync", database_url)
        gate = limiter.gate("reapit", connection_id, organisation_id)
        queue = list(range(calls))
        async with httpx.AsyncClient() as http:

            async def one() -> None:
                while queue:
                    queue.pop()
                    async with gate:
                        response = await http.get(url)
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        gate.rate_limited(None)

            await asyncio.gather(*(one() for _ in range(width)))
        await limiter.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    return thread


def run_two(database_url: str | None, url: str, calls: int = 30) -> list[int]:
    organisation_id, connection_id = uuid.uuid4(), uuid.uuid4()
    statuses: list[int] = []
    threads = [
        process(database_url, organisation_id, connection_id, url, calls, 4, statuses) for _ in range(2)
    ]
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == 2 * calls
    return statuses


def test_two_processes_on_one_connection_share_its_budget_and_get_no_429(
    crm: tuple[LimitedCrm, str], database_url: str
) -> None:
    fake, url = crm
    budget = BUDGETS[("reapit", "sync")]
    started = time.monotonic()
    statuses = run_two(database_url, url)
    took = time.monotonic() - started
    assert statuses.count(429) == 0 and fake.too_many == 0
    assert fake.most_in_flight <= budget.concurrent
    # 60 calls at the connection's one rate (12 a second), not at twice it.
    assert took >= (60 - 1) / budget.per_second * 0.95


def test_without_a_database_two_processes_each_take_the_full_share_and_meet_429s(
    crm: tuple[LimitedCrm, str],
) -> None:
    # The control for the test above: the same load, each process spacing only its own calls.
    fake, url = crm
    statuses = run_two(None, url)
    assert statuses.count(429) > 0


def test_a_429_in_one_process_pauses_the_connection_in_another(database_url: str) -> None:
    organisation_id, connection_id = uuid.uuid4(), uuid.uuid4()

    async def main() -> float:
        one, two = Limiter("sync", database_url), Limiter("sync", database_url)
        gate_one = one.gate("reapit", connection_id, organisation_id)
        gate_two = two.gate("reapit", connection_id, organisation_id)
        async with gate_one:
            pass
        gate_one.rate_limited(1.0)
        await asyncio.sleep(0.1)  # the pause is written in the background
        started = time.monotonic()
        async with gate_two:
            waited = time.monotonic() - started
        await one.close()
        await two.close()
        return waited

    assert asyncio.run(main()) >= 0.7


def test_a_dead_processs_in_flight_slots_free_themselves(database_url: str) -> None:
    organisation_id, connection_id = uuid.uuid4(), uuid.uuid4()
    concurrent = BUDGETS[("agentos", "sync")].concurrent  # one in flight

    async def main() -> None:
        dying, living = Limiter("sync", database_url), Limiter("sync", database_url)
        gate = dying.gate("agentos", connection_id, organisation_id)
        await gate.__aenter__()  # a call in flight when its process dies
        other = living.gate("agentos", connection_id, organisation_id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.__aenter__(), 0.5)
        await dying.close()  # its session ends, and its advisory locks with it
        await asyncio.wait_for(other.__aenter__(), 5)
        await other.__aexit__(None, None, None)
        await living.close()

    assert concurrent == 1
    asyncio.run(main())


def test_a_limiter_whose_database_is_away_spaces_its_own_calls() -> None:
    async def main() -> list[float]:
        limiter = Limiter("sync", "postgresql://nobody@127.0.0.1:1/none")
        gate = limiter.gate("reapit", uuid.uuid4(), uuid.uuid4())
        starts = []
        for _ in range(3):
            async with gate:
                starts.append(time.monotonic())
        await limiter.close()
        return starts

    starts = asyncio.run(main())
    assert starts[-1] - starts[0] >= 2 / BUDGETS[("reapit", "sync")].per_second * 0.9
