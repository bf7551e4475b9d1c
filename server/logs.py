"""Structured logs: one JSON object per line.

Exceptions are logged by type, database error class and stack frames, never by message:
driver messages can quote the values of a row (an email in a unique violation, say).
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["configure_logging", "JsonFormatter"]


def _describe(exc: BaseException) -> dict[str, Any]:
    described: dict[str, Any] = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    if sqlstate:
        described["sqlstate"] = sqlstate
    if diag is not None and getattr(diag, "constraint_name", None):
        described["constraint"] = diag.constraint_name
    frames = traceback.extract_tb(exc.__traceback__)
    described["frames"] = [f"{f.filename}:{f.lineno} in {f.name}" for f in frames[-12:]]
    return described


def _chain(exc: BaseException) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 5:
        seen.add(id(current))
        chain.append(_describe(current))
        current = current.__cause__ or current.__context__
    return chain


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, list):
            # A batch's calls in one record (server/rpc.py), still one line for each call.
            return "\n".join(orjson.dumps({**entry, **call}).decode() for call in rpc)
        if isinstance(rpc, dict):
            entry.update(rpc)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = _chain(record.exc_info[1])
        return orjson.dumps(entry).decode()


def configure_logging(level: str = "INFO") -> None:
    # Facts a record gathers that no line here shows: the caller's file and line (a walk up
    # the stack), and the thread's and process's names. Without them a record costs 11.7
    # instead of 19.1 us, and the server writes one per call (logging's HOWTO, Optimization).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
