"""Street (Open API, JSON:API): email_sent becomes an activity, every other event a note; people
are polled from `GET /people`.

Auth is a bearer token a company admin creates in Street (scope "open API"), held per agency.
`POST /activity` only knows `campaign_sent` from `email_marketing`, which fits a sent email and
nothing else, so the other events are notes on the person (hot alerts pinned). Street answers
201 with `{data: {id, ...}}`. Writes are limited to 100 a minute per token, reads to 600.

Inbound (third-party transcriptions of Street's OpenAPI, so the shapes are read defensively):
`filter[updated_from]`, `page[number]`/`page[size]` (at most 100), listed newest first with no
sort parameter documented, so the sync walks every page from `updated_from` and moves its
watermark only when the walk is complete (`paging = "walk"`). Sources: see README.

Webhooks (`person.*`, from Street's Svix-style portal): Street documents no signature, so each
connection holds a secret (a credential) and its settings say how deliveries carry it
(`check_webhook`); an event is applied by reading the person by id (`fetch_person`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import EmailSentPayload, describe
from integrations.providers.base import (
    Delivery,
    FetchedPage,
    InboundEvent,
    PersonDraft,
    RateLimited,
    SyncSettings,
    WebhookRefused,
    check_answer,
    drafts_page,
    one_record,
    page_records,
    parse_time,
    pick_category,
    reaching,
    retry_after_seconds,
    server_date,
    text_of,
    webhook_object,
)
from server.models import WireModel

__all__ = ["ConnectionSettings", "Credentials", "StreetAdapter"]

HINT_FIELD = "api_token"
JSON_API = "application/vnd.api+json"


class Credentials(WireModel):
    api_token: str = Field(min_length=8, max_length=4000)
    # What Street's webhook portal signs with (Svix: "whsec_<base64>") or sends in a custom
    # header, as the connection's settings say; None: this connection takes no webhooks.
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=400)


class ConnectionSettings(SyncSettings):
    author_id: str | None = Field(default=None, max_length=40)  # a Street user uuid
    # Polls stay the change feed; webhooks (person.*), where configured, only bring one sooner.
    poll_interval_seconds: int = Field(default=300, ge=60, le=86400)
    # Street says a landlord is Current or Previous, not whether the agency manages the let:
    # which category a current landlord takes is the agency's to say.
    current_landlord_category: Literal["managed_landlord", "landlord"] = "managed_landlord"
    # Trashed (soft-deleted) people: the transcription lists `trashed=with` as a filter but not
    # the attribute that marks a trashed person, so both are the connection's to correct.
    # trashed_filter: the query parameter asked with the value "with" (None: not asked);
    # trashed_attribute: a person whose attribute of this name is set (a time, or true) is
    # trashed, and their contact archived.
    trashed_filter: str | None = Field(default="filter[trashed]", max_length=60, pattern=r"^[a-z_\[\]]+$")
    trashed_attribute: str = Field(default="trashed_at", min_length=1, max_length=60, pattern=r"^[a-z_]+$")
    # Webhooks: Street documents no signature, so how a delivery is checked is the connection's
    # to say. "svix": the Standard Webhooks scheme its portal resembles (webhook-id,
    # webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256>"), refused outside the
    # replay window; "header": the secret sent verbatim in a custom header of this name.
    webhook_scheme: Literal["svix", "header"] = "svix"
    webhook_header: str = Field(default="x-street-webhook-secret", max_length=60, pattern=r"^[A-Za-z0-9-]+$")
    webhook_tolerance_seconds: int = Field(default=300, ge=30, le=3600)


CONSENT = {True: "granted", False: "denied"}  # null: not asked -> unknown
CHANNELS = {"email": "email", "text": "sms", "phone": "phone", "post": "post"}
# statuses{vendor, landlord, tenant}: Current / Previous / null (research crm-sync.md 3.2).
STATUS_CATEGORIES = {
    ("vendor", "Current"): "active_seller",
    ("vendor", "Previous"): "seller",
    ("landlord", "Previous"): "landlord",
    ("tenant", "Current"): "active_tenant",
}


def _primary(values: Any) -> str | None:
    """The primary entry's value of a list of {value, primary}, else the first."""
    if not isinstance(values, list):
        return None
    entries = [v for v in values if isinstance(v, dict) and text_of(v.get("value"))]
    entries.sort(key=lambda v: v.get("primary") is not True)
    return text_of(entries[0]["value"]) if entries else None


def to_draft(record: dict[str, Any], settings: ConnectionSettings) -> PersonDraft | None:
    """A Street person (JSON:API resource) as a PersonDraft; None when it names no one."""
    external_id = text_of(record.get("id"))
    attributes = record.get("attributes")
    if external_id is None or not isinstance(attributes, dict):
        return None
    address = attributes.get("address") if isinstance(attributes.get("address"), dict) else {}
    preferences = attributes.get("contact_preferences")
    channels = (
        {
            ours: ("granted" if preferences[theirs] else "denied")
            for theirs, ours in CHANNELS.items()
            if isinstance(preferences.get(theirs), bool)
        }
        if isinstance(preferences, dict)
        else {}
    )
    statuses = attributes.get("statuses") if isinstance(attributes.get("statuses"), dict) else {}
    found: dict[str, str] = {}
    for role, status in (statuses or {}).items():
        if role == "landlord" and status == "Current":
            found.setdefault(settings.current_landlord_category, "statuses:landlord:Current")
        elif (role, status) in STATUS_CATEGORIES:
            found.setdefault(STATUS_CATEGORIES[(role, status)], f"statuses:{role}:{status}")
    category, rule = pick_category(found, settings.category_precedence)
    consent = attributes.get("marketing_consent")
    return PersonDraft(
        external_id=external_id,
        modified=parse_time(attributes.get("updated_at")) or parse_time(attributes.get("created_at")),
        etag=None,
        first_name=text_of(attributes.get("first_name")),
        last_name=text_of(attributes.get("last_name")),
        email=_primary(attributes.get("email_addresses")),
        phone=_primary(attributes.get("telephone_numbers")),
        postcode=text_of(address.get("postcode")) if isinstance(address, dict) else None,
        consent=CONSENT.get(consent) if isinstance(consent, bool) else "unknown",
        channels=channels,
        archived=attributes.get(settings.trashed_attribute) not in (None, False, ""),
        category=category,
        category_rule=rule,
        record=record,
    )


class StreetAdapter:
    provider_id = "street"
    name = "Street"

    def __init__(self, config: CrmConfig) -> None:
        self._config = config

    def _request(self, delivery: Delivery) -> tuple[str, dict[str, Any]]:
        settings = ConnectionSettings.model_validate(delivery.settings)
        title, text = describe(delivery.payload)
        person = {"person": {"data": {"type": "person", "id": delivery.external_contact_id}}}
        if isinstance(delivery.payload, EmailSentPayload):
            attributes: dict[str, Any] = {
                "activity_type": "campaign_sent",
                "source": "email_marketing",
                "title": delivery.payload.subject,
                "description": text,
            }
            return "/activity", {
                "data": {"type": "activity", "attributes": attributes, "relationships": person}
            }
        attributes = {
            "body": text,
            "pinned": delivery.event_type == "hot_alert_fired",
            "author": settings.author_id,
        }
        return "/notes", {"data": {"type": "note", "attributes": attributes, "relationships": person}}

    @staticmethod
    def _headers(credentials: Credentials) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {credentials.api_token}",
            "Content-Type": JSON_API,
            "Accept": JSON_API,
        }

    def setup_problem(self) -> str | None:
        return None  # all Street needs is the agency's own token

    async def check(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any]
    ) -> str:
        headers = self._headers(Credentials.model_validate(credentials))
        url = f"{self._config.street_api_url}/people"
        check_answer(self.name, await http.get(url, params={"page[size]": 1}, headers=headers))
        return "the API token (one person read)"

    async def deliver(self, http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        credentials = Credentials.model_validate(delivery.credentials)
        path, body = self._request(delivery)
        headers = self._headers(credentials)
        return await http.post(f"{self._config.street_api_url}{path}", json=body, headers=headers)

    # Inbound ---------------------------------------------------------------------------------

    settings_model = ConnectionSettings
    streams = ("contacts",)
    paging = "walk"  # newest first, no sort: read every page, then move the watermark

    async def fetch_people(
        self,
        http: httpx.AsyncClient,
        credentials: dict[str, Any],
        settings: dict[str, Any],
        *,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
        page_number: int = 1,
        page_size: int = 100,
    ) -> FetchedPage:
        """One page of people updated on or after `modified_from`, as Street lists them."""
        headers = self._headers(Credentials.model_validate(credentials))
        parsed = ConnectionSettings.model_validate(settings)
        params: dict[str, Any] = {"page[number]": page_number, "page[size]": min(page_size, 100)}
        if parsed.trashed_filter:
            params[parsed.trashed_filter] = "with"
        if modified_from is not None:
            params["filter[updated_from]"] = modified_from.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        url = f"{self._config.street_api_url}/people"
        call = http.get(url, params=params, headers=headers, timeout=self._config.crm_timeout)
        response = await reaching(self.name, call)
        if response.status_code == 429:
            raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), 300))
        check_answer(self.name, response)
        records = page_records(self.name, response, "data", "/people")
        return drafts_page(records, partial(to_draft, settings=parsed), server_time=server_date(response))

    def external_id(self, response: httpx.Response) -> str | None:
        try:
            data = response.json().get("data") or {}
        except (ValueError, AttributeError):
            return None
        identifier = data.get("id") if isinstance(data, dict) else None
        return str(identifier)[:200] if identifier else None


    # Webhooks ---------------------------------------------------------------------------------

    contact_topics = ("person.",)

    def check_webhook(
        self,
        headers: dict[str, str],
        body: bytes,
        credentials: dict[str, Any],
        settings: dict[str, Any],
        now: float | None = None,
    ) -> None:
        """The delivery checked as the connection says (see ConnectionSettings); raises
        WebhookRefused, whose reason never holds the secret or what was sent."""
        secret = Credentials.model_validate(credentials).webhook_secret
        parsed = ConnectionSettings.model_validate(settings)
        if not secret:
            raise WebhookRefused(401, "this connection holds no webhook secret")
        if parsed.webhook_scheme == "header":
            given = headers.get(parsed.webhook_header.lower(), "")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                raise WebhookRefused(401, f"missing or wrong {parsed.webhook_header}")
            return
        message_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if not (message_id and stamp.isdigit() and signatures):
            raise WebhookRefused(401, "missing webhook-id, webhook-timestamp or webhook-signature")
        if abs((time.time() if now is None else now) - int(stamp)) > parsed.webhook_tolerance_seconds:
            raise WebhookRefused(401, "webhook-timestamp is outside the replay window")
        expected = svix_signature(secret, message_id, stamp, body).encode()
        offered = [part.partition(",") for part in signatures.split()]
        if not any(v == "v1" and hmac.compare_digest(s.encode(), expected) for v, _, s in offered):
            raise WebhookRefused(401, "no webhook-signature matches")

    def parse_webhook(self, headers: dict[str, str], body: bytes, tenant_ref: str) -> InboundEvent:
        """A person.* event's identity: the delivery's webhook-id (stable across Street's retries),
        else the event's own id; the person's id from `data` (its id, or person_id)."""
        event = webhook_object(body, "an event")
        topic = event.get("type") or event.get("event")
        if not isinstance(topic, str) or not topic:
            raise WebhookRefused(400, "the event names no type")
        data = event["data"] if isinstance(event.get("data"), dict) else {}
        entity = text_of(data.get("person_id")) or text_of(data.get("id"))
        key = headers.get("webhook-id") or text_of(event.get("id"))
        if not key:
            key = "sha256:" + hashlib.sha256(body).hexdigest()
        when = parse_time(event.get("timestamp") or event.get("created_at"))
        return InboundEvent(
            dedupe_key=f"{tenant_ref}:{key}"[:400], tenant_ref=tenant_ref[:100], topic=topic[:100],
            entity_id=entity[:200] if entity else None, event_time=when,
        )  # fmt: skip

    def draft_from_webhook(self, body: dict[str, Any], settings: dict[str, Any]) -> PersonDraft | None:
        """Street's payloads are undocumented: the person is always read again by id, so what
        applies is what Street holds now (a preferences event's consent included)."""
        return None

    async def fetch_person(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any], external_id: str
    ) -> PersonDraft | None:
        """The person as Street holds them now (trashed included); None when Street has none."""
        headers = self._headers(Credentials.model_validate(credentials))
        parsed = ConnectionSettings.model_validate(settings)
        params = {parsed.trashed_filter: "with"} if parsed.trashed_filter else {}
        url = f"{self._config.street_api_url}/people/{quote(external_id, safe='')}"
        call = http.get(url, params=params, headers=headers, timeout=self._config.crm_timeout)
        found = one_record(self.name, await reaching(self.name, call))
        record = found.get("data") if isinstance(found, dict) else None
        return to_draft(record, parsed) if isinstance(record, dict) else None


def svix_signature(secret: str, message_id: str, stamp: str, body: bytes) -> str:
    """Standard Webhooks' v1 signature: base64 HMAC-SHA256 of "id.timestamp.body", keyed by the
    secret's base64 after `whsec_` (a secret not in that form is used as its bytes)."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = secret.encode()
    signed = f"{message_id}.{stamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
