"""Procedure errors: one class per code, mapped to JSON-RPC once, at the edge.

    RPCError                      data.code              JSON-RPC  HTTP
    +-- ParseError                PARSE_ERROR            -32700    400
    +-- InvalidRequest            BAD_REQUEST            -32600    400
    +-- MethodNotFound            METHOD_NOT_FOUND       -32601    404
    +-- InvalidParams             BAD_REQUEST            -32602    400
    +-- InternalError             INTERNAL_SERVER_ERROR  -32603    500
    +-- ServiceUnavailable        SERVICE_UNAVAILABLE    -32603    503
    +-- Unauthorized              UNAUTHORIZED           -32001    401
    +-- Forbidden                 FORBIDDEN              -32003    403
    +-- NotFound                  NOT_FOUND              -32004    404
    +-- Conflict                  CONFLICT               -32009    409
    +-- PayloadTooLarge           PAYLOAD_TOO_LARGE      -32013    413
    +-- UnsupportedMediaType      UNSUPPORTED_MEDIA_TYPE -32015    415
    +-- TooManyRequests           TOO_MANY_REQUESTS      -32029    429

Handlers raise these; nothing else ever builds an error object. Messages are written for the
caller and must never carry SQL, exception text, credentials or personal data.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "FieldIssue",
    "Forbidden",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "MethodNotFound",
    "NotFound",
    "ParseError",
    "PayloadTooLarge",
    "RPCError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
]

FieldIssue = dict[str, Any]


class RPCError(Exception):
    """A failure the caller is told about, with its code and a safe message."""

    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    rpc_code: ClassVar[int] = -32603
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, data: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.extra = data or {}
        super().__init__(self.message)


class ParseError(RPCError):
    code, rpc_code, http_status = "PARSE_ERROR", -32700, 400
    default_message = "Parse error: the body is not valid JSON"


class InvalidRequest(RPCError):
    code, rpc_code, http_status = "BAD_REQUEST", -32600, 400
    default_message = "Invalid Request"


class MethodNotFound(RPCError):
    code, rpc_code, http_status = "METHOD_NOT_FOUND", -32601, 404
    default_message = "Method not found"


class InvalidParams(RPCError):
    """Input failed validation; `issues` lists each bad field by its wire path."""

    code, rpc_code, http_status = "BAD_REQUEST", -32602, 400
    default_message = "Invalid params"

    def __init__(self, message: str | None = None, *, issues: list[FieldIssue]) -> None:
        super().__init__(message, data={"issues": issues})
        self.issues = issues

    @classmethod
    def for_field(cls, path: str, message: str, type_: str = "value_error") -> InvalidParams:
        return cls(
            f"Invalid params: {path}: {message}",
            issues=[{"path": path, "message": message, "type": type_}],
        )


class InternalError(RPCError):
    code, rpc_code, http_status = "INTERNAL_SERVER_ERROR", -32603, 500
    default_message = "Internal error"


class ServiceUnavailable(RPCError):
    code, rpc_code, http_status = "SERVICE_UNAVAILABLE", -32603, 503
    default_message = "Service unavailable: the server is busy, try again shortly"


class Unauthorized(RPCError):
    code, rpc_code, http_status = "UNAUTHORIZED", -32001, 401
    default_message = "Unauthorized: a valid bearer token is required"


class Forbidden(RPCError):
    code, rpc_code, http_status = "FORBIDDEN", -32003, 403
    default_message = "Forbidden: your role does not allow this procedure"


class NotFound(RPCError):
    code, rpc_code, http_status = "NOT_FOUND", -32004, 404
    default_message = "Not found"


class Conflict(RPCError):
    code, rpc_code, http_status = "CONFLICT", -32009, 409
    default_message = "Conflict"


class PayloadTooLarge(RPCError):
    code, rpc_code, http_status = "PAYLOAD_TOO_LARGE", -32013, 413
    default_message = "Payload too large"


class UnsupportedMediaType(RPCError):
    """A browser sent a body that is not declared as JSON (a form post, text/plain)."""

    code, rpc_code, http_status = "UNSUPPORTED_MEDIA_TYPE", -32015, 415
    default_message = "Unsupported media type: send the body as application/json"


class TooManyRequests(RPCError):
    code, rpc_code, http_status = "TOO_MANY_REQUESTS", -32029, 429
    default_message = "Too many requests"
