"""What GET /metrics costs `contacts.get`: the same server with and without NURTUREHUB_METRICS_TOKEN.

`python -m bench.metrics_cost [--database-url URL] [--workers 2] [--rounds 6]`: loads a dataset
(a throwaway embedded PostgreSQL without --database-url), starts two `nurturehub serve`
processes on it, one with metrics on and one without, and drives `contacts.get` with wrk at
32 connections against each in turn, the order swapped every round so neither always runs
first on this shared, noisy machine. Prints the median req/s and server CPU per request of
each, and the cost in per cent (issue 20, point 2: at most 3% with 2 workers); every run is
appended to bench/results/metrics-cost-<stamp>.jsonl.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import dataset as dataset_module
from bench import run
from bench.loadgen import ensure_wrk, wrk_lua
from bench.scenarios import SCENARIOS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = run.dataset_arguments("python -m bench.metrics_cost", __doc__, 20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    out = run.RESULTS / f"metrics-cost-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    work = Path(tempfile.mkdtemp(prefix="nh-bench-metrics-"))
    with run.database(args.database_url, keep=False) as url:
        print(f"loading {args.contacts} contacts ...", flush=True)
        loaded = asyncio.run(dataset_module.load(url, args.contacts))
        data = asyncio.run(run._collect(url, loaded.to_json(), 500))
        postmaster = asyncio.run(run.postmaster_pid(url))
        script = work / "get.lua"
        script.write_text(wrk_lua(data.token, SCENARIOS["get"].lua(data)))
        os.environ.pop("NURTUREHUB_METRICS_TOKEN", None)
        servers = {
            "on": run.Server(url, args.workers, work / "on.log", {"NURTUREHUB_METRICS_TOKEN": "bench"}),
            "off": run.Server(url, args.workers, work / "off.log"),
        }
        records: list[dict[str, Any]] = []
        try:
            for round_no in range(args.rounds):
                order = ("on", "off") if round_no % 2 == 0 else ("off", "on")
                for variant in order:
                    server = servers[variant]
                    measured = run._timed(
                        args, wrk, server.url + "/rpc", script, server.process.pid, postmaster
                    )
                    record = {"round": round_no, "metrics": variant, "workers": args.workers,
                              **measured, "commit": run._git_commit()}
                    records.append(record)
                    with out.open("a") as file:
                        file.write(json.dumps(record) + "\n")
                    print(f"round {round_no} metrics {variant:>3}: {measured['rps']:8.0f} req/s, "
                          f"server CPU {measured['serverCpuMs']} ms/req, errors {measured['errors']}",
                          flush=True)
        finally:
            for server in servers.values():
                server.stop(group=True)
    ons = [r for r in records if r["metrics"] == "on"]
    offs = [r for r in records if r["metrics"] == "off"]
    rps = {"on": statistics.median(r["rps"] for r in ons), "off": statistics.median(r["rps"] for r in offs)}
    cpu = {v: statistics.median(r["serverCpuMs"] for r in rs) for v, rs in (("on", ons), ("off", offs))}
    # Paired by round: each round's on against its off, measured seconds apart.
    paired = [1 - on["rps"] / off["rps"] for on, off in zip(ons, offs, strict=True)]
    summary = {
        "kind": "summary", "workers": args.workers, "rounds": args.rounds,
        "rpsOn": round(rps["on"]), "rpsOff": round(rps["off"]),
        "costPercentOfMedians": round((1 - rps["on"] / rps["off"]) * 100, 2),
        "costPercentPairedMedian": round(statistics.median(paired) * 100, 2),
        "serverCpuMsOn": cpu["on"], "serverCpuMsOff": cpu["off"],
    }
    with out.open("a") as file:
        file.write(json.dumps(summary) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
