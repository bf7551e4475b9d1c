"""Issue 17, point 4: per-connection limits shared by sync and writeback (integrations/limits.py).
A gate spaces calls by its rate, caps them in flight, pauses the connection as a 429's
Retry-After says (else the provider's own wait), and, for a CRM that publishes no limit, halves
its rate on each 429 and creeps back."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from integrations.limits import BUDGETS, Budget, Gate, Limiter


def run_calls(gate: Gate, calls: int, hold: float = 0.0) -> tuple[list[float], int]:
    """Start times of `calls` calls through the gate, and the most in flight at once."""
    starts: list[float] = []
    in_flight, most = 0, 0

    async def call() -> None:
        nonlocal in_flight, most
        async with gate:
            starts.append(time.monotonic())
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(hold)
            in_flight -= 1

    async def go() -> None:
        await asyncio.gather(*(call() for _ in range(calls)))

    asyncio.run(go())
    return sorted(starts), most


def test_a_gate_spaces_calls_by_its_rate_with_no_burst() -> None:
    starts, _ = run_calls(Gate(Budget(5, 20.0, 1.0)), 6)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.045  # 1/20 s apart, never all at once


def test_a_gate_caps_the_calls_in_flight() -> None:
    _, most = run_calls(Gate(Budget(2, 1000.0, 1.0)), 6, hold=0.05)
    assert most == 2


def test_a_429_pauses_the_connection_for_retry_after_else_the_providers_own_wait() -> None:
    gate = Gate(Budget(1, 1000.0, 0.3))
    assert gate.rate_limited(0.2) == 0.2
    started = time.monotonic()
    run_calls(gate, 1)
    assert time.monotonic() - started >= 0.18
    assert gate.rate_limited(None) == 0.3  # agentOS says wait 60 s after a 429: its after_429
    assert BUDGETS[("agentos", "sync")].after_429 == 60.0


def test_an_unpublished_limit_halves_on_each_429_and_creeps_back_never_above_its_start() -> None:
    gate = Gate(Budget(1, 4.0, 0.0, adaptive=True))
    gate.rate_limited(0)
    gate.rate_limited(0)
    assert gate.rate == 1.0
    for _ in range(200):
        gate.succeeded()
    assert gate.rate == 4.0


@pytest.mark.parametrize(
    ("provider", "concurrent", "per_minute"),
    [("reapit", 5, 20 * 60), ("agentos", 2, 50), ("street", 4, None)],
)
def test_the_two_directions_together_stay_within_each_crms_published_limit(
    provider: str, concurrent: int, per_minute: float | None
) -> None:
    sync, writeback = BUDGETS[(provider, "sync")], BUDGETS[(provider, "writeback")]
    assert sync.concurrent + writeback.concurrent <= concurrent
    if per_minute is not None:
        assert (sync.per_second + writeback.per_second) * 60 <= per_minute
    else:  # Street counts reads (sync) and writes (writeback) apart: 600 and 100 a minute
        assert sync.per_second * 60 <= 600 and writeback.per_second * 60 <= 100


def test_a_limiter_keeps_one_gate_per_connection() -> None:
    limiter, one, two = Limiter("sync"), uuid.uuid4(), uuid.uuid4()
    assert limiter.gate("reapit", one) is limiter.gate("reapit", one)
    assert limiter.gate("reapit", one) is not limiter.gate("reapit", two)
