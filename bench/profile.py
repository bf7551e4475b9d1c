"""Summarise a py-spy profile (`--format raw`, as `bench.run --profile` writes): where time goes.

`python -m bench.profile FILE...` prints each sample's owner (the innermost frame that belongs to
a known layer: driver, SQLAlchemy, pydantic, JSON, logging, HTTP, event loop, our code) and the
inclusive share of the steps of a call (auth, transaction, validation, handler, ...).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

__all__ = ["LAYERS", "STEPS", "summarise"]

# Innermost match wins: a sample in psycopg called from SQLAlchemy belongs to psycopg.
LAYERS = (
    ("psycopg (driver, libpq, wire)", ("psycopg/", "psycopg_binary", "psycopg_c")),
    ("SQLAlchemy (execute, result rows)", ("sqlalchemy/",)),
    ("pydantic (validate, serialise)", ("pydantic/", "pydantic_core")),
    ("JSON (orjson)", ("orjson",)),
    ("logging", ("logging/", "server/logs.py")),
    ("uvicorn HTTP protocol", ("uvicorn/",)),
    ("starlette (request, response, middleware)", ("starlette/",)),
    ("asyncio / uvloop event loop", ("asyncio/", "uvloop", "selectors.py", "<frozen")),
    ("our code (server/, procedures/)", ("server/", "procedures/")),
)

# Inclusive: a sample counts for every step on its stack.
STEPS = (
    ("auth: token check (own transaction)", "authenticate (server/auth.py"),
    ("db: open transaction (pool checkout, BEGIN)", "Database.transaction (server/db.py"),
    ("db: Tx.one/all/scalar/execute", "(server/db.py"),
    ("SQLAlchemy connection.execute", "AsyncConnection.execute (sqlalchemy/"),
    ("params validation", "Dispatcher._validate (server/rpc.py"),
    ("result validation/dump (pydantic)", "TypeAdapter."),
    ("per-call log line", "Logger.info"),
    ("audit insert", "write_audit (server/audit.py"),
    ("procedure handler", "(procedures/"),
    ("pool checkout/return", "pool/"),
    ("commit/rollback", "commit"),
)


def _stacks(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stack] += int(count)
    return counts


def summarise(paths: list[Path]) -> str:
    stacks: Counter[str] = Counter()
    for path in paths:
        stacks.update(_stacks(path))
    total = sum(stacks.values()) or 1
    layers: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        owner = "other (interpreter, stdlib)"
        for frame in reversed(frames):
            match = next((name for name, keys in LAYERS if any(k in frame for k in keys)), None)
            if match is not None:
                owner = match
                break
        layers[owner] += count
        for name, key in STEPS:
            if any(key in frame for frame in frames):
                steps[name] += count
    lines = [f"{total} samples (CPU-busy only) from {', '.join(p.name for p in paths)}"]
    lines.append("by layer (innermost known frame):")
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in layers.most_common()]
    lines.append("by step of a call (inclusive; steps overlap):")
    lines += [f"  {100 * steps[name] / total:5.1f}%  {name}" for name, _ in STEPS]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m bench.profile FILE...")
    print(summarise([Path(p) for p in sys.argv[1:]]))
