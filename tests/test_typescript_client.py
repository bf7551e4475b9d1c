"""Issue 19: the TypeScript client, checked by tsc and run by Node against the real server, and a real
browser (Debian's chromium, driven by playwright-core) on a second origin and on the explorer.

The Node side lives in clients/typescript/test/; this module starts what it needs (the server, two
static origins) and runs it. Without Node, node_modules or chromium these tests are skipped, saying
why; under CI=true they fail instead, since CI (.ci/run) installs all three.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procedures import app_router
from tests.conftest import SUPPRESSION_KEY
from tests.crm_support import KEYRING
from tests.support import Org, ServerThread, World, free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
BUILD = PACKAGE / ".build"
TSC = PACKAGE / "node_modules" / ".bin" / "tsc"
CHROMIUM = Path(os.environ.get("NURTUREHUB_CHROMIUM", "/usr/bin/chromium"))
RUNTIME_BUDGET = 2500  # bytes, gzipped: tRPC's client is about 5.5 kB


def _missing(*, browser: bool = False) -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed"
    if not TSC.exists():
        return "clients/typescript/node_modules is missing (run `npm ci` in clients/typescript)"
    if browser and not CHROMIUM.exists():
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


def _require(*, browser: bool = False) -> None:
    reason = _missing(browser=browser)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and this test cannot run: {reason}")
    pytest.skip(reason)


def _run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path = PACKAGE
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=180, env=environment)


def _assert_all_ran(report: str, at_least: int) -> None:
    """node --test's closing lines: every test passed, none skipped, and as many as written."""
    counts = dict(re.findall(r"^\u2139 (tests|pass|fail|skipped|todo|cancelled) (\d+)$", report, re.M))
    assert [counts.get(k) for k in ("fail", "skipped", "cancelled")] == ["0", "0", "0"], report
    assert int(counts["pass"]) == int(counts["tests"]) >= at_least, report[-3000:]


@pytest.fixture(scope="module")
def built() -> Path:
    """The client and its tests, compiled by tsc to clients/typescript/.build (ES modules)."""
    _require()
    shutil.rmtree(BUILD, ignore_errors=True)
    run = _run([str(TSC), "-p", "tsconfig.test.json"])
    assert run.returncode == 0, run.stdout + run.stderr
    return BUILD


@pytest.fixture(scope="module")
def org(world: World) -> Org:
    return world.org("TypeScript Agency")


# Types ------------------------------------------------------------------------------------------


def test_type_tests_compile_and_every_expected_error_is_one(capsys: pytest.CaptureFixture[str]) -> None:
    """tsc --noEmit over the client and test/types.test-d.ts: right calls compile, and each
    `@ts-expect-error` line (a wrong category, a missing id, an unknown procedure, mutate on a
    query, a wrong result field, ...) is an error, or tsc reports the unused directive."""
    _require()
    started = time.perf_counter()
    run = _run([str(TSC), "-p", "tsconfig.test.json", "--noEmit"])
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout + run.stderr
    with capsys.disabled():
        print(f"\n  tsc --noEmit on the TypeScript client and its tests: {seconds:.2f} s")


def test_a_type_test_that_stops_failing_breaks_the_check(tmp_path: Path) -> None:
    """The type tests can fail: with one category made valid, its @ts-expect-error is unused."""
    _require()
    for name in ("src", "test", "tsconfig.json", "tsconfig.test.json"):
        source = PACKAGE / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(PACKAGE / "node_modules")
    models = tmp_path / "src" / "models.gen.ts"
    models.write_text(models.read_text().replace('  "seller",\n', '  "seller",\n  "sellr",\n', 1))
    run = _run([str(TSC), "-p", "tsconfig.test.json", "--noEmit"], cwd=tmp_path)
    assert run.returncode != 0
    # Both 'sellr' lines (an assignCategory and a list filter) now compile, and say so.
    assert run.stdout.count("Unused '@ts-expect-error' directive") == 2, run.stdout


def test_the_runtime_has_no_dependencies_and_fits_its_budget(built: Path) -> None:
    package = json.loads((PACKAGE / "package.json").read_text())
    assert "dependencies" not in package and "peerDependencies" not in package
    assert package["name"] == "@nurturehub/client" and package["sideEffects"] is False
    runtime = b"".join((built / "src" / name).read_bytes() for name in ("runtime.js", "index.js"))
    size = len(gzip.compress(runtime, 9))
    imports = [line for line in runtime.decode().splitlines() if line.startswith("import ")]
    assert all("from './" in line for line in imports), imports  # nothing outside the package
    assert size <= RUNTIME_BUDGET, size


# Node against the real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ts_server(database_url: str) -> Iterator[ServerThread]:
    server = ServerThread(database_url, app_router, encryption_keys=KEYRING, suppression_key=SUPPRESSION_KEY)
    yield server
    server.stop()


def test_the_client_against_the_real_server(built: Path, ts_server: ServerThread, org: Org) -> None:
    """test/client.test.ts under `node --test`: every procedure, batching, aborting, each error."""
    env = {
        "NH_RPC_URL": f"{ts_server.url}/rpc",
        "NH_MEMBER_TOKEN": org.member_token,
        "NH_ADMIN_TOKEN": org.admin_token,
    }
    run = _run(["node", "--test", "--test-reporter=spec", str(built / "test" / "client.test.js")], env)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    _assert_all_ran(run.stdout, at_least=16)


# A real browser ---------------------------------------------------------------------------------


class _Origin:
    """A static site on its own port (so its own origin): the test page and the built client."""

    def __init__(self, build: Path) -> None:
        routes = {"/page.html": PACKAGE / "test" / "page.html"}
        routes |= {f"/client/{p.name}": p for p in (build / "src").glob("*.js")}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                target = routes.get(self.path)
                if target is None:
                    self.send_error(404)
                    return
                body = target.read_bytes()
                self.send_response(200)
                kind = "text/html" if target.suffix == ".html" else "text/javascript"
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def origins(built: Path) -> Iterator[tuple[_Origin, _Origin]]:
    allowed, other = _Origin(built), _Origin(built)
    yield allowed, other
    allowed.stop()
    other.stop()


def test_chromium_uses_the_client_cross_origin_and_the_explorer(
    built: Path, origins: tuple[_Origin, _Origin], database_url: str, org: Org
) -> None:
    """test/browser.test.ts: a page on an allowed second origin calls the server through the
    client (and one on another origin cannot); the explorer lists every procedure, a call succeeds
    with a token and shows the 401 without one, and no page asks any other host for anything."""
    _require(browser=True)
    allowed, other = origins
    server = ServerThread(database_url, app_router, cors_origins=(allowed.url,))
    try:
        env = {
            "NH_SERVER_URL": server.url,
            "NH_ALLOWED_PAGE": f"{allowed.url}/page.html",
            "NH_OTHER_PAGE": f"{other.url}/page.html",
            "NH_MEMBER_TOKEN": org.member_token,
            "NH_PROCEDURES": json.dumps(sorted(app_router)),
            "NH_CHROMIUM": str(CHROMIUM),
        }
        run = _run(["node", "--test", "--test-reporter=spec", str(built / "test" / "browser.test.js")], env)
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    _assert_all_ran(run.stdout, at_least=6)
