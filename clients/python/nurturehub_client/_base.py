"""What every client has besides its procedures: configuration, raw calls, closing."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ._transport import AsyncTransport, Call, Kind, SyncTransport, resolve_config

__all__ = ["AsyncClientBase", "ClientBase"]

C = TypeVar("C", bound="ClientBase")
A = TypeVar("A", bound="AsyncClientBase")

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 0.5
DEFAULT_RATE_LIMIT_WAIT = 60.0


class ClientBase:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT,
        http_client: httpx.Client | None = None,
    ) -> None:
        """Connect to `base_url` (else NURTUREHUB_URL) with `token` (else NURTUREHUB_TOKEN).

        `timeout` is in seconds per attempt. A query whose connection fails is tried again up
        to `retries` times, waiting about `backoff` seconds, doubling each time; a query refused
        by the server's rate limit (TooManyRequests) is sent again after the Retry-After it
        names, while the waits add up to at most `rate_limit_wait` seconds. Mutations are never
        repeated. Pass `http_client` to bring your own httpx.Client (it stays open).
        """
        config = resolve_config(
            base_url, token,
            timeout=timeout, retries=retries, backoff=backoff, rate_limit_wait=rate_limit_wait,
        )
        self._transport = SyncTransport(config, http_client)
        self._bind(self._transport)

    def _bind(self, transport: SyncTransport) -> None:
        """Attach the namespaces (the generated subclass does)."""

    @property
    def endpoint(self) -> str:
        return self._transport.config.endpoint

    def call(self, method: str, params: Mapping[str, Any] | None = None, *, kind: Kind = "mutation") -> Any:
        """Call a procedure by its wire name and get its raw JSON result.

        For procedures newer than this client. Not retried unless `kind="query"`.
        """
        return self._transport.call(Call(method, params or {}, None, kind))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self: C) -> C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClientBase:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """As ClientBase, for asyncio; pass an httpx.AsyncClient as `http_client`."""
        config = resolve_config(
            base_url, token,
            timeout=timeout, retries=retries, backoff=backoff, rate_limit_wait=rate_limit_wait,
        )
        self._transport = AsyncTransport(config, http_client)
        self._bind(self._transport)

    def _bind(self, transport: AsyncTransport) -> None:
        """Attach the namespaces (the generated subclass does)."""

    @property
    def endpoint(self) -> str:
        return self._transport.config.endpoint

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, kind: Kind = "mutation"
    ) -> Any:
        """As ClientBase.call."""
        return await self._transport.call(Call(method, params or {}, None, kind))

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
