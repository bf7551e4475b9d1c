"""The OpenRPC 1.3 document, built from the router: served by rpc.discover and /openrpc.json.

Named Literal aliases of the procedures' modules (`Category = Literal[...]`) are hoisted into
components.schemas and referenced, as pydantic does for models and enums, so every client of the
document gets a `Category` type and the list of its values.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from server.errors import (
    Forbidden,
    InvalidParams,
    RPCError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from server.procedure import Guard, Kind, Procedure, Router

__all__ = ["named_literals", "openrpc_document"]

OPENRPC_VERSION = "1.3.2"
REF_TEMPLATE = "#/components/schemas/{model}"

# What every procedure may answer with besides its own errors: bad params, a busy database.
_COMMON_ERRORS: tuple[type[RPCError], ...] = (InvalidParams, ServiceUnavailable)
# A caller with a token is rate limited (server/ratelimit.py); a public call is not.
_GUARD_ERRORS: dict[Guard, tuple[type[RPCError], ...]] = {
    Guard.PUBLIC: (),
    Guard.AUTHED: (Unauthorized, TooManyRequests),
    Guard.ADMIN: (Unauthorized, TooManyRequests, Forbidden),
}


def _error_object(error: type[RPCError]) -> dict[str, Any]:
    return {"code": error.rpc_code, "message": error.default_message, "data": {"code": error.code}}


def _method(
    name: str, procedure: Procedure, params_schema: dict[str, Any], result_schema: dict[str, Any]
) -> dict[str, Any]:
    required = set(params_schema.get("required", ()))
    params = [
        {"name": field, "required": field in required, "schema": schema}
        for field, schema in params_schema.get("properties", {}).items()
    ]
    description = procedure.description
    summary = description.split("\n\n", 1)[0].replace("\n", " ") if description else name
    method: dict[str, Any] = {
        "name": name,
        "summary": summary,
        "description": description or name,
        "paramStructure": "by-name",
        "params": params,
        "result": {"name": f"{name}.result", "schema": result_schema},
        "errors": [_error_object(e) for e in method_errors(procedure)],
        "tags": [{"name": name.split(".", 1)[0]}],
        "x-kind": procedure.kind.value,
        "x-guard": procedure.guard.value,
    }
    if procedure.kind is Kind.MUTATION:
        method["x-audited"] = True
    return method


def method_errors(procedure: Procedure) -> list[type[RPCError]]:
    """The errors a call of `procedure` can answer with, in a stable order, each once."""
    found = _GUARD_ERRORS[procedure.guard] + _COMMON_ERRORS + procedure.errors
    return list(dict.fromkeys(found))


def named_literals(types: Iterator[Any]) -> dict[tuple[Any, ...], str]:
    """Literal aliases by their values, from the modules of the given types and their models
    (`Category = Literal["seller", ...]` in a module a procedure's model comes from). A value
    list with two names keeps the first in name order."""
    modules: set[str] = set()
    seen: set[type[BaseModel]] = set()
    pending = list(types)
    while pending:
        tp = pending.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in seen:
                continue
            seen.add(tp)
            modules.add(tp.__module__)
            pending += [info.annotation for info in tp.model_fields.values()]
        else:
            pending += typing.get_args(tp)
    found: dict[tuple[Any, ...], str] = {}
    for module in sorted(modules):
        for name, value in sorted(vars(sys.modules[module]).items()):
            if name[:1].isupper() and typing.get_origin(value) is Literal:
                found.setdefault(typing.get_args(value), name)
    return found


def _hoist(node: Any, names: dict[tuple[Any, ...], str], schemas: dict[str, Any]) -> Any:
    """`node` with each enum of a named alias replaced by a $ref to it, defined in `schemas`."""
    if isinstance(node, list):
        return [_hoist(item, names, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    name = names.get(tuple(node["enum"])) if isinstance(node.get("enum"), list) else None
    if name is not None and schemas.get(name, {}).get("enum", node["enum"]) == node["enum"]:
        schemas[name] = {"title": name, "type": node.get("type", "string"), "enum": node["enum"]}
        rest = {k: v for k, v in node.items() if k not in ("enum", "type", "title")}
        return {"$ref": REF_TEMPLATE.format(model=name), **rest}
    return {key: _hoist(value, names, schemas) for key, value in node.items()}


def openrpc_document(router: Router, *, title: str, version: str) -> dict[str, Any]:
    inputs: list[tuple[Any, Any, TypeAdapter[Any]]] = []
    for name, procedure in router.items():
        inputs.append(((name, "params"), "validation", TypeAdapter(procedure.params_model)))
        inputs.append(((name, "result"), "serialization", procedure.result_adapter))
    schemas, definitions = TypeAdapter.json_schemas(
        inputs, ref_template=REF_TEMPLATE, by_alias=True
    )

    names = named_literals(
        tp for procedure in router.values() for tp in (procedure.params_model, procedure.result_type)
    )
    names = {values: name for values, name in names.items() if name not in definitions.get("$defs", {})}
    aliases: dict[str, Any] = {}
    components = _hoist(definitions.get("$defs", {}), names, aliases)
    methods = []
    for name, procedure in router.items():
        params_schema = dict(schemas[((name, "params"), "validation")])
        ref = params_schema.get("$ref")
        if ref:  # the params model itself: inline its properties as by-name params
            params_schema = components[ref.rsplit("/", 1)[1]]
        result_schema = _hoist(schemas[((name, "result"), "serialization")], names, aliases)
        methods.append(_method(name, procedure, params_schema, result_schema))
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": title, "version": version},
        "methods": methods,
        "components": {"schemas": dict(sorted({**components, **aliases}.items()))},
    }
