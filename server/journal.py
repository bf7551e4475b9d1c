"""An append-only JSON Lines file kept outside the database: the erasure journal.

A restored backup must not bring back people erased after it was taken, so every erasure is
also written here, once its transaction has committed, and a restore replays the entries
made after the backup. Entries hold ids, keyed hashes and times only, never a personal value.
Appends from several processes on one machine are serialised with a file lock and reach the
disk (fsync) before the call returns.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["append", "entries"]


def append(path: Path, entry: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(entry) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def entries(path: Path, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The entries at or after `since` (each has an ISO `at`), oldest first; a torn last line
    (a crash mid-append) is skipped."""
    if not path.exists():
        return
    with path.open("rb") as file:
        for raw in file:
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if since is None or datetime.fromisoformat(entry["at"]) >= since:
                yield entry
