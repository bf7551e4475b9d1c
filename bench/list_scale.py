"""contacts.list at scale: `python -m bench.list_scale [--sizes 100000 1000000] [--database-url URL]`.

Loads one organisation per size with bench/dataset.py (plus its two smaller neighbours), then, with
all of them in one table, times contacts.list over real HTTP against the real app: the first page,
a page 90% deep (a cursor signed for that position, as the server would have handed out), twenty
consecutive pages from there, a category, a group, and searches. Prints medians and p95s in ms,
the deep/first and largest/smallest ratios, and EXPLAIN (ANALYZE, BUFFERS) of the statements the
procedure runs, so the index use is shown, not assumed. Without --database-url it runs on a
throwaway embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import uvicorn
from sqlalchemy import create_engine, text

import bench.dataset as dataset
from procedures import app_router
from procedures.contacts import (
    LIST_CONTACTS_BY_SEARCH_MATCHES,
    LIST_CONTACTS_BY_SEARCH_RECENT,
    ListContactsParams,
    list_cursor_scope,
    list_filters,
    list_query,
)
from server.app import create_app
from server.cursor import encode_cursor, signing_key
from server.db import Database
from server.embedded import EmbeddedPostgres
from server.settings import Settings

CALLS = 40
WARMUP = 5
DEPTH = 0.9

# Named cases: (label, params). The deep variants get a cursor added.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("first page", {}),
    ("category buyer", {"category": "buyer"}),
    ("group existing_client", {"group": "existing_client"}),
    ("3 categories", {"category": ["seller", "landlord", "active_tenant"]}),
    ("consent granted", {"consentStatus": "granted"}),
    ("search 'smith' (common surname)", {"search": "smith"}),
    ("search 'oliver smith'", {"search": "oliver smith"}),
    ("search 'sw1a' (outward code)", {"search": "sw1a"}),
    ("search '07911' (phone prefix)", {"search": "07911"}),
    ("search 'a' (worst case)", {"search": "a"}),
]
DEEP_CASES: list[tuple[str, dict[str, Any]]] = [
    ("page 90% deep", {}),
    ("category buyer, 90% deep", {"category": "buyer"}),
]


class Server:
    def __init__(self, url: str, key: bytes) -> None:
        app = create_app(Settings(database_url=url, suppression_key=key, pool_size=4), app_router)
        sock_port = _free_port()
        self.url = f"http://127.0.0.1:{sock_port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=sock_port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(http: httpx.Client, token: str, params: dict[str, Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "contacts.list", "params": params}
    reply = http.post("/rpc", json=body, headers={"Authorization": f"Bearer {token}"}).json()
    if "error" in reply:
        raise RuntimeError(f"contacts.list failed: {reply['error']['message']}")
    result: dict[str, Any] = reply["result"]
    return result


def _time(http: httpx.Client, token: str, params: dict[str, Any]) -> dict[str, float]:
    for _ in range(WARMUP):
        _call(http, token, params)
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        _call(http, token, params)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
    }


def _deep_position(engine: Any, organisation_id: str, params: dict[str, Any]) -> Any:
    """The (created_at, id) a page 90% down the (filtered) list starts after."""
    filters = list_filters(ListContactsParams.model_validate(params))
    category = filters["categories"][0] if filters["categories"] else None
    where = "AND active_category = :category" if category else ""
    with engine.connect() as conn:
        total = conn.execute(
            text(f"SELECT count(*) FROM contacts WHERE organisation_id = :o {where}"),
            {"o": organisation_id, "category": category},
        ).scalar_one()
        row = conn.execute(
            text(
                f"SELECT created_at, id FROM contacts WHERE organisation_id = :o {where} "
                "ORDER BY created_at DESC, id DESC OFFSET :k LIMIT 1"
            ),
            {"o": organisation_id, "category": category, "k": int(total * DEPTH)},
        ).one()
    return row


def _person_cases(engine: Any, organisation_id: str, size: int) -> list[tuple[str, dict[str, Any]]]:
    """Searches for one person, as an agent types them: a whole email, a surname and postcode."""
    with engine.connect() as conn:
        email, last_name, postcode = conn.execute(
            text(
                "SELECT email, last_name, postcode FROM contacts WHERE organisation_id = :o "
                "AND postcode IS NOT NULL ORDER BY created_at DESC OFFSET :k LIMIT 1"
            ),
            {"o": organisation_id, "k": min(5000, size // 2)},
        ).one()
    return [
        ("search a whole email (1 match)", {"search": email}),
        ("search surname + postcode", {"search": f"{last_name} {postcode}"}),
    ]


def _cursor(key: bytes, organisation_id: str, params: dict[str, Any], position: Any) -> str:
    filters = list_filters(ListContactsParams.model_validate(params))
    scope = list_cursor_scope(UUID(organisation_id), filters)
    return encode_cursor(signing_key(key), scope, [position[0].isoformat(), str(position[1])])


def _explain(engine: Any, organisation_id: str, params: dict[str, Any], position: Any) -> list[str]:
    filters = list_filters(ListContactsParams.model_validate(params))
    after = (position[0], position[1]) if position is not None else (None, None)
    statement, bound = list_query(UUID(organisation_id), filters, after[0], after[1], 51)
    statements = [statement]
    plan = []
    with engine.connect() as conn:
        # A search's second step runs when its first did not fill the page, as in the procedure.
        if (
            statement is LIST_CONTACTS_BY_SEARCH_RECENT
            and len(conn.execute(text(statement.text), bound).all()) < 51
        ):
            statements.append(LIST_CONTACTS_BY_SEARCH_MATCHES)
        for step in statements:
            rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + step.text), bound).all()
            plan += [row[0] for row in rows]
    return plan


def measure(url: str, key: bytes, organisation: dataset.Organisation, engine: Any) -> dict[str, Any]:
    server = Server(url, key)
    results: dict[str, Any] = {"contacts": organisation.contacts, "cases": {}, "plans": {}}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            token = organisation.owner_token
            for label, params in CASES + _person_cases(engine, organisation.id, organisation.contacts):
                results["cases"][label] = _time(http, token, {**params, "limit": 50})
            for label, params in DEEP_CASES:
                position = _deep_position(engine, organisation.id, params)
                cursor = _cursor(key, organisation.id, params, position)
                results["cases"][label] = _time(http, token, {**params, "limit": 50, "cursor": cursor})
                if not params:
                    # Twenty consecutive pages from there, each with the cursor the last one gave.
                    samples, next_cursor = [], cursor
                    for _ in range(20):
                        started = time.perf_counter()
                        page = _call(http, token, {"limit": 50, "cursor": next_cursor})
                        samples.append((time.perf_counter() - started) * 1000)
                        next_cursor = page["nextCursor"]
                    results["cases"]["20 consecutive pages from 90% deep"] = {
                        "median_ms": round(statistics.median(samples), 2),
                        "p95_ms": round(max(samples), 2),
                    }
                results["plans"][label] = _explain(engine, organisation.id, params, position)
            results["plans"]["first page"] = _explain(engine, organisation.id, {}, None)
            results["plans"]["search 'smith'"] = _explain(engine, organisation.id, {"search": "smith"}, None)
            results["plans"]["search 'a'"] = _explain(engine, organisation.id, {"search": "a"}, None)
            for label, params in _person_cases(engine, organisation.id, organisation.contacts):
                results["plans"][label] = _explain(engine, organisation.id, params, None)
            results["plans"]["group existing_client"] = _explain(
                engine, organisation.id, {"group": "existing_client"}, None
            )
    finally:
        server.stop()
    return results


def _report(all_results: list[dict[str, Any]]) -> None:
    labels = list(all_results[0]["cases"])
    sizes = [r["contacts"] for r in all_results]
    header = f"{'contacts.list, limit 50 (ms, median / p95)':<44}" + "".join(f"{s:>22,}" for s in sizes)
    print(header)
    for label in labels:
        cells = "".join(
            f"{r['cases'][label]['median_ms']:>12.2f} / {r['cases'][label]['p95_ms']:>7.2f}"
            for r in all_results
        )
        print(f"{label:<44}{cells}")
    for r in all_results:
        deep = r["cases"]["page 90% deep"]["median_ms"] / r["cases"]["first page"]["median_ms"]
        print(f"{r['contacts']:,} contacts: 90%-deep page / first page = {deep:.2f}")
    if len(all_results) > 1:
        small, large = all_results[0], all_results[-1]
        for label in ("first page", "page 90% deep"):
            ratio = large["cases"][label]["median_ms"] / small["cases"][label]["median_ms"]
            print(f"{label}: {large['contacts']:,} / {small['contacts']:,} contacts = {ratio:.2f}")
    for r in all_results:
        for label, plan in r["plans"].items():
            print(f"\n-- EXPLAIN (ANALYZE, BUFFERS), {r['contacts']:,} contacts, {label}")
            print("\n".join(plan))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.list_scale", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("bench/results/list_scale.json"))
    args = parser.parse_args(argv)

    embedded = None
    url = args.database_url
    if not url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="nh-list-scale-")), cleanup="delete")
        url = embedded.start()
        print(f"embedded PostgreSQL in {embedded.pgdata}", flush=True)
    # A million rows load in one statement: longer than the server's per-statement limit.
    dataset.Database = functools.partial(Database, statement_timeout_ms=3_600_000)  # type: ignore[attr-defined,assignment]
    key = secrets.token_bytes(32)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), pool_size=1)
    try:
        organisations = []
        for size in args.sizes:
            started = time.perf_counter()
            loaded = asyncio.run(dataset.load(url, size, others=max(1000, size // 10)))
            print(
                f"loaded {size:,} contacts (+2 x {max(1000, size // 10):,} in other organisations) "
                f"in {time.perf_counter() - started:.0f}s",
                flush=True,
            )
            organisations.append(loaded.organisations[0])
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            total = conn.execute(text("SELECT count(*) FROM contacts")).scalar_one()
        print(f"PostgreSQL {version}; {total:,} contacts in the table", flush=True)
        all_results = [measure(url, key, organisation, engine) for organisation in organisations]
        _report(all_results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"postgres": version, "results": all_results}, indent=2) + "\n")
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
