"""PostgreSQL's CPU per execution of contacts.list's one-category page, by the statement it runs.

`python -m bench.statement_cpu [--database-url URL]`: loads a fresh dataset (a throwaway
embedded PostgreSQL without --database-url), then runs each statement as the server does
(prepared, rows in binary) ROUNDS x CALLS times on one connection, first page and a page DEPTH
pages down, and reads the backend's CPU from /proc between runs: LIST_CONTACTS_BY_CATEGORY
(one walk of contacts_category_idx) against LIST_CONTACTS_BY_CATEGORIES given one category (the
per-category walk and merge it used before). The database must run on this machine.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from uuid import UUID

import psycopg

from bench import run
from procedures.contacts import (
    LIST_CONTACTS_BY_CATEGORIES,
    LIST_CONTACTS_BY_CATEGORY,
    ListContactsParams,
    list_filters,
    list_query,
)
from server.db import Statement

__all__ = ["main"]

ROUNDS, CALLS, DEPTH, PAGE = 4, 2000, 25, 50
_ROW_BEFORE = """
    SELECT created_at, id FROM contacts WHERE organisation_id = %s AND active_category = 'buyer'
     ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1
"""


def _backend_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(url: str, organisation_id: UUID) -> None:
    filters = list_filters(ListContactsParams.model_validate({"category": "buyer"}))
    statements: dict[str, Statement] = {
        "one walk (LIST_CONTACTS_BY_CATEGORY)": LIST_CONTACTS_BY_CATEGORY,
        "walk and merge (LIST_CONTACTS_BY_CATEGORIES)": LIST_CONTACTS_BY_CATEGORIES,
    }
    micros: dict[tuple[str, str], list[float]] = {}
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        before = connection.execute(_ROW_BEFORE, (organisation_id, DEPTH * PAGE - 1)).fetchone()
        assert row is not None and before is not None
        pid = row[0]
        pages = {"first": (None, None), f"page {DEPTH}": (before[0], before[1])}
        for _ in range(ROUNDS):  # interleaved, so a drift in the machine's speed hits both
            for name, statement in statements.items():
                for page, (after_created_at, after_id) in pages.items():
                    _, bound = list_query(organisation_id, filters, after_created_at, after_id, PAGE + 1)
                    for _ in range(10):  # past psycopg's prepare threshold and the plan choice
                        connection.execute(statement.query, bound, prepare=True, binary=True).fetchall()
                    started = _backend_seconds(pid)
                    for _ in range(CALLS):
                        rows = connection.execute(
                            statement.query, bound, prepare=True, binary=True
                        ).fetchall()
                    micros.setdefault((name, page), []).append(
                        (_backend_seconds(pid) - started) / CALLS * 1e6
                    )
                    assert len(rows) == PAGE + 1
    print(f"PostgreSQL CPU per execution, us ({ROUNDS} rounds of {CALLS}):")
    for (name, page), values in micros.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {name:<46} {page:<8} median {statistics.median(values):5.0f}  rounds {rounds}")


def main(argv: list[str] | None = None) -> int:
    args = run.dataset_arguments("python -m bench.statement_cpu", __doc__, 100_000).parse_args(argv)
    with run.fresh_dataset(args) as (url, loaded):
        _measure(url, UUID(loaded.organisations[0].id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
