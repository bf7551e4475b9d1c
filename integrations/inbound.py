"""The one apply path for CRM people, shared by webhooks and polls.

In the caller's transaction, for a page of PersonDrafts of one connection (a webhook's one
record is a page of one): each field checked by the contact's own validation (a refused field
drops alone and is counted); the erasure suppression list checked before anything is written
(the identifiers hashed by procedures/suppression.py, checked in the lookup statement as
contacts.create checks them in its insert); the contact found by (connection, external id),
else by normalised email; an older version of the record never overwrites a newer one; consent
merged least-permissive first and recorded as evidence with source 'crm_sync' in the write's own
statement (contact_consent_events, as procedures/consent.py reads them); archive mirrored, never
erased; the CRM's category applied only when it changes, so an agent's own choice stands until
then; one audit row per contact written.

Set-based: a page costs one locked lookup, one insert of its new people and one update of its
changed ones, each with its consent evidence and audit rows (issue 17: 2,000 records a second).
A record the set statements cannot settle alone (two records of the page meeting one contact or
one email, a concurrent applier inserting it first) is looked at again on its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import pydantic

from integrations.providers.base import PersonDraft, RoleRef
from procedures import consent, suppression
from procedures.contact_fields import Email, Name, Phone, Postcode
from server.audit import audit_cte, audit_params
from server.db import Row, Statement, Tx, sql

__all__ = [
    "Counts", "apply", "apply_page", "held_as_is", "linked_people", "mark_gone", "mark_missing",
    "mark_seen", "outdated_by_delete", "refs_of", "store_refs",
]  # fmt: skip

_VALIDATORS: dict[str, pydantic.TypeAdapter[str]] = {
    "first_name": pydantic.TypeAdapter(Name),
    "last_name": pydantic.TypeAdapter(Name),
    "email": pydantic.TypeAdapter(Email),
    "phone": pydantic.TypeAdapter(Phone),
    "postcode": pydantic.TypeAdapter(Postcode),
}
_LOOKS = 3  # a record still unsettled after this many looks is a bug, not a race


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
    t.id, t.email, t.import_source, t.archived_at, t.source_modified_at, t.source_etag,
    t.crm_category, t.consent_status, t.consent_timestamp, t.crm_connection_id, t.external_id,
    (SELECT jsonb_object_agg(latest.channel, latest.status)
       FROM (SELECT DISTINCT ON (e.channel) e.channel, e.status FROM contact_consent_events AS e
              WHERE e.organisation_id = t.organisation_id AND e.contact_id = t.id
                AND e.channel <> 'overall'
              ORDER BY e.channel, e.recorded_at DESC, e.id DESC) AS latest) AS channels
"""
# Every read of a page in one round trip: for each record (by its place in the page, `item`)
# whether any of its identifiers is on the erasure suppression list (procedures/suppression.py's
# hashes, checked as contacts.create does), and the contact it matches, locked: by (connection,
# external id), else by normalised email.
LOOKUP = sql(f"""
    WITH d AS (
        SELECT * FROM unnest(CAST(:external_ids AS text[]), CAST(:emails AS text[]))
                      WITH ORDINALITY AS d (want_external_id, want_email, item)),
    -- One index probe per record (LATERAL ... LIMIT 1 keeps the planner from joining the
    -- page against every contact of the connection, as it chose with a generic plan).
    by_external AS (
        SELECT d.item, 'external' AS matched, t.*
          FROM d CROSS JOIN LATERAL (
               SELECT {_COLUMNS} FROM contacts AS t
                WHERE t.organisation_id = :organisation_id
                  AND t.crm_connection_id = :connection_id
                  AND t.external_id = d.want_external_id
                LIMIT 1 FOR UPDATE OF t) AS t),
    by_email AS (
        SELECT d.item, 'email' AS matched, t.*
          FROM d CROSS JOIN LATERAL (
               SELECT {_COLUMNS} FROM contacts AS t
                WHERE t.organisation_id = :organisation_id AND t.email = d.want_email
                LIMIT 1 FOR UPDATE OF t) AS t
         WHERE NOT EXISTS (SELECT 1 FROM by_external AS x WHERE x.item = d.item)),
    suppressed AS (
        SELECT DISTINCT h.item
          FROM unnest(CAST(:hash_items AS bigint[]), CAST(:hashes AS bytea[])) AS h (item, hash)
          JOIN erasure_suppressions AS s
            ON s.organisation_id = :organisation_id AND s.identifier_hash = h.hash)
    SELECT d.item AS item, EXISTS (SELECT 1 FROM suppressed AS s WHERE s.item = d.item) AS suppressed,
           m.matched, m.id, m.email, m.import_source, m.archived_at, m.source_modified_at,
           m.source_etag, m.crm_category, m.consent_status, m.consent_timestamp,
           m.crm_connection_id, m.external_id, m.channels
      FROM d LEFT JOIN (SELECT * FROM by_external UNION ALL SELECT * FROM by_email) AS m
        ON m.item = d.item
     ORDER BY d.item
""")
# The version of each record this connection's contacts hold: what `_is_same` compares.
HELD_VERSIONS = sql("""
    SELECT external_id, source_modified_at, source_etag, crm_connection_id, crm_category
      FROM contacts
     WHERE organisation_id = :organisation_id AND crm_connection_id = :connection_id
       AND external_id = ANY (CAST(:external_ids AS text[]))
""")
# Consent evidence of the contacts written (`c`), one row per (record, channel), as
# procedures/consent.py records it: source crm_sync. `key` joins evidence to its contact.
_CONSENT_CTE = """
    consent AS (
        INSERT INTO contact_consent_events
               (organisation_id, contact_id, channel, status, consented_at, source,
                crm_connection_id)
        SELECT c.organisation_id, c.id, e.channel, e.status, e.consented_at, 'crm_sync',
               CAST(:connection_id AS uuid)
          FROM c JOIN unnest(CAST(:consent_keys AS text[]), CAST(:consent_channels AS text[]),
                             CAST(:consent_statuses AS text[]),
                             CAST(:consent_times AS timestamptz[]))
                      AS e (key, channel, status, consented_at)
            ON e.key = c.key)"""
# The page's new people, their first categories, consent evidence and audit rows, in one
# statement. ON CONFLICT without a target: a webhook and a poll inserting one person at once, an
# email taken meanwhile or twice in the page, insert nothing here and the caller looks again.
INSERT_SYNCED = sql(f"""
    WITH d AS (
        SELECT * FROM unnest(
            CAST(:external_ids AS text[]), CAST(:first_names AS text[]),
            CAST(:last_names AS text[]), CAST(:emails AS text[]), CAST(:phones AS text[]),
            CAST(:postcodes AS text[]), CAST(:consent_status AS text[]),
            CAST(:consent_timestamps AS timestamptz[]), CAST(:payloads AS text[]),
            CAST(:archived AS boolean[]), CAST(:modified AS timestamptz[]),
            CAST(:etags AS text[]), CAST(:categories AS text[]), CAST(:reasons AS text[]))
        AS d (external_id, first_name, last_name, email, phone, postcode, consent_status,
              consent_timestamp, payload, archived, modified, etag, category, reason)),
    c AS (
    INSERT INTO contacts (organisation_id, first_name, last_name, email, phone, postcode,
                          consent_status, consent_timestamp, import_source, crm_payload,
                          crm_connection_id, external_id, archived_at, source_modified_at,
                          source_etag, active_category, crm_category)
    SELECT :organisation_id, d.first_name, d.last_name, d.email, d.phone, d.postcode,
           d.consent_status, d.consent_timestamp, 'crm_sync', CAST(d.payload AS jsonb),
           :connection_id, d.external_id, CASE WHEN d.archived THEN now() END,
           d.modified, d.etag, d.category, d.category
      FROM d
    ON CONFLICT DO NOTHING
    RETURNING organisation_id, id, created_at, active_category, CAST(external_id AS text) AS key),
    assignment AS (
        INSERT INTO lead_category_assignments
               (organisation_id, contact_id, category, assigned_at, reason)
        SELECT c.organisation_id, c.id, c.active_category, c.created_at, d.reason
          FROM c JOIN d ON d.external_id = c.key WHERE c.active_category IS NOT NULL),
    {_CONSENT_CTE},
    {audit_cte("c", "c.id")}
    SELECT c.key FROM c
""")
# Fields: a contact that came from this CRM mirrors it (an empty field clears ours); one the
# agency made itself and the CRM matched by email only gains what the CRM holds. A field our
# validation refused is left as it is (take_x says which to take). An email another contact
# holds is not taken (the person still is): `email_refused` says so, to be counted.
UPDATE_SYNCED = sql(f"""
    WITH d AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:first_names AS text[]), CAST(:take_first_names AS boolean[]),
            CAST(:last_names AS text[]), CAST(:take_last_names AS boolean[]),
            CAST(:emails AS text[]), CAST(:take_emails AS boolean[]),
            CAST(:phones AS text[]), CAST(:take_phones AS boolean[]),
            CAST(:postcodes AS text[]), CAST(:take_postcodes AS boolean[]),
            CAST(:payloads AS text[]), CAST(:external_ids AS text[]),
            CAST(:consent_status AS text[]), CAST(:consent_timestamps AS timestamptz[]),
            CAST(:archived AS boolean[]), CAST(:modified AS timestamptz[]), CAST(:etags AS text[]))
        AS d (id, first_name, take_first_name, last_name, take_last_name, email, take_email,
              phone, take_phone, postcode, take_postcode, payload, external_id, consent_status,
              consent_timestamp, archived, modified, etag)),
    c AS (
    UPDATE contacts AS t SET
        first_name = CASE WHEN d.take_first_name THEN d.first_name ELSE t.first_name END,
        last_name = CASE WHEN d.take_last_name THEN d.last_name ELSE t.last_name END,
        email = CASE WHEN d.take_email AND NOT EXISTS (
                         SELECT 1 FROM contacts AS o
                          WHERE o.organisation_id = t.organisation_id AND o.email = d.email
                            AND o.id <> t.id)
                     THEN d.email ELSE t.email END,
        phone = CASE WHEN d.take_phone THEN d.phone ELSE t.phone END,
        postcode = CASE WHEN d.take_postcode THEN d.postcode ELSE t.postcode END,
        crm_payload = CASE WHEN t.import_source = 'crm_sync' THEN CAST(d.payload AS jsonb)
                           ELSE t.crm_payload END,
        crm_connection_id = :connection_id,
        external_id = d.external_id,
        consent_status = coalesce(d.consent_status, t.consent_status),
        consent_timestamp = CASE WHEN d.consent_status IS NOT NULL THEN d.consent_timestamp
                                 ELSE t.consent_timestamp END,
        archived_at = CASE WHEN d.archived THEN coalesce(t.archived_at, now()) END,
        source_modified_at = d.modified,
        source_etag = d.etag,
        updated_at = now()
      FROM d
     WHERE t.organisation_id = :organisation_id AND t.id = d.id
    RETURNING t.organisation_id, t.id, CAST(t.id AS text) AS key,
              d.take_email AND d.email IS NOT NULL AND t.email IS DISTINCT FROM d.email
                  AS email_refused),
    {_CONSENT_CTE},
    {audit_cte("c", "c.id")}
    SELECT c.id, c.email_refused FROM c
""")
# Only a deny, from a record older than the one we hold: least permissive wins at once.
DENY_ONLY = sql(f"""
    WITH c AS (
    UPDATE contacts SET consent_status = 'denied', consent_timestamp = :consented_at,
                        updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
    RETURNING organisation_id, id, CAST(id AS text) AS key),
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


# Role records (crm_external_refs), kept between runs so a person's category can be derived from
# all their roles. A record is written only when its content changed and never by an older
# version of it; a deleted one keeps its row, marked, so a late older copy cannot bring it back.
STORE_REFS = sql("""
    INSERT INTO crm_external_refs AS t
           (organisation_id, connection_id, record_type, external_id, contact_ids, links, roles,
            content_hash, archived, deleted_at, source_modified_at)
    SELECT :organisation_id, :connection_id, d.record_type, d.external_id,
           ARRAY(SELECT jsonb_array_elements_text(CAST(d.contact_ids AS jsonb))),
           ARRAY(SELECT jsonb_array_elements_text(CAST(d.links AS jsonb))), CAST(d.roles AS jsonb), d.hash,
           d.archived, CASE WHEN d.deleted THEN now() END, d.modified
      FROM unnest(CAST(:record_types AS text[]), CAST(:external_ids AS text[]),
                  CAST(:contact_ids AS text[]), CAST(:links AS text[]), CAST(:roles AS text[]),
                  CAST(:hashes AS bytea[]), CAST(:archived AS boolean[]),
                  CAST(:deleted AS boolean[]), CAST(:modified AS timestamptz[]))
           AS d (record_type, external_id, contact_ids, links, roles, hash, archived, deleted,
                 modified)
    ON CONFLICT (organisation_id, connection_id, record_type, external_id) DO UPDATE
       SET contact_ids = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.contact_ids
                              ELSE t.contact_ids END,
           links = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.links ELSE t.links END,
           roles = CASE WHEN EXCLUDED.deleted_at IS NULL THEN EXCLUDED.roles ELSE t.roles END,
           content_hash = EXCLUDED.content_hash, archived = EXCLUDED.archived,
           deleted_at = EXCLUDED.deleted_at,
           source_modified_at = coalesce(EXCLUDED.source_modified_at, t.source_modified_at),
           updated_at = now()
     WHERE t.content_hash IS DISTINCT FROM EXCLUDED.content_hash
       AND (t.source_modified_at IS NULL OR EXCLUDED.source_modified_at IS NULL
            OR EXCLUDED.source_modified_at >= t.source_modified_at)
    RETURNING t.record_type, t.external_id
""")
# The people whose category changing records change, besides those the records name: of the
# records `named` ("landlords/L1", which a tenancy links to) and of the live records linking to
# `linked_to` ("properties/P1": its vendors and offers).
LINKED_PEOPLE = sql("""
    SELECT DISTINCT p.id
      FROM (SELECT r.contact_ids FROM crm_external_refs AS r
             WHERE r.organisation_id = :organisation_id AND r.connection_id = :connection_id
               AND (r.record_type, r.external_id) IN (
                   SELECT split_part(k, '/', 1), substr(k, strpos(k, '/') + 1)
                     FROM unnest(CAST(:named AS text[])) AS k)
            UNION ALL
            SELECT r.contact_ids FROM crm_external_refs AS r
             WHERE r.organisation_id = :organisation_id AND r.connection_id = :connection_id
               AND r.links && CAST(:linked_to AS text[]) AND r.deleted_at IS NULL) AS x
      CROSS JOIN unnest(x.contact_ids) AS p (id)
""")
# Each person's live role records, the live records linking to those (a landlord's tenancies)
# and the live records those link to (a vendor's or an offer's property).
REFS_OF = sql("""
    WITH mine AS (
        SELECT r.* FROM crm_external_refs AS r
         WHERE r.organisation_id = :organisation_id AND r.connection_id = :connection_id
           AND r.contact_ids && CAST(:ids AS text[]) AND r.deleted_at IS NULL),
    linking AS (
        SELECT l.*, m.contact_ids AS via
          FROM mine AS m JOIN crm_external_refs AS l
            ON l.organisation_id = m.organisation_id AND l.connection_id = m.connection_id
           AND l.links @> ARRAY[m.record_type || '/' || m.external_id]
         WHERE l.deleted_at IS NULL),
    linked AS (
        SELECT l.*, m.contact_ids AS via
          FROM mine AS m CROSS JOIN unnest(m.links) AS k (key)
          JOIN crm_external_refs AS l
            ON l.organisation_id = m.organisation_id AND l.connection_id = m.connection_id
           AND l.record_type = split_part(k.key, '/', 1)
           AND l.external_id = substr(k.key, strpos(k.key, '/') + 1)
         WHERE l.deleted_at IS NULL)
    SELECT p.id AS person, x.record_type, x.external_id, x.contact_ids, x.links, x.roles,
           x.archived, x.source_modified_at
      FROM (SELECT m.*, m.contact_ids AS via FROM mine AS m
            UNION ALL SELECT * FROM linking UNION ALL SELECT * FROM linked) AS x
      CROSS JOIN unnest(x.via) AS p (id)
     WHERE p.id = ANY (CAST(:ids AS text[]))
""")

# A full scan's page: its records seen now; returns those it brings back from gone (their
# unchanged content would otherwise leave their contact archived).
MARK_SEEN = sql("""
    WITH back AS (
        SELECT external_id FROM crm_external_refs
         WHERE organisation_id = :organisation_id AND connection_id = :connection_id
           AND record_type = :record_type AND external_id = ANY (CAST(:external_ids AS text[]))
           AND deleted_at IS NOT NULL)
    UPDATE crm_external_refs AS r SET seen_at = now(), deleted_at = NULL
     WHERE r.organisation_id = :organisation_id AND r.connection_id = :connection_id
       AND r.record_type = :record_type AND r.external_id = ANY (CAST(:external_ids AS text[]))
    RETURNING r.external_id, r.external_id IN (SELECT external_id FROM back) AS revived
""")
# At a complete scan's end: the stream's records not seen since `before` are gone from the CRM
# (a row from before seen_at existed counts as seen when it was last written).
MARK_MISSING = sql("""
    UPDATE crm_external_refs SET deleted_at = now(), updated_at = now()
     WHERE organisation_id = :organisation_id AND connection_id = :connection_id
       AND record_type = :record_type AND deleted_at IS NULL
       AND coalesce(seen_at, updated_at) < :before
    RETURNING contact_ids
""")
# A record the CRM said it deleted, kept as a role record of this type (no people, no facts):
# its time outdates every webhook carrying an older version, held or not when the delete came.
DELETED = "deleted"
OUTDATED_BY_DELETE = sql("""
    SELECT external_id, source_modified_at FROM crm_external_refs
     WHERE organisation_id = :organisation_id AND connection_id = :connection_id
       AND record_type = 'deleted' AND external_id = ANY (CAST(:external_ids AS text[]))
""")
# People the CRM no longer holds (a read by id answers 404; gone from two complete scans): our
# copy is archived, as a CRM archive is (reversible: the record coming back restores it), and its
# CRM payload dropped. Never erased (only contacts.delete erases) and never suppressed: deletion
# in the CRM is not an objection to processing. (A late webhook of the record as it was before
# is refused by the delete's own record, DELETED, whether we held the person or not.)
MARK_GONE = sql(f"""
    WITH c AS (
    UPDATE contacts AS t
       SET archived_at = coalesce(t.archived_at, now()), crm_payload = NULL, updated_at = now()
     WHERE t.organisation_id = :organisation_id AND t.crm_connection_id = :connection_id
       AND t.external_id = ANY (CAST(:external_ids AS text[]))
       AND (t.archived_at IS NULL OR t.crm_payload IS NOT NULL)
    RETURNING t.organisation_id, t.id),
    {audit_cte("c", "c.id")}
    SELECT c.id FROM c
""")


def _ref_hash(ref: RoleRef) -> bytes:
    if ref.content_hash is not None:
        return ref.content_hash
    text = orjson.dumps(
        [ref.contact_ids, ref.links, ref.roles, ref.archived, ref.deleted], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(text).digest()


async def store_refs(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, refs: list[RoleRef]
) -> set[tuple[str, str]]:
    """Keep a page's role records (the last copy of each); returns the (record type, external
    id) of those new or changed."""
    last = {ref.key: ref for ref in refs}
    if not last:
        return set()
    kept = list(last.values())
    rows = await tx.all(
        STORE_REFS,
        {
            "organisation_id": organisation_id,
            "connection_id": connection_id,
            "record_types": [r.record_type for r in kept],
            "external_ids": [r.external_id for r in kept],
            "contact_ids": [orjson.dumps(r.contact_ids).decode() for r in kept],
            "links": [orjson.dumps(r.links).decode() for r in kept],
            "roles": [orjson.dumps(r.roles).decode() for r in kept],
            "hashes": [_ref_hash(r) for r in kept],
            "archived": [r.archived for r in kept],
            "deleted": [r.deleted for r in kept],
            "modified": [r.modified for r in kept],
        },
    )
    return {(row["record_type"], row["external_id"]) for row in rows}


async def linked_people(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, named: list[str], linked_to: list[str]
) -> list[str]:
    """The CRM ids of the people the records `named` name and of those the live records
    linking to `linked_to` name (keys are "<record type>/<external id>")."""
    if not named and not linked_to:
        return []
    rows = await tx.all(
        LINKED_PEOPLE,
        {
            "organisation_id": organisation_id,
            "connection_id": connection_id,
            "named": named,
            "linked_to": linked_to,
        },
    )
    return [row["id"] for row in rows]


async def refs_of(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, people: list[str]
) -> dict[str, list[RoleRef]]:
    """Each person's role records as kept, with the records that link to them and those they
    link to."""
    found: dict[str, list[RoleRef]] = {}
    if not people:
        return found
    rows = await tx.all(
        REFS_OF, {"organisation_id": organisation_id, "connection_id": connection_id, "ids": people}
    )
    for row in rows:
        found.setdefault(row["person"], []).append(
            RoleRef(
                record_type=row["record_type"],
                external_id=row["external_id"],
                contact_ids=list(row["contact_ids"]),
                roles=dict(row["roles"]),
                links=list(row["links"]),
                archived=row["archived"],
                modified=row["source_modified_at"],
            )
        )
    return found


async def mark_seen(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, record_type: str, external_ids: list[str]
) -> set[str]:
    """A scan's page read these records now; returns those that had been marked gone."""
    if not external_ids:
        return set()
    rows = await tx.all(
        MARK_SEEN,
        {
            "organisation_id": organisation_id,
            "connection_id": connection_id,
            "record_type": record_type,
            "external_ids": external_ids,
        },
    )
    return {row["external_id"] for row in rows if row["revived"]}


async def mark_missing(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, record_type: str, before: datetime
) -> list[str]:
    """Mark gone the stream's records no scan has seen since `before`; returns their people."""
    rows = await tx.all(
        MARK_MISSING,
        {
            "organisation_id": organisation_id,
            "connection_id": connection_id,
            "record_type": record_type,
            "before": before,
        },
    )
    return sorted({person for row in rows for person in row["contact_ids"]})


async def mark_gone(
    tx: Tx,
    *,
    organisation_id: UUID,
    connection_id: UUID,
    external_ids: list[str],
    counts: Counts,
    gone_at: datetime | None = None,
) -> int:
    """Archive (and drop the CRM payload of) the contacts of records the CRM no longer holds, one
    audit row each; `gone_at`, when the CRM dates the delete, is kept as the records' DELETED
    record, which outdates every older version. Returns how many contacts changed."""
    if not external_ids:
        return 0
    scope = {"organisation_id": organisation_id, "connection_id": connection_id}
    audit = _audit(scope, ["archivedAt", "crmPayload"])
    rows = await tx.all(MARK_GONE, {**scope, "external_ids": external_ids, **audit})
    if gone_at is not None:
        deleted = [RoleRef(DELETED, i, [], {}, deleted=True, modified=gone_at) for i in external_ids]
        await store_refs(tx, **scope, refs=deleted)
    counts.archived += len(rows)
    return len(rows)

async def outdated_by_delete(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, drafts: list[PersonDraft]
) -> set[str]:
    """The external ids of `drafts` whose record the CRM said it deleted at or after the
    version the draft carries: a late webhook of a record since deleted, never to be applied."""
    deleted = await _by_record(tx, OUTDATED_BY_DELETE, organisation_id, connection_id, drafts)
    return {
        d.external_id
        for d in drafts
        if (row := deleted.get(d.external_id)) is not None
        and (d.modified is None or d.modified <= row["source_modified_at"])
    }


async def _by_record(
    tx: Tx, statement: Statement, organisation_id: UUID, connection_id: UUID, drafts: list[PersonDraft]
) -> dict[str, Row]:
    """`statement`'s rows for the drafts' records (it takes the connection and `external_ids`),
    by external id; one query."""
    if not drafts:
        return {}
    params = {"organisation_id": organisation_id, "connection_id": connection_id}
    rows = await tx.all(statement, {**params, "external_ids": [d.external_id for d in drafts]})
    return {row["external_id"]: row for row in rows}

@dataclass
class _Item:
    """One record of the page on its way through: its checked fields and what became of it."""

    draft: PersonDraft
    values: dict[str, str | None]
    consent_time: datetime | None
    looks: int = 0
    outcome: str | None = None
    hashes: list[bytes] = field(default_factory=list)


@dataclass
class _Evidence:
    """Consent evidence rows, each keyed to the contact it belongs to (see _CONSENT_CTE)."""

    keys: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    times: list[datetime | None] = field(default_factory=list)

    def add(self, key: str, changes: dict[str, str], at: datetime | None) -> None:
        for channel, status in changes.items():
            self.keys.append(key)
            self.channels.append(channel)
            self.statuses.append(status)
            self.times.append(at)

    def params(self) -> dict[str, Any]:
        return {
            "consent_keys": self.keys,
            "consent_channels": self.channels,
            "consent_statuses": self.statuses,
            "consent_times": self.times,
        }


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
        # A role stream reads a person again when their roles change, which need not change
        # the record's version: a new category is a change.
        and existing["crm_category"] == draft.category
    )


def _consent_moves(existing: Row, item: _Item) -> bool:
    """Consent the CRM keeps apart from the record (`consent_ref`) changes without the record's
    version changing: the same record with a consent that changes ours is applied."""
    return item.draft.consent_ref is not None and (
        _consent_change(
            existing["consent_status"], existing["consent_timestamp"], item.draft.consent, item.consent_time
        )
        is not None
    )


async def held_as_is(
    tx: Tx, *, organisation_id: UUID, connection_id: UUID, drafts: list[PersonDraft]
) -> set[str]:
    """The external ids of `drafts` already held at their version or a newer one (one query):
    applying them would change nothing the record says, so what it refers to need not be read."""
    held = await _by_record(tx, HELD_VERSIONS, organisation_id, connection_id, drafts)
    return {
        d.external_id
        for d in drafts
        if (row := held.get(d.external_id)) is not None and (_is_same(row, d) or _is_stale(row, d))
    }


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
    else the draft's own consent time, else the record's modified time."""
    outcomes = await apply_page(
        tx,
        suppression_key=suppression_key,
        organisation_id=organisation_id,
        connection_id=connection_id,
        provider_id=provider_id,
        drafts=[draft],
        counts=counts,
        consent_at=consent_at,
    )
    return outcomes[0]


async def apply_page(
    tx: Tx,
    *,
    suppression_key: bytes,
    organisation_id: UUID,
    connection_id: UUID,
    provider_id: str,
    drafts: list[PersonDraft],
    counts: Counts,
    consent_at: datetime | None = None,
) -> list[str]:
    """Apply a page of CRM people, in the page's order; returns what happened to each, as
    `apply` says. Two drafts of one record are applied one after the other."""
    scope = {"organisation_id": organisation_id, "connection_id": connection_id}
    items: list[_Item] = []
    for draft in drafts:
        counts.fetched += 1
        values = _checked(draft, counts)
        item = _Item(draft, values, consent_at or draft.consent_at or draft.modified)
        found = suppression.identifiers(values.get("email"), values.get("phone"), draft.external_id)
        item.hashes = suppression.hashes(suppression_key, organisation_id, found)
        items.append(item)
    waiting = items
    while waiting:
        batch: list[_Item] = []
        later: list[_Item] = []
        records: set[str] = set()
        for item in waiting:
            # A record twice in the page: its second draft waits for the first to be applied.
            (later if item.draft.external_id in records else batch).append(item)
            records.add(item.draft.external_id)
        for item in await _apply_batch(tx, scope, provider_id, batch, counts):
            # What the set statements could not settle is looked at again on its own.
            while item.outcome is None:
                item.looks += 1
                if item.looks >= _LOOKS:
                    raise RuntimeError("a CRM record could not be applied after three looks")
                await _apply_batch(tx, scope, provider_id, [item], counts)
        waiting = later
    return [item.outcome or "unchanged" for item in items]


async def _apply_batch(
    tx: Tx, scope: dict[str, Any], provider_id: str, batch: list[_Item], counts: Counts
) -> list[_Item]:
    """Look the batch up, then create and update what it holds; returns the items left
    unsettled (their outcome still None), to be looked at again."""
    hash_items = [n for n, item in enumerate(batch, 1) for _ in item.hashes]
    rows = await tx.all(
        LOOKUP,
        {
            **scope,
            "external_ids": [item.draft.external_id for item in batch],
            "emails": [item.values.get("email") for item in batch],
            "hash_items": hash_items,
            "hashes": [h for item in batch for h in item.hashes],
        },
    )
    creates: list[_Item] = []
    updates: list[tuple[_Item, Row]] = []
    again: list[_Item] = []
    claimed: set[UUID] = set()
    for item, row in zip(batch, rows, strict=True):
        draft = item.draft
        if row["suppressed"]:
            counts.suppressed += 1
            item.outcome = "suppressed"  # nothing of the person is written
        elif (
            row["matched"] == "email"
            and row["crm_connection_id"] == scope["connection_id"]
            and row["external_id"] not in (None, draft.external_id)
        ):
            # Two records of this CRM share an email: the second comes in without it.
            item.values.pop("email")
            counts.field_errors += 1
            again.append(item)
        elif row["matched"] is None:
            creates.append(item)
        elif row["id"] in claimed:
            again.append(item)  # two records of the page meet one contact: one at a time
        else:
            claimed.add(row["id"])
            if _is_stale(row, draft):
                await _stale(tx, scope, item, row)
                counts.unchanged += 1
                item.outcome = "stale"
            elif _is_same(row, draft) and not _consent_moves(row, item):
                counts.unchanged += 1
                item.outcome = "unchanged"
            else:
                updates.append((item, row))
    if creates:
        again += await _create(tx, scope, provider_id, creates, counts)
    if updates:
        await _update(tx, scope, provider_id, updates, counts)
    return again


def _payload(draft: PersonDraft) -> str:
    return orjson.dumps(draft.record).decode().replace("\\u0000", "")


def _audit(scope: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    return audit_params(
        action="crm.sync",
        organisation_id=scope["organisation_id"],
        target_type="contact",
        changed_fields=changed,
    )


async def _stale(tx: Tx, scope: dict[str, Any], item: _Item, existing: Row) -> None:
    """An older version never overwrites a newer one, but a deny in it still stands."""
    if item.draft.consent != "denied" or existing["consent_status"] == "denied":
        return
    evidence = _Evidence()
    evidence.add(str(existing["id"]), {"overall": "denied"}, item.consent_time)
    await tx.execute(
        DENY_ONLY,
        {
            **scope,
            "id": existing["id"],
            "consented_at": item.consent_time,
            **evidence.params(),
            **_audit(scope, ["consentStatus"]),
        },
    )


async def _create(
    tx: Tx, scope: dict[str, Any], provider_id: str, items: list[_Item], counts: Counts
) -> list[_Item]:
    """Insert the new people; returns those another applier (or the page) got to first."""
    evidence = _Evidence()
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "external_ids", "first_names", "last_names", "emails", "phones", "postcodes",
            "consent_status", "consent_timestamps", "payloads", "archived", "modified", "etags",
            "categories", "reasons",
        )
    }  # fmt: skip
    for item in items:
        draft, values = item.draft, item.values
        status = draft.consent if draft.consent in ("granted", "denied") else "unknown"
        channels = {c: s for c, s in draft.channels.items() if s in ("granted", "denied")}
        if status != "unknown" or channels:
            evidence.add(draft.external_id, {"overall": status, **channels}, item.consent_time)
        for name, value in (
            ("external_ids", draft.external_id),
            ("first_names", values.get("first_name")),
            ("last_names", values.get("last_name")),
            ("emails", values.get("email")),
            ("phones", values.get("phone")),
            ("postcodes", values.get("postcode")),
            ("consent_status", status),
            ("consent_timestamps", item.consent_time if status != "unknown" else None),
            ("payloads", _payload(draft)),
            ("archived", draft.archived),
            ("modified", draft.modified),
            ("etags", draft.etag),
            ("categories", draft.category),
            ("reasons", _reason(provider_id, draft)),
        ):
            columns[name].append(value)
    inserted = {
        row["key"]
        for row in await tx.all(
            INSERT_SYNCED, {**scope, **columns, **evidence.params(), **_audit(scope, ["created"])}
        )
    }
    again = []
    for item in items:
        if item.draft.external_id in inserted:
            counts.created += 1
            counts.archived += int(item.draft.archived)
            item.outcome = "created"
        else:
            again.append(item)
    return again


async def _update(
    tx: Tx, scope: dict[str, Any], provider_id: str, updates: list[tuple[_Item, Row]], counts: Counts
) -> None:
    evidence = _Evidence()
    columns: dict[str, list[Any]] = {"ids": [], "payloads": [], "external_ids": []}
    for name in _VALIDATORS:
        columns[f"{name}s"] = []
        columns[f"take_{name}s"] = []
    for name in ("consent_status", "consent_timestamps", "archived", "modified", "etags"):
        columns[name] = []
    for item, existing in updates:
        draft, values = item.draft, item.values
        mirror = existing["import_source"] == "crm_sync"
        new_status = _consent_change(
            existing["consent_status"], existing["consent_timestamp"], draft.consent, item.consent_time
        )
        changes = {"overall": new_status} if new_status else {}
        held = existing["channels"] or {}
        for channel in consent.CHANNELS:
            change = _consent_change(
                held.get(channel),
                existing["consent_timestamp"],
                draft.channels.get(channel),
                item.consent_time,
            )
            if change is not None:
                changes[channel] = change
        evidence.add(str(existing["id"]), changes, item.consent_time)
        columns["ids"].append(existing["id"])
        columns["payloads"].append(_payload(draft))
        columns["external_ids"].append(draft.external_id)
        for name in _VALIDATORS:
            columns[f"{name}s"].append(values.get(name))
            columns[f"take_{name}s"].append(name in values and (mirror or values[name] is not None))
        columns["consent_status"].append(new_status)
        columns["consent_timestamps"].append(item.consent_time)
        columns["archived"].append(draft.archived)
        columns["modified"].append(draft.modified)
        columns["etags"].append(draft.etag)
    rows = await tx.all(
        UPDATE_SYNCED, {**scope, **columns, **evidence.params(), **_audit(scope, ["crm_sync"])}
    )
    counts.field_errors += sum(1 for row in rows if row["email_refused"])
    for item, existing in updates:
        draft = item.draft
        if draft.category != existing["crm_category"]:
            await _category(tx, scope, existing["id"], draft, provider_id)
        if draft.archived and existing["archived_at"] is None:
            counts.archived += 1
        counts.updated += 1
        item.outcome = "updated"


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
