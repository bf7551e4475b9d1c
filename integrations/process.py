"""What the long-running CRM commands (`nurturehub worker`, `nurturehub sync`) share: the start-up
warning when no key can open a connection's credentials, and running a worker until SIGTERM or
Ctrl-C, then closing what it holds."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from integrations.limits import Limiter
from server.crypto import Keyring
from server.db import Database

__all__ = ["prepare", "run_until_stopped"]


class _Worker(Protocol):
    limiter: Limiter

    async def run(self, stop: asyncio.Event) -> None: ...


def prepare(command: str, keyring: Keyring) -> None:
    """Warn when no credential can be read; keep httpx's per-request lines out of the logs."""
    if not keyring:
        sys.stderr.write(
            f"nurturehub {command}: warning: no encryption key is configured, so no connection's "
            "credentials can be read (set NURTUREHUB_ENCRYPTION_KEYS)\n"
        )
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def run_until_stopped(
    worker: _Worker, db: Database, started: str, stopped: Callable[[], str]
) -> None:
    """Print `started`, run `worker` until SIGTERM or Ctrl-C (it finishes what is in flight), close
    its limiter and the database, then print `stopped()`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(started, flush=True)
    try:
        await worker.run(stop)
    finally:
        await worker.limiter.close()
        await db.close()
    print(stopped(), flush=True)
