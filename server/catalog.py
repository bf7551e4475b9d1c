"""What a schema is, read from PostgreSQL's catalog: to tell whether a database has exactly the
schema its recorded version stands for.

A schema is described as sorted lines (a table's columns in order, constraints, indexes,
functions, triggers, domains, sequences), deparsed with the schema itself as the search path,
so that no line names the schema. The expected description of a schema file comes from the same
server: the file is applied in a scratch schema inside a transaction that is rolled back, so the
comparison holds on any PostgreSQL version and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql

__all__ = ["describe", "differences", "expected", "fingerprint"]

# NOT NULL constraints (contype 'n', PostgreSQL 18 and later) are left out: attnotnull says the
# same on every version.
_DESCRIBE = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
SELECT line FROM (
    SELECT format('relation %%s kind=%%s', c.relname, c.relkind) AS line
      FROM pg_class AS c
     WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    UNION ALL
    SELECT format('column %%s #%%s %%s %%s%%s identity=%%s generated=%%s default=%%s',
                  c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                  a.attidentity, a.attgenerated, pg_get_expr(d.adbin, d.adrelid))
      FROM pg_attribute AS a
      JOIN pg_class AS c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %%s %%s %%s', coalesce(r.relname, t.typname), k.conname,
                  pg_get_constraintdef(k.oid))
      FROM pg_constraint AS k
      LEFT JOIN pg_class AS r ON r.oid = k.conrelid
      LEFT JOIN pg_type AS t ON t.oid = k.contypid
     WHERE k.connamespace = (SELECT oid FROM ns) AND k.contype <> 'n'
    UNION ALL
    -- pg_get_indexdef names the table with its schema whatever the search path.
    SELECT format('index %%s', replace(pg_get_indexdef(i.indexrelid),
                                      ' ON ' || quote_ident(%(schema)s) || '.', ' ON '))
      FROM pg_index AS i
      JOIN pg_class AS c ON c.oid = i.indexrelid
     WHERE c.relnamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('function %%s(%%s) returns %%s language=%%s volatility=%%s strict=%%s '
                  'parallel=%%s body=%%s', p.proname, pg_get_function_identity_arguments(p.oid),
                  pg_get_function_result(p.oid), l.lanname, p.provolatile, p.proisstrict,
                  p.proparallel, md5(CASE WHEN p.prosqlbody IS NOT NULL
                                          THEN pg_get_function_sqlbody(p.oid)
                                          ELSE p.prosrc END))
      FROM pg_proc AS p
      JOIN pg_language AS l ON l.oid = p.prolang
     WHERE p.pronamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('trigger %%s on %%s type=%%s function=%%s enabled=%%s', g.tgname, c.relname,
                  g.tgtype, f.proname, g.tgenabled)
      FROM pg_trigger AS g
      JOIN pg_class AS c ON c.oid = g.tgrelid
      JOIN pg_proc AS f ON f.oid = g.tgfoid
     WHERE c.relnamespace = (SELECT oid FROM ns) AND NOT g.tgisinternal
    UNION ALL
    SELECT format('type %%s kind=%%s base=%%s not null=%%s default=%%s', t.typname, t.typtype,
                  format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault)
      FROM pg_type AS t
     WHERE t.typnamespace = (SELECT oid FROM ns) AND t.typtype IN ('d', 'e')
    UNION ALL
    SELECT format('enum %%s %%s %%s', t.typname, e.enumsortorder, e.enumlabel)
      FROM pg_enum AS e
      JOIN pg_type AS t ON t.oid = e.enumtypid
     WHERE t.typnamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('view %%s %%s', c.relname, md5(pg_get_viewdef(c.oid)))
      FROM pg_class AS c
     WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind IN ('v', 'm')
) AS lines
ORDER BY line COLLATE "C"
"""


async def describe(conn: psycopg.AsyncConnection[Any], schema: str = "public") -> list[str]:
    """The sorted description of `schema`, deparsed as seen from inside it."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('search_path', %s, true)", (_quoted(schema),))
        cursor = await conn.execute(_DESCRIBE, {"schema": schema})
        return [row[0] for row in await cursor.fetchall()]


class _Rollback(Exception):
    pass


async def expected(conn: psycopg.AsyncConnection[Any], scripts: Sequence[str]) -> list[str]:
    """The description of what `scripts` create, applied in order in a scratch schema and rolled
    back.

    Raises psycopg.errors.InsufficientPrivilege when the role may not create a schema.
    """
    scratch = f"nurturehub_expected_{secrets.token_hex(6)}"
    lines: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(scratch)))
            await conn.execute("SELECT set_config('search_path', %s, true)", (_quoted(scratch),))
            for script in scripts:
                await conn.execute(script.encode(), prepare=False)
            cursor = await conn.execute(_DESCRIBE, {"schema": scratch})
            lines = [row[0] for row in await cursor.fetchall()]
            raise _Rollback
    except _Rollback:
        pass
    return lines


def differences(wanted: Sequence[str], found: Sequence[str]) -> list[str]:
    """What `found` lacks ('missing: ...') and what it has beyond `wanted` ('unexpected: ...')."""
    wanted_set, found_set = set(wanted), set(found)
    return [f"missing: {line}" for line in wanted if line not in found_set] + [
        f"unexpected: {line}" for line in found if line not in wanted_set
    ]


def fingerprint(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'
