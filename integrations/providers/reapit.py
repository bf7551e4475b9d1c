"""Reapit Foundations: each event becomes a journal entry on the contact (POST /journalEntries/).

Auth is the platform's OAuth2 client credentials (token from connect.reapit.cloud, cached until
near expiry); the agency is chosen by the `reapit-customer` header, so a connection holds only
the agency's customer id. Journal types vary per customer and `MI` (miscellaneous) is the one
every customer accepts, so it is the default. Reapit answers 201 with the new entry's URL in
`Location`. Sources: see README, CRM providers.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import Field

from integrations.config import CrmConfig
from integrations.events import describe
from integrations.providers.base import Delivery, TokenCache, check_answer
from server.models import WireModel

__all__ = ["ConnectionSettings", "Credentials", "ReapitAdapter"]

HINT_FIELD = "customer_id"


class Credentials(WireModel):
    # The agency's customer id from the developer portal; `SBOX` is Reapit's sandbox.
    customer_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")


class ConnectionSettings(WireModel):
    type_id: str = Field(default="MI", pattern=r"^[A-Z]{2}$")
    associated_type: Literal["applicant", "contact", "landlord"] = "contact"
    negotiator_id: str | None = Field(default=None, max_length=40)


class ReapitAdapter:
    provider_id = "reapit"
    name = "Reapit"

    def __init__(self, config: CrmConfig) -> None:
        self._config = config
        self._tokens = TokenCache(self.name)

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
