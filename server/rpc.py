"""The JSON-RPC 2.0 envelope: decode, split batches, dispatch each call, build every response.

This layer owns what jsonrpcserver gets wrong (see README, dependency notes): NaN and boolean
ids are refused, a batch answers each element on its own, notifications get no reply (an
all-notification batch gets HTTP 204), limits are answered with JSON-RPC errors, and the error
shape is built here and nowhere else. Each call runs in its own transaction, batch or not; a
batch's calls run side by side, a bounded number at once. Per-call metrics are recorded here, as
the /rpc fast path (server/app.py) bypasses every middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic

from server.audit import write_audit
from server.auth import Authenticator
from server.context import Context, Principal, run_after_commit
from server.db import Database
from server.encoded import Encoded
from server.errors import (
    Forbidden,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    PayloadTooLarge,
    RPCError,
    ServiceUnavailable,
)
from server.metrics import Metrics
from server.procedure import Guard, Kind, Procedure, Router
from server.ratelimit import RateLimiter
from server.settings import Settings

__all__ = ["Dispatcher", "Reply", "field_issues"]

log = logging.getLogger("nurturehub.rpc")

_MISSING = object()
DISCOVER = "rpc.discover"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes | None  # None: nothing to send (notifications only)
    retry_after: int | None = None  # seconds, for a Retry-After header
    policy: str | None = None  # the rate limit that refused a call, for the RateLimit header


@dataclass(frozen=True, slots=True)
class _Outcome:
    payload: dict[str, Any]
    status: int
    retry_after: int | None = None
    policy: str | None = None


def field_issues(error: pydantic.ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as wire paths and messages; never the offending values."""
    issues = []
    for item in error.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "params"
        message = item["msg"]
        if item["type"] in _OWN_WORDS:
            # A validator's own message, without the "Value error, " pydantic puts before it.
            message = str(item.get("ctx", {}).get("error", message))
        issues.append({"path": path, "message": message, "type": item["type"]})
    return issues


_OWN_WORDS = frozenset({"value_error", "assertion_error"})


def _invalid_params(error: pydantic.ValidationError) -> InvalidParams:
    issues = field_issues(error)
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return InvalidParams(f"Invalid params: {first['path']}: {first['message']}{more}", issues=issues)


def _too_deep(params: Any) -> InvalidParams:
    """Input nested deeper than the JSON codecs go (orjson writes 254 levels, pydantic reads
    about 200, orjson reads 1,024): bad input, named by the field that holds the deepest value."""
    path = "params"
    if isinstance(params, dict) and params:
        path = str(max(params, key=lambda name: _depth(params[name])))[:100]
    return InvalidParams.for_field(path, "is nested too deeply", "too_deep")


def _depth(value: Any) -> int:
    """How many containers deep `value` goes; a loop, as recursion is what failed."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((inner, level + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest


def _valid_id(value: Any) -> bool:
    # bool is an int in Python, and JSON-RPC ids may not be booleans.
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class _Principals:
    """Resolves the caller at most once per HTTP request, and only if a procedure needs it."""

    __slots__ = ("_authenticator", "_authorization", "_principal", "_error", "organisation_id")

    def __init__(self, authenticator: Authenticator, authorization: str | None) -> None:
        self._authenticator = authenticator
        self._authorization = authorization
        self._principal: Principal | None = None
        self._error: RPCError | None = None
        # For the log lines: the caller's organisation once resolved, as text made once per
        # request rather than once per call of a batch.
        self.organisation_id: str | None = None

    async def get(self) -> Principal:
        if self._principal is None and self._error is None:
            try:
                self._principal = await self._authenticator.authenticate(self._authorization)
                self.organisation_id = str(self._principal.organisation_id)
            except RPCError as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        assert self._principal is not None
        return self._principal


class Dispatcher:
    def __init__(
        self,
        router: Router,
        db: Database,
        settings: Settings,
        authenticator: Authenticator,
        *,
        discover: Callable[[], Mapping[str, Any]],
        metrics: Metrics | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.router = router
        self.db = db
        self.settings = settings
        self.authenticator = authenticator
        self.discover = discover
        self.metrics = metrics
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        pool = settings.pool_size + settings.pool_max_overflow
        # A batch's calls run this many at a time, so one batch of 50 leaves half the pool to
        # everyone else.
        self.batch_width = settings.batch_concurrency or max(1, pool // 2)
        # An organisation's share of the pool: its calls in flight (in this process) beyond
        # this many wait behind everyone else's, and are shed when the pool is overloaded.
        self.organisation_share = settings.organisation_max_in_flight or max(1, pool // 2)
        self.shed_after = settings.shed_after
        self._in_flight: dict[int, int] = {}  # by organisation id (as an int)
        self.shed = 0  # calls refused for their organisation's share (metrics)

    async def handle(self, body: bytes, *, authorization: str | None, request_id: str) -> Reply:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            # Valid JSON nested past orjson's 1,024 levels is bad input, not a parse error; the
            # message is only looked at once decoding has failed, so the hot path pays nothing.
            refusal: RPCError = _too_deep(None) if "depth limit" in exc.msg else ParseError()
            if self.metrics is not None:
                self.metrics.observe("", refusal.code, 0.0)
            return self._single(self._error(None, refusal, None, request_id))

        principals = _Principals(self.authenticator, authorization)
        if not isinstance(message, list):
            outcome = await self._one(message, principals, request_id)
            return Reply(204, None) if outcome is None else self._single(outcome)

        if not message:
            return self._single(
                self._error(None, InvalidRequest("Invalid Request: empty batch"), None, request_id)
            )
        if len(message) > self.settings.max_batch_length:
            error = PayloadTooLarge(
                f"Payload too large: a batch may hold at most {self.settings.max_batch_length} calls"
            )
            return self._single(self._error(None, error, None, request_id))
        outcomes = await self._batch(message, principals, request_id)
        replies = [o for o in outcomes if o is not None]
        if not replies:
            return Reply(204, None)
        statuses = {o.status for o in replies}
        status = statuses.pop() if len(statuses) == 1 else 207
        retry_after = max((o.retry_after or 0 for o in replies), default=0) or None
        policy = next((o.policy for o in replies if o.policy), None)
        return Reply(self._status(status), orjson.dumps([o.payload for o in replies]), retry_after, policy)

    async def _batch(
        self, calls: list[Any], principals: _Principals, request_id: str
    ) -> list[_Outcome | None]:
        """Each call in its own transaction, up to `batch_width` at once; outcomes in request order."""
        outcomes: list[_Outcome | None] = [None] * len(calls)
        pending = iter(enumerate(calls))
        # The calls' log lines, written as one record once the batch is done: a record per
        # call cost about a fifth of a batched call's server CPU (bench/results/batch-speed-*).
        lines: list[dict[str, Any]] = []

        async def lane() -> None:
            for index, call in pending:  # the lanes share one iterator: each call runs once
                outcomes[index] = await self._one(call, principals, request_id, lines)

        width = min(len(calls), self.batch_width)
        try:
            if width == 1:
                await lane()
            else:
                # The caller, once, before the lanes (which must not race to it); a public batch
                # with no token keeps its refusal for a call that needs one.
                with contextlib.suppress(RPCError):
                    await principals.get()
                await asyncio.gather(*(lane() for _ in range(width)))
        finally:
            if lines:  # a line for each call that ran, even when the batch was cancelled
                log.info("rpc", extra={"rpc": lines})
        return outcomes

    def refuse(self, error: RPCError, request_id: str) -> Reply:
        """A reply for a request refused before its body was read (e.g. too large)."""
        return self._single(self._error(None, error, None, request_id))

    def _single(self, outcome: _Outcome) -> Reply:
        return Reply(
            self._status(outcome.status), orjson.dumps(outcome.payload), outcome.retry_after, outcome.policy
        )

    def _status(self, status: int) -> int:
        return 200 if self.settings.always_http_200 else status

    async def _one(
        self,
        call: Any,
        principals: _Principals,
        request_id: str,
        lines: list[dict[str, Any]] | None = None,
    ) -> _Outcome | None:
        """Run one request object; None for a notification. Its log line goes to `lines` when
        given (a batch's), else straight to the log."""
        if not isinstance(call, dict):
            return self._error(
                None,
                InvalidRequest("Invalid Request: expected a JSON-RPC request object"),
                None,
                request_id,
            )
        call_id = call.get("id", _MISSING)
        is_notification = call_id is _MISSING
        reply_id = None if is_notification or not _valid_id(call_id) else call_id
        method = call.get("method")
        problem = self._request_problem(call, call_id, method)
        if problem is not None or not isinstance(method, str):
            if self.metrics is not None:
                self.metrics.observe("", InvalidRequest.code, 0.0)  # counted as method "other"
            return self._error(reply_id, InvalidRequest(f"Invalid Request: {problem}"), None, request_id)

        started = time.perf_counter()
        try:
            result = await self._run(method, call.get("params", _MISSING), principals, request_id)
            outcome = _Outcome({"jsonrpc": "2.0", "id": reply_id, "result": result}, 200)
            code = "OK"
        except RPCError as exc:
            outcome = self._error(reply_id, exc, method, request_id)
            code = exc.code
        except Exception:
            log.exception("unhandled error in %s (request %s)", method, request_id)
            outcome = self._error(reply_id, InternalError(), method, request_id)
            code = InternalError.code
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe(method, code, elapsed)
        line = {
            "procedure": method,
            "code": code,
            "durationMs": round(elapsed * 1000, 2),
            "requestId": request_id,
            "organisationId": principals.organisation_id,
            "notification": is_notification,
        }
        if lines is None:
            log.info("rpc", extra={"rpc": line})
        else:
            lines.append(line)
        return None if is_notification else outcome

    @staticmethod
    def _request_problem(call: dict[str, Any], call_id: Any, method: Any) -> str | None:
        if call.get("jsonrpc") != "2.0":
            return 'jsonrpc must be exactly "2.0"'
        if not isinstance(method, str) or not method:
            return "method must be a non-empty string"
        if call_id is not _MISSING and not _valid_id(call_id):
            return "id must be a string, an integer or null"
        return None

    async def _run(self, method: str, params: Any, principals: _Principals, request_id: str) -> Any:
        if method == DISCOVER:
            return self.discover()
        procedure = self.router.get(method)
        if procedure is None:
            raise MethodNotFound(f"Method not found: {method[:100]}")

        # The guard runs before params are looked at, so an unauthorised caller learns nothing.
        principal = None
        organisation = None
        within_share = False
        if procedure.guard is not Guard.PUBLIC:
            principal = await principals.get()
            # Rate limits (issue 20, point 1): each call spends a permit of its token and of its
            # organisation, leased ahead from the database (server/ratelimit.py).
            if self.limiter is not None:
                waiting = self.limiter.admit(principal)
                if waiting is not None:
                    await waiting
            if procedure.guard is Guard.ADMIN and not principal.is_admin:
                raise Forbidden(f"Forbidden: {method} needs the owner or admin role")
            # Fair shares (issue 20, point 8): an organisation within its share of the pool is
            # served before those beyond it; beyond it, once callers have queued for longer
            # than `shed_after`, its calls are refused at once rather than after the pool wait.
            # Keyed by the id's int: a UUID hashes in Python, three times a call.
            organisation = principal.organisation_id.int
            in_flight = self._in_flight.get(organisation, 0)
            within_share = in_flight < self.organisation_share
            if not within_share and self.db.pool.longest_wait() > self.shed_after:
                self.shed += 1
                raise ServiceUnavailable(
                    "Service unavailable: your organisation has too many calls in progress, "
                    "try again in a moment",
                    data={"retryAfter": 1},
                )
            self._in_flight[organisation] = in_flight + 1
        # One coroutine for the whole call: each await through another layer costs a frame
        # switch per resumption, on the path every call takes.
        try:
            validated = self._validate(procedure, params)
            read_only = procedure.kind is Kind.QUERY
            async with self.db.transaction(read_only=read_only, priority=within_share) as tx:
                ctx = Context(
                    request_id=request_id,
                    procedure=method,
                    principal=principal,
                    db=tx,
                    settings=self.settings,
                )
                result = self._checked(procedure, method, await procedure(ctx, validated))
                if procedure.kind is Kind.MUTATION and not ctx.audit.in_statement:
                    await write_audit(tx, ctx.audit_params(), and_commit=True)
        finally:
            if organisation is not None:
                left = self._in_flight[organisation] - 1
                if left:
                    self._in_flight[organisation] = left
                else:
                    del self._in_flight[organisation]
        if ctx.committed:
            await run_after_commit(ctx.committed, method)
        if isinstance(result, Encoded):
            return orjson.Fragment(result.json)
        return orjson.Fragment(procedure.result_adapter.dump_json(result, by_alias=True))

    def _checked(self, procedure: Procedure, method: str, result: Any) -> Any:
        """The handler's result, validated against its declared type (see server/encoded.py)."""
        try:
            if not isinstance(result, Encoded):
                return procedure.result_adapter.validate_python(result)
            if self.settings.verify_encoded_results:
                procedure.result_adapter.validate_json(result.json, strict=True)
            return result
        except pydantic.ValidationError:
            log.exception("%s returned a result that fails its own model", method)
            raise InternalError() from None

    @staticmethod
    def _validate(procedure: Procedure, params: Any) -> Any:
        if params is _MISSING:
            params = {}
        if not isinstance(params, dict):
            raise InvalidParams(
                "Invalid params: params must be an object of named parameters",
                issues=[{"path": "params", "message": "must be an object", "type": "model_type"}],
            )
        try:
            # Strict JSON-mode validation: "5" is not an int and 1 is not a bool, while strings
            # still become UUIDs, datetimes and enums as JSON has no such types.
            return procedure.params_model.model_validate_json(orjson.dumps(params), strict=True)
        except orjson.JSONEncodeError:
            raise _too_deep(params) from None  # JSON orjson just read is refused only for depth
        except pydantic.ValidationError as exc:
            # The JSON was written just above, so pydantic finds it invalid only for its depth.
            if any(item["type"] == "json_invalid" for item in exc.errors(include_url=False)):
                raise _too_deep(params) from None
            raise _invalid_params(exc) from None

    @staticmethod
    def _error(call_id: Any, error: RPCError, path: str | None, request_id: str) -> _Outcome:
        data = {
            "code": error.code,
            "httpStatus": error.http_status,
            "path": path,
            "requestId": request_id,
            **error.extra,
        }
        payload = {
            "jsonrpc": "2.0",
            "id": call_id,
            "error": {"code": error.rpc_code, "message": error.message, "data": data},
        }
        return _Outcome(payload, error.http_status, error.extra.get("retryAfter"), error.extra.get("policy"))


class _RandomIds:
    """32 random hex digits per id, as uuid4().hex gives, drawn from the OS 1,024 ids at a time:
    one getrandom call per request cost 2.7 us, an id from the batch 0.4 us."""

    __slots__ = ("_batch", "_next")
    _SIZE = 16 * 1024

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the batch: a forked child must not repeat its parent's ids."""
        self._batch, self._next = b"", self._SIZE

    def __call__(self) -> str:
        if self._next >= self._SIZE:
            self._batch, self._next = os.urandom(self._SIZE), 0
        start = self._next
        self._next = start + 16
        return self._batch[start : start + 16].hex()


_random_id = _RandomIds()
os.register_at_fork(after_in_child=_random_id.reset)


def new_request_id(header: str | None) -> str:
    """Keep a caller's request id when it is short and plain; otherwise make one."""
    if header and len(header) <= 64 and all(ch.isalnum() or ch in "-_." for ch in header):
        return header
    return _random_id()
