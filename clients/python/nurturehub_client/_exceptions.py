"""What can go wrong: the server refused a call (RPCError, one subclass per code), or no usable
answer came back (TransportError).

    NurtureHubError
    +-- ConfigurationError       no server URL given
    +-- RPCError                 the server answered with a JSON-RPC error; subclasses by code
                                 (InvalidParams also for arguments refused before sending)
    +-- TransportError           no usable answer
        +-- ConnectionFailed     could not reach the server (queries are retried first)
        +-- Timeout              the server did not answer in time
        +-- UnexpectedResponse   an answer that is not JSON-RPC, or a result this client cannot read
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "ConfigurationError",
    "ConnectionFailed",
    "FieldIssue",
    "NurtureHubError",
    "RPCError",
    "Timeout",
    "TransportError",
    "UnexpectedResponse",
]


class NurtureHubError(Exception):
    """The base of every exception this client raises."""


class ConfigurationError(NurtureHubError, ValueError):
    """The client cannot be built as configured (e.g. no server URL)."""


@dataclass(frozen=True)
class FieldIssue:
    """One bad input field: its wire path (e.g. `email` or `contact.phone`) and why."""

    path: str
    message: str
    type: str


class RPCError(NurtureHubError):
    """The server refused a call; `code` is its string code (e.g. NOT_FOUND), `rpc_code` the
    JSON-RPC number, `data` the error's data and `request_id` the id to quote to support."""

    code: str = "UNKNOWN"
    rpc_code: int = 0
    http_status: int = 0
    # Subclasses register themselves by (JSON-RPC code, string code), as psycopg's errors do.
    _registry: ClassVar[dict[tuple[int, str], type[RPCError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RPCError._registry[(cls.rpc_code, cls.code)] = cls

    def __init__(
        self,
        message: str,
        *,
        data: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        code: str | None = None,
        rpc_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = dict(data or {})
        self.request_id = request_id
        if code is not None:
            self.code = code
        if rpc_code is not None:
            self.rpc_code = rpc_code

    @property
    def retry_after(self) -> int | None:
        """Seconds the server asks to wait before trying again (TOO_MANY_REQUESTS and
        SERVICE_UNAVAILABLE say so), or None."""
        value = self.data.get("retryAfter")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def __str__(self) -> str:
        suffix = f", request {self.request_id}" if self.request_id else ""
        return f"{self.message} ({self.code}{suffix})"

    @classmethod
    def from_wire(cls, error: Mapping[str, Any], *, request_id: str | None = None) -> RPCError:
        """The exception for a JSON-RPC error object, of the subclass its codes name."""
        data = error.get("data")
        data = dict(data) if isinstance(data, Mapping) else {}
        rpc_code = error.get("code")
        rpc_code = rpc_code if isinstance(rpc_code, int) else 0
        code = str(data.get("code", "UNKNOWN"))
        message = str(error.get("message") or code)
        found = cls._registry.get((rpc_code, code))
        if found is None:  # an error newer than this client: keep its codes on the base class
            return RPCError(
                message,
                data=data,
                request_id=data.get("requestId") or request_id,
                code=code,
                rpc_code=rpc_code,
            )
        return found(message, data=data, request_id=data.get("requestId") or request_id)


def field_issues(data: Mapping[str, Any]) -> list[FieldIssue]:
    """The `issues` of an invalid-params error's data, as FieldIssue objects."""
    issues = data.get("issues")
    if not isinstance(issues, list):
        return []
    return [
        FieldIssue(
            path=str(item.get("path", "")),
            message=str(item.get("message", "")),
            type=str(item.get("type", "")),
        )
        for item in issues
        if isinstance(item, Mapping)
    ]


class TransportError(NurtureHubError):
    """No usable answer came back; the call may or may not have run (check before repeating
    a mutation)."""


class ConnectionFailed(TransportError):
    """The server could not be reached."""


class Timeout(TransportError):
    """The server did not answer within the timeout."""


class UnexpectedResponse(TransportError):
    """The answer is not JSON-RPC, or its result does not fit this client's model (a client
    generated for another server version)."""
