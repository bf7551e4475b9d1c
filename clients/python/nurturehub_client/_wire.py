"""The base of every client model, and NOT_GIVEN: an argument left out, so the server's own
default applies."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["NOT_GIVEN", "NotGiven", "ParamsModel", "ResultModel", "given"]


class ParamsModel(BaseModel):
    """Procedure input: snake_case attributes, camelCase on the wire; unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ResultModel(BaseModel):
    """Procedure output. Fields a newer server adds are ignored, so an older client keeps working."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class NotGiven:
    """The type of NOT_GIVEN. Distinct from None, which a procedure may read as "clear this"."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def given(**arguments: Any) -> dict[str, Any]:
    """The arguments the caller passed: only those go on the wire."""
    return {name: value for name, value in arguments.items() if value is not NOT_GIVEN}
