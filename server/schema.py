"""`nurturehub db init`: apply schema.sql to an empty database and record its version."""

from __future__ import annotations

import re
from pathlib import Path

from server.db import Database, sql

__all__ = ["SCHEMA_PATH", "SchemaMismatch", "expected_version", "init_schema"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
_VERSION_LINE = re.compile(r"^-- schema-version: (\d+)$", re.MULTILINE)

# Serialises concurrent inits (several server processes starting at once).
_INIT_LOCK = sql("SELECT pg_advisory_xact_lock(7411025001)")
_HAS_VERSION_TABLE = sql("SELECT to_regclass('public.schema_version') IS NOT NULL")
_CURRENT_VERSION = sql("SELECT max(version) FROM schema_version")
_OUR_TABLES = sql("""
    SELECT count(*) FROM pg_catalog.pg_tables
     WHERE schemaname = 'public'
       AND tablename IN ('organisations', 'contacts', 'crm_connections', 'audit_log')
""")


class SchemaMismatch(Exception):
    """The database is not at the schema version this code expects; the message says what to do."""


def expected_version(schema_text: str | None = None) -> int:
    text = schema_text if schema_text is not None else SCHEMA_PATH.read_text()
    match = _VERSION_LINE.search(text)
    if match is None:
        raise RuntimeError("schema.sql has no '-- schema-version: N' line")
    return int(match.group(1))


async def init_schema(db: Database) -> str:
    """Returns 'created' or 'unchanged'; raises SchemaMismatch for any other state."""
    schema_text = SCHEMA_PATH.read_text()
    wanted = expected_version(schema_text)
    async with db.transaction() as tx:
        await tx.execute(_INIT_LOCK)
        if await tx.scalar(_HAS_VERSION_TABLE):
            found = await tx.scalar(_CURRENT_VERSION)
            if found == wanted:
                return "unchanged"
            raise SchemaMismatch(
                f"the database is at schema version {found}, but this NurtureHub expects version "
                f"{wanted}: run the NurtureHub release that matches the database, or point "
                f"DATABASE_URL at a new, empty database and run 'nurturehub db init' (for the "
                f"embedded PostgreSQL, move its data folder aside or set NURTUREHUB_DATA_DIR to a "
                f"new one)"
            )
        if await tx.scalar(_OUR_TABLES):
            raise SchemaMismatch(
                "the database has NurtureHub tables but no schema_version table, so its version is "
                "unknown: point DATABASE_URL at a new, empty database and run 'nurturehub db init'"
            )
        await tx.run_script(schema_text)
    return "created"
