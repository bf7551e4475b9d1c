"""What every CRM adapter offers, and the OAuth2 client-credentials token cache two of them share.

An adapter turns one event into one HTTP write and hands back the response; the worker decides
what the status means (success, retry, auth failure, give up), so that rule lives in one place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from uuid import UUID

import httpx

from integrations.events import Payload

__all__ = [
    "Adapter",
    "AuthRejected",
    "Delivery",
    "NotDeliverable",
    "TokenCache",
    "TransientFailure",
    "check_answer",
    "reaching",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Delivery:
    event_id: UUID
    event_type: str
    payload: Payload
    external_contact_id: str  # the contact's id in this CRM
    credentials: dict[str, Any]
    settings: dict[str, Any]

    def __repr__(self) -> str:  # credentials and payload never reach a log line
        return f"Delivery(event_id={self.event_id}, event_type={self.event_type})"


class AuthRejected(Exception):
    """The CRM (or its token endpoint) refused our credentials; the message is safe to store."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientFailure(Exception):
    """A failure worth retrying that is not the write's own response (e.g. the token endpoint)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class NotDeliverable(Exception):
    """This event can never be delivered to this CRM (no public write API, say)."""


class Adapter(Protocol):
    provider_id: str
    name: str

    async def deliver(self, http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        """Send the event; returns the CRM's response to the write."""
        ...

    def external_id(self, response: httpx.Response) -> str | None:
        """The CRM's id for what was written, when its response names one."""
        ...

    def setup_problem(self) -> str | None:
        """What the server's own configuration lacks for this CRM to work; None if nothing."""
        ...

    async def check(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any]
    ) -> str:
        """Try the credentials with a call that changes nothing in the CRM; says what was tried.

        Raises AuthRejected (refused), TransientFailure (no usable answer) or NotDeliverable
        (nothing this CRM offers can be tried).
        """
        ...


async def reaching(name: str, call: Awaitable[T]) -> T:
    """`call`, with a CRM that cannot be reached or answers too late as a TransientFailure."""
    try:
        return await call
    except httpx.TimeoutException:
        raise TransientFailure(f"{name} did not answer in time") from None
    except httpx.TransportError as exc:
        raise TransientFailure(f"{name} could not be reached ({type(exc).__name__})") from None


def check_answer(name: str, response: httpx.Response) -> None:
    """A check's answer: 2xx passes; anything else is refused (401, 403) or inconclusive."""
    code = response.status_code
    if code in (401, 403):
        raise AuthRejected(f"{name} refused the credentials (HTTP {code})", code)
    if not 200 <= code < 300:
        raise TransientFailure(f"{name} answered HTTP {code}", code)


class WriteUnsupported:
    """An adapter for a CRM whose public API takes no writes: every event is refused, saying why."""

    provider_id: str
    name: str
    unsupported: str

    def __init__(self, config: object) -> None:
        self._config = config

    async def deliver(self, http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        raise NotDeliverable(self.unsupported)

    def external_id(self, response: httpx.Response) -> str | None:
        return None

    def setup_problem(self) -> str | None:
        return None

    async def check(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any]
    ) -> str:
        raise NotDeliverable(f"{self.name} takes no writeback, so its credentials are not tried")


@dataclass
class _Token:
    value: str
    expires_at: float


class TokenCache:
    """OAuth2 client-credentials tokens, one per (token URL, client id), reused until near expiry.

    One token serves every agency (the agency is chosen by a header), so a worker fetches one per
    hour rather than one per event; a lock stops a burst of events fetching it many times.
    """

    REFRESH_MARGIN = 60.0

    def __init__(self, provider_name: str) -> None:
        self._name = provider_name
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._lock = asyncio.Lock()

    def forget(self, token_url: str, client_id: str) -> None:
        self._tokens.pop((token_url, client_id), None)

    def missing(self, client_id: str, client_secret: str, env_prefix: str) -> str | None:
        """Why no token can be had from this configuration; None when it has the credentials."""
        if client_id and client_secret:
            return None
        return (
            f"the platform's {self._name} client credentials are not configured on the server "
            f"({env_prefix}_CLIENT_ID and {env_prefix}_CLIENT_SECRET): "
            f"nothing reaches {self._name} until they are"
        )

    async def get(self, http: httpx.AsyncClient, token_url: str, client_id: str, client_secret: str) -> str:
        if not client_id or not client_secret:
            raise AuthRejected(f"the platform's {self._name} client credentials are not configured")
        key = (token_url, client_id)
        async with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - self.REFRESH_MARGIN > time.monotonic():
                return cached.value
            response = await http.post(
                token_url,
                data={"grant_type": "client_credentials", "client_id": client_id},
                auth=(client_id, client_secret),
                headers={"Accept": "application/json"},
            )
            if response.status_code in (400, 401, 403):
                raise AuthRejected(
                    f"{self._name} refused the platform's client credentials "
                    f"(HTTP {response.status_code} from its token endpoint)",
                    response.status_code,
                )
            if response.status_code != 200:
                raise TransientFailure(
                    f"{self._name} token endpoint answered HTTP {response.status_code}",
                    response.status_code,
                )
            try:
                body = response.json()
                value = str(body["access_token"])
                lifetime = float(body.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError):
                raise TransientFailure(
                    f"{self._name} token endpoint sent an unreadable answer", 200
                ) from None
            self._tokens[key] = _Token(value, time.monotonic() + lifetime)
            return value
