"""Issue 16: every released schema upgrades in place to exactly schema.sql, keeping every row.

Upgrade sources are every version from the baseline (migrations/baseline/0001.sql: version 1 as
of fb1dfbe, the last of the version-1 schemas) up: a database at version N is the baseline
migrated to N, and tests/released_schemas.tsv holds that this is, catalog for catalog, what
schema.sql created when it was released at N. A database is built at a source, filled, migrated,
and compared with a fresh database of schema.sql.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from server.backup import pg_tool
from server.migrate import MigrationError, Migrator, split_statements
from server.schema import MIGRATIONS_DIR, SCHEMA_PATH, SchemaFiles, SchemaFilesError
from tests.support import query

BIN = Path(sys.executable).parent
FILES = SchemaFiles.load()
SOURCES = list(range(FILES.baseline, FILES.head))
RELEASED = {
    int(version): (commit, digest)
    for version, commit, digest in (
        line.split("\t") for line in (Path(__file__).parent / "released_schemas.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    )
}
TABLES = (
    "organisations", "users", "memberships", "api_tokens", "contacts", "lead_category_assignments",
    "crm_providers", "crm_connections", "crm_writeback_queue", "crm_writeback_attempts",
    "audit_log", "erasure_suppressions",
)
# Tables a later version added, and the version that did: filled and checked from then on.
LATER_TABLES = {"crm_external_refs": 9}


def tables_at(version: int) -> tuple[str, ...]:
    return TABLES + tuple(table for table, since in LATER_TABLES.items() if version >= since)


def build(postgres, version: int) -> str:
    """A new database at `version`: the baseline, migrated as a release at `version` would."""
    url = postgres.create_database()
    migrate(url, FILES.up_to(version))
    return url


def migrate(url: str, files: SchemaFiles | None = None, **options: Any) -> dict[str, Any]:
    import asyncio

    return asyncio.run(Migrator(url, files, **options).migrate())


def versions(url: str) -> list[int]:
    return [row[0] for row in query(url, "SELECT version FROM schema_version ORDER BY version")]


# pg_dump lines that say nothing about the schema: comments, session settings, the random
# \restrict key of PostgreSQL 15.14+/18, and the per-table attribute option some PostgreSQL
# builds stamp on every column at creation (pg_attver, a creation counter).
_NOISE = re.compile(
    r"^(--.*|SET .*|SELECT pg_catalog\.set_config.*|\\(un)?restrict .*|"
    r"ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);|)$"
)


def schema_dump(url: str) -> list[str]:
    done = subprocess.run(
        [str(pg_tool("pg_dump")), "--schema-only", "--no-owner", "--no-privileges", "--dbname", url],
        capture_output=True, text=True, check=True,
    )
    return [line for line in done.stdout.splitlines() if not _NOISE.match(line)]


# What must come out of an upgrade the same -----------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_an_upgrade_gives_exactly_the_schema_of_schema_sql(postgres, source: int) -> None:
    fresh = postgres.create_database()
    migrate(fresh)
    upgraded = build(postgres, source)
    result = migrate(upgraded)
    assert [step["version"] for step in result["applied"]] == list(range(source + 1, FILES.head + 1))
    fresh_dump, upgraded_dump = schema_dump(fresh), schema_dump(upgraded)
    assert len(fresh_dump) > 300  # the comparison is of a whole schema, not of an empty dump
    differing = [line for line in set(fresh_dump) ^ set(upgraded_dump)]
    assert differing == [] and fresh_dump == upgraded_dump
    assert versions(upgraded) == list(range(FILES.baseline, FILES.head + 1))


def test_schema_sql_changes_only_with_a_step_from_the_previous_version() -> None:
    """The CI gate: schema.sql at version N must be what the baseline and the steps make (the
    test above), every version has its step, and every released version is recorded."""
    assert set(FILES.steps) == set(range(FILES.baseline + 1, FILES.head + 1))
    assert set(RELEASED) == set(range(FILES.baseline, FILES.head)), (
        "tests/released_schemas.tsv needs a line for every version below schema.sql's"
    )


@pytest.mark.parametrize("version", SOURCES)
def test_each_released_schema_is_the_baseline_and_its_steps(postgres, version: int) -> None:
    """What the runner checks a database at `version` against is what was released at it."""
    import asyncio

    from server.catalog import expected, fingerprint

    async def chained() -> str:
        async with await psycopg.AsyncConnection.connect(postgres.create_database(), autocommit=True) as conn:
            return fingerprint(await expected(conn, FILES.scripts_at(version)))

    assert asyncio.run(chained()) == RELEASED[version][1], f"version {version} as the steps build it"


def fill(database_url: str, version: int) -> dict[str, Any]:
    """An organisation with an owner's token, contacts with category history, a CRM connection
    with sealed credentials, writeback events in all four statuses with attempts, an erasure's
    suppression hashes and audit rows: returns what was written, to check the answers against.

    All in SQL with the columns every released schema has, so no code of this version (which
    reads columns older schemas lack) runs against an older schema."""
    from procedures.crm_credentials import seal_credentials
    from tests.crm_support import KEYRING

    connection_id = str(uuid.uuid4())
    contacts: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        owner = owner_in_sql(conn)
        org_id = owner["organisationId"]
        sealed = seal_credentials(
            KEYRING, uuid.UUID(org_id), uuid.UUID(connection_id), {"apiToken": "street-token-upgrade"})
        conn.execute(
            "INSERT INTO crm_connections (organisation_id, id, provider_id, status, encrypted_credentials,"
            " credentials_hint) VALUES (%s, %s, 'street', 'active', %s, '…rade')",
            (org_id, connection_id, sealed))
        for n, category in enumerate(("seller", "landlord", "active_buyer")):
            contacts.append(str(conn.execute(
                "INSERT INTO contacts (organisation_id, first_name, last_name, email, phone, postcode,"
                " consent_status, consent_timestamp, import_source, crm_connection_id, external_id,"
                " crm_payload, active_category) VALUES (%s, %s, 'Upgrade', %s, %s, 'SW1A 1AA', 'granted',"
                " '2026-11-01T10:00:00Z', 'crm_sync', %s, %s, %s, %s) RETURNING id",
                (org_id, f"Person{n}", f"person{n}@example.co.uk", f"+44790012345{n}", connection_id,
                 f"ST{n}", json.dumps({"id": f"ST{n}", "type": "applicant"}), category),
            ).fetchone()[0]))  # type: ignore[index]
            conn.execute(
                "INSERT INTO lead_category_assignments (organisation_id, contact_id, category, reason,"
                " assigned_at) VALUES (%s, %s, %s, 'first', '2026-11-01T10:00:00Z')",
                (org_id, contacts[-1], category))
        # A second category for the first contact: the history gets a superseded row.
        conn.execute(
            "UPDATE lead_category_assignments SET superseded_at = now() WHERE contact_id = %s"
            " AND superseded_at IS NULL", (contacts[0],))
        conn.execute(
            "INSERT INTO lead_category_assignments (organisation_id, contact_id, category, reason)"
            " VALUES (%s, %s, 'active_seller', 'instructed')", (org_id, contacts[0]))
        conn.execute("UPDATE contacts SET active_category = 'active_seller' WHERE id = %s", (contacts[0],))
        # Writeback events, one in each status, with an attempt for the delivered one.
        statuses = {"success": "attempts = 1, completed_at = now()",
                    "failed": "attempts = 8, last_error = 'HTTP 400'",
                    "processing": "attempts = 1, lease_expires_at = now() + interval '1 hour',"
                                  " locked_by = 'w1'",
                    "pending": "attempts = 0"}
        events: dict[str, str] = {}
        for n, (status, values) in enumerate(statuses.items()):
            events[status] = str(conn.execute(
                "INSERT INTO crm_writeback_queue (organisation_id, connection_id, provider_id, contact_id,"
                " event_type, payload, idempotency_key) VALUES (%s, %s, 'street', %s, 'email_opened', %s,"
                " %s) RETURNING id",
                (org_id, connection_id, contacts[n % 2], json.dumps({"subject": f"Offer {n}"}),
                 f"upgrade-{n}"),
            ).fetchone()[0])  # type: ignore[index]
            conn.execute(f"UPDATE crm_writeback_queue SET status = %s, {values} WHERE id = %s",
                         (status, events[status]))
        conn.execute(
            "INSERT INTO crm_writeback_attempts (organisation_id, queue_id, attempt, duration_ms,"
            " status_code, outcome) VALUES (%s, %s, 1, 12, 201, 'success')", (org_id, events["success"]))
        # An erasure, as contacts.delete leaves it: the row gone, keyed hashes, an audit row.
        conn.execute("DELETE FROM contacts WHERE id = %s", (contacts[2],))
        for kind in ("email", "phone", "external_id"):
            conn.execute("INSERT INTO erasure_suppressions (organisation_id, identifier_hash, kind)"
                         " VALUES (%s, %s, %s)", (org_id, os.urandom(32), kind))
        conn.execute("INSERT INTO audit_log (organisation_id, action, target_type, target_id)"
                     " VALUES (%s, 'contacts.delete', 'contact', %s)", (org_id, contacts[2]))
        if version >= LATER_TABLES["crm_external_refs"]:
            # A role record as a sync keeps it: the people it names, its facts and its hash.
            conn.execute(
                "INSERT INTO crm_external_refs (organisation_id, connection_id, record_type, external_id,"
                " contact_ids, links, roles, content_hash, source_modified_at) VALUES (%s, %s, 'applicants',"
                " 'A1', '{ST0}', '{properties/P1}', '{\"marketingMode\": \"buying\"}', %s,"
                " '2026-11-01T10:00:00Z')", (org_id, connection_id, os.urandom(32)))
    return {**owner, "connectionId": connection_id, "contacts": contacts[:2], "events": events}


def owner_in_sql(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """An organisation, its owner and the owner's token, written with the columns every released
    schema has; returns the token and the ids."""
    from server import tokens

    token = tokens.generate()
    org_id, owner_id, token_id = (str(uuid.uuid4()) for _ in range(3))
    conn.execute("INSERT INTO organisations (id, name) VALUES (%s, 'Upgrade Estates')", (org_id,))
    conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (owner_id, f"{owner_id}@upgrade.co.uk"))
    conn.execute("INSERT INTO memberships (organisation_id, user_id, role) VALUES (%s, %s, 'owner')",
                 (org_id, owner_id))
    conn.execute(
        "INSERT INTO api_tokens (organisation_id, id, user_id, name, token_hash)"
        " VALUES (%s, %s, %s, 'first', %s)", (org_id, token_id, owner_id, tokens.hash_token(token)))
    return {"token": token, "organisationId": org_id, "tokenId": token_id}


def rows(url: str, tables: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, as JSON objects in a stable order."""
    found = {}
    for table in tables:
        values = query(url, f"SELECT to_jsonb(t) FROM {table} AS t")
        found[table] = sorted((v[0] for v in values), key=lambda r: json.dumps(r, sort_keys=True))
    return found


def run_with_database(url: str, work: Any) -> Any:
    """Run `work(db)` on a pool of the given database (the CLI refuses a database not yet migrated)."""
    import asyncio

    from server.db import Database

    async def go() -> Any:
        db = Database(url, pool_size=1)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(go())


def answers_match_what_was_written(server_url: str, made: dict[str, Any], url: str) -> None:
    """After the upgrade, the owner's token still works and every read answers with what the
    rows hold (the rows themselves are compared value by value)."""
    from tests.support import Rpc

    rpc = Rpc(server_url, made["token"])
    try:
        me = rpc.call("auth.whoami")
        assert (me["organisation"]["id"], me["role"]) == (made["organisationId"], "owner")
        history = [rpc.call("contacts.getCategoryHistory", {"id": c}) for c in made["contacts"]]
        assert [[a["category"] for a in h] for h in history] == [["active_seller", "seller"], ["landlord"]]
        assert [a["supersededAt"] is None for a in history[0]] == [True, False]
        [connection] = rpc.call("crm.listConnections", {})
        assert (connection["id"], connection["providerId"], connection["status"],
                connection["credentialsHint"]) == (made["connectionId"], "street", "active", "…rade")
        events = {e["id"]: e["status"] for e in rpc.call("crm.listWriteback", {"limit": 50})["items"]}
        assert events == {event_id: status for status, event_id in made["events"].items()}
        listed = rpc.call("contacts.list", {"limit": 50})["items"]
        assert sorted(c["id"] for c in listed) == sorted(made["contacts"])
        for contact_id in made["contacts"]:
            got = rpc.call("contacts.get", {"id": contact_id})
            [(first, last, email)] = query(
                url, "SELECT first_name, last_name, email FROM contacts WHERE id = %s", (contact_id,))
            assert (got["firstName"], got["lastName"], got["email"], got["archivedAt"]) == (
                first, last, email, None)
            assert got["consentStatus"] == "granted"
    finally:
        rpc.http.close()


def counts(url: str, tables: tuple[str, ...]) -> dict[str, int]:
    return {table: query(url, f"SELECT count(*) FROM {table}")[0][0] for table in tables}


@pytest.mark.parametrize("source", SOURCES)
def test_an_upgrade_keeps_every_row_and_answers_with_it(postgres, source: int) -> None:
    from procedures import app_router
    from seeds.crm_providers import seed
    from tests.crm_support import KEYRING
    from tests.support import ServerThread

    url = build(postgres, source)
    run_with_database(url, seed)
    made = fill(url, source)
    tables = tables_at(source)
    before_counts, before_rows = counts(url, tables), rows(url, tables)
    assert all(before_counts[t] > 0 for t in tables), before_counts
    migrate(url)
    assert counts(url, tables) == before_counts
    # Every row keeps every value it had; columns a step added are all it gains.
    after_rows = rows(url, tables)
    for table, kept in before_rows.items():
        assert [{k: r[k] for k in kept[0]} for r in after_rows[table]] == kept, table
    server = ServerThread(url, app_router, encryption_keys=KEYRING, suppression_key=b"k" * 32)
    try:
        answers_match_what_was_written(server.url, made, url)
    finally:
        server.stop()


# The runner ----------------------------------------------------------------------------------------


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "nurturehub"), *args], env={**os.environ, "DATABASE_URL": url},
        capture_output=True, text=True, timeout=120,
    )
    return done


def test_four_migrate_commands_at_once_apply_each_step_once(postgres) -> None:
    url = build(postgres, SOURCES[0])
    command = [str(BIN / "nurturehub"), "db", "migrate"]
    env = {**os.environ, "DATABASE_URL": url}
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], [err for _, err in outputs]
    applied = [json.loads(out)["applied"] for out, _ in outputs]
    assert sorted(len(a) for a in applied) == [0, 0, 0, FILES.head - SOURCES[0]]
    assert versions(url) == list(range(SOURCES[0], FILES.head + 1))


def test_migrate_prints_each_step_and_status_shows_none_pending(postgres) -> None:
    url = build(postgres, SOURCES[0])
    status = json.loads(cli(url, "db", "status").stdout)
    assert status["state"] == "pending" and status["databaseVersion"] == SOURCES[0]
    assert [s["name"] for s in status["pending"]] == [FILES.steps[v].name for v in FILES.steps]
    assert all(s["locks"] for s in status["pending"])
    done = cli(url, "db", "migrate")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert all(isinstance(step["durationMs"], int) for step in result["applied"])
    after = json.loads(cli(url, "db", "status").stdout)
    assert after["state"] == "current" and after["pending"] == []
    assert [h["version"] for h in after["history"][1:]] == [s["version"] for s in result["applied"]]
    # Steps before the one that adds schema_version's history columns record their version only.
    assert after["history"][-1]["name"] == result["applied"][-1]["name"]
    assert json.loads(cli(url, "db", "migrate").stdout)["applied"] == []


def files_with(tmp_path: Path, name: str, text: str) -> SchemaFiles:
    """This code's schema files plus one more step, `name`, taking schema.sql's version on by one."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    (folder / name).write_text(text)
    schema = tmp_path / "schema.sql"
    schema.write_text(SCHEMA_PATH.read_text().replace(
        f"-- schema-version: {FILES.head}", f"-- schema-version: {FILES.head + 1}"))
    return SchemaFiles.load(folder, schema)


def nickname_columns(url: str) -> int:
    found = query(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'nickname'")
    return int(found[0][0])


def next_step(slug: str) -> str:
    return f"{FILES.head + 1:04d}_{slug}.sql"


def test_a_step_that_fails_part_way_leaves_the_previous_version(postgres, tmp_path: Path) -> None:
    url = postgres.create_database()
    migrate(url)
    files = files_with(tmp_path, next_step("boom"), (
        "-- locks: none\n-- backward-compatible: yes\n"
        "CREATE TABLE half_done (id int);\n"
        "ALTER TABLE contacts ADD COLUMN nickname text;\n"
        "DO $$ BEGIN RAISE EXCEPTION 'the step breaks here'; END $$;\n"
    ))
    with pytest.raises(MigrationError, match="stays at the version before it") as caught:
        migrate(url, files)
    assert "the step breaks here" in str(caught.value)
    assert versions(url)[-1] == FILES.head
    assert query(url, "SELECT to_regclass('half_done')") == [(None,)]
    assert nickname_columns(url) == 0
    assert json.loads(cli(url, "db", "check").stdout)["matches"] is True


def test_a_step_outside_a_transaction_runs_statement_by_statement(postgres, tmp_path: Path) -> None:
    url = postgres.create_database()
    migrate(url)
    files = files_with(tmp_path, next_step("concurrent_indexes"), (
        "-- locks: SHARE UPDATE EXCLUSIVE on contacts while each index builds; writes go on\n"
        "-- backward-compatible: yes\n-- transaction: off\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_updated_idx ON contacts (updated_at);\n"
        "/* ; a semicolon in a comment */\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_names_idx ON contacts (last_name, first_name);\n"
    ))
    assert not files.steps[FILES.head + 1].transactional
    result = migrate(url, files)
    assert [s["version"] for s in result["applied"]] == [FILES.head + 1]
    assert query(url, "SELECT count(*) FROM pg_index WHERE indisvalid AND indexrelid::regclass::text"
                      " IN ('contacts_updated_idx', 'contacts_names_idx')") == [(2,)]
    assert versions(url)[-1] == FILES.head + 1


def test_a_step_behind_a_long_transaction_gives_way_then_stops_with_nothing_changed(
    postgres, tmp_path: Path
) -> None:
    url = postgres.create_database()
    migrate(url)
    files = files_with(tmp_path, next_step("nickname"), (
        "-- locks: ACCESS EXCLUSIVE on contacts, milliseconds\n-- backward-compatible: yes\n"
        "ALTER TABLE contacts ADD COLUMN nickname text;\n"
    ))
    with psycopg.connect(url) as reader:
        reader.execute("SELECT count(*) FROM contacts")  # an open transaction holds ACCESS SHARE
        with pytest.raises(MigrationError, match="could not take its locks within 0.1s in 3 tries"):
            migrate(url, files, lock_timeout=0.1, tries=3, retry_delay=0.05)
        assert versions(url)[-1] == FILES.head
        reader.rollback()
    assert migrate(url, files, lock_timeout=0.1)["applied"][0]["version"] == FILES.head + 1
    assert nickname_columns(url) == 1


def test_a_newer_database_is_served_only_when_its_newer_steps_keep_this_version_working(postgres) -> None:
    import asyncio

    url = postgres.create_database()
    migrate(url)
    query(url, "INSERT INTO schema_version (version, name, backward_compatible)"
               " VALUES (%s, 'future_expand', true)", (FILES.head + 1,))
    warning = asyncio.run(Migrator(url).startable())
    assert warning and "newer" in warning and "keeps version" in warning
    query(url, "INSERT INTO schema_version (version, name, backward_compatible)"
               " VALUES (%s, 'future_contract', false)", (FILES.head + 2,))
    with pytest.raises(MigrationError, match=f"at schema version {FILES.head + 2}, newer than"):
        asyncio.run(Migrator(url).startable())
    done = cli(url, "db", "migrate")
    assert done.returncode == 1 and "newer than this NurtureHub" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_database_whose_schema_drifted_is_listed_by_check_and_not_migrated(postgres) -> None:
    url = build(postgres, SOURCES[-1])
    query(url, "DROP INDEX contacts_source_idx")
    checked = cli(url, "db", "check")
    assert checked.returncode == 1
    assert any("contacts_source_idx" in d for d in json.loads(checked.stdout)["differences"])
    done = cli(url, "db", "migrate")
    assert done.returncode == 1 and "nurturehub db check" in done.stderr
    assert versions(url) == list(range(FILES.baseline, SOURCES[-1] + 1))


def git_schema(commit: str) -> str | None:
    done = subprocess.run(["git", "show", f"{commit}:schema.sql"], capture_output=True, text=True,
                          cwd=SCHEMA_PATH.parent)
    return done.stdout if done.returncode == 0 else None


@pytest.mark.parametrize("commit", ["64ce061", "86a5535", "d93e89c", "3d8c78f"])
def test_a_development_build_version_1_is_recognised_and_refused(postgres, commit: str) -> None:
    text = git_schema(commit)
    if text is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs the git history to build the development schemas")
        pytest.skip("no git history here")
    url = postgres.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(text.encode())
    done = cli(url, "db", "migrate")
    assert done.returncode == 1
    assert f"development build of NurtureHub ({commit}" in done.stderr and "new database" in done.stderr
    assert versions(url) == [1]


@pytest.mark.parametrize("version", sorted(RELEASED))
def test_the_recorded_fingerprints_are_those_of_the_released_schema_files(postgres, version: int) -> None:
    import asyncio

    from server.catalog import expected, fingerprint

    commit, digest = RELEASED[version]
    text = git_schema(commit)
    if text is None:
        pytest.skip("no git history here: the fingerprints stand as recorded")
    assert f"-- schema-version: {version}\n" in text

    async def released() -> str:
        async with await psycopg.AsyncConnection.connect(postgres.create_database(), autocommit=True) as conn:
            return fingerprint(await expected(conn, [text]))

    assert asyncio.run(released()) == digest


def test_a_step_without_its_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaFilesError, match="what the step locks"):
        files_with(tmp_path, next_step("no_header"), "ALTER TABLE contacts ADD COLUMN x text;\n")


def test_split_statements_keeps_quoted_and_dollar_quoted_semicolons() -> None:
    text = (
        "-- a comment; with a semicolon\n"
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b' $body$;\n"
        "SELECT ';' AS \"x;y\"; /* c; */ SELECT $$;$$;\n"
    )
    assert split_statements(text) == [
        "-- a comment; with a semicolon\n"
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b' $body$",
        "SELECT ';' AS \"x;y\"",
        "/* c; */ SELECT $$;$$",
    ]
