"""agentOS (formerly Letmc): connections and inbound polls; engagement writeback no.

agentOS issues an API key per agency (sent as the `api_key` header, never the query string: 50
requests a minute per key, a rolling minute; keep calling after a 429 and the key is blocked)
and names the agency by its `shortName` in every path (`/v4/{tier}/{shortName}/{endpoint}`).
Its public API documents diary and maintenance writes but no endpoint for notes or events on a
person, so every writeback event is refused here, in this one place.

Inbound: agentOS documents no changed-since filter and no webhooks, only `offset`/`count` (at most
1000) paging, so each poll scans every person endpoint in full (`paging = "scan"`); each record's
content hash is kept (crm_external_refs) and only records whose hash changed are applied. The
tier, the endpoints and the records' field names are not in the public docs (APIs-guru's letmc
specs are partial), so they are connection settings, not guesses in code.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import orjson
from pydantic import Field

from integrations.config import CrmConfig
from integrations.providers.base import (
    FetchedPage,
    PersonDraft,
    RateLimited,
    RoleRef,
    SyncSettings,
    WriteUnsupported,
    check_answer,
    page_records,
    reaching,
    retry_after_seconds,
    text_of,
)
from server.models import WireModel

__all__ = ["UNSUPPORTED", "AgentOsAdapter", "ConnectionSettings", "Credentials"]

HINT_FIELD = "api_key"
UNSUPPORTED = "agentOS publishes no API for writing notes or events on a person"
_PATH = r"^[A-Za-z0-9_/-]+$"


class Credentials(WireModel):
    api_key: str = Field(min_length=8, max_length=200)
    short_name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")


class ConnectionSettings(SyncSettings):
    # A full scan an hour (research crm-sync.md: 60 min for agentOS) at 40 requests a minute.
    poll_interval_seconds: int = Field(default=3600, ge=60, le=86400)
    tier: str = Field(default="corporate", max_length=60, pattern=_PATH)
    # Each person endpoint under /v4/{tier}/{shortName}/ (None: not read) and the category its
    # people take while listed (agentOS is lettings software: whether a landlord is managed is
    # the agency's to say).
    landlords_path: str | None = Field(default="lettings/landlords", max_length=200, pattern=_PATH)
    tenants_path: str | None = Field(default="lettings/tenants", max_length=200, pattern=_PATH)
    applicants_path: str | None = Field(default="lettings/applicants", max_length=200, pattern=_PATH)
    landlord_category: str = Field(default="managed_landlord", pattern="^(managed_landlord|landlord)$")
    page_size: int = Field(default=1000, ge=1, le=1000)
    list_key: str = Field(default="Data", max_length=60)
    id_field: str = Field(default="OID", max_length=60)
    first_name_field: str = Field(default="Forename", max_length=60)
    last_name_field: str = Field(default="Surname", max_length=60)
    email_field: str = Field(default="Email", max_length=60)
    phone_field: str = Field(default="MobilePhone", max_length=60)
    postcode_field: str = Field(default="Postcode", max_length=60)


STREAM_CATEGORIES = {"tenants": "active_tenant", "applicants": "tenant_applicant"}


def content_hash(record: dict[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).digest()


def to_draft(stream: str, record: dict[str, Any], settings: ConnectionSettings) -> PersonDraft | None:
    """An agentOS person record; the contact's CRM id is "{stream}/{id}", as one person may be
    listed under several endpoints with ids of each. No consent: agentOS documents none."""
    raw_id = record.get(settings.id_field)
    identifier = text_of(raw_id) or (str(raw_id) if isinstance(raw_id, int) else None)
    if identifier is None:
        return None
    category = settings.landlord_category if stream == "landlords" else STREAM_CATEGORIES.get(stream)
    return PersonDraft(
        external_id=f"{stream}/{identifier}"[:200],
        modified=None,
        etag=content_hash(record).hex()[:32],
        first_name=text_of(record.get(settings.first_name_field)),
        last_name=text_of(record.get(settings.last_name_field)),
        email=text_of(record.get(settings.email_field)),
        phone=text_of(record.get(settings.phone_field)),
        postcode=text_of(record.get(settings.postcode_field)),
        consent="unknown",
        category=category,
        category_rule=f"listed:{stream}",
        record=record,
    )


class AgentOsAdapter(WriteUnsupported):
    provider_id = "agentos"
    name = "agentOS"
    unsupported = UNSUPPORTED

    def __init__(self, config: CrmConfig) -> None:
        super().__init__(config)
        self._api_url = config.agentos_api_url
        self._timeout = config.crm_timeout

    settings_model = ConnectionSettings
    streams = ("landlords", "tenants", "applicants")
    paging = "scan"  # no change filter: every record each time, applied when its hash changes

    async def fetch_scan(
        self,
        http: httpx.AsyncClient,
        credentials: dict[str, Any],
        settings: dict[str, Any],
        *,
        stream: str,
        offset: int,
    ) -> FetchedPage:
        """One page of a person endpoint from `offset`; each record as a draft and as a kept
        record carrying its content hash. An endpoint the settings leave out is an empty page."""
        parsed = ConnectionSettings.model_validate(settings)
        path = getattr(parsed, f"{stream}_path")
        if path is None:
            return FetchedPage(drafts=[], page_size=0)
        key = Credentials.model_validate(credentials)
        url = f"{self._api_url}/v4/{parsed.tier}/{key.short_name}/{path}"
        call = http.get(
            url,
            params={"offset": offset, "count": parsed.page_size},
            headers={"api_key": key.api_key, "Accept": "application/json"},
            timeout=self._timeout,
        )
        response = await reaching(self.name, call)
        if response.status_code == 429:
            raise RateLimited(retry_after_seconds(response.headers.get("retry-after"), 300))
        check_answer(self.name, response)
        records = page_records(self.name, response, parsed.list_key, f"/{path}")
        drafts, refs, bad = [], [], 0
        for record in records:
            draft = to_draft(stream, record, parsed) if isinstance(record, dict) else None
            if draft is None:
                bad += 1
                continue
            drafts.append(draft)
            refs.append(
                RoleRef(
                    record_type=stream,
                    external_id=draft.external_id,
                    contact_ids=[draft.external_id],
                    roles={"listed": stream},
                    content_hash=content_hash(record),
                )
            )
        return FetchedPage(drafts=drafts, page_size=len(records), bad_records=bad, refs=refs)
