"""A JSON-RPC batch of 10 `contacts.get` against one call: latency, one request at a time.

`python -m bench.batch_latency [--database-url URL] [--workers N]`: loads a small dataset
(a throwaway embedded PostgreSQL without --database-url), starts `nurturehub serve`, then sends
single calls and 10-call batches alternately, one request in flight, over one keep-alive
connection, and prints the median and p90 of each and their ratio (issue 20, point 4: the batch
answers in at most twice the time of one call). Results go to bench/results/batch-<stamp>.json.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import run

__all__ = ["main"]

BATCH, ROUNDS = 10, 400


def _call(index: int, contact_id: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": index, "method": "contacts.get", "params": {"id": contact_id}}


def _measure(url: str, token: str, ids: list[str]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"one": [], "batch": []}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for n in range(ROUNDS + 40):
            for kind in ("one", "batch"):
                if kind == "one":
                    body: Any = _call(1, ids[n % len(ids)])
                else:
                    body = [_call(i, ids[(n * BATCH + i) % len(ids)]) for i in range(BATCH)]
                started = time.perf_counter()
                reply = client.post("/rpc", json=body)
                elapsed = time.perf_counter() - started
                if reply.status_code != 200:
                    raise RuntimeError(f"{kind}: HTTP {reply.status_code} {reply.text[:200]}")
                if n >= 40:  # the first rounds warm the pool and caches
                    timings[kind].append(elapsed * 1000)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = run.dataset_arguments("python -m bench.batch_latency", __doc__, 10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with run.fresh_dataset(args) as (url, loaded):
        main_org = loaded.organisations[0]
        ids = loaded.sample_contact_ids
        log = Path(tempfile.mkstemp(prefix="nh-bench-batch-", suffix=".log")[1])
        server = run.Server(url, args.workers, log)
        try:
            timings = _measure(server.url, main_org.owner_token, ids)
        finally:
            server.stop(group=True)
    summary: dict[str, Any] = {"workers": args.workers, "rounds": ROUNDS, "batch": BATCH}
    for kind, values in timings.items():
        values.sort()
        summary[kind] = {
            "p50Ms": round(statistics.median(values), 3),
            "p90Ms": round(values[int(len(values) * 0.9)], 3),
        }
    summary["ratioP50"] = round(summary["batch"]["p50Ms"] / summary["one"]["p50Ms"], 2)
    summary["commit"] = run._git_commit()
    print(json.dumps(summary, indent=2))
    out = run.RESULTS / f"batch-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
