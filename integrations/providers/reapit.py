"""Reapit Foundations: everything about it. Writeback: each event becomes a journal entry on the
contact (POST /journalEntries/). Inbound: contacts read with `modifiedFrom` (seek paging), and
webhooks checked by their Ed25519 `X-Signature`.

Auth is the platform's OAuth2 client credentials (token from connect.reapit.cloud, cached until
near expiry); the agency is chosen by the `reapit-customer` header, so a connection holds only
the agency's customer id. Journal types vary per customer and `MI` (miscellaneous) is the one
every customer accepts, so it is the default. Reapit answers 201 with the new entry's URL in
`Location`. Sources: see README, CRM providers.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import describe
from integrations.providers.base import (
    Delivery,
    FetchedPage,
    InboundEvent,
    PersonDraft,
    RateLimited,
    RoleRef,
    SyncSettings,
    TokenCache,
    TransientFailure,
    WebhookRefused,
    check_answer,
    drafts_page,
    page_records,
    parse_time,
    pick_category,
    reaching,
    retry_after_seconds,
    text_of,
    webhook_object,
)
from server.models import WireModel

__all__ = ["ConnectionSettings", "Credentials", "ReapitAdapter"]

HINT_FIELD = "customer_id"
ONE_SECOND = timedelta(seconds=1)
TENANT_FIELD = "customer_id"  # plaintext on the connection (tenant_ref): webhooks route by it


class Credentials(WireModel):
    # The agency's customer id from the developer portal; `SBOX` is Reapit's sandbox.
    customer_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")


class ConnectionSettings(SyncSettings):
    type_id: str = Field(default="MI", pattern=r"^[A-Z]{2}$")
    associated_type: Literal["applicant", "contact", "landlord"] = "contact"
    negotiator_id: str | None = Field(default=None, max_length=40)
    # Inbound. Investors live in each agency's own contact categories (categoryIds), not in a
    # Reapit field, so which ids mean "investor" is the agency's to say.
    investor_category_ids: list[str] = Field(default_factory=list, max_length=50)
    btl_investor_category_ids: list[str] = Field(default_factory=list, max_length=50)
    # An applicant whose record is not read yet (or names no marketingMode): the agency says
    # which its applicants mostly are.
    applicant_category: Literal["buyer", "tenant_applicant"] = "buyer"
    # Category rules from the role records (README, CRM sync: category rules). Reapit documents
    # the fields; which of their values mean what is the agency's way of working, so each list
    # is a setting, defaulting to research crm-sync.md 3.2.
    buying_modes: list[str] = Field(default_factory=lambda: ["buying"], max_length=20)
    renting_modes: list[str] = Field(default_factory=lambda: ["renting"], max_length=20)
    # An applicant's buying.reasonId values that mean an investor (agency-configured reasons).
    investor_buying_reason_ids: list[str] = Field(default_factory=list, max_length=50)
    btl_investor_buying_reason_ids: list[str] = Field(default_factory=list, max_length=50)
    seller_selling_positions: list[str] = Field(
        default_factory=lambda: ["sellingWithOtherAgent", "sellingPrivately", "notYetOnMarket"], max_length=20
    )
    # A vendor's property selling.status: on the market (or sold, not completed) -> active_seller;
    # before instruction -> seller.
    active_selling_statuses: list[str] = Field(
        default_factory=lambda: [
            "forSale", "forSaleUnavailable", "underOffer", "underOfferUnavailable", "reserved", "exchanged",
        ],
        max_length=20,
    )  # fmt: skip
    seller_selling_statuses: list[str] = Field(
        default_factory=lambda: ["preAppraisal", "valuation", "paidValuation"], max_length=20
    )
    accepted_offer_statuses: list[str] = Field(default_factory=lambda: ["accepted"], max_length=20)
    # An accepted offer gives active_buyer until its property's selling.status is one of these.
    # Reapit's enum (PropertySellingModel.status) ends in three statuses where no sale through
    # the agency is under way: completed (bought), soldExternally (another buyer, through
    # another agent) and withdrawn (off the market). The buyer's purchase of that property is
    # over in each, so each ends it by default; the status is read again at every property
    # change, so a withdrawn property put back on the market gives active_buyer again.
    completed_selling_statuses: list[str] = Field(
        default_factory=lambda: ["completed", "soldExternally", "withdrawn"], max_length=20
    )
    # A landlord is managed when one of their tenancies is in one of these statuses with one of
    # these agent roles (whether rent collection counts as managed is the agency's call).
    managed_agent_roles: list[str] = Field(default_factory=lambda: ["managed"], max_length=20)
    managed_tenancy_statuses: list[str] = Field(
        default_factory=lambda: ["arranging", "current"], max_length=20
    )
    # A tenant (a tenancy's related contact) is active in these tenancy statuses.
    tenant_tenancy_statuses: list[str] = Field(
        default_factory=lambda: ["arranging", "current"], max_length=20
    )


# Properties last: a property's status change alone (no vendor or offer change) re-derives the
# category of the people of the vendors and offers that link to it, as kept by then.
ROLE_STREAMS = ("applicants", "landlords", "vendors", "tenancies", "offers", "properties")
# Read with their property embedded: a vendor's selling status and a tenancy's landlord live on
# the property (PropertyModel selling.status, letting.landlordId), not on the role record. The
# property as kept (the properties stream) is preferred where there is one: a webhook's vendor
# carries no embedded property.
EMBED_PROPERTY = frozenset({"vendors", "tenancies"})
# modifiedFrom means "after" on these (schema.json). Properties' says "since", which could be
# either: taken as inclusive, the worse case (it is exclusive) leaves a record at a page's last
# second to the next run's lookback, where asking a second early would loop on a full page
# spanning two seconds if it is inclusive.
EXCLUSIVE_FROM = frozenset({"tenancies"})
# Role (a contact's relationship's associatedType) -> category; README, CRM sync (inbound).
ROLE_CATEGORIES = {
    "vendor": "seller",
    "landlord": "landlord",
    "tenancy": "active_tenant",
    "offer": "buyer",
}
CONSENT = {"grant": "granted", "deny": "denied", "notAsked": "unknown"}
CHANNELS = {
    "communicationPreferenceEmail": "email",
    "communicationPreferenceSMS": "sms",
    "communicationPreferencePhone": "phone",
    "communicationPreferenceLetter": "post",
}
PING_CUSTOMER = "webhook-test"  # Reapit's test pings: never routed to an agency
SIGNATURE_HEADER = "x-signature"


_time = parse_time
_text = text_of


def to_draft(record: dict[str, Any], settings: ConnectionSettings) -> PersonDraft | None:
    """A Reapit ContactModel as a PersonDraft; None when it names no contact (no id)."""
    external_id = _text(record.get("id"))
    if external_id is None:
        return None
    address = record.get("primaryAddress") if isinstance(record.get("primaryAddress"), dict) else {}
    phone = next(
        (p for p in (_text(record.get(k)) for k in ("mobilePhone", "homePhone", "workPhone")) if p), None
    )
    channels = {
        ours: ("granted" if record[theirs] else "denied")
        for theirs, ours in CHANNELS.items()
        if isinstance(record.get(theirs), bool)
    }
    found: dict[str, str] = {}
    for relation in record.get("relationships") or []:
        if not isinstance(relation, dict) or relation.get("fromArchive"):
            continue  # an archived role no longer describes the person
        role = relation.get("associatedType")
        if role == "applicant":
            found.setdefault(settings.applicant_category, "role:applicant")
        elif role in ROLE_CATEGORIES:
            found.setdefault(ROLE_CATEGORIES[role], f"role:{role}")
    category_ids = {str(c) for c in record.get("categoryIds") or []}
    if category_ids & set(settings.btl_investor_category_ids):
        found.setdefault("btl_investor", "categoryIds:btl_investor")
    if category_ids & set(settings.investor_category_ids):
        found.setdefault("property_investor", "categoryIds:investor")
    category, rule = pick_category(found, settings.category_precedence)
    return PersonDraft(
        external_id=external_id,
        modified=_time(record.get("modified")) or _time(record.get("created")),
        etag=_text(record.get("_eTag")),
        first_name=_text(record.get("forename")),
        last_name=_text(record.get("surname")),
        email=_text(record.get("email")),
        phone=phone,
        postcode=_text(address.get("postcode")) if isinstance(address, dict) else None,
        consent=CONSENT.get(str(record.get("marketingConsent"))),
        channels=channels,
        archived=record.get("active") is False or bool(record.get("archivedOn")),
        category=category,
        category_rule=rule,
        record=record,
    )


def _add_related(record: dict[str, Any], found: list[str]) -> None:
    """The contact ids of a role record's `related[]` (companies left out), added once each."""
    links = record.get("related")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("type", "contact") == "contact":
            contact = _text(link.get("id"))
            if contact is not None and contact not in found:
                found.append(contact)


def _related_contacts(record: dict[str, Any]) -> list[str]:
    """The contacts a role record names now (archived links left out)."""
    found: list[str] = []
    links = record.get("related")
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("fromArchive"):
            continue
        if link.get("type", "contact") == "contact":
            contact = _text(link.get("id"))
            if contact is not None and contact not in found:
                found.append(contact)
    return found


def _dig(record: dict[str, Any], *path: str) -> Any:
    for name in path:
        if not isinstance(record, dict):
            return None
        record = record.get(name)  # type: ignore[assignment]
    return record


def role_ref(stream: str, record: dict[str, Any], *, deleted: bool = False) -> RoleRef | None:
    """A role record's ids and role facts (no personal data); None when it names no id."""
    external_id = _text(record.get("id"))
    if external_id is None:
        return None
    facts: dict[str, Any] = {}
    links: list[str] = []
    if record.get("active") is not None:
        facts["active"] = bool(record.get("active"))
    if stream == "applicants":
        facts["marketingMode"] = _text(record.get("marketingMode"))
        facts["reasonId"] = _text(_dig(record, "buying", "reasonId"))
        facts["sellingPosition"] = _text(record.get("sellingPosition"))
    elif stream == "vendors":
        facts["sellingStatus"] = _text(_dig(record, "_embedded", "property", "selling", "status"))
    elif stream == "properties":
        # Statuses only: a property's address, prices and people stay in the CRM.
        facts["sellingStatus"] = _text(_dig(record, "selling", "status"))
        facts["lettingStatus"] = _text(_dig(record, "letting", "status"))
        facts["agentRole"] = _text(_dig(record, "letting", "agentRole"))
    elif stream == "tenancies":
        facts["status"] = _text(record.get("status"))
        facts["agentRole"] = _text(record.get("agentRole"))
        landlord = _text(record.get("landlordId")) or _text(
            _dig(record, "_embedded", "property", "letting", "landlordId")
        )
        if landlord is not None:
            links.append(f"landlords/{landlord}")
    elif stream == "offers":
        facts["status"] = _text(record.get("status"))
    if stream in ("vendors", "offers"):
        prop = _text(record.get("propertyId"))
        if prop is not None:
            links.append(f"properties/{prop}")
    return RoleRef(
        record_type=stream,
        external_id=external_id[:200],
        contact_ids=_related_contacts(record),
        roles={k: v for k, v in facts.items() if v is not None},
        links=links,
        archived=bool(record.get("fromArchive")),
        deleted=deleted,
        modified=_time(record.get("modified")) or _time(record.get("created")),
    )


def categorise(
    draft: PersonDraft, refs: list[RoleRef], settings: ConnectionSettings
) -> PersonDraft:
    """The person's category from their role records as kept, and the records those link to
    (a vendor's or an offer's property) or that link to them (a landlord's tenancies); README,
    CRM sync: category rules. A person none of whose roles has been read yet keeps the one their
    contact record's relationships give."""
    if not refs:
        return draft
    s = settings
    found: dict[str, str] = {}
    mine = [r for r in refs if draft.external_id in r.contact_ids and not r.archived]
    landlords = {r.key for r in mine if r.record_type == "landlords"}
    # The properties as kept, fresher than a vendor's embedded copy (and the only copy for an offer).
    selling = {
        r.key: r.roles.get("sellingStatus")
        for r in refs
        if r.record_type == "properties" and not r.archived
    }

    def selling_status(ref: RoleRef) -> Any:
        held = [selling[key] for key in ref.links if key in selling]
        return held[0] if held else ref.roles.get("sellingStatus")

    investor: str | None = None
    category_ids = {str(c) for c in draft.record.get("categoryIds") or []}
    if category_ids & set(s.btl_investor_category_ids):
        investor = "btl"
    elif category_ids & set(s.investor_category_ids):
        investor = "property"
    for ref in mine:
        facts = ref.roles
        if ref.record_type == "applicants" and facts.get("active", True):
            mode = facts.get("marketingMode")
            reason = facts.get("reasonId")
            if reason in s.btl_investor_buying_reason_ids:
                investor = investor or "btl"
            elif reason in s.investor_buying_reason_ids:
                investor = investor or "property"
            if mode in s.buying_modes:
                found.setdefault("buyer", "applicant:marketingMode")
            elif mode in s.renting_modes:
                found.setdefault("tenant_applicant", "applicant:marketingMode")
            elif mode is None:
                found.setdefault(s.applicant_category, "applicant:setting")
            if facts.get("sellingPosition") in s.seller_selling_positions:
                found.setdefault("seller", "applicant:sellingPosition")
        elif ref.record_type == "vendors":
            status = selling_status(ref)
            if status in s.active_selling_statuses:
                found.setdefault("active_seller", "vendor:sellingStatus")
            elif status is None or status in s.seller_selling_statuses:
                found.setdefault("seller", "vendor")
        elif (
            ref.record_type == "offers"
            and facts.get("status") in s.accepted_offer_statuses
            and selling_status(ref) not in s.completed_selling_statuses
        ):
            found.setdefault("active_buyer", "offer:accepted")
        elif ref.record_type == "tenancies" and facts.get("status") in s.tenant_tenancy_statuses:
            found.setdefault("active_tenant", "tenancy:status")
        elif ref.record_type == "landlords":
            found.setdefault("landlord", "landlord")
    for ref in refs:  # tenancies linking to one of the person's landlord records
        if (
            ref.record_type == "tenancies"
            and not ref.archived
            and landlords.intersection(ref.links)
            and ref.roles.get("status") in s.managed_tenancy_statuses
            and ref.roles.get("agentRole") in s.managed_agent_roles
        ):
            found.setdefault("managed_landlord", "tenancy:agentRole")
    if investor is not None:
        found.setdefault(f"{investor}_investor" if investor == "btl" else "property_investor", "investor")
        if "active_buyer" in found:
            found.setdefault(
                "active_btl_investor" if investor == "btl" else "active_property_investor", "investor:offer"
            )
    category, rule = pick_category(found, s.category_precedence)
    return replace(draft, category=category, category_rule=rule)


def _b64(text: str) -> bytes:
    # Reapit's own examples decode the signature as base64 (Node) and as base64url (C#).
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRefused(401, "the X-Signature signature is not base64") from None


class ReapitAdapter:
    provider_id = "reapit"
    name = "Reapit"

    def __init__(self, config: CrmConfig) -> None:
        self._config = config
        self._tokens = TokenCache(self.name)
        self._signing_keys: dict[str, Ed25519PublicKey] = {}

    async def _token(self, http: httpx.AsyncClient) -> str:
        c = self._config
        return await self._tokens.get(http, c.reapit_token_url, c.reapit_client_id, c.reapit_client_secret)

    def _headers(self, token: str, credentials: Credentials) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "reapit-customer": credentials.customer_id,
            "api-version": self._config.reapit_api_version,
        }

    def setup_problem(self) -> str | None:
        c = self._config
        return self._tokens.missing(c.reapit_client_id, c.reapit_client_secret, "NURTUREHUB_REAPIT")

    async def check(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any]
    ) -> str:
        # Reading one journal entry needs the platform's token and an app installed by this
        # customer, and changes nothing.
        customer = Credentials.model_validate(credentials)
        headers = self._headers(await self._token(http), customer)
        url = f"{self._config.reapit_api_url}/journalEntries/"
        check_answer(self.name, await http.get(url, params={"pageSize": 1}, headers=headers))
        return "the platform's client credentials and this customer id (one journal entry read)"

    async def deliver(self, http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        settings = ConnectionSettings.model_validate(delivery.settings)
        credentials = Credentials.model_validate(delivery.credentials)
        _, text = describe(delivery.payload)
        body: dict[str, str] = {
            "description": text,
            "typeId": settings.type_id,
            "associatedType": settings.associated_type,
            "associatedId": delivery.external_contact_id,
        }
        if settings.negotiator_id:
            body["negotiatorId"] = settings.negotiator_id
        url = f"{self._config.reapit_api_url}/journalEntries/"
        for fresh in (False, True):
            headers = self._headers(await self._token(http), credentials)
            response = await http.post(url, json=body, headers=headers)
            if response.status_code != 401 or fresh:
                return response
            # A cached token may have been revoked early: fetch a new one and try once more.
            self._tokens.forget(self._config.reapit_token_url, self._config.reapit_client_id)
        return response

    def external_id(self, response: httpx.Response) -> str | None:
        location = response.headers.get("location", "").rstrip("/")
        return location.rsplit("/", 1)[-1][:200] or None

    # Inbound ---------------------------------------------------------------------------------

    settings_model = ConnectionSettings

    async def _get(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], path: str, params: dict[str, Any]
    ) -> httpx.Response:
        customer = Credentials.model_validate(credentials)
        url = f"{self._config.reapit_api_url}{path}"
        for fresh in (False, True):
            headers = self._headers(await self._token(http), customer)
            response = await reaching(self.name, http.get(url, params=params, headers=headers))
            if response.status_code != 401 or fresh:
                break
            self._tokens.forget(self._config.reapit_token_url, self._config.reapit_client_id)
        if response.status_code == 429:
            raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), 300))
        check_answer(self.name, response)
        return response

    # The contacts stream, then the role streams: a role that changes may not bump its contact's
    # `modified` (Reapit documents only the other direction), so each is read by its own
    # `modified`, and the people its records relate to are read again by id.
    streams = ("contacts", *ROLE_STREAMS)

    async def _page(
        self,
        http: httpx.AsyncClient,
        credentials: dict[str, Any],
        path: str,
        params: dict[str, Any],
    ) -> list[Any]:
        response = await self._get(http, credentials, path, params)
        return page_records(self.name, response, "_embedded", path)

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
        ids: list[str] | None = None,
    ) -> FetchedPage:
        """One page of contacts by `modified`, oldest first (modifiedFrom is "on or after");
        with `ids`, those contacts (at most a page of them)."""
        params: dict[str, Any] = {"pageSize": page_size, "pageNumber": page_number, "sortBy": "modified"}
        if modified_from is not None:
            params["modifiedFrom"] = _iso(modified_from)
        if modified_to is not None:
            params["modifiedTo"] = _iso(modified_to)
        if ids is not None:
            params["id"] = ids
        records = await self._page(http, credentials, "/contacts/", params)
        parsed = ConnectionSettings.model_validate(settings)
        return drafts_page(records, lambda record: to_draft(record, parsed))

    async def fetch_roles(
        self,
        http: httpx.AsyncClient,
        credentials: dict[str, Any],
        settings: dict[str, Any],
        *,
        stream: str,
        modified_from: datetime | None,
        modified_to: datetime | None,
        page_number: int,
        page_size: int,
    ) -> FetchedPage:
        """One page of a role stream by `modified`, oldest first: its records' times and the
        contacts they relate to (`related[]`; companies left out). Tenancies' modifiedFrom is
        "after" (schema.json), so it is asked a second earlier to stay inclusive."""
        params: dict[str, Any] = {"pageSize": page_size, "pageNumber": page_number, "sortBy": "modified"}
        if modified_from is not None:
            exclusive = stream in EXCLUSIVE_FROM
            params["modifiedFrom"] = _iso(modified_from - ONE_SECOND if exclusive else modified_from)
        if modified_to is not None:
            params["modifiedTo"] = _iso(modified_to)
        if stream in EMBED_PROPERTY:
            params["embed"] = "property"
        records = await self._page(http, credentials, f"/{stream}/", params)
        stamps: list[datetime] = []
        related: list[str] = []
        refs: list[RoleRef] = []
        bad = 0
        for record in records:
            stamp = (_time(record.get("modified")) or _time(record.get("created"))) if isinstance(
                record, dict
            ) else None
            ref = role_ref(stream, record) if isinstance(record, dict) else None
            if stamp is None or ref is None:
                bad += 1
                continue
            stamps.append(stamp)
            refs.append(ref)
            _add_related(record, related)
        return FetchedPage(
            drafts=[], page_size=len(records), bad_records=bad, stamps=stamps, related=related, refs=refs
        )

    def categorise(self, draft: PersonDraft, refs: list[RoleRef], settings: dict[str, Any]) -> PersonDraft:
        return categorise(draft, refs, ConnectionSettings.model_validate(settings))

    async def fetch_person(
        self, http: httpx.AsyncClient, credentials: dict[str, Any], settings: dict[str, Any], external_id: str
    ) -> PersonDraft | None:
        """The contact as Reapit holds it now; None when Reapit no longer has it."""
        try:
            response = await self._get(http, credentials, f"/contacts/{external_id}", {})
        except TransientFailure as exc:
            if exc.status_code == 404:
                return None
            raise
        try:
            record = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TransientFailure(f"{self.name} sent a contact that is not JSON", 200) from None
        if not isinstance(record, dict):
            return None
        return to_draft(record, ConnectionSettings.model_validate(settings))

    def draft_from_webhook(self, body: dict[str, Any], settings: dict[str, Any]) -> PersonDraft | None:
        """The record a contacts.* event carries (`new`); None when it carries none (archived or
        deleted: `new` is null), so the caller reads the contact again."""
        new = body.get("new")
        if not isinstance(new, dict):
            return None
        return to_draft(new, ConnectionSettings.model_validate(settings))

    def ref_from_webhook(self, topic: str, body: dict[str, Any]) -> RoleRef | None:
        """A role event's record as kept: `new`, else (archived or deleted) `old`, marked gone."""
        stream = topic.split(".")[0]
        new, old = body.get("new"), body.get("old")
        if isinstance(new, dict):
            return role_ref(stream, new)
        if isinstance(old, dict):
            return role_ref(stream, old, deleted=True)
        return None

    def related_from_webhook(self, body: dict[str, Any]) -> list[str]:
        """The contacts a role event's record relates to, before (`old`) and after (`new`)."""
        found: list[str] = []
        for record in (body.get("new"), body.get("old")):
            if isinstance(record, dict):
                _add_related(record, found)
        return found

    async def verify_webhook(
        self, http: httpx.AsyncClient, headers: dict[str, str], body: bytes, now: float | None = None
    ) -> InboundEvent:
        """Check X-Signature (`s:{keyId}:{unixTs}:{sig}`, Ed25519 over the timestamp then the raw
        body; the key fetched from Reapit by id and cached) and the replay window; then parse.

        Raises WebhookRefused: 401 for a missing, bad or stale signature, 400 for a body that is
        not a Reapit event, 503 when the signing key cannot be had now (Reapit retries)."""
        header = headers.get(SIGNATURE_HEADER, "")
        parts = header.split(":")
        if len(parts) != 4 or parts[0] != "s" or not parts[1] or not parts[2].isdigit():
            raise WebhookRefused(
                401, "missing or malformed X-Signature (expected s:keyId:timestamp:signature)"
            )
        _, key_id, stamp, signature = parts
        now = time.time() if now is None else now
        if abs(now - int(stamp)) > self._config.reapit_webhook_tolerance_seconds:
            raise WebhookRefused(401, "the X-Signature timestamp is outside the replay window")
        key = await self._signing_key(http, key_id)
        try:
            key.verify(_b64(signature), stamp.encode() + body)
        except InvalidSignature:
            raise WebhookRefused(401, "the X-Signature signature does not match the body") from None
        event = webhook_object(body, "a Reapit event object")
        event_id, topic, customer = (_text(event.get(k)) for k in ("eventId", "topicId", "customerId"))
        if event_id is None or topic is None or customer is None:
            raise WebhookRefused(400, "the event lacks eventId, topicId or customerId")
        entity = _text(event.get("entityId"))
        # One change is sent once per associated role under one event id: the topic and entity
        # are part of the event's identity (webhooks.md, Payload schema).
        return InboundEvent(
            dedupe_key=f"{customer}:{event_id}:{topic}:{entity or ''}"[:400],
            tenant_ref=None if customer == PING_CUSTOMER else customer[:100],
            topic=topic[:100],
            entity_id=entity[:200] if entity else None,
            event_time=_time(event.get("eventTime")),
        )

    async def _signing_key(self, http: httpx.AsyncClient, key_id: str) -> Ed25519PublicKey:
        cached = self._signing_keys.get(key_id)
        if cached is not None:
            return cached
        if not key_id.replace("-", "").replace("_", "").isalnum() or len(key_id) > 100:
            raise WebhookRefused(401, "the X-Signature key id is malformed")
        try:
            token = await self._token(http)
            response = await http.get(
                f"{self._config.reapit_api_url}/webhooks/signing/{key_id}",
                headers={"Authorization": f"Bearer {token}", "api-version": self._config.reapit_api_version},
            )
        except (httpx.HTTPError, TransientFailure, Exception) as exc:
            if isinstance(exc, WebhookRefused):
                raise
            raise WebhookRefused(503, "Reapit's signing key cannot be fetched now; try again") from None
        if response.status_code == 404:
            raise WebhookRefused(401, "the X-Signature key id is not one of Reapit's signing keys")
        if response.status_code != 200:
            raise WebhookRefused(503, "Reapit's signing key cannot be fetched now; try again")
        try:
            keys = orjson.loads(response.content)["keys"]
            jwk = next(k for k in keys if k.get("kid") == key_id and k.get("crv") == "Ed25519")
            raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
            key = Ed25519PublicKey.from_public_bytes(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, StopIteration, ValueError, binascii.Error):
            raise WebhookRefused(503, "Reapit's signing key endpoint sent an unreadable key") from None
        self._signing_keys[key_id] = key
        return key


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


