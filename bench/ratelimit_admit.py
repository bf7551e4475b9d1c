"""What the rate limiter costs a call on its hot path, alone: `RateLimiter.admit` in a tight loop.

`python -m bench.ratelimit_admit --database-url URL` (a database at schema 7 or later, e.g. one
`nurturehub db init` made): 5 runs of 200,000 calls of one token and one organisation at a limit
no call reaches, so every call is counted and permits are leased but none is refused. Prints the
nanoseconds per call (loop included) and the leases made: one round trip per block.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from server.context import Principal
from server.ratelimit import RateLimiter

__all__ = ["main"]


async def _measure(url: str, calls: int, runs: int) -> None:
    limiter = RateLimiter(url, per_token=100_000_000, per_organisation=100_000_000)
    principal = Principal(uuid.uuid4(), uuid.uuid4(), "member", uuid.uuid4())
    for _ in range(5000):  # the first leases, and the blocks' growth to their largest
        waiting = limiter.admit(principal)
        if waiting is not None:
            await waiting
    leases, timings = limiter.leases, []
    for _ in range(runs):
        started = time.perf_counter()
        for n in range(calls):
            waiting = limiter.admit(principal)
            if waiting is not None:
                await waiting
            if n % 500 == 0:
                await asyncio.sleep(0)  # let leases run, as a server's awaits do between calls
        timings.append((time.perf_counter() - started) / calls * 1e9)
    await limiter.close()
    print(f"ns per admit, {runs} runs of {calls:,}: {[round(t) for t in timings]}, "
          f"median {statistics.median(timings):.0f}")
    print(f"leases for {runs * calls:,} calls of one token and one organisation: {limiter.leases - leases}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m bench.ratelimit_admit", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=False)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is needed")
    asyncio.run(_measure(args.database_url, args.calls, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
