"""The procedure registry as the generators see it: namespaces of methods, with their types.

One walk of the router serves every client language: each method carries its wire name, the
params model and result type from clients/typemap.py's Catalog, and, for a query that pages with
`cursor` / `nextCursor` / `items`, the item type. Only the member names differ by language
(`assign_category` in Python, `assignCategory` in TypeScript): the caller passes `attribute`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from clients.typemap import Catalog, GeneratorError, ModelSpec, Ref
from server.errors import RPCError
from server.procedure import Kind, Procedure

__all__ = ["Method", "Namespace", "error_classes", "walk"]


@dataclass
class Method:
    wire: str  # contacts.assignCategory
    attr: str  # assign_category (Python), assignCategory (TypeScript)
    procedure: Procedure
    params: ModelSpec
    result: Ref
    page_item: Ref | None = None  # set for cursor-paginated queries


@dataclass
class Namespace:
    path: tuple[str, ...]
    methods: list[Method] = field(default_factory=list)
    children: dict[str, Namespace] = field(default_factory=dict)  # attribute -> namespace
    docs: set[str] = field(default_factory=set)

    @property
    def cls(self) -> str:
        return "".join(part[:1].upper() + part[1:] for part in self.path)

    def members(self) -> frozenset[str]:
        names = {m.attr for m in self.methods} | set(self.children)
        names |= {f"iter_{m.attr}" for m in self.methods if m.page_item is not None}
        return frozenset(names)

    def walk(self) -> Iterable[Namespace]:
        for child in self.children.values():
            yield from child.walk()
        yield self


def walk(router: Mapping[str, Procedure], catalog: Catalog, attribute: Callable[[str], str]) -> Namespace:
    """The router as a tree of namespaces, in name order; `attribute` names members."""
    root = Namespace(())
    for wire in sorted(router):
        procedure = router[wire]
        *path, name = wire.split(".")
        if not path:
            raise GeneratorError(f"{wire}: a procedure name needs a namespace (ns.name)")
        node = root
        for part in path:
            node = node.children.setdefault(attribute(part), Namespace((*node.path, part)))
        module = procedure.handler.__module__
        doc = (sys.modules[module].__doc__ or "").strip().splitlines()
        if doc:
            node.docs.add(doc[0])
        params = catalog.model(procedure.params_model, "params")
        result = catalog.ref(procedure.result_type, "result", module)
        method = Method(wire, attribute(name), procedure, params, result)
        method.page_item = _page_item(catalog, method)
        node.methods.append(method)
    for node in root.walk():
        names = [m.attr for m in node.methods] + list(node.children)
        clash = sorted({name for name in names if names.count(name) > 1})
        if clash:
            raise GeneratorError(f"{'.'.join(node.path)}: more than one member would be called {clash}")
    return root


def _page_item(catalog: Catalog, method: Method) -> Ref | None:
    """The item type when the query pages with cursor / nextCursor / items."""
    result = method.procedure.result_type
    if method.procedure.kind is not Kind.QUERY or not isinstance(result, type):
        return None
    if not issubclass(result, BaseModel) or "cursor" not in {f.name for f in method.params.fields}:
        return None
    fields = {f.name: f for f in catalog.models[result].fields}
    items, cursor = fields.get("items"), fields.get("next_cursor")
    if items is None or cursor is None or items.type.name != "list":
        return None
    return items.type.args[0]


def error_classes() -> list[type[RPCError]]:
    """server.errors' classes, parents before children: one client error per server code."""
    found: list[type[RPCError]] = []
    pending = list(RPCError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending[:0] = cls.__subclasses__()
    return [cls for cls in found if cls.__module__ == RPCError.__module__]
