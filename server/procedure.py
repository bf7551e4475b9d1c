"""Procedures and routers, as tRPC builds them.

A procedure is an async handler `(ctx, params) -> result` wrapped with its kind and its guard:

    @query(guard=AUTHED)
    async def list_contacts(ctx: Context, params: ListContactsParams) -> ContactPage: ...

    router = Router({"list": list_contacts})
    app_router = Router.merge({"contacts": router, "auth": auth_router})

The params and result types are read from the handler's annotations, so each type is declared
once and the dispatcher, the OpenRPC document and the client generator all see the same ones.
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter

from server.context import Context
from server.encoded import Encoded
from server.errors import RPCError

__all__ = [
    "ADMIN",
    "AUTHED",
    "PUBLIC",
    "Guard",
    "Kind",
    "Procedure",
    "Router",
    "mutation",
    "query",
]

Handler = Callable[[Context, Any], Awaitable[Any]]


class Guard(enum.Enum):
    PUBLIC = "public"  # no token needed
    AUTHED = "authed"  # any member of the organisation
    ADMIN = "admin"  # owners and admins


PUBLIC, AUTHED, ADMIN = Guard.PUBLIC, Guard.AUTHED, Guard.ADMIN


class Kind(enum.Enum):
    QUERY = "query"  # reads only
    MUTATION = "mutation"  # writes, with an audit row in the same transaction


@dataclass(frozen=True)
class Procedure:
    handler: Handler
    kind: Kind
    guard: Guard
    params_model: type[BaseModel]
    result_type: Any
    result_adapter: TypeAdapter[Any] = field(repr=False, compare=False)
    # What the handler itself may raise, beyond its guard's errors and invalid params: listed
    # in the OpenRPC document, so clients can tell which codes a call can answer with.
    errors: tuple[type[RPCError], ...] = ()

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.handler.__doc__ or "")

    async def __call__(self, ctx: Context, params: Any) -> Any:
        return await self.handler(ctx, params)


def _build(
    kind: Kind, guard: Guard, errors: tuple[type[RPCError], ...]
) -> Callable[[Handler], Procedure]:
    if not isinstance(guard, Guard):
        raise TypeError("guard must be PUBLIC, AUTHED or ADMIN")
    if not all(isinstance(e, type) and issubclass(e, RPCError) for e in errors):
        raise TypeError("errors must be RPCError classes")

    def wrap(handler: Handler) -> Procedure:
        hints = typing.get_type_hints(handler)
        names = [n for n in inspect.signature(handler).parameters]
        if len(names) != 2 or "return" not in hints:
            raise TypeError(
                f"{handler.__qualname__} must be `async def f(ctx, params: Model) -> Result`"
            )
        params_model = hints[names[1]]
        if not (isinstance(params_model, type) and issubclass(params_model, BaseModel)):
            raise TypeError(
                f"{handler.__qualname__}: params must be annotated with a pydantic model"
            )
        result_type = hints["return"]
        if typing.get_origin(result_type) is Encoded:
            # Serialised by the handler; described and checked as the type it encodes.
            (result_type,) = typing.get_args(result_type)
        return Procedure(
            handler=handler,
            kind=kind,
            guard=guard,
            params_model=params_model,
            result_type=result_type,
            result_adapter=TypeAdapter(result_type),
            errors=errors,
        )

    return wrap


def query(*, guard: Guard, errors: tuple[type[RPCError], ...] = ()) -> Callable[[Handler], Procedure]:
    """A procedure that only reads; `errors` are the RPCErrors its handler raises."""
    return _build(Kind.QUERY, guard, errors)


def mutation(*, guard: Guard, errors: tuple[type[RPCError], ...] = ()) -> Callable[[Handler], Procedure]:
    """A procedure that writes; the framework writes its audit row in the same transaction."""
    if guard is Guard.PUBLIC:
        # Its audit row would name no organisation, and every audit row names one (the key the
        # schema is distributed by).
        raise TypeError("a mutation needs a caller: guard it with AUTHED or ADMIN")
    return _build(Kind.MUTATION, guard, errors)


class Router(Mapping[str, Procedure]):
    """An immutable table of wire names to procedures."""

    def __init__(self, procedures: Mapping[str, Procedure]) -> None:
        for name, proc in procedures.items():
            if not isinstance(proc, Procedure):
                raise TypeError(
                    f"{name!r} is not a procedure: wrap its handler with query() or mutation()"
                )
        self._procedures = dict(procedures)

    @classmethod
    def merge(cls, namespaces: Mapping[str, Router]) -> Router:
        """Flatten namespaces to dotted names; a name defined twice is an error."""
        merged: dict[str, Procedure] = {}
        for namespace, router in namespaces.items():
            for name, proc in router.items():
                full = f"{namespace}.{name}"
                if full in merged:
                    raise ValueError(f"duplicate procedure name: {full}")
                merged[full] = proc
        return cls(merged)

    def __getitem__(self, name: str) -> Procedure:
        return self._procedures[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._procedures)

    def __len__(self) -> int:
        return len(self._procedures)
