"""JSON-RPC over HTTP: configuration, one call or one batch per POST, retries for queries.

Only queries are retried: when the connection failed (refused, reset, closed before the answer),
and when the server's rate limit refused them (HTTP 429), after the Retry-After it names, for at
most `rate_limit_wait` seconds in all. A query has no effect to repeat, while a mutation that
may have run must not run twice (and a refused one is the caller's to pace). A read timeout is
not retried either: the server may still be working on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import httpx
import pydantic

from ._exceptions import (
    ConfigurationError,
    ConnectionFailed,
    NurtureHubError,
    RPCError,
    Timeout,
    UnexpectedResponse,
)

__all__ = [
    "AsyncTransport",
    "Call",
    "Config",
    "Kind",
    "Outcome",
    "Procedure",
    "SyncTransport",
    "resolve_config",
]

T = TypeVar("T")
Kind = Literal["query", "mutation"]

URL_ENV = "NURTUREHUB_URL"
TOKEN_ENV = "NURTUREHUB_TOKEN"
USER_AGENT = "nurturehub-client (python-httpx)"

# Failures where the request surely did not complete; anything else is not retried.
_RETRYABLE = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Config:
    endpoint: str  # the /rpc URL
    token: str | None
    timeout: float
    retries: int  # extra attempts for a query whose connection failed
    backoff: float  # seconds before the first retry; doubles each time, with jitter
    max_backoff: float = 8.0
    rate_limit_wait: float = 60.0  # most seconds a query waits in all for rate limits; 0: never

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so many scripts do not retry in step."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def rate_limit_delay(self, response: httpx.Response, waited: float) -> float | None:
        """Seconds to wait before sending a query refused by a rate limit again, or None: not
        refused for that, or the wait would pass `rate_limit_wait`. As Retry-After says, plus up
        to a second, so scripts refused together do not all come back in the same instant."""
        if response.status_code != 429:
            return None
        raw = response.headers.get("retry-after", "")
        if not raw.isdigit():
            return None
        wait = int(raw) + random.uniform(0, 1.0)
        return wait if waited + wait <= self.rate_limit_wait else None


def resolve_config(
    base_url: str | None,
    token: str | None,
    *,
    timeout: float,
    retries: int,
    backoff: float,
    rate_limit_wait: float = 60.0,
) -> Config:
    """Arguments win over NURTUREHUB_URL and NURTUREHUB_TOKEN."""
    url = base_url or os.environ.get(URL_ENV, "").strip()
    if not url:
        raise ConfigurationError(
            f"no server URL: pass base_url=... or set {URL_ENV} (e.g. http://127.0.0.1:8000)"
        )
    if token is None:
        token = os.environ.get(TOKEN_ENV, "").strip() or None
    if timeout <= 0 or retries < 0 or backoff < 0 or rate_limit_wait < 0:
        raise ConfigurationError(
            "timeout must be positive; retries, backoff and rate_limit_wait not negative"
        )
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/rpc"):
        endpoint += "/rpc"
    return Config(endpoint, token, timeout, retries, backoff, rate_limit_wait=rate_limit_wait)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One procedure call: its wire name, its params and how to read its result."""

    method: str
    params: pydantic.BaseModel | Mapping[str, Any]
    result: pydantic.TypeAdapter[T] | None  # None: the raw JSON result
    kind: Kind

    def request(self, id_: int) -> dict[str, Any]:
        if isinstance(self.params, pydantic.BaseModel):
            # Only the arguments given go on the wire, so the server applies its own defaults.
            params = self.params.model_dump(mode="json", by_alias=True, exclude_unset=True)
        else:
            params = dict(self.params)
        return {"jsonrpc": "2.0", "id": id_, "method": self.method, "params": params}

    def read(self, raw: Any) -> T:
        if self.result is None:
            return raw  # type: ignore[no-any-return]
        try:
            return self.result.validate_python(raw)
        except pydantic.ValidationError as exc:
            raise UnexpectedResponse(
                f"the result of {self.method} does not match this client's model; "
                "the client may be older than the server (regenerate or upgrade it)"
            ) from exc


@dataclass(frozen=True)
class Procedure(Generic[T]):
    """A procedure as the generated client knows it: wire name, kind and result type."""

    method: str
    kind: Kind
    result: pydantic.TypeAdapter[T]

    def __call__(self, params: pydantic.BaseModel) -> Call[T]:
        return Call(self.method, params, self.result, self.kind)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One call's result in a batch, or its error."""

    value: T | None = None
    error: NurtureHubError | None = None


def _body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(
            f"HTTP {response.status_code} from {response.request.url}: not a JSON-RPC response"
        ) from None


def _request_id(response: httpx.Response, fallback: str) -> str:
    return response.headers.get("x-request-id") or fallback


def _read_single(call: Call[T], response: httpx.Response, request_id: str) -> T:
    body = _decode(response)
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"expected one JSON-RPC response to {call.method}")
    if "error" in body and isinstance(body["error"], Mapping):
        raise RPCError.from_wire(body["error"], request_id=_request_id(response, request_id))
    if "result" not in body:
        raise UnexpectedResponse(f"the response to {call.method} has neither result nor error")
    return call.read(body["result"])


def _read_batch(calls: Sequence[Call[Any]], response: httpx.Response, request_id: str) -> list[Outcome[Any]]:
    body = _decode(response)
    rid = _request_id(response, request_id)
    if isinstance(body, dict) and isinstance(body.get("error"), Mapping):
        raise RPCError.from_wire(body["error"], request_id=rid)  # the batch as a whole refused
    if not isinstance(body, list):
        raise UnexpectedResponse("expected a JSON-RPC batch response (a list)")
    by_id = {item.get("id"): item for item in body if isinstance(item, dict)}
    outcomes: list[Outcome[Any]] = []
    for index, call in enumerate(calls, start=1):
        item = by_id.get(index)
        if item is None:
            missing = UnexpectedResponse(f"the batch response has no answer for {call.method}")
            outcomes.append(Outcome(error=missing))
        elif isinstance(item.get("error"), Mapping):
            outcomes.append(Outcome(error=RPCError.from_wire(item["error"], request_id=rid)))
        else:
            try:
                outcomes.append(Outcome(value=call.read(item.get("result"))))
            except UnexpectedResponse as exc:
                outcomes.append(Outcome(error=exc))
    return outcomes


def _headers(config: Config, request_id: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        # One id per call, kept across retries, so the server's log ties the attempts together.
        "X-Request-Id": request_id,
    }
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    return headers


def _failure(exc: httpx.HTTPError, endpoint: str) -> NurtureHubError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return Timeout(f"no answer from {endpoint} in time ({type(exc).__name__})")
    return ConnectionFailed(f"cannot reach {endpoint} ({type(exc).__name__})")


class SyncTransport:
    def __init__(self, config: Config, http: httpx.Client | None = None) -> None:
        self.config = config
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=config.timeout)

    def call(self, call: Call[T]) -> T:
        request_id = uuid.uuid4().hex
        response = self._post(call.request(1), retry=call.kind == "query", request_id=request_id)
        return _read_single(call, response, request_id)

    def batch(self, calls: Sequence[Call[Any]]) -> list[Outcome[Any]]:
        request_id = uuid.uuid4().hex
        payload = [call.request(index) for index, call in enumerate(calls, start=1)]
        retry = all(call.kind == "query" for call in calls)
        return _read_batch(calls, self._post(payload, retry=retry, request_id=request_id), request_id)

    def _post(self, payload: Any, *, retry: bool, request_id: str) -> httpx.Response:
        body, headers = _body(payload), _headers(self.config, request_id)
        attempts = 1 + (self.config.retries if retry else 0)
        attempt, waited = 0, 0.0
        while True:
            try:
                response = self._http.post(
                    self.config.endpoint, content=body, headers=headers, timeout=self.config.timeout
                )
            except _RETRYABLE as exc:
                attempt += 1
                if attempt == attempts:
                    raise _failure(exc, self.config.endpoint) from exc
                time.sleep(self.config.delay(attempt - 1))
                continue
            except httpx.HTTPError as exc:
                raise _failure(exc, self.config.endpoint) from exc
            wait = self.config.rate_limit_delay(response, waited) if retry else None
            if wait is None:
                return response
            time.sleep(wait)
            waited += wait

    def close(self) -> None:
        if self._owns_http:
            self._http.close()


class AsyncTransport:
    """The async twin of SyncTransport; keep the two in step."""

    def __init__(self, config: Config, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=config.timeout)

    async def call(self, call: Call[T]) -> T:
        request_id = uuid.uuid4().hex
        response = await self._post(call.request(1), retry=call.kind == "query", request_id=request_id)
        return _read_single(call, response, request_id)

    async def batch(self, calls: Sequence[Call[Any]]) -> list[Outcome[Any]]:
        request_id = uuid.uuid4().hex
        payload = [call.request(index) for index, call in enumerate(calls, start=1)]
        retry = all(call.kind == "query" for call in calls)
        response = await self._post(payload, retry=retry, request_id=request_id)
        return _read_batch(calls, response, request_id)

    async def _post(self, payload: Any, *, retry: bool, request_id: str) -> httpx.Response:
        body, headers = _body(payload), _headers(self.config, request_id)
        attempts = 1 + (self.config.retries if retry else 0)
        attempt, waited = 0, 0.0
        while True:
            try:
                response = await self._http.post(
                    self.config.endpoint, content=body, headers=headers, timeout=self.config.timeout
                )
            except _RETRYABLE as exc:
                attempt += 1
                if attempt == attempts:
                    raise _failure(exc, self.config.endpoint) from exc
                await asyncio.sleep(self.config.delay(attempt - 1))
                continue
            except httpx.HTTPError as exc:
                raise _failure(exc, self.config.endpoint) from exc
            wait = self.config.rate_limit_delay(response, waited) if retry else None
            if wait is None:
                return response
            await asyncio.sleep(wait)
            waited += wait

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
