"""`nurturehub import` rows per second and peak memory, for files of growing size.

    python -m bench.import_rate [--rows 20000,100000,400000] [--database-url URL]

Writes CSV files of generated people (a tenth of them duplicates of earlier rows, one in fifty
with a bad phone), imports each into a new organisation with `nurturehub import` as a
subprocess, and prints rows/s and the process's peak resident memory (flat memory: the file is
streamed). One JSON line per size, also written to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.dataset import FIRST_NAMES, LAST_NAMES
from server.accounts import create_organisation
from server.db import Database
from server.embedded import EmbeddedPostgres
from server.migrate import Migrator

BIN = Path(sys.executable).parent


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as file:
        file.write("First Name,Surname,Email,Mobile,Postcode,Consent,Category\n")
        for n in range(rows):
            person = n - 7 if n % 10 == 9 else n  # a duplicate of an earlier row
            phone = "12345" if n % 50 == 49 else f"077009{person % 100000:05d}"
            file.write(f"{FIRST_NAMES[person % len(FIRST_NAMES)]},{LAST_NAMES[person % len(LAST_NAMES)]},"
                       f"person{person}@bench.example.com,{phone},SW1A 1AA,granted,buyer\n")


async def new_organisation(url: str) -> str:
    db = Database(url, pool_size=1)
    try:
        await Migrator(url).init()
        async with db.transaction() as tx:
            issued = await create_organisation(
                tx, f"Import Bench {secrets.token_hex(4)}", f"owner-{secrets.token_hex(4)}@bench.example.com"
            )
        return str(issued.organisation_id)
    finally:
        await db.close()


def measure(url: str, rows: int, folder: Path) -> dict[str, object]:
    path = folder / f"people-{rows}.csv"
    write_csv(path, rows)
    org = asyncio.run(new_organisation(url))
    env = {**os.environ, "DATABASE_URL": url,
           "NURTUREHUB_SUPPRESSION_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "nurturehub"), "import", str(path), "--org", org],
                          env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    summary = json.loads(done.stdout)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    return {"rows": rows, "fileBytes": path.stat().st_size, "seconds": round(seconds, 2),
            "rowsPerSecond": round(rows / seconds), "peakRssMiB": round(peak_kb / 1024, 1),
            "created": summary["created"], "skipped": summary["skipped"], "invalid": summary["invalid"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_rate", description=__doc__)
    parser.add_argument("--rows", default="20000,100000,400000")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    embedded = None
    url = args.database_url
    if not url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="nh-bench-import-")), cleanup="delete")
        url = embedded.start()
    lines = []
    try:
        with tempfile.TemporaryDirectory(prefix="nh-import-") as folder:
            for rows in (int(n) for n in args.rows.split(",")):
                line = json.dumps(measure(url, rows, Path(folder)))
                print(line, flush=True)
                lines.append(line)
    finally:
        if embedded is not None:
            embedded.stop()
    out = Path("bench/results") / f"import-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
