"""Issue 20, point 6: the schema stays distributable by organisation (Citus).

Citus distributes a table by one column and refuses what it cannot keep on one shard (its rules,
read in its source: ../shared/research/operations.md, section 4.1). Citus cannot be installed
here, so this reads PostgreSQL's catalog of a database made from schema.sql and fails on any
table that breaks those rules. docs/citus.md says how the tables are laid out on Citus.
"""

from __future__ import annotations

from tests.support import query

# Tables copied whole to every Citus node (reference tables). Each is small, written rarely, and
# read before (or without) knowing an organisation.
REFERENCE_TABLES = {
    "crm_providers": "the CRM registry: the same five rows for everyone",
    "organisations": "the tenants themselves: one row each, referenced by every tenant table",
    "users": "a person may belong to several organisations; looked up by email before one is chosen",
    "memberships": "read with the user when a token is checked, before the organisation is known",
    "api_tokens": "found by the token's hash, before the organisation is known; written when a "
    "token is issued or revoked and at most once a minute when it is used",
}
# Tables kept on the coordinator only (local tables): never joined with tenant data on a worker.
LOCAL_TABLES = {
    "schema_version": "the migration runner's bookkeeping",
    "crm_webhook_inbox": "a CRM's event is stored before its organisation is known, and an "
    "unrouted event never has one; the sync processor reads it on the coordinator",
    "server_keys": "the deployment's shared signing keys, read once at start",
}
# Triggers that Citus runs only with citus.enable_unsafe_triggers: allowed here because each
# only raises, so it never reads or writes another shard.
SHARD_LOCAL_TRIGGERS = {"audit_log_append_only"}


def tenant_tables(url: str) -> set[str]:
    rows = query(url, """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
    """)
    return {name for (name,) in rows} - set(REFERENCE_TABLES) - set(LOCAL_TABLES)


def problems(url: str) -> list[str]:
    """Every way a distributed table breaks Citus' rules, one line each."""
    distributed = tenant_tables(url)
    found: list[str] = []
    for (table,) in query(url, """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                            AND a.attname = 'organisation_id' AND NOT a.attisdropped)
    """):
        if table in distributed:
            found.append(f"{table}: has no organisation_id to be distributed by")
    for table, nullable in query(url, """
        SELECT c.relname, NOT a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND a.attname = 'organisation_id' AND c.relkind = 'r'
    """):
        if table in distributed and nullable:
            found.append(f"{table}: organisation_id may be null")
    # (a) Primary keys, unique constraints and unique indexes include the distribution column.
    for table, index in query(url, """
        SELECT c.relname, i.relname FROM pg_index x
          JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND x.indisunique
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                            AND a.attname = 'organisation_id' AND a.attnum = ANY (x.indkey))
    """):
        if table in distributed:
            found.append(f"{table}: unique index {index} leaves out organisation_id")
    # (b) Foreign keys: between distributed tables on organisation_id at the same position, never
    # SET NULL / SET DEFAULT when they contain it; (d) none from a reference or local table to a
    # distributed one.
    for table, target, name, pairs_organisation, contains_organisation, on_delete in query(url, """
        SELECT c.relname, t.relname, k.conname,
               EXISTS (SELECT 1 FROM generate_subscripts(k.conkey, 1) s
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[s]
                        JOIN pg_attribute b ON b.attrelid = k.confrelid AND b.attnum = k.confkey[s]
                       WHERE a.attname = 'organisation_id' AND b.attname = 'organisation_id'),
               EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = k.conrelid
                        AND a.attnum = ANY (k.conkey) AND a.attname = 'organisation_id'),
               k.confdeltype
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class t ON t.oid = k.confrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND k.contype = 'f'
    """):
        if table in distributed and target in distributed and not pairs_organisation:
            found.append(f"{table}: foreign key {name} to {target} does not pair organisation_id")
        if table in distributed and contains_organisation and on_delete in ("n", "d"):
            found.append(f"{table}: foreign key {name} sets columns on delete, with organisation_id in it")
        if table not in distributed and target in distributed:
            found.append(f"{table}: foreign key {name} points into the distributed table {target}")
    # (e) Triggers on distributed tables, unless known to stay on their shard.
    for table, trigger in query(url, """
        SELECT c.relname, g.tgname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND NOT g.tgisinternal
    """):
        if table in distributed and trigger not in SHARD_LOCAL_TRIGGERS:
            found.append(f"{table}: trigger {trigger} would run across shards")
    # (f) Identity columns are bigint (Citus generates them per shard in ranges).
    for table, column in query(url, """
        SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND a.attidentity <> '' AND a.atttypid <> 'int8'::regtype
    """):
        if table in distributed:
            found.append(f"{table}: identity column {column} is not bigint")
    return sorted(found)


def test_every_tenant_table_can_be_distributed_by_organisation(fresh_database: str) -> None:
    assert problems(fresh_database) == []


def test_the_allowlists_name_only_tables_that_exist(fresh_database: str) -> None:
    names = {name for (name,) in query(fresh_database, """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
    """)}
    assert set(REFERENCE_TABLES) | set(LOCAL_TABLES) <= names
    assert {"contacts", "audit_log", "crm_writeback_queue"} <= tenant_tables(fresh_database)


def test_the_check_finds_a_table_that_breaks_the_rules(fresh_database: str) -> None:
    """A tenant table keyed by id alone, pointing at contacts with SET NULL: every rule it breaks
    is reported, so the check above cannot pass by reading nothing."""
    import psycopg

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE broken_notes (
                organisation_id uuid,
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                small integer GENERATED ALWAYS AS IDENTITY,
                contact_id uuid,
                FOREIGN KEY (organisation_id, contact_id) REFERENCES contacts (organisation_id, id)
                    ON DELETE SET NULL
            )
        """)
        conn.execute("CREATE TABLE no_tenant (id int PRIMARY KEY)")
        conn.execute("CREATE FUNCTION broken_touch() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$ BEGIN RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER broken_touch BEFORE INSERT ON broken_notes"
                     " FOR EACH ROW EXECUTE FUNCTION broken_touch()")
        try:
            assert problems(fresh_database) == [
                "broken_notes: foreign key broken_notes_organisation_id_contact_id_fkey sets columns"
                " on delete, with organisation_id in it",
                "broken_notes: identity column small is not bigint",
                "broken_notes: organisation_id may be null",
                "broken_notes: trigger broken_touch would run across shards",
                "broken_notes: unique index broken_notes_pkey leaves out organisation_id",
                "no_tenant: has no organisation_id to be distributed by",
                "no_tenant: unique index no_tenant_pkey leaves out organisation_id",
            ]
        finally:
            conn.execute("DROP TABLE broken_notes, no_tenant")
            conn.execute("DROP FUNCTION broken_touch()")
