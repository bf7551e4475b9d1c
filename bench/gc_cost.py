"""What Python's garbage collector costs a call, with and without the app's gc.freeze().

`python -m bench.gc_cost [--database-url URL]`: loads a small dataset (a throwaway embedded
PostgreSQL without --database-url), builds the app and runs its lifespan, then drives the
dispatcher in process with 16 concurrent callers for contacts.get, contacts.list and
contacts.create. Rounds alternate between the heap as the lifespan leaves it (frozen: the
collector skips everything that existed at start) and unfrozen, and report this process's CPU
per call and the time spent in collections (gc.callbacks) per call.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson
import psycopg

from bench import run
from procedures import app_router
from server.app import create_app
from server.settings import Settings

__all__ = ["main"]

ROUNDS, BATCHES, CALLERS = 6, 100, 16


class _Collections:
    """Wall time spent inside the collector, from gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def _bodies(contact_ids: list[str]) -> dict[str, Callable[[int], bytes]]:
    def call(method: str, params: dict[str, Any]) -> bytes:
        return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})

    nonce = f"{os.getpid()}-{time.time_ns()}"
    return {
        "get": lambda n: call("contacts.get", {"id": contact_ids[n % len(contact_ids)]}),
        "list": lambda n: call("contacts.list", {"limit": 50}),
        "create": lambda n: call(
            "contacts.create",
            {
                "firstName": "Gc",
                "lastName": "Cost",
                "email": f"gc-{nonce}-{n}@example.com",
                "category": "buyer",
            },
        ),
    }


async def _measure(url: str, token: str, contact_ids: list[str]) -> None:
    app = create_app(Settings(database_url=url, pool_size=4), app_router)
    dispatcher = app.state.dispatcher
    collections = _Collections()
    bodies = _bodies(contact_ids)
    counter = 0
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}

    async def one(kind: str) -> None:
        nonlocal counter
        counter += 1
        reply = await dispatcher.handle(
            bodies[kind](counter), authorization=f"Bearer {token}", request_id="gc"
        )
        if reply.body is None or b'"result"' not in reply.body:
            raise RuntimeError(f"{kind} failed: {reply.body!r}"[:300])

    async with app.router.lifespan_context(app):  # as `nurturehub serve` runs it: ends frozen
        await asyncio.sleep(0.5)  # the auth cache's listener connects
        for _ in range(ROUNDS):
            for heap in ("frozen", "unfrozen"):
                if heap == "frozen":
                    gc.freeze()
                else:
                    gc.unfreeze()
                for kind in bodies:
                    for _ in range(10):
                        await asyncio.gather(*(one(kind) for _ in range(CALLERS)))
                    collections.seconds = 0.0
                    started = time.process_time()
                    for _ in range(BATCHES):
                        await asyncio.gather(*(one(kind) for _ in range(CALLERS)))
                    calls = BATCHES * CALLERS
                    cpu_us = (time.process_time() - started) / calls * 1e6
                    results.setdefault((kind, heap), []).append((cpu_us, collections.seconds / calls * 1e6))
    print(f"per call, medians of {ROUNDS} alternating rounds of {BATCHES * CALLERS} calls:")
    for (kind, heap), values in sorted(results.items()):
        cpu = statistics.median(v[0] for v in values)
        spent = statistics.median(v[1] for v in values)
        rounds = ", ".join(f"{v[0]:.0f}/{v[1]:.1f}" for v in values)
        print(f"  {kind:<7} {heap:<9} CPU {cpu:5.0f} us, in the collector {spent:5.1f} us  (rounds {rounds})")


def main(argv: list[str] | None = None) -> int:
    args = run.dataset_arguments("python -m bench.gc_cost", __doc__, 10_000).parse_args(argv)
    with run.fresh_dataset(args) as (url, loaded):
        main_org = loaded.organisations[0]
        with psycopg.connect(url) as connection:
            rows = connection.execute(
                "SELECT id FROM contacts WHERE organisation_id = %s LIMIT 500", (main_org.id,)
            ).fetchall()
        asyncio.run(_measure(url, main_org.owner_token, [str(row[0]) for row in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
