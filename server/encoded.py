"""Results serialised by their handler: a page of rows goes to JSON without a model per row.

A handler declared `-> Encoded[ContactPage]` is described, dispatched and given to clients as
returning a ContactPage. It selects its rows under the model's wire names (`wire_columns`) and
returns `encode({...})`; the dispatcher sends those bytes as they are. Building and serialising
a model per row is most of the Python work of a 50-row page (bench/), and the rows need no
checking that the database has not already done: every column has its type and constraints.
With `Settings.verify_encoded_results` (on in the tests) the dispatcher still validates the
bytes against the declared model, so a select list that drifts from its model fails there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

__all__ = ["Encoded", "encode", "wire_columns"]

T = TypeVar("T")


class Encoded(Generic[T]):
    """The JSON of a `T`, ready to send."""

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json


def encode(value: Any) -> Encoded[Any]:
    """`value` as pydantic writes wire models: UTC times end in Z, uuids are strings."""
    return Encoded(orjson.dumps(value, option=orjson.OPT_UTC_Z))


def wire_columns(model: type[BaseModel], expressions: Mapping[str, str]) -> str:
    """A select list naming each of the model's fields by its wire name, in the model's order:
    `c.first_name AS "firstName", ...`. `expressions` maps every field to its SQL."""
    fields = model.model_fields
    if set(expressions) != set(fields):
        raise ValueError(
            f"{model.__name__}: expressions must cover exactly its fields "
            f"(missing {sorted(set(fields) - set(expressions))}, "
            f"extra {sorted(set(expressions) - set(fields))})"
        )
    return ", ".join(f'{expressions[name]} AS "{field.alias or name}"' for name, field in fields.items())
