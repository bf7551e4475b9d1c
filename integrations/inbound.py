"""The one apply path for CRM people, shared by webhooks and polls.

In the caller's transaction, for one PersonDraft of one connection: each field checked by the
contact's own validation (a refused field drops alone and is counted); the erasure suppression
list checked before anything is written (procedures/suppression.py); the contact found by
(connection, external id), else by normalised email; an older version of the record never
overwrites a newer one; consent merged least-permissive first and recorded as evidence with
source 'crm_sync' (procedures/consent.py); archive mirrored, never erased; the CRM's category
applied only when it changes, so an agent's own choice stands until then.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import pydantic

from integrations.providers.base import PersonDraft
from procedures import consent, suppression
from procedures.contact_fields import Email, Name, Phone, Postcode
from server.audit import INSERT_AUDIT, audit_params
from server.db import Row, Tx, sql

__all__ = ["Counts", "apply"]

_VALIDATORS: dict[str, pydantic.TypeAdapter[str]] = {
    "first_name": pydantic.TypeAdapter(Name),
    "last_name": pydantic.TypeAdapter(Name),
    "email": pydantic.TypeAdapter(Email),
    "phone": pydantic.TypeAdapter(Phone),
    "postcode": pydantic.TypeAdapter(Postcode),
}
_CHANNEL_COLUMNS = {
    "email": "consent_email",
    "sms": "consent_sms",
    "phone": "consent_phone",
    "post": "consent_post",
}


@dataclass
class Counts:
    """What a run (or one webhook event) did, as crm_sync_runs counts it."""

    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: int = 0
    archived: int = 0
    field_errors: int = 0

    def as_params(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Two appliers of one record (a webhook and a poll) wait for each other here.
LOCK_RECORD = sql("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")

_COLUMNS = """
    id, email, import_source, archived_at, source_modified_at, source_etag, crm_category,
    consent_status, consent_timestamp, consent_email, consent_sms, consent_phone, consent_post,
    crm_connection_id, external_id
"""
FIND_BY_EXTERNAL = sql(f"""
    SELECT {_COLUMNS} FROM contacts
     WHERE organisation_id = :organisation_id AND crm_connection_id = :connection_id
       AND external_id = :external_id
       FOR UPDATE
""")
FIND_BY_EMAIL = sql(f"""
    SELECT {_COLUMNS} FROM contacts
     WHERE organisation_id = :organisation_id AND email = :email
       FOR UPDATE
""")
INSERT_SYNCED = sql("""
    INSERT INTO contacts (organisation_id, first_name, last_name, email, phone, postcode,
                          consent_status, consent_timestamp, import_source, crm_payload,
                          crm_connection_id, external_id, consent_email, consent_sms,
                          consent_phone, consent_post, archived_at, source_modified_at,
                          source_etag)
    VALUES (:organisation_id, :first_name, :last_name, :email, :phone, :postcode,
            :consent_status, :consent_timestamp, 'crm_sync', CAST(:crm_payload AS jsonb),
            :connection_id, :external_id, :consent_email, :consent_sms, :consent_phone,
            :consent_post, CASE WHEN CAST(:archived AS boolean) THEN now() END,
            :source_modified_at, :source_etag)
    ON CONFLICT (organisation_id, email) WHERE email IS NOT NULL DO NOTHING
    RETURNING id
""")
# Fields: a contact that came from this CRM mirrors it (an empty field clears ours); one the
# agency made itself and the CRM matched by email only gains what the CRM holds. A field our
# validation refused is left as it is (:take_x says which to take).
UPDATE_SYNCED = sql("""
    UPDATE contacts SET
        first_name = CASE WHEN CAST(:take_first_name AS boolean) THEN CAST(:first_name AS text)
                     ELSE first_name END,
        last_name = CASE WHEN CAST(:take_last_name AS boolean) THEN CAST(:last_name AS text)
                    ELSE last_name END,
        email = CASE WHEN CAST(:take_email AS boolean) THEN CAST(:email AS text)
                ELSE email END,
        phone = CASE WHEN CAST(:take_phone AS boolean) THEN CAST(:phone AS text)
                ELSE phone END,
        postcode = CASE WHEN CAST(:take_postcode AS boolean) THEN CAST(:postcode AS text)
                   ELSE postcode END,
        crm_payload = CASE WHEN import_source = 'crm_sync' THEN CAST(:crm_payload AS jsonb)
                           ELSE crm_payload END,
        crm_connection_id = :connection_id,
        external_id = :external_id,
        consent_status = coalesce(CAST(:consent_status AS text), consent_status),
        consent_timestamp = CASE WHEN CAST(:consent_status AS text) IS NOT NULL
                                 THEN CAST(:consent_timestamp AS timestamptz)
                                 ELSE consent_timestamp END,
        consent_email = coalesce(CAST(:consent_email AS text), consent_email),
        consent_sms = coalesce(CAST(:consent_sms AS text), consent_sms),
        consent_phone = coalesce(CAST(:consent_phone AS text), consent_phone),
        consent_post = coalesce(CAST(:consent_post AS text), consent_post),
        archived_at = CASE WHEN CAST(:archived AS boolean) THEN coalesce(archived_at, now()) END,
        source_modified_at = :source_modified_at,
        source_etag = :source_etag,
        updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
""")
# Only a deny, from a record older than the one we hold: least permissive wins at once.
DENY_ONLY = sql("""
    UPDATE contacts SET consent_status = 'denied', consent_timestamp = :consent_timestamp,
                        updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
""")
SET_CRM_CATEGORY = sql("""
    UPDATE contacts SET crm_category = :category
     WHERE organisation_id = :organisation_id AND id = :id
""")
SET_CATEGORY = sql("""
    SELECT changed FROM set_contact_category(:organisation_id, :id, CAST(:category AS text),
                                             NULL, CAST(:reason AS text))
""")


def _checked(draft: PersonDraft, counts: Counts) -> dict[str, str | None]:
    """Each field as our validation takes it; a refused one is left out (and counted)."""
    values: dict[str, str | None] = {}
    for name, adapter in _VALIDATORS.items():
        raw = getattr(draft, name)
        if raw is None:
            values[name] = None
            continue
        try:
            values[name] = adapter.validate_python(raw)
        except pydantic.ValidationError:
            counts.field_errors += 1
    return values


def _consent_change(
    current: str | None, current_at: datetime | None, incoming: str | None, incoming_at: datetime | None
) -> str | None:
    """The new status, or None to keep ours. Never 'granted' from 'not asked' (the providers
    map it to unknown, which changes nothing); a deny applies at once; a grant beats a deny
    only when the CRM's change is newer than the deny."""
    if incoming is None or incoming == "unknown" or incoming == current:
        return None
    if incoming == "granted" and current == "denied":
        if incoming_at is None or current_at is None or incoming_at <= current_at:
            return None
    return incoming


def _is_stale(existing: Row, draft: PersonDraft) -> bool:
    held = existing["source_modified_at"]
    return held is not None and draft.modified is not None and draft.modified < held


def _is_same(existing: Row, draft: PersonDraft) -> bool:
    return (
        existing["source_modified_at"] is not None
        and existing["source_modified_at"] == draft.modified
        and existing["source_etag"] == draft.etag
        and existing["crm_connection_id"] is not None
    )


async def apply(
    tx: Tx,
    *,
    suppression_key: bytes,
    organisation_id: UUID,
    connection_id: UUID,
    provider_id: str,
    draft: PersonDraft,
    counts: Counts,
    consent_at: datetime | None = None,
) -> str:
    """Apply one CRM person; returns what happened: created, updated, unchanged, stale or
    suppressed. `consent_at` is when the CRM says consent changed (an opt-out event's time),
    else the record's modified time."""
    counts.fetched += 1
    scope = {"organisation_id": organisation_id, "connection_id": connection_id}
    await tx.execute(LOCK_RECORD, {"key": f"{connection_id}:{draft.external_id}"})
    values = _checked(draft, counts)
    found = suppression.identifiers(values.get("email"), values.get("phone"), draft.external_id)
    if await suppression.check_in(tx, suppression_key, organisation_id, found):
        counts.suppressed += 1
        return "suppressed"  # nothing of the person is written, and the caller drops the payload

    existing = await tx.one(FIND_BY_EXTERNAL, {**scope, "external_id": draft.external_id})
    if existing is None and values.get("email"):
        by_email = await tx.one(FIND_BY_EMAIL, {**scope, "email": values["email"]})
        linked_elsewhere = (
            by_email is not None
            and by_email["crm_connection_id"] == connection_id
            and by_email["external_id"] not in (None, draft.external_id)
        )
        if linked_elsewhere:
            # Two records of this CRM share an email: the second comes in without it.
            values.pop("email")
            counts.field_errors += 1
        else:
            existing = by_email
    consent_time = consent_at or draft.modified
    if existing is None:
        return await _create(tx, scope, provider_id, draft, values, consent_time, counts)
    if _is_stale(existing, draft):
        # An older version never overwrites a newer one, but a deny in it still stands.
        if draft.consent == "denied" and existing["consent_status"] != "denied":
            await tx.execute(DENY_ONLY, {**scope, "id": existing["id"], "consent_timestamp": consent_time})
            await consent.record_sync_changes(
                tx,
                organisation_id,
                existing["id"],
                {"overall": "denied"},
                consented_at=consent_time,
                crm_connection_id=connection_id,
            )
        counts.unchanged += 1
        return "stale"
    if _is_same(existing, draft):
        counts.unchanged += 1
        return "unchanged"
    return await _update(tx, scope, provider_id, draft, values, existing, consent_time, counts)


def _payload(draft: PersonDraft) -> str:
    return orjson.dumps(draft.record).decode().replace("\\u0000", "")


async def _create(
    tx: Tx,
    scope: dict[str, Any],
    provider_id: str,
    draft: PersonDraft,
    values: dict[str, str | None],
    consent_time: datetime | None,
    counts: Counts,
) -> str:
    status = draft.consent if draft.consent in ("granted", "denied") else "unknown"
    channels = {c: s for c, s in draft.channels.items() if s in ("granted", "denied")}
    contact_id = await tx.scalar(
        INSERT_SYNCED,
        {
            **scope,
            **{name: values.get(name) for name in _VALIDATORS},
            "consent_status": status,
            "consent_timestamp": consent_time if status != "unknown" else None,
            "crm_payload": _payload(draft),
            "external_id": draft.external_id,
            **{column: channels.get(channel) for channel, column in _CHANNEL_COLUMNS.items()},
            "archived": draft.archived,
            "source_modified_at": draft.modified,
            "source_etag": draft.etag,
        },
    )
    if contact_id is None:
        # The email was taken between our look and our insert: the person comes in without it.
        counts.field_errors += 1
        return await _create(tx, scope, provider_id, draft, {**values, "email": None}, consent_time, counts)
    evidence = {"overall": status, **channels} if status != "unknown" or channels else {}
    await consent.record_sync_changes(
        tx,
        scope["organisation_id"],
        contact_id,
        evidence,
        consented_at=consent_time,
        crm_connection_id=scope["connection_id"],
    )
    await _category(tx, scope, contact_id, None, draft, provider_id)
    counts.created += 1
    counts.archived += int(draft.archived)
    await _audit(tx, scope, contact_id, ["created"])
    return "created"


async def _update(
    tx: Tx,
    scope: dict[str, Any],
    provider_id: str,
    draft: PersonDraft,
    values: dict[str, str | None],
    existing: Row,
    consent_time: datetime | None,
    counts: Counts,
) -> str:
    contact_id = existing["id"]
    mirror = existing["import_source"] == "crm_sync"
    new_status = _consent_change(
        existing["consent_status"], existing["consent_timestamp"], draft.consent, consent_time
    )
    channel_changes: dict[str, str] = {}
    for channel, column in _CHANNEL_COLUMNS.items():
        change = _consent_change(
            existing[column], existing["consent_timestamp"], draft.channels.get(channel), consent_time
        )
        if change is not None:
            channel_changes[channel] = change
    await tx.execute(
        UPDATE_SYNCED,
        {
            **scope,
            "id": contact_id,
            **{name: values.get(name) for name in _VALIDATORS},
            **{
                f"take_{name}": name in values and (mirror or values[name] is not None)
                for name in _VALIDATORS
            },
            "crm_payload": _payload(draft),
            "external_id": draft.external_id,
            "consent_status": new_status,
            "consent_timestamp": consent_time,
            **{column: channel_changes.get(channel) for channel, column in _CHANNEL_COLUMNS.items()},
            "archived": draft.archived,
            "source_modified_at": draft.modified,
            "source_etag": draft.etag,
        },
    )
    evidence = {**({"overall": new_status} if new_status else {}), **channel_changes}
    await consent.record_sync_changes(
        tx,
        scope["organisation_id"],
        contact_id,
        evidence,
        consented_at=consent_time,
        crm_connection_id=scope["connection_id"],
    )
    await _category(tx, scope, contact_id, existing["crm_category"], draft, provider_id)
    if draft.archived and existing["archived_at"] is None:
        counts.archived += 1
    counts.updated += 1
    await _audit(tx, scope, contact_id, ["crm_sync"])
    return "updated"


async def _category(
    tx: Tx, scope: dict[str, Any], contact_id: UUID, held: str | None, draft: PersonDraft, provider_id: str
) -> None:
    """Edge-triggered: the CRM's category is applied when it differs from the one it gave last
    time, so an agent's manual choice stands until the CRM's roles change."""
    if draft.category == held:
        return
    ids = {"organisation_id": scope["organisation_id"], "id": contact_id}
    if draft.category is not None:
        reason = f"crm_sync:{provider_id}:{draft.category_rule or 'roles'}"[:500]
        await tx.all(SET_CATEGORY, {**ids, "category": draft.category, "reason": reason})
    await tx.execute(SET_CRM_CATEGORY, {**ids, "category": draft.category})


async def _audit(tx: Tx, scope: dict[str, Any], contact_id: UUID, changed: list[str]) -> None:
    await tx.execute(
        INSERT_AUDIT,
        audit_params(
            action="crm.sync",
            organisation_id=scope["organisation_id"],
            target_type="contact",
            target_id=str(contact_id),
            changed_fields=changed,
        ),
    )
