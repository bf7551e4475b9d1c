"""Alto (Zoopla): everything about it. Writeback: each event becomes a file note on the contact
(POST /file-notes). Inbound: webhooks (thin CloudEvents, checked by the shared secret Alto sends
in `x-signature`: third-party transcriptions of Alto's docs, so the secret is configuration,
NURTUREHUB_ALTO_WEBHOOK_SECRET, and nothing else is assumed) and polls of the contacts list.

The poll's details are transcribed three ways (casings differ) and not confirmed, so each is a
connection setting: the list's path, its modified-from, page-token and page-size parameters, the
key of its records and of the next page's token, the modified field. A contact holds several
people (joint clients): each person is one NurtureHub contact, "{contactId}:{personId}".
Consent is the contact's marketing preferences, a read of their own (`fetch_consent`), made by
the sync only for a contact new or changed since it was applied; its names are settings too.

Auth is the platform's OAuth2 client credentials; the agency is chosen by the `AgencyRef` header
(a GUID Alto issues per agency), which is what a connection holds. Alto answers 201 with the new
note's id. Sources: see README, CRM providers.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import describe
from integrations.providers.base import (
    Consent,
    Delivery,
    FetchedPage,
    InboundEvent,
    PersonDraft,
    RateLimited,
    SyncSettings,
    TokenCache,
    WebhookRefused,
    check_answer,
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

__all__ = ["AltoAdapter", "ConnectionSettings", "Credentials"]

HINT_FIELD = "agency_ref"
_EMAIL_EVENTS = ("email_sent", "email_opened", "email_clicked")


class Credentials(WireModel):
    agency_ref: str = Field(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )


_NAME = r"^[A-Za-z0-9_.-]+$"


class ConnectionSettings(SyncSettings):
    negotiator_id: str | None = Field(default=None, max_length=40)
    # Inbound paging and listing (unconfirmed: see the module's docstring).
    list_path: str = Field(default="/contacts/all", max_length=200, pattern=r"^/[A-Za-z0-9_/-]*$")
    modified_from_param: str = Field(default="modified-from", max_length=60, pattern=_NAME)
    page_token_param: str = Field(default="next-token", max_length=60, pattern=_NAME)
    page_size_param: str = Field(default="max-results", max_length=60, pattern=_NAME)
    page_size: int = Field(default=250, ge=1, le=250)
    list_key: str = Field(default="items", max_length=60)
    next_token_key: str = Field(default="nextToken", max_length=60)
    modified_field: str = Field(default="modified", max_length=60)
    # One contact read by id, for a webhook (thin: it says what changed, not how); "{id}" is
    # replaced by the contact's id. Unconfirmed, like the list's path.
    contact_path: str = Field(
        default="/contacts/{id}", max_length=200, pattern=r"^/[A-Za-z0-9_/-]*\{id\}[A-Za-z0-9_/-]*$"
    )
    # The contact's marketing preferences (research crm-sync.md 3.3): a list of preferences, one
    # per type; the `preference_type` one's status is the contact's consent, its time when it
    # was given or withdrawn. Unconfirmed names; preferences_key None: the body is the list.
    preferences_path: str = Field(
        default="/contacts/{id}/preferences", max_length=200,
        pattern=r"^/[A-Za-z0-9_/-]*\{id\}[A-Za-z0-9_/-]*$",
    )  # fmt: skip
    preferences_key: str | None = Field(default=None, max_length=60)
    preference_type: str = Field(default="GeneralMarketing", max_length=60)
    preference_type_field: str = Field(default="type", max_length=60)
    preference_status_field: str = Field(default="optInStatus", max_length=60)
    preference_time_field: str = Field(default="dateActioned", max_length=60)
    # Alto says a person is a Landlord (persona), not whether the agency manages the let.
    landlord_category: Literal["managed_landlord", "landlord"] = "landlord"
    applicant_category: Literal["buyer", "tenant_applicant"] = "buyer"


def _emails(person: dict[str, Any], key: str) -> str | None:
    """The first of a person's emails or phones: strings, or objects with an address/number."""
    values = person.get(key)
    for value in values if isinstance(values, list) else []:
        if isinstance(value, dict):
            value = value.get("address") or value.get("number") or value.get("value")
        if text_of(value):
            return text_of(value)
    return None


def _categories(contact: dict[str, Any], settings: ConnectionSettings) -> tuple[str | None, str | None]:
    """research crm-sync.md 3.2 (Alto column): personas and the potential flags."""
    kind = contact.get("contactType") if isinstance(contact.get("contactType"), dict) else {}
    personas = {str(p) for p in (kind or {}).get("persona") or [] if isinstance(p, str)}
    client = (kind or {}).get("category") == "Client"
    found: dict[str, str] = {}
    if "Vendor" in personas:
        found["active_seller" if client else "seller"] = "persona:Vendor"
    if "Landlord" in personas:
        found[settings.landlord_category] = "persona:Landlord"
    if "Tenant" in personas:
        found["active_tenant"] = "persona:Tenant"
    if "Applicant" in personas:
        found[settings.applicant_category] = "persona:Applicant"
    if contact.get("potentialVendor") is True:
        found.setdefault("seller", "potentialVendor")
    if contact.get("potentialLandlord") is True:
        found.setdefault("landlord", "potentialLandlord")
    return pick_category(found, settings.category_precedence)


def to_drafts(contact: dict[str, Any], settings: ConnectionSettings) -> list[PersonDraft] | None:
    """An Alto contact's people, one draft each; None when the contact names no id."""
    contact_id = contact.get("id")
    if not isinstance(contact_id, int | str) or not str(contact_id).strip():
        return None
    people = contact.get("people") if isinstance(contact.get("people"), list) else []
    category, rule = _categories(contact, settings)
    archived = contact.get("archived") is True or contact.get("isActive") is False
    modified = parse_time(contact.get(settings.modified_field))
    drafts = []
    for person in people or []:
        if not isinstance(person, dict) or not isinstance(person.get("id"), int | str):
            continue
        drafts.append(
            PersonDraft(
                external_id=f"{contact_id}:{person['id']}"[:200],
                modified=modified,
                etag=None,
                first_name=text_of(person.get("forename")) or text_of(person.get("firstName")),
                last_name=text_of(person.get("surname")) or text_of(person.get("lastName")),
                email=_emails(person, "emails"),
                phone=_emails(person, "phones"),
                postcode=text_of((contact.get("address") or {}).get("postcode"))
                if isinstance(contact.get("address"), dict)
                else None,
                consent="unknown",  # until its preferences are read (fetch_consent)
                consent_ref=str(contact_id),
                archived=archived,
                category=category,
                category_rule=rule,
                record=contact,
            )
        )
    return drafts


# Alto's opt-in statuses (research crm-sync.md 3.3): "GrantedOrUnknown" is not a grant, since
# never granted from not asked; anything else Alto may send is unknown too.
_OPT_IN = {"Granted": "granted", "Denied": "denied"}


def to_consent(body: Any, settings: ConnectionSettings) -> Consent:
    """The contact's consent from its preferences: the `preference_type` one's status mapped,
    its time the status's; unknown when there is no such preference."""
    key = settings.preferences_key
    found = body.get(key) if key and isinstance(body, dict) else body
    for preference in found if isinstance(found, list) else []:
        if not isinstance(preference, dict):
            continue
        if preference.get(settings.preference_type_field) == settings.preference_type:
            status = _OPT_IN.get(str(preference.get(settings.preference_status_field)), "unknown")
            return Consent(status, parse_time(preference.get(settings.preference_time_field)))
    return Consent("unknown", None)


class AltoAdapter:
    provider_id = "alto"
    name = "Alto"

    def __init__(self, config: CrmConfig) -> None:
        self._config = config
        self._tokens = TokenCache(self.name)

    def setup_problem(self) -> str | None:
        c = self._config
        return self._tokens.missing(c.alto_client_id, c.alto_client_secret, "NURTUREHUB_ALTO")

    async def check(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any]
    ) -> str:
        # Alto documents no read that would prove an AgencyRef without touching its data, so
        # only the platform's token is tried; the first delivery shows whether the AgencyRef works.
        Credentials.model_validate(credentials)
        c = self._config
        await self._tokens.get(http, c.alto_token_url, c.alto_client_id, c.alto_client_secret)
        return "the platform's client credentials (the AgencyRef is first tried by a delivery)"

    async def deliver(self, http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        settings = ConnectionSettings.model_validate(delivery.settings)
        credentials = Credentials.model_validate(delivery.credentials)
        title, text = describe(delivery.payload)
        contact = delivery.external_contact_id
        body: dict[str, Any] = {
            "notes": text,
            "title": title,
            # Alto's ids are integers; keep anything else as the CRM gave it.
            "contactIds": [int(contact) if contact.isdigit() else contact],
            "fileNoteType": "EMail" if delivery.event_type in _EMAIL_EVENTS else "FileNote",
            # Engagement is not the agent contacting the person.
            "updateLastContactedDate": False,
        }
        if settings.negotiator_id:
            body["negotiatorId"] = settings.negotiator_id
        return await self._as_agency(http, credentials, "POST", "/file-notes", json=body)

    async def _as_agency(
        self, http: httpx.AsyncClient, agency: Credentials, method: str, path: str, **request: Any
    ) -> httpx.Response:
        """A call as the agency (the platform's token and its AgencyRef); a token Alto refuses
        (401) is forgotten, so the next call fetches a new one."""
        c = self._config
        token = await self._tokens.get(http, c.alto_token_url, c.alto_client_id, c.alto_client_secret)
        headers = {"Authorization": f"Bearer {token}", "AgencyRef": agency.agency_ref}
        response = await http.request(method, f"{c.alto_api_url}{path}", headers=headers, **request)
        if response.status_code == 401:
            self._tokens.forget(c.alto_token_url, c.alto_client_id)
        return response

    def external_id(self, response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        if isinstance(body, int | str):
            return str(body)[:200]
        if isinstance(body, dict) and "id" in body:
            return str(body["id"])[:200]
        return None

    # Inbound ---------------------------------------------------------------------------------

    settings_model = ConnectionSettings
    streams = ("contacts",)
    paging = "tokens"  # an opaque next-page token, walked to the end from modified-from

    async def fetch_people(
        self,
        http: httpx.AsyncClient,
        credentials: dict[str, Any],
        settings: dict[str, Any],
        *,
        modified_from: datetime | None = None,
        page_token: str | None = None,
        page_size: int = 250,
    ) -> FetchedPage:
        """One page of contacts modified on or after `modified_from`, from `page_token`; each
        contact's people as drafts, and the next page's token (None on the last)."""
        parsed = ConnectionSettings.model_validate(settings)
        agency = Credentials.model_validate(credentials)
        params: dict[str, Any] = {parsed.page_size_param: min(page_size, parsed.page_size)}
        if modified_from is not None:
            params[parsed.modified_from_param] = modified_from.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if page_token is not None:
            params[parsed.page_token_param] = page_token
        call = self._as_agency(http, agency, "GET", parsed.list_path, params=params)
        response = await reaching(self.name, call)
        if response.status_code == 429:
            raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), 300))
        check_answer(self.name, response)
        records = page_records(self.name, response, parsed.list_key, parsed.list_path)
        drafts: list[PersonDraft] = []
        bad = 0
        for record in records:
            found = to_drafts(record, parsed) if isinstance(record, dict) else None
            if found is None:
                bad += 1
            else:
                drafts += found
        try:
            following = text_of(orjson.loads(response.content).get(parsed.next_token_key))
        except AttributeError:
            following = None
        return FetchedPage(
            drafts=drafts, page_size=len(records), bad_records=bad, server_time=server_date(response),
            next_token=following if records else None,
        )  # fmt: skip

    # Webhooks: a Contact.Created/Modified event names the contact; it is read again by id.

    contact_topics = ("Contact.Created", "Contact.Modified")

    def draft_from_webhook(self, body: dict[str, Any], settings: dict[str, Any]) -> PersonDraft | None:
        return None  # thin CloudEvents: what changed, not how

    async def fetch_person(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any], external_id: str
    ) -> list[PersonDraft] | None:
        """The contact as Alto holds it now, one draft per person; None when Alto has none."""
        parsed = ConnectionSettings.model_validate(settings)
        agency = Credentials.model_validate(credentials)
        path = parsed.contact_path.replace("{id}", quote(external_id, safe=""))
        response = await reaching(self.name, self._as_agency(http, agency, "GET", path))
        record = one_record(self.name, response)
        return to_drafts(record, parsed) if isinstance(record, dict) else None

    async def fetch_consent(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any], record_id: str
    ) -> Consent | None:
        """The contact's consent as its marketing preferences say now (none, 204: unknown); None
        when Alto holds no such contact (404). A 429 is RateLimited; 5xx, a hang or a body that
        is not JSON fail."""
        parsed = ConnectionSettings.model_validate(settings)
        agency = Credentials.model_validate(credentials)
        path = parsed.preferences_path.replace("{id}", quote(record_id, safe=""))
        response = await reaching(self.name, self._as_agency(http, agency, "GET", path))
        if response.status_code == 204:  # as Alto answers a contact's other empty lists
            return Consent("unknown", None)
        body = one_record(self.name, response)
        return None if body is None else to_consent(body, parsed)

    async def verify_webhook(
        self, http: httpx.AsyncClient, headers: dict[str, str], body: bytes, now: float | None = None
    ) -> InboundEvent:
        """Alto's shared secret (constant-time), then the CloudEvent's identity: its `id` is
        stable across Alto's retries, and `data.agencyRef` names the agency. A static secret
        carries no timestamp, so there is no replay window: duplicates are caught by `id`."""
        secret = self._config.alto_webhook_secret
        if not secret:
            # Not the sender's fault: Alto retries (for up to 6 hours) while this is configured.
            raise WebhookRefused(503, "Alto webhooks are not configured on this server")
        given = headers.get("x-signature", "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise WebhookRefused(401, "missing or wrong x-signature")
        event = webhook_object(body, "a CloudEvent with data")
        data = event.get("data")
        if not isinstance(data, dict):
            raise WebhookRefused(400, "the body is not a CloudEvent with data")
        event_id, topic, agency = event.get("id"), event.get("type"), data.get("agencyRef")
        if not all(isinstance(v, str) and v for v in (event_id, topic, agency)):
            raise WebhookRefused(400, "the event lacks id, type or data.agencyRef")
        assert isinstance(event_id, str) and isinstance(topic, str) and isinstance(agency, str)
        entity = data.get("contactId") or data.get("id")
        when = event.get("time")
        try:
            event_time = (
                datetime.fromisoformat(when.replace("Z", "+00:00")) if isinstance(when, str) else None
            )
        except ValueError:
            event_time = None
        return InboundEvent(
            dedupe_key=event_id[:400],
            tenant_ref=agency[:100],
            topic=topic[:100],
            entity_id=str(entity)[:200] if entity is not None else None,
            event_time=event_time,
        )

