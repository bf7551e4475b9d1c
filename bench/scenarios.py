"""The benchmark scenarios, one table: what wrk sends for each, and the SQL its ceiling runs.

A scenario has a Lua `body()` for wrk (the JSON-RPC request, varied per call from the data the
harness collected before the timed run) and a pgbench script: the statements one such request
sends to PostgreSQL, auth included, each call's transaction as the server runs it. The SQL is
taken from the modules' own constants (server/auth.py, procedures/*.py) so the ceiling follows
the code; only the bound parameters are replaced by pgbench expressions picking random values.
Adding a scenario is one entry in SCENARIOS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from server.db import Statement

__all__ = [
    "NO_FILTERS",
    "SCENARIOS",
    "Data",
    "Scenario",
    "lua_list",
    "pg_array",
    "reference_cursor",
    "statement",
]


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
    return f"(CAST('{{{body}}}' AS {pg_type}[]))"


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def statement(clause: Statement | str, values: Mapping[str, str]) -> str:
    """A module's SQL constant with each :param replaced by a SQL expression, on one line."""
    text = clause.text if isinstance(clause, Statement) else clause

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
    """The token check, in its own transaction (server/auth.py), as the baseline ran it per call.

    Kept in every ceiling even when the server caches tokens: issue 7 defines the ceiling with
    auth included, so ratios stay comparable with the original stack's and across commits.
    """
    from server.auth import SELECT_PRINCIPAL

    return ["BEGIN;", statement(SELECT_PRINCIPAL, auth_values(data)), "COMMIT;"]


def audit_values(data: Data, action: str, target_type: str, fields: str) -> dict[str, str]:
    """pgbench expressions for the `:audit_*` parameters (server/audit.py)."""
    return {
        "audit_organisation_id": f"'{data.organisation_id}'::uuid",
        "audit_actor_user_id": f"'{data.user_id}'::uuid",
        "audit_actor_token_id": f"'{data.token_id}'::uuid",
        "audit_action": f"'{action}'",
        "audit_target_type": f"'{target_type}'",
        "audit_target_id": "md5(random()::text)",
        "audit_changed_fields": f"'{fields}'::text[]",
        "audit_request_id": "md5(random()::text)",
    }


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
    # The same requests for the reference server (bench/trpc_reference): defines `function call()`.
    reference: Callable[[Data], str] | None = None


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

    return [*auth_statements(data), statement(SELECT_CRM_PROVIDERS, {})]


def _ids(data: Data) -> str:
    return lua_list("ids", data.contact_ids)


def _pick_id(data: Data) -> str:
    """pgbench: a random contact from the same sample wrk picks from (needs `\\set k`)."""
    return f"{pg_array(data.contact_ids, 'uuid')}[:k]"


def _set_k(n: int) -> str:
    return f"\\set k random(1, {n})"


def _org(data: Data) -> str:
    return f"'{data.organisation_id}'::uuid"


def _get_call(index: str) -> str:
    return (
        '\'{"jsonrpc":"2.0","id":\' .. ' + index + " .. "
        '\',"method":"contacts.get","params":{"id":"\' .. ids[math.random(#ids)] .. \'"}}\''
    )


def _get_lua(data: Data) -> str:
    return _ids(data) + f"function body() return {_get_call('1')} end\n"


def _select_contact(data: Data) -> str:
    from procedures.contacts import SELECT_CONTACT

    return statement(SELECT_CONTACT, {"organisation_id": _org(data), "id": _pick_id(data)})


def _get_sql(data: Data) -> list[str]:
    return [
        _set_k(len(data.contact_ids)),
        *auth_statements(data),
        _select_contact(data),  # queries run without BEGIN/COMMIT (server/db.py)
    ]


BATCH = 20


def _batch_lua(data: Data) -> str:
    return (
        _ids(data)
        + "function body()\n  local parts = {}\n"
        + f"  for i = 1, {BATCH} do parts[i] = {_get_call('i')} end\n"
        + "  return '[' .. table.concat(parts, ',') .. ']'\nend\n"
    )


def _batch_sql(data: Data) -> list[str]:
    # One token check per HTTP request, then each call in its own transaction.
    lines = [*auth_statements(data)]
    for _ in range(BATCH):
        lines += [_set_k(len(data.contact_ids)), _select_contact(data)]
    return lines


NO_FILTERS = {
    "categories": "CAST(NULL AS text[])",
    "group": "CAST(NULL AS text)",
    "consent_status": "CAST(NULL AS text)",
    "import_source": "CAST(NULL AS text)",
    "tsquery": "CAST(NULL AS tsquery)",
    "created_after": "CAST(NULL AS timestamptz)",
    "created_before": "CAST(NULL AS timestamptz)",
    "fetch": "51",
}


def _list_lua(data: Data) -> str:
    params = """'{"limit":50}'"""
    return f"function body() return {_call('contacts.list', params)} end\n"


def _list_sql(data: Data) -> list[str]:
    from procedures.contacts import LIST_CONTACTS

    values = {
        **NO_FILTERS,
        "organisation_id": _org(data),
        "before_created_at": "CAST(NULL AS timestamptz)",
        "before_id": "CAST(NULL AS uuid)",
    }
    return [*auth_statements(data), statement(LIST_CONTACTS, values)]


def _category_lua(data: Data) -> str:
    return _categories_lua(data) + (
        "function body()\n"
        '  return \'{"jsonrpc":"2.0","id":1,"method":"contacts.list","params":'
        '{"category":"\' .. categories[math.random(#categories)] .. \'","limit":50}}\'\nend\n'
    )


def _category_sql(data: Data) -> list[str]:
    from procedures.contacts import LIST_CONTACTS_BY_CATEGORY

    values = {
        **NO_FILTERS,
        "organisation_id": _org(data),
        "category": f"{pg_array(data.categories, 'text')}[:k]",
        "before_created_at": "CAST(NULL AS timestamptz)",
        "before_id": "CAST(NULL AS uuid)",
    }
    return [
        _set_k(len(data.categories)),
        *auth_statements(data),
        statement(LIST_CONTACTS_BY_CATEGORY, values),
    ]


DEEP_FIRST, DEEP_LAST = 20, 30  # pages fetched by cursor in the list deep scenario


def _walk_deep_pages(call: Call, data: Data) -> None:
    """Walk each category's pages once; keep the cursors (and keys) of pages 20-30."""
    if data.deep_pages:
        return
    for category in data.categories:
        cursor = None
        for page in range(1, DEEP_LAST):
            params: dict[str, Any] = {"category": category, "limit": 50}
            if cursor is not None:
                params["cursor"] = cursor
            result = call("contacts.list", params)
            cursor = result["nextCursor"]
            if cursor is None:
                break
            if page + 1 >= DEEP_FIRST:
                last = result["items"][-1]
                data.deep_pages.append((category, cursor, last["createdAt"], last["id"]))
    if not data.deep_pages:
        raise RuntimeError("no category has 20 pages: load more contacts")


def _deep_lua(data: Data) -> str:
    pages = ", ".join(
        "{" + json.dumps(category) + ", " + json.dumps(cursor) + "}"
        for category, cursor, _, _ in data.deep_pages
    )
    return (
        f"local pages = {{{pages}}}\n"
        "function body()\n  local p = pages[math.random(#pages)]\n"
        '  return \'{"jsonrpc":"2.0","id":1,"method":"contacts.list","params":'
        '{"category":"\' .. p[1] .. \'","limit":50,"cursor":"\' .. p[2] .. \'"}}\'\nend\n'
    )


def _epoch_micros(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _deep_sql(data: Data) -> list[str]:
    from procedures.contacts import LIST_CONTACTS_BY_CATEGORY

    pages = data.deep_pages
    # Epoch microseconds: a timestamp's colons would read as pgbench variables.
    micros = pg_array([str(_epoch_micros(p[2])) for p in pages], "bigint")
    values = {
        **NO_FILTERS,
        "organisation_id": _org(data),
        "category": f"{pg_array([p[0] for p in pages], 'text')}[:k]",
        "before_created_at": f"timestamptz 'epoch' + {micros}[:k] * interval '1 microsecond'",
        "before_id": f"{pg_array([p[3] for p in pages], 'uuid')}[:k]",
    }
    return [
        _set_k(len(pages)),
        *auth_statements(data),
        statement(LIST_CONTACTS_BY_CATEGORY, values),
    ]


def _categories_lua(data: Data) -> str:
    return lua_list("categories", data.categories)


def _create_lua(data: Data) -> str:
    # `nonce` differs per wrk thread and run, `counter` per request: every email is new.
    return _categories_lua(data) + (
        "function body()\n"
        '  return string.format(\'{"jsonrpc":"2.0","id":1,"method":"contacts.create",'
        '"params":{"firstName":"Bench","lastName":"Load","email":"bench-%s-%d@example.com",'
        '"phone":"+4474%08d","postcode":"SW1A 1AA","category":"%s"}}\', nonce, counter,'
        " math.random(0, 99999999), categories[math.random(#categories)])\nend\n"
    )


def _gset(line: str) -> str:
    """pgbench: keep the row's columns as variables for the next statements."""
    return line.rstrip(";") + " \\gset"


_CREATE_FIELDS = "{category,email,firstName,lastName,phone,postcode}"


def _create_sql(data: Data) -> list[str]:
    from procedures.contacts import INSERT_CONTACT

    org = _org(data)
    insert_contact = statement(
        INSERT_CONTACT,
        {
            "organisation_id": org,
            "first_name": "'Bench'",
            "last_name": "'Load'",
            "email": f"'ceiling-{data.stamp}-' || CAST(:client_id AS text) || '-' || CAST(:u AS text)"
            " || '@example.com'",
            "phone": "'+4474' || lpad(CAST(:r AS text), 8, '0')",
            "postcode": "'SW1A 1AA'",
            "consent_status": "NULL",
            "consent_timestamp": "NULL",
            "import_source": "'manual'",
            "crm_payload": "NULL",
            "crm_connection_id": "CAST(NULL AS uuid)",
            "external_id": "CAST(NULL AS text)",
            "category": f"{pg_array(data.categories, 'text')}[:k]",
            "assigned_by": f"'{data.user_id}'::uuid",
            "reason": "NULL",
            **audit_values(data, "contacts.create", "contact", _CREATE_FIELDS),
        },
    )
    return [
        f"\\set k random(1, {len(data.categories)})",
        "\\set r random(1, 99999999)",
        # Emails must not repeat across rounds (a repeat inserts nothing, and \\gset then fails).
        "\\set u random(1, 1000000000000)",
        *auth_statements(data),
        insert_contact,  # with its audit row: the whole transaction, as the server sends it
    ]


def _assign_lua(data: Data) -> str:
    return (
        _ids(data) + _categories_lua(data) + 'function body()\n  return \'{"jsonrpc":"2.0","id":1,"method":'
        '"contacts.assignCategory","params":{"id":"\' .. ids[math.random(#ids)] .. '
        '\'","category":"\' .. categories[math.random(#categories)] .. '
        '\'","reason":"bench"}}\'\nend\n'
    )


def _assign_sql(data: Data) -> list[str]:
    from procedures.contacts import ASSIGN_CATEGORY

    org = _org(data)
    category = f"{pg_array(data.categories, 'text')}[:c]"
    return [
        _set_k(len(data.contact_ids)),
        f"\\set c random(1, {len(data.categories)})",
        *auth_statements(data),
        statement(
            ASSIGN_CATEGORY,
            {
                "organisation_id": org,
                "contact_id": _pick_id(data),
                "category": category,
                "assigned_by": f"'{data.user_id}'::uuid",
                "reason": "'bench'",
                **audit_values(data, "contacts.assignCategory", "contact", "{category}"),
            },
        ),
    ]


# The reference server (bench/trpc_reference/server.mjs) speaks tRPC's own HTTP protocol: a query is
# GET /<procedure>?input=<JSON>, a mutation POST /<procedure> with the input as the body.
def _trpc_query(procedure: str, input_json: str) -> str:
    """A Lua `call()` returning a tRPC GET; `input_json` is a Lua string expression."""
    return f'function call() return "GET", "/{procedure}?input=" .. urlencode({input_json}), nil, nil end\n'


def _trpc_mutation(procedure: str, input_json: str) -> str:
    return f'function call() return "POST", "/{procedure}", nil, {input_json} end\n'


def _get_reference(data: Data) -> str:
    return _ids(data) + _trpc_query("contacts.get", """'{"id":"' .. ids[math.random(#ids)] .. '"}'""")


def _list_reference(data: Data) -> str:
    return _trpc_query("contacts.list", """'{"limit":50}'""")


def reference_cursor(created_at: str, contact_id: str) -> str:
    """The reference's cursor for the page after a row: base64url of [createdAt, id]."""
    raw = json.dumps([created_at, contact_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _deep_reference(data: Data) -> str:
    # The same pages as list_deep: each starts after the row our cursor points past.
    pages = ", ".join(
        "{" + json.dumps(category) + ", " + json.dumps(reference_cursor(created_at, row_id)) + "}"
        for category, _, created_at, row_id in data.deep_pages
    )
    return f"local pages = {{{pages}}}\n" + _trpc_query(
        "contacts.list",
        """(function() local p = pages[math.random(#pages)]
            return '{"category":"' .. p[1] .. '","limit":50,"cursor":"' .. p[2] .. '"}' end)()""",
    )


def _create_reference(data: Data) -> str:
    return _categories_lua(data) + _trpc_mutation(
        "contacts.create",
        """string.format('{"firstName":"Bench","lastName":"Load","email":"ref-%s-%d@example.com",'
           .. '"phone":"+4474%08d","postcode":"SW1A 1AA","category":"%s"}', nonce, counter,
           math.random(0, 99999999), categories[math.random(#categories)])""",
    )


def _assign_reference(data: Data) -> str:
    return (
        _ids(data)
        + _categories_lua(data)
        + _trpc_mutation(
            "contacts.assignCategory",
            """'{"id":"' .. ids[math.random(#ids)] .. '","category":"'
           .. categories[math.random(#categories)] .. '","reason":"bench"}'""",
        )
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("whoami", "auth.whoami (harness floor)", _whoami_lua, _whoami_sql, needs=("auth.whoami",)),
        Scenario(
            "providers",
            "contacts.listCrmProviders (harness floor)",
            _providers_lua,
            _providers_sql,
            needs=("contacts.listCrmProviders",),
        ),
        Scenario(
            "get",
            "contacts.get of a random contact",
            _get_lua,
            _get_sql,
            1350,
            0.11,
            needs=("contacts.get",),
            reference=_get_reference,
        ),
        Scenario(
            "list",
            "contacts.list first page, 50 items",
            _list_lua,
            _list_sql,
            900,
            0.21,
            needs=("contacts.list",),
            reference=_list_reference,
        ),
        Scenario(
            "list_category",
            "contacts.list by category, first page (list deep's filter, for its cost by depth)",
            _category_lua,
            _category_sql,
            needs=("contacts.list",),
        ),
        Scenario(
            "list_deep",
            "contacts.list by category, 20-30 pages deep by cursor",
            _deep_lua,
            _deep_sql,
            570,
            0.47,
            needs=("contacts.list",),
            prepare=_walk_deep_pages,
            reference=_deep_reference,
        ),
        Scenario(
            "batch20",
            "20 contacts.get in one JSON-RPC batch",
            _batch_lua,
            _batch_sql,
            needs=("contacts.get",),
        ),
        Scenario(
            "create",
            "contacts.create with a category",
            _create_lua,
            _create_sql,
            770,
            0.23,
            needs=("contacts.create",),
            reference=_create_reference,
        ),
        Scenario(
            "assign",
            "contacts.assignCategory of a random contact",
            _assign_lua,
            _assign_sql,
            730,
            0.28,
            needs=("contacts.assignCategory",),
            reference=_assign_reference,
        ),
    )
}


def scenario_names(available: Callable[[str], bool]) -> list[str]:
    """The scenarios whose procedures exist in this build."""
    return [s.name for s in SCENARIOS.values() if all(available(p) for p in s.needs)]


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
