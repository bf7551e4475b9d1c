"""The base of every wire model: camelCase on the wire, unknown fields refused, immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["WireModel"]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # A model instance was validated when it was built; the dispatcher validates results
        # against the declared type, so a dict or a wrong model still fails, without paying twice.
        revalidate_instances="never",
        ser_json_timedelta="iso8601",
    )
