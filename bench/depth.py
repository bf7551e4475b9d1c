"""What a deep page costs against the first page of the same filter, by counts and pairs.

`python -m bench.depth [--database-url URL]`: loads a fresh dataset (bench/dataset.py; a
throwaway embedded PostgreSQL without --database-url), so every page holds the same kind of
rows. For each category: the statement contacts.list runs for its first page and for the page
DEPTH pages down (the list_deep scenario's depth), each run warm, then EXPLAIN (ANALYZE,
BUFFERS): the buffers it touched and its execution time. Then the one thing the server does only
for a deep page, decoding and checking its cursor, timed in process; and both pages over HTTP
against `nurturehub serve` (one worker), in alternating blocks, with the server's and
PostgreSQL's CPU per call. Under load (bench.run's list_category and list_deep rows) the two
move by 10-30% either way between runs; these paired figures move far less.

Run it on its own dataset, not one that bench.run's create scenario has written to: first pages
would then hold the bench's own sparse rows and deep pages the dataset's, and the comparison
would be of content, not depth.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg

from bench import run
from bench.scenarios import DEEP_FIRST, DEEP_LAST, NO_FILTERS, statement
from procedures.contacts import (
    LIST_CONTACTS_BY_CATEGORY,
    ListContactsParams,
    list_cursor_scope,
    list_filters,
)
from server.cursor import decode_cursor, encode_cursor, signing_key
from server.keys import parse_key

__all__ = ["main"]

PAGE = 50
DEPTH = (DEEP_FIRST + DEEP_LAST) // 2
WARM = 3
BLOCK = 200  # calls per block over HTTP
BLOCKS = 10  # rounds: a block of each page in turn

_ROW_BEFORE = """
    SELECT created_at, id FROM contacts WHERE organisation_id = %s AND active_category = %s
     ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1
"""


def _page_sql(organisation_id: str, category: str, before: tuple[datetime, UUID] | None) -> str:
    bound = (
        ("CAST(NULL AS timestamptz)", "CAST(NULL AS uuid)")
        if before is None
        else (f"'{before[0].isoformat()}'::timestamptz", f"'{before[1]}'::uuid")
    )
    values = {
        **NO_FILTERS,
        "organisation_id": f"'{organisation_id}'::uuid",
        "category": f"'{category}'",
        "before_created_at": bound[0],
        "before_id": bound[1],
    }
    return statement(LIST_CONTACTS_BY_CATEGORY, values)


def _explain(connection: psycopg.Connection[Any], query: str) -> tuple[int, float]:
    """Buffers touched (hit + read) and execution time in ms, after WARM runs."""
    for _ in range(WARM):
        connection.execute(query).fetchall()
    row = connection.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query).fetchone()
    assert row is not None
    plan = row[0][0]
    top = plan["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"], plan["Execution Time"]


def _cursor_micros(organisation_id: str) -> float:
    """Decoding and checking one deep page's cursor, in microseconds."""
    key = b"k" * 32
    scope = list_cursor_scope(UUID(organisation_id), {"categories": ["buyer"]})
    cursor = encode_cursor(key, scope, [datetime.now(UTC).isoformat(), str(UUID(int=1))])
    calls = 20_000
    return timeit.timeit(lambda: decode_cursor(key, scope, cursor), number=calls) / calls * 1e6


def _paired_blocks(
    url: str,
    token: str,
    organisation_id: str,
    pages: dict[str, dict[str, tuple[datetime, UUID] | None]],
    work: Path,
) -> dict[str, list[tuple[float, float]]]:
    """Server and PostgreSQL CPU ms per call, in blocks that take turns between the named pages
    (`pages[name][category]`: the row a page starts after, None for the first page), across the
    categories, against `nurturehub serve` with one worker."""
    server = run.Server(url, 1, work / "server.log")
    postmaster = asyncio.run(run.postmaster_pid(url))
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in pages}
    try:
        key = signing_key(parse_key(run.server_key()))
        calls: dict[str, list[dict[str, Any]]] = {name: [] for name in pages}
        for name, rows in pages.items():
            for category, before in rows.items():
                params: dict[str, Any] = {"category": category, "limit": PAGE}
                if before is not None:
                    filters = list_filters(ListContactsParams.model_validate(params))
                    scope = list_cursor_scope(UUID(organisation_id), filters)
                    params["cursor"] = encode_cursor(key, scope, [before[0].isoformat(), str(before[1])])
                calls[name].append(params)
        with httpx.Client(base_url=server.url, timeout=60) as http:

            def block(name: str) -> tuple[float, float]:
                before = run.cpu_seconds(server.process.pid), run.cpu_seconds(postmaster)
                for index in range(BLOCK):
                    params = calls[name][index % len(calls[name])]
                    body = {"jsonrpc": "2.0", "id": 1, "method": "contacts.list", "params": params}
                    reply = http.post("/rpc", json=body, headers={"Authorization": f"Bearer {token}"})
                    if "result" not in reply.json():
                        raise RuntimeError(f"contacts.list failed: {reply.text[:200]}")
                after = run.cpu_seconds(server.process.pid), run.cpu_seconds(postmaster)
                return (
                    (after[0] - before[0]) * 1000 / BLOCK,
                    (after[1] - before[1]) * 1000 / BLOCK if postmaster else float("nan"),
                )

            for name in pages:  # warm
                block(name)
            for _ in range(BLOCKS):
                for name in pages:
                    cpu[name].append(block(name))
    finally:
        server.stop()
    return cpu


def main(argv: list[str] | None = None) -> int:
    args = run.dataset_arguments("python -m bench.depth", __doc__, 100_000).parse_args(argv)
    with run.fresh_dataset(args) as (url, loaded):
        _measure(url, loaded.to_json())
    return 0


def _measure(url: str, loaded: dict[str, Any]) -> None:
    organisation_id = loaded["organisations"][0]["id"]

    rows = []
    # The row each page starts after, by category: the first page, page 2 (a cursor, no depth)
    # and page DEPTH, so the cursor's cost and depth's show apart.
    pages: dict[str, dict[str, tuple[datetime, UUID] | None]] = {"first": {}, "page 2": {}, "deep": {}}
    with psycopg.connect(url, autocommit=True) as connection:
        for category in loaded["categories"]:
            deep = connection.execute(_ROW_BEFORE, (organisation_id, category, DEPTH * PAGE - 1)).fetchone()
            second = connection.execute(_ROW_BEFORE, (organisation_id, category, PAGE - 1)).fetchone()
            if deep is None or second is None:
                continue
            pages["first"][category] = None
            pages["page 2"][category] = (second[0], second[1])
            pages["deep"][category] = (deep[0], deep[1])
            first_cost = _explain(connection, _page_sql(organisation_id, category, None))
            deep_cost = _explain(connection, _page_sql(organisation_id, category, (deep[0], deep[1])))
            rows.append((category, first_cost, deep_cost))

    print(f"{'category':<26} {'first: buffers':>14} {'ms':>6} {f'page {DEPTH}: buffers':>17} {'ms':>6}")
    for category, (first_buffers, first_ms), (deep_buffers, deep_ms) in rows:
        print(f"{category:<26} {first_buffers:>14} {first_ms:>6.3f} {deep_buffers:>17} {deep_ms:>6.3f}")
    first_b = statistics.mean(r[1][0] for r in rows)
    deep_b = statistics.mean(r[2][0] for r in rows)
    first_ms = statistics.median(r[1][1] for r in rows)
    deep_ms = statistics.median(r[2][1] for r in rows)
    print(
        f"mean buffers {first_b:.1f} first, {deep_b:.1f} deep ({deep_b / first_b:.2f}x); "
        f"median execution {first_ms:.3f} ms first, {deep_ms:.3f} ms deep ({deep_ms / first_ms:.2f}x)"
    )
    print(
        f"the server's only extra work on a deep page, its cursor: {_cursor_micros(organisation_id):.1f} us"
    )
    token = loaded["organisations"][0]["ownerToken"]
    with tempfile.TemporaryDirectory(prefix="nurturehub-depth-") as work:
        cpu = _paired_blocks(url, token, organisation_id, pages, Path(work))
    print(
        f"over HTTP, {BLOCKS} rounds of blocks of {BLOCK} calls, taking turns, "
        f"CPU ms per call (server / PostgreSQL); deep is page {DEPTH}:"
    )
    for name, blocks in cpu.items():
        server_ms = statistics.median(b[0] for b in blocks)
        database_ms = statistics.median(b[1] for b in blocks)
        spread = ", ".join(f"{b[0]:.2f}/{b[1]:.2f}" for b in blocks)
        print(f"  {name:<6} median {server_ms:.3f} / {database_ms:.3f}  blocks: {spread}")
    for late, early in (("deep", "first"), ("deep", "page 2"), ("page 2", "first")):
        ratios = [a[0] / b[0] for a, b in zip(cpu[late], cpu[early], strict=True)]
        print(
            f"  server {late} / {early}, per round: median {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
