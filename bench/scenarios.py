"""The benchmark scenarios, one table: what wrk sends for each, and the SQL its ceiling runs.

A scenario has a Lua `body()` for wrk (the JSON-RPC request, varied per call from the data the
harness collected before the timed run) and a pgbench script: the statements one such request
sends to PostgreSQL, auth included, each call's transaction as the server runs it. The SQL is
taken from the modules' own constants (server/auth.py, procedures/*.py) so the ceiling follows
the code; only the bound parameters are replaced by pgbench expressions picking random values.
Adding a scenario is one entry in SCENARIOS.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import TextClause

__all__ = ["SCENARIOS", "Data", "Scenario", "lua_list", "pg_array", "statement"]


# Calls the running server: (method, params) -> result.
Call = Callable[[str, "dict[str, Any] | None"], Any]


@dataclass
class Data:
    """What the harness collected before the timed runs, for the scripts to pick from."""

    token: str
    organisation_id: str
    user_id: str
    token_id: str
    contact_ids: list[str]
    categories: list[str]
    # (category, cursor string for wrk, created_at and id of the row before the page, for SQL)
    deep_pages: list[tuple[str, str, str, str]] = field(default_factory=list)
    stamp: str = ""

    @property
    def token_hash_hex(self) -> str:
        return hashlib.sha256(self.token.encode("ascii")).hexdigest()


def lua_list(name: str, values: Sequence[str]) -> str:
    """A Lua table literal of strings (JSON string escaping is valid Lua for these values)."""
    return f"local {name} = {{{', '.join(json.dumps(v) for v in values)}}}\n"


def pg_array(values: Sequence[str], pg_type: str) -> str:
    """A SQL array constant; indexed by a pgbench random variable, it is a per-call pick."""
    body = ",".join(v.replace('"', '\\"') for v in values)
    return f"CAST('{{{body}}}' AS {pg_type}[])"


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def statement(clause: TextClause | str, values: Mapping[str, str]) -> str:
    """A module's SQL constant with each :param replaced by a SQL expression, on one line."""
    text = clause.text if isinstance(clause, TextClause) else clause

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no pgbench value for :{name} in {text[:60]!r}")
        return f"({values[name]})"

    one_line = " ".join(line.strip() for line in _PARAM.sub(swap, text).splitlines())
    return one_line.strip() + ";"


def auth_values(data: Data) -> dict[str, str]:
    return {"token_hash": f"'\\x{data.token_hash_hex}'::bytea", "granularity": "interval '1 minute'"}


def auth_statements(data: Data) -> list[str]:
    """The token check every authed call runs first, in its own transaction (server/auth.py)."""
    from server.auth import SELECT_PRINCIPAL

    return ["BEGIN;", statement(SELECT_PRINCIPAL, auth_values(data)), "COMMIT;"]


def audit_statement(data: Data, action: str, target_type: str, fields: str) -> str:
    from server.audit import INSERT_AUDIT

    return statement(
        INSERT_AUDIT,
        {
            "organisation_id": f"'{data.organisation_id}'::uuid",
            "actor_user_id": f"'{data.user_id}'::uuid",
            "actor_token_id": f"'{data.token_id}'::uuid",
            "action": f"'{action}'",
            "target_type": f"'{target_type}'",
            "target_id": "md5(random()::text)",
            "changed_fields": f"'{fields}'::text[]",
            "request_id": "md5(random()::text)",
        },
    )


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    lua: Callable[[Data], str]  # defines `function body()`; `tid` and `counter` are in scope
    sql: Callable[[Data], list[str]]  # pgbench script lines (one transaction of pgbench)
    original: float | None = None  # the TypeScript stack's req/s (issue 7)
    original_share: float | None = None  # ... as a share of its database ceiling
    needs: tuple[str, ...] = ()  # procedures that must exist for this scenario to run
    # Runs once against the live server before the timed runs (e.g. to walk pages for cursors).
    prepare: Callable[[Call, Data], None] | None = None


def _call(method: str, params: str | None = None) -> str:
    """A Lua expression building one JSON-RPC call; `params` is a Lua expression or None."""
    head = f'\'{{"jsonrpc":"2.0","id":1,"method":"{method}"'
    if params is None:
        return head + "}'"
    return f"{head},\"params\":' .. {params} .. '}}'"


# auth.whoami: the framework's floor (auth + one trivial query), used to test the harness.
def _whoami_lua(data: Data) -> str:
    return f"function body() return {_call('auth.whoami')} end\n"


def _whoami_sql(data: Data) -> list[str]:
    from procedures.auth import SELECT_WHOAMI

    values = {"user_id": f"'{data.user_id}'::uuid", "organisation_id": f"'{data.organisation_id}'"}
    return [*auth_statements(data), "BEGIN;", statement(SELECT_WHOAMI, values), "COMMIT;"]


def _providers_lua(data: Data) -> str:
    return f"function body() return {_call('contacts.listCrmProviders')} end\n"


def _providers_sql(data: Data) -> list[str]:
    from procedures.contacts import SELECT_CRM_PROVIDERS

    return [*auth_statements(data), "BEGIN;", statement(SELECT_CRM_PROVIDERS, {}), "COMMIT;"]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("whoami", "auth.whoami (harness floor)", _whoami_lua, _whoami_sql),
        Scenario("providers", "contacts.listCrmProviders (harness floor)", _providers_lua, _providers_sql),
    )
}


def scenario_names(available: Callable[[str], bool]) -> list[str]:
    """The scenarios whose procedures exist in this build."""
    return [s.name for s in SCENARIOS.values() if all(available(p) for p in s.needs)]


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
