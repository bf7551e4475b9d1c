"""The one apply path for CRM people, shared by webhooks and polls.

In the caller's transaction, for one PersonDraft of one connection: each field checked by the
contact's own validation (a refused field drops alone and is counted); the erasure suppression
list checked before anything is written (the identifiers hashed by procedures/suppression.py,
checked in the lookup statement as contacts.create checks them in its insert); the contact
found by (connection, external id), else by normalised email; an older version of the record
never overwrites a newer one; consent merged least-permissive first and recorded as evidence
with source 'crm_sync' in the write's own statement (contact_consent_events, as
procedures/consent.py reads them); archive mirrored, never erased; the CRM's category applied
only when it changes, so an agent's own choice stands until then. A record costs one round trip
when unchanged, two when created or changed.
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
from server.audit import audit_cte, audit_params
from server.db import Row, Tx, sql

__all__ = ["Counts", "apply"]

_VALIDATORS: dict[str, pydantic.TypeAdapter[str]] = {
    "first_name": pydantic.TypeAdapter(Name),
    "last_name": pydantic.TypeAdapter(Name),
    "email": pydantic.TypeAdapter(Email),
    "phone": pydantic.TypeAdapter(Phone),
    "postcode": pydantic.TypeAdapter(Postcode),
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


# A channel's consent is its latest event (procedures/consent.py); `channels` maps each channel
# asked so far to it.
_COLUMNS = """
    id, email, import_source, archived_at, source_modified_at, source_etag, crm_category,
    consent_status, consent_timestamp, crm_connection_id, external_id,
    (SELECT jsonb_object_agg(latest.channel, latest.status)
       FROM (SELECT DISTINCT ON (e.channel) e.channel, e.status FROM contact_consent_events AS e
              WHERE e.organisation_id = contacts.organisation_id AND e.contact_id = contacts.id
                AND e.channel <> 'overall'
              ORDER BY e.channel, e.recorded_at DESC, e.id DESC) AS latest) AS channels
"""
# Every read of one record in one round trip: whether any of its identifiers is on the erasure
# suppression list (procedures/suppression.py's hashes, checked as contacts.create does), and
# the contact it matches, locked: by (connection, external id), else by normalised email.
LOOKUP = sql(f"""
    WITH by_external AS (
        SELECT 'external' AS matched, {_COLUMNS} FROM contacts
         WHERE organisation_id = :organisation_id AND crm_connection_id = :connection_id
           AND external_id = :external_id
           FOR UPDATE),
    by_email AS (
        SELECT 'email' AS matched, {_COLUMNS} FROM contacts
         WHERE organisation_id = :organisation_id AND email = CAST(:email AS text)
           AND NOT EXISTS (SELECT 1 FROM by_external)
           FOR UPDATE)
    SELECT EXISTS (SELECT 1 FROM erasure_suppressions AS s
                    WHERE s.organisation_id = :organisation_id
                      AND s.identifier_hash = ANY (CAST(:hashes AS bytea[]))) AS suppressed,
           m.*
      FROM (SELECT 1) AS one
      LEFT JOIN (SELECT * FROM by_external UNION ALL SELECT * FROM by_email) AS m ON true
""")
_CONSENT_CTE = """
    consent AS (
        INSERT INTO contact_consent_events
               (organisation_id, contact_id, channel, status, consented_at, source,
                crm_connection_id)
        SELECT c.organisation_id, c.id, e.channel, e.status,
               CAST(:consented_at AS timestamptz), 'crm_sync', CAST(:connection_id AS uuid)
          FROM c CROSS JOIN unnest(CAST(:consent_channels AS text[]),
                                   CAST(:consent_statuses AS text[])) AS e (channel, status))"""
# The contact, its first category, its consent evidence (as procedures/consent.py records it:
# source crm_sync) and the audit row, in one statement. ON CONFLICT without a target: a webhook
# and a poll inserting one person at once, or an email taken meanwhile, insert nothing here
# and the caller looks again.
INSERT_SYNCED = sql(f"""
    WITH c AS (
    INSERT INTO contacts (organisation_id, first_name, last_name, email, phone, postcode,
                          consent_status, consent_timestamp, import_source, crm_payload,
                          crm_connection_id, external_id, archived_at, source_modified_at,
                          source_etag, active_category, crm_category)
    VALUES (:organisation_id, :first_name, :last_name, :email, :phone, :postcode,
            :consent_status, :consent_timestamp, 'crm_sync', CAST(:crm_payload AS jsonb),
            :connection_id, :external_id, CASE WHEN CAST(:archived AS boolean) THEN now() END,
            :source_modified_at, :source_etag, CAST(:category AS text), CAST(:category AS text))
    ON CONFLICT DO NOTHING
    RETURNING organisation_id, id, created_at, active_category),
    assignment AS (
        INSERT INTO lead_category_assignments
               (organisation_id, contact_id, category, assigned_at, reason)
        SELECT c.organisation_id, c.id, c.active_category, c.created_at, CAST(:reason AS text)
          FROM c WHERE c.active_category IS NOT NULL),
    {_CONSENT_CTE},
    {audit_cte("c", "c.id")}
    SELECT c.id FROM c
""")
# Fields: a contact that came from this CRM mirrors it (an empty field clears ours); one the
# agency made itself and the CRM matched by email only gains what the CRM holds. A field our
# validation refused is left as it is (:take_x says which to take).
UPDATE_SYNCED = sql(f"""
    WITH c AS (
    UPDATE contacts SET
        first_name = CASE WHEN CAST(:take_first_name AS boolean) THEN CAST(:first_name AS text)
                     ELSE first_name END,
        last_name = CASE WHEN CAST(:take_last_name AS boolean) THEN CAST(:last_name AS text)
                    ELSE last_name END,
        email = CASE WHEN CAST(:take_email AS boolean) THEN CAST(:email AS text) ELSE email END,
        phone = CASE WHEN CAST(:take_phone AS boolean) THEN CAST(:phone AS text) ELSE phone END,
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
        archived_at = CASE WHEN CAST(:archived AS boolean) THEN coalesce(archived_at, now()) END,
        source_modified_at = :source_modified_at,
        source_etag = :source_etag,
        updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
    RETURNING organisation_id, id),
    {_CONSENT_CTE},
    {audit_cte("c", "c.id")}
    SELECT c.id FROM c
""")
# Only a deny, from a record older than the one we hold: least permissive wins at once.
DENY_ONLY = sql(f"""
    WITH c AS (
    UPDATE contacts SET consent_status = 'denied', consent_timestamp = :consented_at,
                        updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
    RETURNING organisation_id, id),
    {_CONSENT_CTE},
    {audit_cte("c", "c.id")}
    SELECT c.id FROM c
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
    values = _checked(draft, counts)
    scope = {"organisation_id": organisation_id, "connection_id": connection_id}
    found = suppression.identifiers(values.get("email"), values.get("phone"), draft.external_id)
    lookup = {
        **scope,
        "external_id": draft.external_id,
        "hashes": suppression.hashes(suppression_key, organisation_id, found),
    }
    for _ in range(3):
        row = await tx.one(LOOKUP, {**lookup, "email": values.get("email")})
        assert row is not None
        if row["suppressed"]:
            counts.suppressed += 1
            return "suppressed"  # nothing of the person is written; the caller drops the payload
        if (
            row["matched"] == "email"
            and row["crm_connection_id"] == connection_id
            and row["external_id"] not in (None, draft.external_id)
        ):
            # Two records of this CRM share an email: the second comes in without it.
            values.pop("email")
            counts.field_errors += 1
            continue
        outcome = await _apply_to(tx, scope, provider_id, draft, values, row, consent_at, counts)
        if outcome is not None:
            return outcome
        # Inserted by another applier meanwhile (or the email was taken): look again.
    raise RuntimeError("a CRM record could not be applied after three looks")


async def _apply_to(
    tx: Tx,
    scope: dict[str, Any],
    provider_id: str,
    draft: PersonDraft,
    values: dict[str, str | None],
    existing: Row,
    consent_at: datetime | None,
    counts: Counts,
) -> str | None:
    consent_time = consent_at or draft.modified
    if existing["matched"] is None:
        return await _create(tx, scope, provider_id, draft, values, consent_time, counts)
    if _is_stale(existing, draft):
        # An older version never overwrites a newer one, but a deny in it still stands.
        if draft.consent == "denied" and existing["consent_status"] != "denied":
            await tx.execute(
                DENY_ONLY,
                {
                    **scope,
                    "id": existing["id"],
                    **_evidence({"overall": "denied"}, consent_time),
                    **_audit(scope, ["consentStatus"]),
                },
            )
        counts.unchanged += 1
        return "stale"
    if _is_same(existing, draft):
        counts.unchanged += 1
        return "unchanged"
    return await _update(tx, scope, provider_id, draft, values, existing, consent_time, counts)


def _payload(draft: PersonDraft) -> str:
    return orjson.dumps(draft.record).decode().replace("\\u0000", "")


def _evidence(changes: dict[str, str], consented_at: datetime | None) -> dict[str, Any]:
    return {
        "consent_channels": list(changes),
        "consent_statuses": list(changes.values()),
        "consented_at": consented_at,
    }


def _audit(scope: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    return audit_params(
        action="crm.sync",
        organisation_id=scope["organisation_id"],
        target_type="contact",
        changed_fields=changed,
    )


async def _create(
    tx: Tx,
    scope: dict[str, Any],
    provider_id: str,
    draft: PersonDraft,
    values: dict[str, str | None],
    consent_time: datetime | None,
    counts: Counts,
) -> str | None:
    status = draft.consent if draft.consent in ("granted", "denied") else "unknown"
    channels = {c: s for c, s in draft.channels.items() if s in ("granted", "denied")}
    evidence = {"overall": status, **channels} if status != "unknown" or channels else {}
    contact_id = await tx.scalar(
        INSERT_SYNCED,
        {
            **scope,
            **{name: values.get(name) for name in _VALIDATORS},
            "consent_status": status,
            "consent_timestamp": consent_time if status != "unknown" else None,
            "crm_payload": _payload(draft),
            "external_id": draft.external_id,
            "archived": draft.archived,
            "source_modified_at": draft.modified,
            "source_etag": draft.etag,
            "category": draft.category,
            "reason": _reason(provider_id, draft),
            **_evidence(evidence, consent_time),
            **_audit(scope, ["created"]),
        },
    )
    if contact_id is None:
        return None
    counts.created += 1
    counts.archived += int(draft.archived)
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
    held = existing["channels"] or {}
    for channel in consent.CHANNELS:
        change = _consent_change(
            held.get(channel), existing["consent_timestamp"], draft.channels.get(channel), consent_time
        )
        if change is not None:
            channel_changes[channel] = change
    evidence = {**({"overall": new_status} if new_status else {}), **channel_changes}
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
            "archived": draft.archived,
            "source_modified_at": draft.modified,
            "source_etag": draft.etag,
            **_evidence(evidence, consent_time),
            **_audit(scope, ["crm_sync"]),
        },
    )
    if draft.category != existing["crm_category"]:
        await _category(tx, scope, contact_id, draft, provider_id)
    if draft.archived and existing["archived_at"] is None:
        counts.archived += 1
    counts.updated += 1
    return "updated"


def _reason(provider_id: str, draft: PersonDraft) -> str:
    return f"crm_sync:{provider_id}:{draft.category_rule or 'roles'}"[:500]


async def _category(
    tx: Tx, scope: dict[str, Any], contact_id: UUID, draft: PersonDraft, provider_id: str
) -> None:
    """Edge-triggered: the CRM's category is applied when it differs from the one it gave last
    time, so an agent's manual choice stands until the CRM's roles change."""
    ids = {"organisation_id": scope["organisation_id"], "id": contact_id}
    if draft.category is not None:
        await tx.all(SET_CATEGORY, {**ids, "category": draft.category, "reason": _reason(provider_id, draft)})
    await tx.execute(SET_CRM_CATEGORY, {**ids, "category": draft.category})
