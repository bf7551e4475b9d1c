"""Alto (Zoopla): everything about it. Writeback: each event becomes a file note on the contact
(POST /file-notes). Inbound: webhooks only so far (thin CloudEvents, checked by the shared
secret Alto sends in `x-signature`: third-party transcriptions of Alto's docs, so the secret
is configuration, NURTUREHUB_ALTO_WEBHOOK_SECRET, and nothing else is assumed); no poll yet.

Auth is the platform's OAuth2 client credentials; the agency is chosen by the `AgencyRef` header
(a GUID Alto issues per agency), which is what a connection holds. Alto answers 201 with the new
note's id. Sources: see README, CRM providers.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

import httpx
import orjson
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import describe
from integrations.providers.base import Delivery, InboundEvent, TokenCache, WebhookRefused
from server.models import WireModel

__all__ = ["AltoAdapter", "ConnectionSettings", "Credentials"]

HINT_FIELD = "agency_ref"
_EMAIL_EVENTS = ("email_sent", "email_opened", "email_clicked")


class Credentials(WireModel):
    agency_ref: str = Field(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )


class ConnectionSettings(WireModel):
    negotiator_id: str | None = Field(default=None, max_length=40)


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
        c = self._config
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
        token = await self._tokens.get(http, c.alto_token_url, c.alto_client_id, c.alto_client_secret)
        headers = {"Authorization": f"Bearer {token}", "AgencyRef": credentials.agency_ref}
        response = await http.post(f"{c.alto_api_url}/file-notes", json=body, headers=headers)
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
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WebhookRefused(400, "the body is not JSON") from None
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(event, dict) or not isinstance(data, dict):
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
