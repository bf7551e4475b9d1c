"""Server types as client source: pydantic models, Literal aliases and enums, rendered as Python.

The server's models are walked from each procedure's params and result types; every model,
Literal alias and enum they reach becomes a client definition with the same name, so a script
author sees the names the server code uses (Category, ConsentStatus, ContactPage, ...).
"""

from __future__ import annotations

import collections.abc
import datetime
import decimal
import enum
import json
import re
import sys
import types
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["Catalog", "FieldSpec", "GeneratorError", "ModelSpec", "Ref", "literal"]


class GeneratorError(Exception):
    """The registry holds something the generator cannot express; the message says what."""


@dataclass(frozen=True)
class Ref:
    """A type as source: `name[args]`, a union of `args`, or Literal[values]."""

    name: str
    args: tuple[Ref, ...] = ()
    module: str = ""  # where `name` is imported from; "" for the client's own definitions
    values: tuple[str, ...] = ()  # rendered Literal values
    union: bool = False

    def render(self, used: set[tuple[str, str]], shadowed: frozenset[str] = frozenset()) -> str:
        """The source; `used` collects (module, name) imports, name "" for `import module`."""
        if self.union:
            return " | ".join(arg.render(used, shadowed) for arg in self.args)
        if self.name == "Literal":
            used.add(("typing", "Literal"))
            return f"Literal[{', '.join(self.values)}]"
        name = self.name
        if self.module and name in shadowed:
            # A class member named like a type (a method `list`) hides it in annotations.
            used.add((self.module, ""))
            name = f"{_QUALIFIED[self.module]}.{name}"
        elif self.module and self.module != "builtins":
            used.add((self.module, name))
        elif not self.module and name != "None":
            used.add(("", name))  # one of the client's own definitions
        if self.args:
            return f"{name}[{', '.join(arg.render(used, shadowed) for arg in self.args)}]"
        return name

    def walk(self) -> typing.Iterator[Ref]:
        yield self
        for arg in self.args:
            yield from arg.walk()


_QUALIFIED = {
    "builtins": "builtins",
    "typing": "typing",
    "uuid": "_uuid",
    "datetime": "_datetime",
    "decimal": "_decimal",
}

NONE = Ref("None")
ANY = Ref("Any", module="typing")
STR = Ref("str", module="builtins")

_SCALARS: dict[Any, Ref] = {
    str: STR,
    int: Ref("int", module="builtins"),
    float: Ref("float", module="builtins"),
    bool: Ref("bool", module="builtins"),
    bytes: Ref("bytes", module="builtins"),
    uuid.UUID: Ref("UUID", module="uuid"),
    datetime.datetime: Ref("datetime", module="datetime"),
    datetime.date: Ref("date", module="datetime"),
    datetime.time: Ref("time", module="datetime"),
    datetime.timedelta: Ref("timedelta", module="datetime"),
    decimal.Decimal: Ref("Decimal", module="decimal"),
}
# pydantic's string-like types (EmailStr, AwareDatetime, ...) are plain types on the wire.
_PYDANTIC_AS: dict[str, Ref] = {
    "EmailStr": STR,
    "NameEmail": STR,
    "SecretStr": STR,
    "AnyUrl": STR,
    "AnyHttpUrl": STR,
    "HttpUrl": STR,
    "AwareDatetime": _SCALARS[datetime.datetime],
    "NaiveDatetime": _SCALARS[datetime.datetime],
    "PastDatetime": _SCALARS[datetime.datetime],
    "FutureDatetime": _SCALARS[datetime.datetime],
    "PastDate": _SCALARS[datetime.date],
    "FutureDate": _SCALARS[datetime.date],
}
_SEQUENCES = {
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
}
_MAPPINGS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}


def literal(value: Any) -> str:
    """A Python literal for a JSON-like value, double-quoted as the formatter writes strings."""
    if isinstance(value, enum.Enum):
        return literal(value.value)
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return f"[{', '.join(literal(item) for item in items)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise GeneratorError(f"cannot write the default {value!r} as a literal")


@dataclass(frozen=True)
class FieldSpec:
    name: str  # the attribute: snake_case, as on the server
    type: Ref
    default: str | None  # source of the default (a literal, or Field(default_factory=...)); None: required
    wire_in: str  # the name the server reads (params)
    wire_out: str  # the name the server writes (results)
    description: str | None

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass
class ModelSpec:
    name: str
    source: type[BaseModel]
    doc: str | None
    fields: list[FieldSpec] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)  # "params", "result"


class Catalog:
    """Every definition the procedures reach, in an order where each follows what it uses."""

    def __init__(self) -> None:
        self.models: dict[type[BaseModel], ModelSpec] = {}
        self.aliases: dict[str, tuple[str, ...]] = {}  # Literal aliases and enums, by name
        self._names: dict[str, object] = {}  # client name -> the server object it stands for
        self._visiting: set[type[BaseModel]] = set()

    # Walking -------------------------------------------------------------------------------------

    def ref(self, tp: Any, role: str, module: str) -> Ref:
        """The client type for a server type met in `module` (where Literal aliases are looked up)."""
        if tp is None or tp is type(None):
            return NONE
        if tp is Any or tp is object:
            return ANY
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            accepted = _input_type(args[1:]) if role == "params" else None
            return self.ref(args[0] if accepted is None else accepted, role, module)
        if tp is uuid.UUID and role == "params":
            # An id read from a CSV file or argv is a str: the server checks it is a UUID.
            return Ref("", (STR, _SCALARS[uuid.UUID]), union=True)
        if origin is Literal:
            return self._literal(tp, args, module)
        if origin is typing.Union or origin is types.UnionType:
            members: list[Ref] = []
            for arg in args:
                member = self.ref(arg, role, module)
                for part in member.args if member.union else (member,):
                    if part not in members:
                        members.append(part)
            return Ref("", tuple(members), union=True)
        if origin in _SEQUENCES or tp in _SEQUENCES:
            item = self.ref(args[0], role, module) if args else ANY
            return Ref("list", (item,), module="builtins")
        if origin is tuple or tp is tuple:
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = self.ref(args[0], role, module) if args else ANY
                return Ref("list", (item,), module="builtins")
            return Ref("tuple", tuple(self.ref(a, role, module) for a in args), module="builtins")
        if origin in _MAPPINGS or tp in _MAPPINGS:
            key, value = (self.ref(a, role, module) for a in args) if args else (STR, ANY)
            return Ref("dict", (key, value), module="builtins")
        if isinstance(tp, type):
            if issubclass(tp, BaseModel):
                return Ref(self.model(tp, role).name)
            if issubclass(tp, enum.Enum):
                values = tuple(literal(member.value) for member in tp)
                return Ref(self._alias(tp.__name__, values, tp) or "Literal", values=values)
            for scalar, found in _SCALARS.items():
                if tp is scalar:
                    return found
        name = getattr(tp, "__name__", None)
        if name in _PYDANTIC_AS and str(getattr(tp, "__module__", "")).startswith("pydantic"):
            return _PYDANTIC_AS[name]
        if type(tp).__name__ == "TypeAliasType":  # pydantic's JsonValue and friends: any JSON
            return ANY
        if isinstance(tp, type):
            for scalar, found in _SCALARS.items():
                if issubclass(tp, scalar):
                    return found
        raise GeneratorError(f"cannot express the type {tp!r} (met in {module}) in the client")

    def _literal(self, tp: Any, args: tuple[Any, ...], module: str) -> Ref:
        values = tuple(literal(arg) for arg in args)
        # A Literal with a name in the server's module (Category = Literal[...]) keeps that name.
        names = []
        for name, value in sorted(vars(sys.modules[module]).items()):
            if name[:1].isupper() and typing.get_origin(value) is Literal and _same(value, tp):
                names.append(name)
        for name in names:
            if self._alias(name, values, tp):
                return Ref(name, values=values)
        return Ref("Literal", values=values)

    def _alias(self, name: str, values: tuple[str, ...], source: object) -> str | None:
        """Claim `name` for these values; None if it already stands for something else."""
        known = self.aliases.get(name)
        if known is not None:
            return name if set(known) == set(values) else None
        if name in self._names:
            return None
        self.aliases[name] = values
        self._names[name] = source
        return name

    def model(self, cls: type[BaseModel], role: str) -> ModelSpec:
        spec = self.models.get(cls)
        if spec is not None:
            if role not in spec.roles and cls not in self._visiting:
                spec.roles.add(role)
                self._fields(cls, spec, role)  # walk again so nested models learn the role too
            spec.roles.add(role)
            return spec
        spec = ModelSpec(self._model_name(cls), cls, cls.__dict__.get("__doc__"), roles={role})
        self._names[spec.name] = cls
        self._visiting.add(cls)
        spec.fields = self._fields(cls, spec, role)
        self._visiting.discard(cls)
        self.models[cls] = spec  # after its fields' models: definitions come before their uses
        return spec

    def _fields(self, cls: type[BaseModel], spec: ModelSpec, role: str) -> list[FieldSpec]:
        fields = []
        for name, info in cls.model_fields.items():
            fields.append(
                FieldSpec(
                    name=name,
                    type=self.ref(info.annotation, role, cls.__module__),
                    default=_default(info, f"{cls.__name__}.{name}"),
                    wire_in=_alias(info.validation_alias, info.alias, name),
                    wire_out=_alias(info.serialization_alias, info.alias, name),
                    description=info.description,
                )
            )
        return fields

    def _model_name(self, cls: type[BaseModel]) -> str:
        name = re.sub(r"\W", "", cls.__name__)  # generic models: Page[Contact] -> PageContact
        if self._names.get(name, cls) is not cls:
            # Two server models share a name: the later one is prefixed with its namespace module.
            prefix = "".join(part.title() for part in cls.__module__.rsplit(".", 1)[-1].split("_"))
            name = prefix + name
            if self._names.get(name, cls) is not cls:
                raise GeneratorError(f"two server models are both called {cls.__name__}")
        return name


def _input_type(metadata: tuple[Any, ...]) -> Any:
    """What a field takes on the wire when a validator says so (`json_schema_input_type`, as the
    OpenRPC document shows it), e.g. one category or a list of them; None when nothing says."""
    for item in metadata:
        accepted = getattr(item, "json_schema_input_type", PydanticUndefined)
        if accepted is not PydanticUndefined and accepted is not Any:
            return accepted
    return None


def _same(a: Any, b: Any) -> bool:
    try:
        return set(typing.get_args(a)) == set(typing.get_args(b))
    except TypeError:
        return False


def _alias(specific: Any, alias: str | None, name: str) -> str:
    if isinstance(specific, str):
        return specific
    return alias or name


def _default(info: FieldInfo, where: str) -> str | None:
    if info.is_required():
        return None
    factory = info.default_factory
    if factory is not None:
        if factory in (list, set, frozenset, tuple):
            return "Field(default_factory=list)"
        if factory is dict:
            return "Field(default_factory=dict)"
        raise GeneratorError(f"{where}: a default_factory other than list or dict")
    try:
        return literal(info.default)
    except GeneratorError as exc:
        raise GeneratorError(f"{where}: {exc}") from None


def camel(name: str) -> str:
    """The wire name the client's base models derive from an attribute name."""
    return to_camel(name)
