"""The base of every client model, and NOT_GIVEN: an argument left out, so the server's own
default applies."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from ._errors import InvalidParams

__all__ = ["NOT_GIVEN", "NotGiven", "ParamsModel", "ResultModel", "given"]


class ParamsModel(BaseModel):
    """Procedure input: snake_case attributes, camelCase on the wire; unknown fields refused.

    Arguments this client can tell are wrong raise InvalidParams before anything is sent, with
    the issues named by wire path as the server names them (and no request_id).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _invalid_params(type(self), exc) from None


# pydantic puts "Value error, " before a validator's own words; the server leaves it out too.
_OWN_WORDS = frozenset({"value_error", "assertion_error"})


def _invalid_params(model: type[BaseModel], error: ValidationError) -> InvalidParams:
    issues = []
    for item in error.errors(include_input=False, include_url=False):
        parts = [str(part) for part in item["loc"]]
        if parts:
            info = model.model_fields.get(parts[0])
            wire = (info.serialization_alias or info.alias) if info is not None else None
            parts = [wire or to_camel(parts[0])] + [to_camel(part) for part in parts[1:]]
        message = item["msg"]
        if item["type"] in _OWN_WORDS:
            message = str(item.get("ctx", {}).get("error", message))
        issues.append({"path": ".".join(parts) or "params", "message": message, "type": item["type"]})
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return InvalidParams(
        f"Invalid params: {first['path']}: {first['message']}{more}",
        data={"code": InvalidParams.code, "issues": issues},
    )


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
