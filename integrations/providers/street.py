"""Street (Open API, JSON:API): email_sent becomes an activity, every other event a note.

Auth is a bearer token a company admin creates in Street (scope "open API"), held per agency.
`POST /activity` only knows `campaign_sent` from `email_marketing`, which fits a sent email and
nothing else, so the other events are notes on the person (hot alerts pinned). Street answers
201 with `{data: {id, ...}}`. Writes are limited to 100 a minute per token. Sources: see README.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import EmailSentPayload, describe
from integrations.providers.base import Delivery, check_answer
from server.models import WireModel

__all__ = ["ConnectionSettings", "Credentials", "StreetAdapter"]

HINT_FIELD = "api_token"
JSON_API = "application/vnd.api+json"


class Credentials(WireModel):
    api_token: str = Field(min_length=8, max_length=4000)


class ConnectionSettings(WireModel):
    author_id: str | None = Field(default=None, max_length=40)  # a Street user uuid


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

    def external_id(self, response: httpx.Response) -> str | None:
        try:
            data = response.json().get("data") or {}
        except (ValueError, AttributeError):
            return None
        identifier = data.get("id") if isinstance(data, dict) else None
        return str(identifier)[:200] if identifier else None
