"""`nurturehub client generate`: the typed Python client, written from the procedure registry.

The output is a standalone package, clients/python (importable as `nurturehub_client`), that
depends on httpx and pydantic only. Its modules are of two kinds:

- generated here, from the router the server dispatches with: one model per params and result
  type (and the Literal aliases they use), one class per namespace in three flavours (sync,
  async, batch), the clients, and one exception class per server error code (server.errors);
  each starts with a DO NOT EDIT line;
- written by hand, and never touched here: the transport, batches, paging and base classes
  (_transport.py, _batch.py, _paging.py, _base.py, _exceptions.py, _wire.py).

The output depends only on the registry, never on time or environment, so `--check` can compare
it byte for byte.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from clients.typemap import Catalog, FieldSpec, GeneratorError, ModelSpec, Ref, camel
from server.app import VERSION
from server.errors import RPCError
from server.procedure import Guard, Kind, Procedure

__all__ = ["DEFAULT_OUT", "GeneratorError", "build", "run"]

DEFAULT_OUT = Path(__file__).resolve().parent / "python"
PACKAGE = "nurturehub_client"
LIMIT = 100  # the formatter allows 110; staying under it keeps every line as written here
GENERATOR = "clients/generator.py"
REGENERATE = "# Regenerate with `nurturehub client generate`; CI fails while this file is stale.\n"

_GUARDS = {
    Guard.PUBLIC: "public, no token needed",
    Guard.AUTHED: "authed, any member of the organisation",
    Guard.ADMIN: "admin, owners and admins only (anyone else gets Forbidden)",
}
_KINDS = {
    Kind.QUERY: "reads only; retried when the connection fails",
    Kind.MUTATION: "writes, with an audit entry; never retried",
}


# The registry, as namespaces ---------------------------------------------------------------------


@dataclass
class Method:
    wire: str  # contacts.assignCategory
    attr: str  # assign_category
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


def snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return name + "_" if name in _KEYWORDS else name


_KEYWORDS = frozenset(__import__("keyword").kwlist) | {"self"}


def _namespaces(router: Mapping[str, Procedure], catalog: Catalog) -> Namespace:
    root = Namespace(())
    for wire in sorted(router):
        procedure = router[wire]
        *path, name = wire.split(".")
        if not path:
            raise GeneratorError(f"{wire}: a procedure name needs a namespace (ns.name)")
        node = root
        for part in path:
            node = node.children.setdefault(snake(part), Namespace((*node.path, part)))
        module = procedure.handler.__module__
        doc = (sys.modules[module].__doc__ or "").strip().splitlines()
        if doc:
            node.docs.add(doc[0])
        params = catalog.model(procedure.params_model, "params")
        result = catalog.ref(procedure.result_type, "result", module)
        method = Method(wire, snake(name), procedure, params, result)
        method.page_item = _page_item(catalog, method)
        node.methods.append(method)
    for node in root.walk():
        # Methods, iterators and sub-namespaces share one class: each name may be taken once.
        names = [m.attr for m in node.methods] + list(node.children)
        names += [f"iter_{m.attr}" for m in node.methods if m.page_item is not None]
        clash = sorted({name for name in names if names.count(name) > 1} | (set(names) & _RESERVED))
        if clash:
            raise GeneratorError(f"{'.'.join(node.path)}: more than one member would be called {clash}")
    return root


_RESERVED = frozenset({"_transport", "_batch"})


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


# Source helpers ----------------------------------------------------------------------------------


def header(source: str) -> str:
    return f"# DO NOT EDIT: generated by {GENERATOR} from {source}.\n{REGENERATE}"


def call(func: str, args: list[str | tuple[str, list[str]]], indent: int, prefix: str = "") -> list[str]:
    """`prefix func(args)` on one line if it fits, else one argument per line (nested calls too)."""
    pad = " " * indent

    def flat(arg: str | tuple[str, list[str]]) -> str:
        return arg if isinstance(arg, str) else f"{arg[0]}({', '.join(arg[1])})"

    one = f"{pad}{prefix}{func}({', '.join(flat(a) for a in args)})"
    if len(one) <= LIMIT or not args:
        return [one]
    lines = [f"{pad}{prefix}{func}("]
    for arg in args:
        if isinstance(arg, str) or len(f"{pad}    {flat(arg)},") <= LIMIT:
            lines.append(f"{pad}    {flat(arg)},")
        else:
            inner = call(arg[0], list(arg[1]), indent + 4)
            lines.extend(inner[:-1] + [inner[-1] + ","])
    lines.append(f"{pad})")
    return lines


def docstring(text: str, indent: int) -> list[str]:
    pad = " " * indent
    width = LIMIT - indent
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    paragraphs = []
    for para in text.split("\n\n"):
        lines = para.splitlines()
        structured = any(re.match(r"\s|[-*•]|\d+[.)]\s|\w+:\s*$", line) for line in lines[1:])
        if structured or all(len(line) <= width for line in lines):
            paragraphs.append([line.rstrip() for line in lines])
        else:
            paragraphs.append(textwrap.wrap(" ".join(lines), width))
    body = [line for i, para in enumerate(paragraphs) for line in ([""] if i else []) + para]
    if len(body) == 1 and len(pad) + len(body[0]) + 6 <= LIMIT:
        return [f'{pad}"""{body[0]}"""']
    lines = [f'{pad}"""{body[0]}'] + [f"{pad}{line}" if line else "" for line in body[1:]]
    return lines + [f'{pad}"""']


def _sort_key(name: str) -> tuple[int, str, str]:
    # isort's order-by-type, as ruff applies it: CONSTANTS, then Classes, then functions.
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name.lower(), name


def imports(used: set[tuple[str, str]], local: Mapping[str, str]) -> list[str]:
    """Import lines for `used` (module, name) pairs; `local` maps a client name to its module."""
    plain: set[str] = set()
    froms: dict[str, set[str]] = {}
    for module, name in used:
        if module == "":
            froms.setdefault(local[name], set()).add(name)
        elif name == "":
            plain.add(module)
        elif module != "builtins":
            froms.setdefault(module, set()).add(name)
    stdlib = sorted(m for m in froms if not m.startswith(".") and m not in _THIRD_PARTY)
    groups = [
        [_plain(m) for m in sorted(plain)] + [_from(m, froms[m]) for m in stdlib],
        [_from(m, froms[m]) for m in sorted(m for m in froms if m in _THIRD_PARTY)],
        [_from(m, froms[m]) for m in sorted(m for m in froms if m.startswith("."))],
    ]
    lines: list[str] = []
    for group in groups:
        if group:
            lines += [line for statement in group for line in statement] + [""]
    return lines


_THIRD_PARTY = frozenset({"httpx", "pydantic"})


def _plain(module: str) -> list[str]:
    alias = {"uuid": "_uuid", "datetime": "_datetime", "decimal": "_decimal"}.get(module)
    return [f"import {module} as {alias}" if alias else f"import {module}"]


def _from(module: str, names: set[str]) -> list[str]:
    ordered = sorted(names, key=_sort_key)
    one = f"from {module} import {', '.join(ordered)}"
    if len(one) <= LIMIT:
        return [one]
    return [f"from {module} import ("] + [f"    {name}," for name in ordered] + [")"]


def module_text(
    head: str, doc: str, body: list[str], used: set[tuple[str, str]], local: Mapping[str, str]
) -> str:
    lines = [head.rstrip("\n"), *docstring(doc, 0), "", "from __future__ import annotations", ""]
    lines += imports(used, local)
    lines += body
    text = "\n".join(lines).rstrip("\n") + "\n"
    return re.sub(r"\n{4,}", "\n\n\n", text)


def all_list(names: Iterable[str]) -> list[str]:
    return ["__all__ = ["] + [f'    "{name}",' for name in sorted(names)] + ["]"]


# Errors ------------------------------------------------------------------------------------------


def _error_classes() -> list[type[RPCError]]:
    found: list[type[RPCError]] = []
    pending = list(RPCError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending[:0] = cls.__subclasses__()
    return [cls for cls in found if cls.__module__ == RPCError.__module__]


def errors_module(source: str) -> str:
    body: list[str] = []
    names = []
    for cls in _error_classes():
        names.append(cls.__name__)
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "") or cls.default_message.rstrip(".") + "."
        doc += f"\n\n{cls.code}, JSON-RPC {cls.rpc_code}, HTTP {cls.http_status}."
        body += ["", "", f"class {cls.__name__}(RPCError):", *docstring(doc, 4), ""]
        body += [
            f'    code = "{cls.code}"',
            f"    rpc_code = {cls.rpc_code}",
            f"    http_status = {cls.http_status}",
        ]
        if "issues" in inspect.signature(cls.__init__).parameters:
            body += [
                "",
                "    @property",
                "    def issues(self) -> list[FieldIssue]:",
                '        """Each bad input field, by its wire path."""',
                "        return field_issues(self.data)",
            ]
    used = {("", "RPCError")}
    local = {"RPCError": "._exceptions", "FieldIssue": "._exceptions", "field_issues": "._exceptions"}
    if any("issues" in line for line in body):
        used |= {("", "FieldIssue"), ("", "field_issues")}
    doc = (
        "One exception class per server error code, from server/errors.py.\n\n"
        "Each registers itself by its codes, so RPCError.from_wire picks the right one; all carry\n"
        "code, rpc_code, message, data and request_id."
    )
    return module_text(header("server.errors"), doc, all_list(names) + body, used, local)


# Models ------------------------------------------------------------------------------------------


def _field_line(spec: FieldSpec, shadowed: frozenset[str], used: set[tuple[str, str]]) -> list[str]:
    annotation = spec.type.render(used, shadowed)
    options: list[str] = []
    default = spec.default
    if default is not None and default.startswith("Field("):
        options.append(default[len("Field(") : -1])
        default = None
    elif default is not None and (spec.wire_in != camel(spec.name) or spec.wire_out != camel(spec.name)):
        options.append(default)
        default = None
    if spec.wire_out != camel(spec.name):
        options.append(f'validation_alias="{spec.wire_out}"')
    if spec.wire_in != camel(spec.name):
        options.append(f'serialization_alias="{spec.wire_in}"')
    if options:
        used.add(("pydantic", "Field"))
        return call("Field", list(options), 4, prefix=f"{spec.name}: {annotation} = ")
    if default is not None:
        return [f"    {spec.name}: {annotation} = {default}"]
    return [f"    {spec.name}: {annotation}"]


def models_module(catalog: Catalog, source: str) -> str:
    used: set[tuple[str, str]] = set()
    body: list[str] = []
    names = []
    for name, values in catalog.aliases.items():
        names.append(name)
        used.add(("typing", "Literal"))
        line = f"{name} = Literal[{', '.join(values)}]"
        body += (
            [line] if len(line) <= LIMIT else [f"{name} = Literal["] + [f"    {v}," for v in values] + ["]"]
        )
    for spec in catalog.models.values():
        names.append(spec.name)
        base = "ResultModel" if "result" in spec.roles else "ParamsModel"
        used.add(("", base))
        shadowed = frozenset(f.name for f in spec.fields)
        body += ["", "", f"class {spec.name}({base}):"]
        if spec.doc:
            body += docstring(inspect.cleandoc(spec.doc), 4)
            if spec.fields:
                body.append("")
        for field_spec in spec.fields:
            body += _field_line(field_spec, shadowed, used)
        if not spec.doc and not spec.fields:
            body.append("    pass")
    used = {(module, name) for module, name in used if module or name not in names}
    local = {"ParamsModel": "._wire", "ResultModel": "._wire"}
    doc = (
        "The procedures' params and results, and the enumerations they use.\n\n"
        "Attributes are snake_case; on the wire they are camelCase (consent_status is consentStatus)."
    )
    return module_text(header(source), doc, all_list(names) + [""] + body, used, local)


# Namespaces --------------------------------------------------------------------------------------

_FLAVOURS = {
    # flavour: (class prefix, class suffix, owner type, owner attribute)
    "sync": ("", "Namespace", "SyncTransport", "_transport"),
    "async": ("Async", "Namespace", "AsyncTransport", "_transport"),
    "batch": ("", "BatchNamespace", "Collector", "_batch"),
}


def _class_name(node: Namespace, flavour: str) -> str:
    prefix, suffix, _, _ = _FLAVOURS[flavour]
    return f"{prefix}{node.cls}{suffix}"


def _signature(
    method: Method, shadowed: frozenset[str], used: set[tuple[str, str]], skip: str = ""
) -> list[str]:
    params = ["self"]
    fields = [f for f in method.params.fields if f.name != skip]
    if fields:
        params.append("*")
    for spec in fields:
        annotation = spec.type.render(used, shadowed)
        if spec.required:
            params.append(f"{spec.name}: {annotation}")
        else:
            used |= {("", "NotGiven"), ("", "NOT_GIVEN")}
            params.append(f"{spec.name}: {annotation} | NotGiven = NOT_GIVEN")
    return params


def _def(name: str, params: list[str], returns: str, is_async: bool = False) -> list[str]:
    keyword = "async def" if is_async else "def"
    if params == ["self"]:
        return [f"    {keyword} {name}(self) -> {returns}:"]
    return [f"    {keyword} {name}("] + [f"        {p}," for p in params] + [f"    ) -> {returns}:"]


def _method_doc(method: Method) -> str:
    procedure = method.procedure
    parts = [procedure.description or f"The {method.wire} procedure."]
    params_doc = method.params.doc
    if params_doc:
        parts.append(inspect.cleandoc(params_doc))
    parts.append(
        f"Procedure `{method.wire}`, a {procedure.kind.value} ({_KINDS[procedure.kind]}).\n"
        f"Guard: {_GUARDS[procedure.guard]}."
    )
    args = []
    for spec in method.params.fields:
        notes = [spec.description.rstrip(".") + "." if spec.description else ""]
        if not spec.required and spec.default != "None":
            default = spec.default or ""
            default = "[]" if "default_factory=list" in default else "{}" if "dict" in default else default
            notes.append(f"Left out, the server uses {default}.")
        note = " ".join(n for n in notes if n)
        if note:
            args.append(f"    {spec.name}: {note}")
    if args:
        parts.append("Args:\n" + "\n".join(args))
    return "\n\n".join(parts)


def _params_call(
    method: Method, used: set[tuple[str, str]], skip: str = "", cursor: str = ""
) -> tuple[str, list[str | tuple[str, list[str]]]]:
    used.add(("", method.params.name))
    required = [f"{f.name}={f.name}" for f in method.params.fields if f.required]
    optional = [f"{f.name}={f.name}" for f in method.params.fields if not f.required]
    args: list[str | tuple[str, list[str]]] = list(required)
    if optional:
        used.add(("", "given"))
        args.append(("**given", optional))
    return method.params.name, args


def _constant(method: Method) -> str:
    return "_" + snake(method.wire.replace(".", "_")).upper()


def _method(node: Namespace, method: Method, flavour: str, used: set[tuple[str, str]]) -> list[str]:
    shadowed = node.members()
    result = method.result.render(used, shadowed)
    returns = f"Pending[{result}]" if flavour == "batch" else result
    if flavour == "batch":
        used.add(("", "Pending"))
    lines = _def(method.attr, _signature(method, shadowed, used), returns, flavour == "async")
    lines += docstring(_method_doc(method), 8)
    func, args = _params_call(method, used)
    lines += call(func, args, 8, prefix="params = ")
    constant = _constant(method)
    if flavour == "sync":
        lines.append(f"        return self._transport.call({constant}(params))")
    elif flavour == "async":
        lines.append(f"        return await self._transport.call({constant}(params))")
    else:
        lines.append(f"        return self._batch.add({constant}(params))")
    if method.page_item is not None and flavour != "batch":
        lines += [""] + _iterator(method, shadowed, flavour, used)
    return lines


def _iterator(
    method: Method, shadowed: frozenset[str], flavour: str, used: set[tuple[str, str]]
) -> list[str]:
    assert method.page_item is not None
    item = method.page_item.render(used, shadowed)
    iterator, helper = ("Iterator", "iter_items") if flavour == "sync" else ("AsyncIterator", "aiter_items")
    used |= {("collections.abc", iterator), ("", helper)}
    lines = _def(
        f"iter_{method.attr}", _signature(method, shadowed, used, skip="cursor"), f"{iterator}[{item}]"
    )
    doc = (
        f"Every item of `{method.wire}`, page after page, fetched as the loop needs them.\n\n"
        f"Takes the arguments of {method.attr}() except the cursor, which it handles."
    )
    lines += docstring(doc, 8)
    cursor_field = next(f for f in method.params.fields if f.name == "cursor")
    cursor = "cursor" if cursor_field.required else "cursor or NOT_GIVEN"
    if not cursor_field.required:
        used.add(("", "NOT_GIVEN"))
    args = [f"{f.name}={f.name}" for f in method.params.fields if f.name != "cursor"] + [f"cursor={cursor}"]
    inner = call(f"self.{method.attr}", list(args), 12)
    one = f"        return {helper}(lambda cursor: {inner[0].strip()})"
    if len(inner) == 1 and len(one) <= LIMIT:
        return lines + [one]
    return lines + [
        f"        return {helper}(",
        f"            lambda cursor: {inner[0].strip()}",
        *inner[1:],
        "        )",
    ]


def namespaces_module(root: Namespace, source: str) -> str:
    used: set[tuple[str, str]] = {
        ("", "SyncTransport"),
        ("", "AsyncTransport"),
        ("", "Collector"),
        ("", "Procedure"),
    }
    used.add(("pydantic", "TypeAdapter"))
    constants: list[str] = []
    classes: list[str] = []
    names = []
    for node in root.walk():
        if not node.path:
            continue
        for method in node.methods:
            result = method.result.render(used)
            constants += call(
                "Procedure",
                [f'"{method.wire}"', f'"{method.procedure.kind.value}"', f"TypeAdapter({result})"],
                0,
                prefix=f"{_constant(method)} = ",
            )
        doc = sorted(node.docs)[0] if len(node.docs) == 1 else f"The {'.'.join(node.path)}.* procedures."
        for flavour in ("sync", "async", "batch"):
            name = _class_name(node, flavour)
            names.append(name)
            _, _, owner, attr = _FLAVOURS[flavour]
            classes += ["", "", f"class {name}:", *docstring(doc, 4)]
            classes += [""] if node.children else []
            for child_attr, child in node.children.items():
                classes.append(f"    {child_attr}: {_class_name(child, flavour)}")
            param = "batch" if flavour == "batch" else "transport"
            classes += [
                "",
                f"    def __init__(self, {param}: {owner}) -> None:",
                f"        self.{attr} = {param}",
            ]
            for child_attr, child in node.children.items():
                classes.append(f"        self.{child_attr} = {_class_name(child, flavour)}({param})")
            for method in node.methods:
                classes += [""] + _method(node, method, flavour, used)
    local = {
        "SyncTransport": "._transport",
        "AsyncTransport": "._transport",
        "Procedure": "._transport",
        "Collector": "._batch",
        "Pending": "._batch",
        "NotGiven": "._wire",
        "NOT_GIVEN": "._wire",
        "given": "._wire",
        "iter_items": "._paging",
        "aiter_items": "._paging",
    }
    local = {**_model_locals(used), **local}
    doc = (
        "The procedures, one class per namespace, each in three flavours: sync, async, batch.\n\n"
        "Arguments are keyword-only. NOT_GIVEN leaves an argument out, so the server applies its\n"
        'own default: not the same as None, which update-style procedures read as "clear it".'
    )
    body = all_list(names) + [""] + constants + classes
    return module_text(header(source), doc, body, used, local)


def _model_locals(used: set[tuple[str, str]]) -> dict[str, str]:
    return {name: "._models" for module, name in used if module == ""}


# Clients -----------------------------------------------------------------------------------------


def client_module(root: Namespace, source: str) -> str:
    used: set[tuple[str, str]] = {
        ("", "ClientBase"),
        ("", "AsyncClientBase"),
        ("", "BatchBase"),
        ("", "AsyncBatchBase"),
        ("", "SyncTransport"),
        ("", "AsyncTransport"),
    }
    tops = list(root.children.items())
    body: list[str] = []

    def attrs(flavour: str) -> list[str]:
        return [""] + [f"    {attr}: {_class_name(node, flavour)}" for attr, node in tops]

    def binds(flavour: str, arg: str) -> list[str]:
        return [f"        self.{attr} = {_class_name(node, flavour)}({arg})" for attr, node in tops]

    for flavour in ("sync", "async", "batch"):
        used |= {("", _class_name(node, flavour)) for _, node in tops}
    first = tops[0][1] if tops else None
    example = f"{tops[0][0]}.{first.methods[0].attr}(...)" if first and first.methods else "..."
    body += ["", "", "class Client(ClientBase):"]
    body += docstring(
        "A NurtureHub client for scripts.\n\n"
        "    with Client() as client:  # NURTUREHUB_URL and NURTUREHUB_TOKEN\n"
        f"        client.{example}\n\n"
        "Errors raise the RPCError subclass of their code (NotFound, Forbidden, ...).",
        4,
    )
    body += (
        attrs("sync")
        + ["", "    def _bind(self, transport: SyncTransport) -> None:"]
        + binds("sync", "transport")
    )
    body += [
        "",
        "    def batch(self) -> Batch:",
        '        """Collect calls; they go as one JSON-RPC batch when the `with` block ends."""',
        "        return Batch(self._transport)",
    ]
    body += ["", "", "class AsyncClient(AsyncClientBase):"]
    body += docstring("The asyncio twin of Client: `async with AsyncClient() as client:`.", 4)
    body += (
        attrs("async")
        + ["", "    def _bind(self, transport: AsyncTransport) -> None:"]
        + binds("async", "transport")
    )
    body += [
        "",
        "    def batch(self) -> AsyncBatch:",
        '        """Collect calls; they go as one JSON-RPC batch when the `async with` block ends."""',
        "        return AsyncBatch(self._transport)",
    ]
    for name, base in (("Batch", "BatchBase"), ("AsyncBatch", "AsyncBatchBase")):
        body += ["", "", f"class {name}({base}):"]
        body += docstring(
            "Calls made here return a Pending at once; after the block, pending.result() is the\n"
            "call's result or raises its error. Each call succeeds or fails on its own.",
            4,
        )
        body += attrs("batch") + ["", "    def _bind(self) -> None:"] + binds("batch", "self")
    local = {
        "ClientBase": "._base",
        "AsyncClientBase": "._base",
        "BatchBase": "._batch",
        "AsyncBatchBase": "._batch",
        "SyncTransport": "._transport",
        "AsyncTransport": "._transport",
        **{name: "._namespaces" for module, name in used if module == "" and "Namespace" in name},
    }
    doc = "Client and AsyncClient, with one attribute per namespace, and their batches."
    body = all_list(["AsyncBatch", "AsyncClient", "Batch", "Client"]) + body
    return module_text(header(source), doc, body, used, local)


def init_module(catalog: Catalog, source: str) -> str:
    exports: dict[str, list[str]] = {
        "._batch": ["Pending"],
        "._client": ["AsyncBatch", "AsyncClient", "Batch", "Client"],
        "._errors": [cls.__name__ for cls in _error_classes()],
        "._exceptions": _public_names(DEFAULT_OUT / PACKAGE / "_exceptions.py"),
        "._models": list(catalog.aliases) + [spec.name for spec in catalog.models.values()],
        "._wire": ["NOT_GIVEN", "NotGiven"],
    }
    names = [name for group in exports.values() for name in group]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise GeneratorError(f"names exported twice by the client: {', '.join(duplicates)}")
    used = {("", name) for name in names}
    local = {name: module for module, group in exports.items() for name in group}
    doc = (
        "The typed NurtureHub client.\n\n"
        "Usage:\n\n"
        "    from nurturehub_client import Client\n\n"
        "    with Client() as client:  # NURTUREHUB_URL, NURTUREHUB_TOKEN\n"
        "        me = client.auth.whoami()"
    )
    body = [f'__version__ = "{VERSION}"', ""] + all_list([*names, "__version__"])
    return module_text(header(source), doc, body, used, local)


def _public_names(module: Path) -> list[str]:
    """The `__all__` of a hand-written client module, read as text: the client is not imported
    here, so generating never depends on what is installed."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [
                str(ast.literal_eval(element))
                for element in ast.walk(node.value)
                if isinstance(element, ast.Constant)
            ]
    raise GeneratorError(f"{module} has no __all__")


def pyproject() -> str:
    return f"""# DO NOT EDIT: generated by {GENERATOR}.
{REGENERATE}
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "nurturehub-client"
version = "{VERSION}"
description = "Typed Python client for the NurtureHub JSON-RPC API"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["httpx>=0.27", "pydantic>=2.7"]

[tool.setuptools]
packages = ["{PACKAGE}"]

[tool.setuptools.package-data]
{PACKAGE} = ["py.typed"]

[tool.mypy]
strict = true

[tool.ruff]
line-length = 110
target-version = "py310"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]

[tool.ruff.lint.per-file-ignores]
# Generated signatures carry long Literal types on one line.
"{PACKAGE}/_namespaces.py" = ["E501"]
"{PACKAGE}/_models.py" = ["E501"]
"""


def readme() -> str:
    return f"""<!-- DO NOT EDIT: generated by {GENERATOR}; regenerate with `nurturehub client generate`. -->
# nurturehub-client

The typed Python client for the NurtureHub JSON-RPC API, generated from the server's procedures.

    pip install ./clients/python

```python
from nurturehub_client import Client, NotFound

with Client("https://nurturehub.example", token="nh_...") as client:  # or NURTUREHUB_URL / _TOKEN
    me = client.auth.whoami()
    for contact in client.contacts.iter_list(category=["seller"], consent_status="granted"):
        print(contact.email)
```

See examples/ for a complete script.
"""


# Files -------------------------------------------------------------------------------------------


def build(router: Mapping[str, Procedure], source: str) -> dict[str, str]:
    """Every file of the client package: path relative to the output folder -> contents."""
    catalog = Catalog()
    root = _namespaces(router, catalog)
    pkg = PACKAGE
    files = {
        "pyproject.toml": pyproject(),
        "README.md": readme(),
        f"{pkg}/py.typed": "",
        f"{pkg}/__init__.py": init_module(catalog, source),
        f"{pkg}/_errors.py": errors_module(source),
        f"{pkg}/_models.py": models_module(catalog, source),
        f"{pkg}/_namespaces.py": namespaces_module(root, source),
        f"{pkg}/_client.py": client_module(root, source),
    }
    return files


def stale(out: Path, files: Mapping[str, str]) -> list[str]:
    """What differs between `out` and `files`: missing, changed and leftover generated files."""
    problems = []
    for path, text in files.items():
        target = out / path
        if not target.exists():
            problems.append(f"{path}: missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs")
    for leftover in _leftovers(out, files):
        problems.append(f"{leftover.relative_to(out)}: no longer generated")
    return problems


def _leftovers(out: Path, files: Mapping[str, str]) -> list[Path]:
    package = out / PACKAGE
    if not package.is_dir():
        return []
    return [
        path
        for path in sorted(package.glob("*.py"))
        if str(path.relative_to(out)) not in files
        and path.read_text(encoding="utf-8").startswith("# DO NOT EDIT")
    ]


def run(
    router: Mapping[str, Procedure], *, source: str, out: Path | None = None, check: bool = False
) -> list[str]:
    """Write the client to `out` (clients/python); with `check`, write nothing and return what
    is stale. Returns the files changed (or stale)."""
    out = Path(out) if out is not None else DEFAULT_OUT
    files = build(router, source)
    problems = stale(out, files)
    if check:
        return problems
    for leftover in _leftovers(out, files):
        leftover.unlink()
    for path, text in files.items():
        target = out / path
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    return problems
