"""What every CRM adapter offers, and the OAuth2 client-credentials token cache two of them share.

An adapter turns one event into one HTTP write and hands back the response; the worker decides
what the status means (success, retry, auth failure, give up), so that rule lives in one place.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol, TypeVar
from uuid import UUID

import httpx
import orjson
from pydantic import AfterValidator, Field

from integrations.events import Payload
from server.models import WireModel

__all__ = [
    "Adapter",
    "AuthRejected",
    "Consent",
    "Delivery",
    "FetchedPage",
    "InboundEvent",
    "NotDeliverable",
    "PersonDraft",
    "RateLimited",
    "RoleRef",
    "SyncSettings",
    "pick_category",
    "retry_after_seconds",
    "server_date",
    "WebhookRefused",
    "TokenCache",
    "TransientFailure",
    "check_answer",
    "one_record",
    "webhook_object",
    "drafts_page",
    "page_records",
    "parse_time",
    "reaching",
    "text_of",
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


def one_record(name: str, response: httpx.Response) -> Any:
    """A read of one record by id: its JSON, or None when the CRM holds no such record (404);
    a 429 is RateLimited, a refusal or other failure as check_answer says."""
    if response.status_code == 404:
        return None
    if response.status_code == 429:
        raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), 300))
    check_answer(name, response)
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise TransientFailure(f"{name} sent a record that is not JSON", response.status_code) from None


def webhook_object(body: bytes, what: str) -> dict[str, Any]:
    """A webhook's body as a JSON object, else refused (400) as not `what`."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRefused(400, "the body is not JSON") from None
    if not isinstance(event, dict):
        raise WebhookRefused(400, f"the body is not {what}")
    return event


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


def retry_after_seconds(header: str | None, limit: float) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), at most `limit`; None when absent."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return min(float(header), limit)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), limit)


# Inbound: what a provider hands the sync engine ------------------------------------------------


@dataclass(frozen=True)
class PersonDraft:
    """One CRM person as the provider read it, before our validation: the apply path checks
    each field (integrations/inbound.py), so a field we refuse drops alone, not the person."""

    external_id: str
    modified: datetime | None  # the CRM's version time of the record (its own clock)
    etag: str | None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    postcode: str | None = None
    consent: str | None = None  # granted | denied | unknown, already mapped
    channels: dict[str, str] = field(default_factory=dict)  # email/sms/phone/post -> status
    consent_at: datetime | None = None  # when the CRM says consent changed, where it says
    # The record whose consent the CRM keeps apart from this one (an Alto contact's
    # preferences, shared by its people), read by the sync engine with `fetch_consent`.
    consent_ref: str | None = None
    archived: bool = False
    category: str | None = None  # derived from the CRM's roles, None when none applies
    category_rule: str | None = None  # which rule gave it, for the assignment's reason
    record: dict[str, Any] = field(default_factory=dict)  # the raw record, kept as crm_payload

    def __repr__(self) -> str:  # personal data never reaches a log line
        return f"PersonDraft(external_id={self.external_id!r})"


@dataclass(frozen=True)
class Consent:
    """Consent a CRM keeps apart from the person's record (`fetch_consent`), already mapped."""

    status: str  # granted | denied | unknown
    at: datetime | None  # when it was given or withdrawn, by the CRM's clock


@dataclass(frozen=True)
class RoleRef:
    """A CRM record that says something about people's roles (a Reapit tenancy, say), as kept in
    crm_external_refs between runs: ids and statuses only, never a person's data."""

    record_type: str  # the provider's stream name: applicants, tenancies, ...
    external_id: str
    contact_ids: list[str]  # the people it names
    roles: dict[str, Any]  # its role facts (statuses, modes), as the provider module reads them
    links: list[str] = field(default_factory=list)  # "landlords/L1": records whose people it concerns
    archived: bool = False
    deleted: bool = False  # the CRM says it is gone (a webhook's `new` is null)
    modified: datetime | None = None
    content_hash: bytes | None = None  # the whole record's, where the provider hashes it (a scan)

    @property
    def key(self) -> str:
        return f"{self.record_type}/{self.external_id}"


@dataclass(frozen=True)
class FetchedPage:
    drafts: list[PersonDraft]
    page_size: int
    bad_records: int = 0  # records too malformed to name a person (no id): counted, skipped
    # A role stream's page: its records' version times (the stream's cursor moves by them, not
    # by its people's) and the ids of the people they relate to, read by the engine next.
    stamps: list[datetime] | None = None
    related: list[str] = field(default_factory=list)
    server_time: datetime | None = None  # the CRM's clock when it answered, where it says
    refs: list[RoleRef] = field(default_factory=list)  # a role stream's records, kept between runs
    next_token: str | None = None  # token paging (Alto): the next page's, None on the last

    def times(self) -> list[datetime]:
        """The version times this page's cursor moves by."""
        if self.stamps is not None:
            return self.stamps
        return [d.modified for d in self.drafts if d.modified is not None]


@dataclass(frozen=True)
class InboundEvent:
    """A webhook delivery, verified and parsed: its identity, and what it says changed."""

    dedupe_key: str
    tenant_ref: str | None  # None: a test ping, routed nowhere
    topic: str
    entity_id: str | None
    event_time: datetime | None


class WebhookRefused(Exception):
    """A delivery we do not store: `status` 4xx (forged, malformed: never retried) or 503."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RateLimited(Exception):
    """The CRM said 429: wait `retry_after` seconds (None: it did not say) and try again."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


def server_date(response: httpx.Response) -> datetime | None:
    """The CRM's clock when it answered (its Date header): a walk's watermark is taken from it,
    not ours."""
    try:
        return email.utils.parsedate_to_datetime(response.headers.get("date", ""))
    except (TypeError, ValueError):
        return None


def parse_time(value: Any) -> datetime | None:
    """A CRM's ISO-8601 time (a trailing Z taken as UTC; no zone: UTC); None if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def text_of(value: Any) -> str | None:
    """A CRM's string, stripped; None when it is empty or not a string."""
    return value.strip() or None if isinstance(value, str) else None


def page_records(name: str, response: httpx.Response, key: str, path: str) -> list[Any]:
    """The list under `key` of a page's JSON body; a body that is not one (malformed JSON, an
    error page) is a TransientFailure naming the path, never quoting the body."""
    try:
        records = orjson.loads(response.content)[key]
        if not isinstance(records, list):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise TransientFailure(f"{name} sent a page that is not a list ({path})", 200) from None
    return records


def drafts_page(
    records: list[Any], to_draft: Callable[[dict[str, Any]], PersonDraft | None], **extra: Any
) -> FetchedPage:
    """A page of people: each record as a draft, a record that names no one counted as bad."""
    drafts, bad = [], 0
    for record in records:
        draft = to_draft(record) if isinstance(record, dict) else None
        if draft is None:
            bad += 1
        else:
            drafts.append(draft)
    return FetchedPage(drafts=drafts, page_size=len(records), bad_records=bad, **extra)


# The default precedence when a person's CRM roles give several categories: existing clients
# first, instructions (the agency's revenue) before purchases (research: crm-sync.md 3.2).
DEFAULT_PRECEDENCE: tuple[str, ...] = (
    "managed_landlord", "active_seller", "active_btl_investor", "active_property_investor",
    "active_buyer", "active_tenant", "seller", "landlord", "btl_investor", "property_investor",
    "buyer", "tenant_applicant",
)  # fmt: skip


def _categories(value: list[str]) -> list[str]:
    # The twelve categories, checked here rather than typed with procedures' Literal: the wire
    # API imports this package, not the other way round.
    unknown = [c for c in value if c not in DEFAULT_PRECEDENCE]
    if unknown:
        raise ValueError("holds a value that is not one of the twelve categories")
    return value


class SyncSettings(WireModel):
    """Inbound sync settings every provider's connection settings share (crm.updateConnection)."""

    # Seconds between incremental polls; webhooks carry changes in between where the CRM sends them.
    poll_interval_seconds: int = Field(default=3600, ge=60, le=86400)
    # Each run re-reads this much before its watermark: rows stamped earlier but made visible
    # later (same-second commits) are still read; the apply path skips what it already holds.
    lookback_seconds: int = Field(default=300, ge=0, le=86400)
    # A full re-read this often, since webhooks can be lost and polls skip nothing only in theory.
    reconcile_interval_hours: int = Field(default=168, ge=1, le=24 * 90)
    # Which category wins when a person's roles give several (agencies differ).
    category_precedence: Annotated[list[str], AfterValidator(_categories)] = Field(
        default_factory=lambda: list(DEFAULT_PRECEDENCE), min_length=1, max_length=12
    )


def pick_category(found: dict[str, str], precedence: list[str]) -> tuple[str | None, str | None]:
    """The category (and the rule that gave it) that comes first in `precedence` among `found`
    (category -> rule); a category the precedence leaves out comes last."""
    if not found:
        return None, None
    order = {category: index for index, category in enumerate(precedence)}
    category = min(found, key=lambda c: (order.get(c, len(order)), c))
    return category, found[category]
