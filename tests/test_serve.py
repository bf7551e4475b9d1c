"""`nurturehub serve` end to end: a real process, a real port, the embedded or a given database."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psycopg

from tests.support import free_port, query, wait_until

BIN = Path(sys.executable).parent


class Serve:
    def __init__(self, env: dict[str, str], *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = Path(tempfile.mkstemp(prefix="nh-serve-", suffix=".log")[1])
        self.process = subprocess.Popen(
            [str(BIN / "nurturehub"), "serve", "--port", str(self.port), *options],
            env=env,
            stdout=self.output.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = wait_until(self._ready, timeout=60, interval=0.2)
        assert ready, f"server did not become ready:\n{self.text()}"

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return self.process.poll() is None and False

    def text(self) -> str:
        return self.output.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def providers(url: str, token: str) -> list[dict[str, str]]:
    body = httpx.post(
        url + "/rpc",
        headers={"Authorization": f"Bearer {token}"},
        json={"jsonrpc": "2.0", "id": 1, "method": "contacts.listCrmProviders"},
    ).json()
    return body["result"]


def test_serve_on_the_embedded_database_prints_a_working_first_call(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["NURTUREHUB_DATA_DIR"] = str(tmp_path / "data")
    server = Serve(env)
    try:
        text = server.text()
        token = re.search(r"^\s+(nh_[0-9A-Za-z]{38})$", text, re.MULTILINE)
        assert token, text
        named = re.search(r"demo organisation '.*' \(id ([0-9a-f-]{36})\)", text)
        assert named and re.search(r"token id [0-9a-f-]{36}", text), text
        curl = re.search(r"^\s+(curl -s .*?-d '.*?')$", text, re.MULTILINE | re.DOTALL)
        assert curl, text
        command = curl.group(1).replace("\\\n", " ")
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
        import json

        result = json.loads(done.stdout)["result"]
        assert sorted(p["name"] for p in result) == ["Alto", "Loop", "Reapit", "Street", "agentOS"]
    finally:
        assert server.stop() == 0
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()

    # Data survives a restart: the same token works, and no second demo organisation appears.
    again = Serve(env)
    try:
        assert "Created the demo organisation" not in again.text()
        assert len(providers(again.url, token.group(1))) == 5
        # A restart names the organisation it serves (issue 20, point 3).
        assert f"organisation {named.group(1)} 'Demo Estate Agency'" in again.text()
    finally:
        assert again.stop() == 0


def test_serve_with_database_url_creates_only_schema_and_providers(postgres) -> None:
    url = postgres.create_database()
    server = Serve({**os.environ, "DATABASE_URL": url})
    try:
        assert "Created the demo organisation" not in server.text()
        assert query(url, "SELECT count(*) FROM organisations") == [(0,)]
        assert query(url, "SELECT count(*) FROM users") == [(0,)]
        assert query(url, "SELECT count(*) FROM crm_providers") == [(5,)]
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    finally:
        assert server.stop() == 0


# Issue 16: a database made by an earlier release upgrades in place when serve starts ----------


def test_serve_backs_up_then_migrates_an_embedded_database_of_an_earlier_release(tmp_path: Path) -> None:
    from server.embedded import EmbeddedPostgres
    from server.migrate import Migrator
    from server.schema import SchemaFiles
    from tests.test_migrations import owner_in_sql, run_with_database

    files = SchemaFiles.load()
    earlier = 2  # main's version when issue 16 was filed: its embedded databases must carry on
    embedded = EmbeddedPostgres(tmp_path / "data")
    url = embedded.start()
    try:
        run_with_database(url, lambda db: Migrator(url, files.up_to(earlier)).migrate())
        with psycopg.connect(url, autocommit=True) as conn:
            org = owner_in_sql(conn)
        for n in range(3):
            query(url, "INSERT INTO contacts (organisation_id, first_name) VALUES (%s, %s)",
                  (org["organisationId"], f"Kept{n}"))
    finally:
        embedded.stop()

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["NURTUREHUB_DATA_DIR"] = str(tmp_path / "data")
    server = Serve(env)
    try:
        text = server.text()
        backup = re.search(rf"backed up the database at schema version {earlier} to (\S+\.dump)", text)
        assert backup, text
        assert Path(backup.group(1)).stat().st_size > 1000
        assert Path(backup.group(1)).parent == tmp_path / "data" / "backups"
        assert f"migrated the schema from version {earlier} to {files.head}" in text
        assert "Created the demo organisation" not in text
        listed = httpx.post(
            server.url + "/rpc",
            headers={"Authorization": f"Bearer {org['token']}"},
            json={"jsonrpc": "2.0", "id": 1, "method": "contacts.list", "params": {}},
        ).json()["result"]["items"]
        assert sorted(c["firstName"] for c in listed) == ["Kept0", "Kept1", "Kept2"]
    finally:
        assert server.stop() == 0

    # The next start finds nothing to do and takes no second backup.
    again = Serve(env)
    try:
        assert "backed up" not in again.text() and "migrated" not in again.text()
    finally:
        assert again.stop() == 0
    assert len(list((tmp_path / "data" / "backups").glob("*.dump"))) == 1


def test_serve_with_database_url_refuses_pending_steps_unless_asked_to_migrate(postgres) -> None:
    import asyncio

    from server.migrate import Migrator
    from server.schema import SchemaFiles

    files = SchemaFiles.load()
    url = postgres.create_database()
    asyncio.run(Migrator(url, files.up_to(files.head - 1)).migrate())
    env = {**os.environ, "DATABASE_URL": url}
    refused = subprocess.run(
        [str(BIN / "nurturehub"), "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1
    assert "run './nurturehub db migrate' first, or start with --migrate" in refused.stderr
    assert "listening" not in refused.stdout
    assert query(url, "SELECT max(version) FROM schema_version") == [(files.head - 1,)]

    server = Serve(env, "--migrate")
    try:
        assert f"migrated the schema from version {files.head - 1} to {files.head}" in server.text()
        assert query(url, "SELECT max(version) FROM schema_version") == [(files.head,)]
    finally:
        assert server.stop() == 0


def test_serve_on_a_busy_port_says_so_in_one_line_and_starts_nothing(tmp_path: Path, postgres) -> None:
    """Issue 20: it printed "listening", then exited 3 with the cause in a JSON log line."""
    url = postgres.create_database()
    embedded_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    embedded_env["NURTUREHUB_DATA_DIR"] = str(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for env in ({**os.environ, "DATABASE_URL": url}, embedded_env):
            done = subprocess.run(
                [str(BIN / "nurturehub"), "serve", "--port", str(port)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 1, done
            assert done.stdout == "", done.stdout  # no banner, no "listening"
            assert done.stderr.splitlines() == [
                f"nurturehub: error: port {port} on 127.0.0.1 is in use (is another server running?)"
            ]
    assert not (tmp_path / "data").exists()  # the embedded database was not even started
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert query(url, tables) == [(0,)]
