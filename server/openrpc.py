"""The OpenRPC 1.3 document, built from the router: served by rpc.discover and /openrpc.json."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from server.errors import (
    Conflict,
    Forbidden,
    InvalidParams,
    NotFound,
    RPCError,
    TooManyRequests,
    Unauthorized,
)
from server.procedure import Guard, Kind, Procedure, Router

__all__ = ["openrpc_document"]

OPENRPC_VERSION = "1.3.2"
REF_TEMPLATE = "#/components/schemas/{model}"

# Errors any procedure may answer with, by its guard; listed so clients can map them.
_COMMON_ERRORS: tuple[type[RPCError], ...] = (InvalidParams, NotFound, Conflict, TooManyRequests)
_GUARD_ERRORS: dict[Guard, tuple[type[RPCError], ...]] = {
    Guard.PUBLIC: (),
    Guard.AUTHED: (Unauthorized,),
    Guard.ADMIN: (Unauthorized, Forbidden),
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
        "errors": [_error_object(e) for e in _GUARD_ERRORS[procedure.guard] + _COMMON_ERRORS],
        "tags": [{"name": name.split(".", 1)[0]}],
        "x-kind": procedure.kind.value,
        "x-guard": procedure.guard.value,
    }
    if procedure.kind is Kind.MUTATION:
        method["x-audited"] = True
    return method


def openrpc_document(router: Router, *, title: str, version: str) -> dict[str, Any]:
    inputs: list[tuple[Any, Any, TypeAdapter[Any]]] = []
    for name, procedure in router.items():
        inputs.append(((name, "params"), "validation", TypeAdapter(procedure.params_model)))
        inputs.append(((name, "result"), "serialization", procedure.result_adapter))
    schemas, definitions = TypeAdapter.json_schemas(
        inputs, ref_template=REF_TEMPLATE, by_alias=True
    )

    methods = []
    for name, procedure in router.items():
        params_schema = dict(schemas[((name, "params"), "validation")])
        ref = params_schema.get("$ref")
        if ref:  # the params model itself: inline its properties as by-name params
            params_schema = definitions["$defs"][ref.rsplit("/", 1)[1]]
        result_schema = schemas[((name, "result"), "serialization")]
        methods.append(_method(name, procedure, params_schema, result_schema))
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": title, "version": version},
        "methods": methods,
        "components": {"schemas": definitions.get("$defs", {})},
    }
