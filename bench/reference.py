"""The reference server: bench/trpc_reference/server.mjs (tRPC v11, drizzle, node-postgres) run
beside NurtureHub, so `bench.run --reference` gives a same-run ratio to the original stack's shape.

Issue 7's original figures come from another machine; machines of this kind differ by up to 2x
between sessions (the get ceiling was 15,091 tps in one and 7,913 in another), so a ratio to
fixed figures says as much about the machine as about the code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.served import Served

__all__ = ["FOLDER", "ReferenceServer", "ensure_reference"]

FOLDER = Path(__file__).resolve().parent / "trpc_reference"


def ensure_reference() -> str:
    """node, with the reference's packages installed from its lock file; returns node's path."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise SystemExit("--reference needs Node.js 20+ and npm (apt-get install nodejs npm)")
    if not (FOLDER / "node_modules").is_dir():
        print("installing the reference's packages (npm ci)", flush=True)
        subprocess.run([npm, "ci", "--silent", "--no-audit", "--no-fund"], cwd=FOLDER, check=True)
    return node


class ReferenceServer(Served):
    """`node server.mjs` on a port, against the same database, in `workers` processes (one is
    tRPC's standalone adapter as it comes; more share the port through node:cluster)."""

    def __init__(self, node: str, database_url: str, port: int, log: Path, *, workers: int = 1) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "WORKERS": str(workers),
            "NODE_ENV": "production",  # tRPC leaves stack traces out of errors
        }
        super().__init__([node, "server.mjs"], cwd=FOLDER, env=env, log=log)
        # Any HTTP answer (here 404: no such procedure) means it is listening.
        self.wait_until_answering(self.url + "/ready", seconds=30, any_status=True)

    def stop(self, *, group: bool = True, seconds: float = 10) -> None:
        super().stop(group=group, seconds=seconds)  # the cluster's workers too
