"""The benchmark, one command: `python -m bench.run` (see README, Performance).

Starts a fresh embedded PostgreSQL in a temporary folder (or uses DATABASE_URL), applies the
schema and seeds, loads the dataset (bench/dataset.py), starts `nurturehub serve` as a
subprocess for each --workers count, and drives each scenario (bench/scenarios.py) with wrk at
32 connections; then runs pgbench with the same SQL for the database ceiling. Rounds repeat the
whole sequence; the table shows medians, and every measurement is appended to
bench/results/<stamp>.jsonl. Not part of the test suite: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from bench import dataset as dataset_module
from bench.loadgen import Measured, ensure_wrk, run_pgbench, run_wrk, tree_cpu_seconds, wrk_lua
from bench.reference import ReferenceServer, ensure_reference
from bench.scenarios import SCENARIOS, Data, scenario_names
from bench.served import Served
from server.db import Database, sql
from server.keys import KEY_ENV

__all__ = [
    "Server",
    "cpu_seconds",
    "database",
    "dataset_arguments",
    "fresh_dataset",
    "main",
    "postmaster_pid",
    "server_key",
]

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

_SAMPLE_CONTACTS = sql("""
    SELECT id FROM contacts WHERE organisation_id = :organisation_id ORDER BY random() LIMIT :n
""")
_OWNER_TOKEN = sql("""
    SELECT id FROM api_tokens WHERE organisation_id = :organisation_id AND user_id = :user_id
     ORDER BY created_at LIMIT 1
""")


def server_key() -> str:
    """The server's HMAC key: every worker and restart must share it, or cursors fail."""
    return os.environ.get(KEY_ENV) or _RUN_KEY


_RUN_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _load1() -> float:
    return os.getloadavg()[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "server", "procedures"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@contextmanager
def database(url: str | None, keep: bool) -> Iterator[str]:
    if url:
        yield url
        return
    from server.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="nurturehub-bench-"))
    embedded = EmbeddedPostgres(folder, cleanup=None if keep else "stop")
    print(f"embedded PostgreSQL in {folder}", flush=True)
    try:
        yield embedded.start()
    finally:
        if not keep:
            embedded.stop()
            shutil.rmtree(folder, ignore_errors=True)  # stopping leaves the data (1 GB at 100k)


@contextmanager
def fresh_dataset(args: argparse.Namespace) -> Iterator[tuple[str, dataset_module.Dataset]]:
    """For the smaller bench tools: a database (a throwaway embedded one unless --database-url)
    with a new dataset of --contacts loaded, and its URL."""
    with database(args.database_url, keep=False) as url:
        print(f"loading {args.contacts} contacts ...", flush=True)
        yield url, asyncio.run(dataset_module.load(url, args.contacts))


def dataset_arguments(prog: str, description: str | None, contacts: int) -> argparse.ArgumentParser:
    """The parser of a tool that measures on a fresh_dataset."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--contacts", type=int, default=contacts)
    return parser


UNLIMITED = {"NURTUREHUB_RATE_LIMIT_PER_TOKEN": "0", "NURTUREHUB_RATE_LIMIT_PER_ORG": "0"}


class Server(Served):
    """`nurturehub serve` in a subprocess, as an operator runs it."""

    def __init__(
        self, database_url: str, workers: int, log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # `nurturehub serve` is server.cli:main; run through -m from this tree, so a benchmark
        # of an exported commit (git archive) serves that commit's code, not an installed one.
        command = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        # Rate limits off unless exported (as bench/results/ratelimits-20261205.md did): a run
        # sends far more than the default 12,000 calls a minute per token.
        environment = {
            **UNLIMITED,
            **os.environ,
            "DATABASE_URL": database_url,
            KEY_ENV: server_key(),
            **(env or {}),
        }
        super().__init__(command, cwd=ROOT, env=environment, log=log)
        self.wait_until_answering(self.url + "/readyz", seconds=60)

    def call(self, token: str, method: str, params: dict[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        request = urllib.request.Request(
            self.url + "/rpc",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer = json.loads(reply.read())
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def methods(self) -> set[str]:
        with urllib.request.urlopen(self.url + "/openrpc.json", timeout=10) as reply:
            document = json.loads(reply.read())
        return {m["name"] for m in document.get("methods", [])}


async def _collect(url: str, loaded: dict[str, Any], sample: int) -> Data:
    main_org = loaded["organisations"][0]
    organisation_id = UUID(main_org["id"])
    db = Database(url, pool_size=1)
    try:
        async with db.transaction() as tx:
            rows = await tx.all(_SAMPLE_CONTACTS, {"organisation_id": organisation_id, "n": sample})
            token_id = await tx.scalar(
                _OWNER_TOKEN,
                {"organisation_id": organisation_id, "user_id": UUID(main_org["ownerUserId"])},
            )
    finally:
        await db.close()
    return Data(
        token=main_org["ownerToken"],
        organisation_id=main_org["id"],
        user_id=main_org["ownerUserId"],
        token_id=str(token_id),
        contact_ids=[str(r["id"]) for r in rows],
        categories=list(loaded["categories"]),
        stamp=time.strftime("%H%M%S"),
    )


def _measure_round(
    args: argparse.Namespace,
    url: str,
    data: Data,
    names: list[str],
    work: Path,
    emit: Any,
    round_no: int,
) -> None:
    wrk = ensure_wrk()
    postmaster = asyncio.run(postmaster_pid(url))
    references = _start_references(args, url, work)
    try:
        for index, workers in enumerate(args.workers):
            server = Server(url, workers, work / "server.log")
            try:
                for name in names:
                    scenario = SCENARIOS[name]
                    if scenario.prepare is not None:
                        scenario.prepare(partial(server.call, data.token), data)
                    script = work / f"{name}.lua"
                    script.write_text(wrk_lua(data.token, scenario.lua(data)))
                    profile = partial(_start_profiler, args, server, name, workers)
                    measured = _timed(
                        args, wrk, server.url + "/rpc", script, server.process.pid, postmaster, profile
                    )
                    emit({"kind": "wrk", "round": round_no, "scenario": name, "workers": workers, **measured})
                    # Right after ours, so both see the machine as it is now (once per round).
                    if scenario.reference is not None and index == 0:
                        script = work / f"{name}-reference.lua"
                        script.write_text(wrk_lua(data.token, scenario.reference(data)))
                        for count, reference in references.items():
                            pid = reference.process.pid
                            measured = _timed(args, wrk, reference.url, script, pid, postmaster)
                            emit(
                                {
                                    "kind": "reference",
                                    "round": round_no,
                                    "scenario": name,
                                    "workers": count,
                                    **measured,
                                }
                            )
            finally:
                server.stop()
    finally:
        for reference in references.values():
            reference.stop()
    if args.no_ceiling:
        return
    for name in names:
        script = work / f"{name}.sql"
        script.write_text("\n".join(SCENARIOS[name].sql(data)) + "\n")
        ceiling = run_pgbench(
            url, script, seconds=args.duration, clients=args.connections, threads=args.threads
        )
        emit({"kind": "ceiling", "round": round_no, "scenario": name, **asdict(ceiling)})


def _start_references(args: argparse.Namespace, url: str, work: Path) -> dict[int, ReferenceServer]:
    """One reference server per --reference-workers count, keyed by that count."""
    if not args.reference:
        return {}
    node = ensure_reference()
    started: dict[int, ReferenceServer] = {}
    try:
        for count in args.reference_workers:
            log = work / f"reference-w{count}.log"
            started[count] = ReferenceServer(node, url, _free_port(), log, workers=count)
    except BaseException:
        for reference in started.values():
            reference.stop()
        raise
    return started


def _timed(
    args: argparse.Namespace,
    wrk: str,
    target: str,
    script: Path,
    server_pid: int,
    postmaster: int | None,
    profile: Callable[[], subprocess.Popen[bytes] | None] | None = None,
) -> dict[str, Any]:
    """One scenario against one server: a warm-up, then the timed run with its CPU per request
    (and `profile`'s profiler, started after the warm-up, recording the timed run only)."""
    run = partial(run_wrk, wrk, target, script, connections=args.connections, threads=args.threads)
    if args.warmup:
        run(seconds=args.warmup)
    load_before = _load1()
    cpu_before = cpu_seconds(server_pid), cpu_seconds(postmaster)
    profiler = profile() if profile is not None else None
    measured = run(seconds=args.duration)
    if profiler is not None:
        profiler.wait(timeout=60)
    cpu_after = cpu_seconds(server_pid), cpu_seconds(postmaster)
    return {
        **asdict(measured),
        # CPU ms per request: the server's processes, and PostgreSQL's.
        "serverCpuMs": _per_request(cpu_before[0], cpu_after[0], measured),
        "databaseCpuMs": _per_request(cpu_before[1], cpu_after[1], measured),
        "load1Before": load_before,
        "load1After": _load1(),
    }


_BACKEND_PID = sql("SELECT pg_backend_pid()")


async def postmaster_pid(url: str) -> int | None:
    """PostgreSQL's postmaster on this machine (the parent of our backend), else None."""
    db = Database(url, pool_size=1)
    try:
        async with db.transaction() as tx:
            backend = int(await tx.scalar(_BACKEND_PID))
            try:  # while the backend is alive: it exits when the connection closes
                stat = Path(f"/proc/{backend}/stat").read_text()
            except OSError:
                return None  # a database on another machine
    finally:
        await db.close()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def cpu_seconds(pid: int | None) -> float | None:
    return tree_cpu_seconds(pid) if pid is not None else None


def _per_request(before: float | None, after: float | None, measured: Measured) -> float | None:
    if before is None or after is None or not measured.requests:
        return None
    return round((after - before) * 1000 / measured.requests, 3)


def _start_profiler(
    args: argparse.Namespace, server: Server, name: str, workers: int
) -> subprocess.Popen[bytes] | None:
    """py-spy on the server (and its workers) for the timed run, as collapsed stacks."""
    if not args.profile:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{name}-w{workers}.txt"
    command = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(server.process.pid),
        "--subprocesses",
        "--format",
        "raw",
        "--rate",
        "200",
        "--duration",
        str(args.duration),
        "--output",
        str(out),
        "--nonblocking",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def _fastest_reference(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The reference's runs of a scenario at its fastest worker count (by median req/s): the
    ratio to it is the conservative one."""
    by_count: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["kind"] == "reference" and r["scenario"] == name:
            by_count.setdefault(r["workers"], []).append(r)
    if not by_count:
        return []
    return max(by_count.values(), key=lambda runs: statistics.median(r["rps"] for r in runs))


def _summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    ceilings: dict[str, list[float]] = {}
    for r in records:
        if r["kind"] == "ceiling":
            ceilings.setdefault(r["scenario"], []).append(r["tps"])
    keys = sorted({(r["scenario"], r["workers"]) for r in records if r["kind"] == "wrk"})
    order = list(SCENARIOS)
    keys.sort(key=lambda k: (order.index(k[0]), k[1]))
    for name, workers in keys:
        runs = [r for r in records if r["kind"] == "wrk" and (r["scenario"], r["workers"]) == (name, workers)]
        rps = statistics.median(r["rps"] for r in runs)
        ceiling = statistics.median(ceilings[name]) if name in ceilings else None
        original = SCENARIOS[name].original
        reference = _fastest_reference(records, name)
        reference_rps = statistics.median(r["rps"] for r in reference) if reference else None
        summary.append(
            {
                "kind": "summary",
                "scenario": name,
                "workers": workers,
                "rounds": len(runs),
                "rps": round(rps, 1),
                "p50Ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
                "p99Ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                "errors": sum(r["errors"] for r in runs),
                "serverCpuMs": _median_of(runs, "serverCpuMs"),
                "databaseCpuMs": _median_of(runs, "databaseCpuMs"),
                "ceilingTps": round(ceiling, 1) if ceiling else None,
                "shareOfCeiling": round(rps / ceiling, 3) if ceiling else None,
                "original": original,
                "originalShare": SCENARIOS[name].original_share,
                "xOriginal": round(rps / original, 2) if original else None,
                # The reference run beside it (bench/reference.py): a same-run ratio.
                "referenceRps": round(reference_rps, 1) if reference_rps else None,
                "referenceWorkers": reference[0]["workers"] if reference else None,
                "referenceP99Ms": _median_of(reference, "p99_ms") if reference else None,
                "referenceErrors": sum(r["errors"] for r in reference) if reference else None,
                "referenceShare": round(reference_rps / ceiling, 3) if reference_rps and ceiling else None,
                "referenceServerCpuMs": _median_of(reference, "serverCpuMs") if reference else None,
                "referenceDatabaseCpuMs": _median_of(reference, "databaseCpuMs") if reference else None,
                "xReference": round(rps / reference_rps, 2) if reference_rps else None,
            }
        )
    return summary


def _cell(value: Any, width: int, fmt: str = "") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def _print_table(summary: list[dict[str, Any]]) -> None:
    head = (
        f"{'scenario':<10} {'w':>2} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'ceiling':>8} {'share':>6} {'orig':>6} {'orig sh':>7} {'x orig':>6} "
        f"{'cpu ms':>6} {'db ms':>6}"
    )
    print(head)
    print("-" * len(head))

    for s in summary:
        print(
            f"{s['scenario']:<10} {s['workers']:>2} {s['rps']:>8.0f} {s['p50Ms']:>7.1f} "
            f"{s['p99Ms']:>7.1f} {s['errors']:>6} {_cell(s['ceilingTps'], 8, '.0f')} "
            f"{_cell(s['shareOfCeiling'], 6, '.2f')} {_cell(s['original'], 6, '.0f')} "
            f"{_cell(s['originalShare'], 7, '.2f')} {_cell(s['xOriginal'], 6, '.2f')} "
            f"{_cell(s['serverCpuMs'], 6, '.2f')} {_cell(s['databaseCpuMs'], 6, '.2f')}"
        )
    print(
        "x orig: req/s over the TypeScript stack's (issue 7); the goal is 2.00 on every row.\n"
        "cpu ms / db ms: CPU per request of the server's processes and of PostgreSQL (steadier\n"
        "than req/s when the machine is shared)."
    )
    rows = [s for s in summary if s["referenceRps"]]
    if rows:
        _print_reference(rows)


def _print_reference(rows: list[dict[str, Any]]) -> None:
    head = (
        f"\n{'reference':<10} {'w':>2} {'req/s':>8} {'p99 ms':>7} {'errors':>6} {'share':>6} {'orig sh':>7} "
        f"{'cpu ms':>6} {'db ms':>6} {'ours':>8} {'x ref':>6}"
    )
    print(head)
    print("-" * len(head))
    for s in rows:
        print(
            f"{s['scenario']:<10} {s['referenceWorkers']:>2} {s['referenceRps']:>8.0f} "
            f"{s['referenceP99Ms']:>7.1f} "
            f"{s['referenceErrors']:>6} {_cell(s['referenceShare'], 6, '.2f')} "
            f"{_cell(s['originalShare'], 7, '.2f')} {_cell(s['referenceServerCpuMs'], 6, '.2f')} "
            f"{_cell(s['referenceDatabaseCpuMs'], 6, '.2f')} "
            f"{s['rps']:>8.0f} {s['xReference']:>6.2f}"
        )
    print(
        "reference: the original stack's shape (tRPC v11, drizzle, node-postgres) run right after\n"
        "ours in each round, at its fastest worker count (w); share vs orig sh: where it sits against\n"
        "the original's share of its own database ceiling (issue 7); x ref: our req/s over its."
    )


def _parse_workers(raw: str) -> list[int]:
    return [int(part) for part in raw.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--dataset", type=Path, help="reuse a dataset JSON already loaded")
    parser.add_argument("--workers", type=_parse_workers, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each scenario")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk and pgbench threads")
    parser.add_argument("--scenarios", help="comma-separated; default: all that this build has")
    parser.add_argument("--no-ceiling", action="store_true", help="skip pgbench")
    parser.add_argument("--profile", type=Path, help="py-spy each timed run into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the embedded database")
    parser.add_argument("--sample", type=int, default=2000, help="random contacts to pick from")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also run the original stack's shape (bench/trpc_reference) after each scenario",
    )
    parser.add_argument(
        "--reference-workers",
        type=_parse_workers,
        default=[1, 2],
        help="its node processes, e.g. 1,2; the summary takes the fastest",
    )
    args = parser.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"{stamp}.jsonl"
    work = Path(tempfile.mkdtemp(prefix="nurturehub-bench-run-"))
    records: list[dict[str, Any]] = []
    context = {"stamp": stamp, "commit": _git_commit(), "cpus": os.cpu_count()}

    def emit(record: dict[str, Any]) -> None:
        record = {**record, **context}
        records.append(record)
        with out.open("a") as sink:
            sink.write(json.dumps(record) + "\n")
        if record["kind"] in ("wrk", "reference"):
            who = f"{'workers' if record['kind'] == 'wrk' else 'reference'}={record['workers']}"
            print(
                f"  round {record['round']} {record['scenario']:<10} {who} "
                f"{record['rps']:8.0f} req/s  p50 {record['p50_ms']:.1f} ms  "
                f"p99 {record['p99_ms']:.1f} ms  errors {record['errors']}  "
                f"cpu/req server {record['serverCpuMs']} ms db {record['databaseCpuMs']} ms"
                + (f"  first error: {record['sample_error'][:160]}" if record["errors"] else ""),
                flush=True,
            )
        elif record["kind"] == "ceiling":
            print(
                f"  round {record['round']} ceiling {record['scenario']:<10} "
                f"{record['tps']:8.0f} tps  failed {record['failed']}",
                flush=True,
            )

    with database(args.database_url, args.keep) as url:
        if args.dataset:
            loaded = json.loads(args.dataset.read_text())
        else:
            print(f"loading {args.contacts} contacts ...", flush=True)
            built = asyncio.run(dataset_module.load(url, args.contacts))
            loaded = built.to_json()
            target = RESULTS / f"dataset-{stamp}.json"
            target.write_text(json.dumps(loaded, indent=2) + "\n")
            target.chmod(0o600)
            print(f"  loaded in {built.seconds:.0f} s ({target.name})", flush=True)
        data = asyncio.run(_collect(url, loaded, args.sample))
        context["contacts"] = loaded["contacts"]

        probe = Server(url, 1, work / "server.log")
        try:
            available = probe.methods()
            names = (
                args.scenarios.split(",")
                if args.scenarios
                else scenario_names(lambda method: method in available)
            )
        finally:
            probe.stop()
        unknown = [name for name in names if name not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
        print(
            f"scenarios: {', '.join(names)}; workers {args.workers}; {args.duration} s each; "
            f"load average {os.getloadavg()}; results in {out}",
            flush=True,
        )
        for round_no in range(1, args.rounds + 1):
            _measure_round(args, url, data, names, work, emit, round_no)
        summary = _summarise(records)
        for row in summary:
            emit({**row, "load1": _load1()})
    print()
    _print_table(summary)
    print(f"\nload average now {os.getloadavg()}; JSON lines in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
