"""contacts.*: contacts, their category history, GDPR erasure, and the CRM provider registry."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import AwareDatetime, BeforeValidator, Field

from procedures import consent, contact_import, suppression
from procedures.audit import SELECT_ENTRIES as SELECT_AUDIT_ENTRIES
from procedures.audit import AuditEntry
from procedures.contact_fields import (
    Category,
    ConsentStatus,
    ConsentTime,
    CrmPayload,
    Email,
    ExternalId,
    Group,
    ImportSource,
    Name,
    Phone,
    Postcode,
    Reason,
    SearchText,
    search_tsquery,
)
from procedures.contact_import import BulkSource, OnDuplicate
from procedures.suppression import IdentifierKind
from server.audit import audit_cte, audit_params, write_audit
from server.context import Context, Principal
from server.cursor import cursor_key, decode_cursor, encode_cursor
from server.db import Database, Row, Statement, sql
from server.encoded import Encoded, encode, wire_columns
from server.errors import Conflict, Forbidden, InvalidParams, NotFound
from server.models import WireModel
from server.procedure import ADMIN, AUTHED, Router, mutation, query
from server.settings import Settings

ALL_CATEGORIES: tuple[str, ...] = typing.get_args(Category)
NIL_UUID = UUID(int=0)
# The one source an agent chooses to bring a person in from: an admin may override the erasure
# suppression list there (procedures/suppression.py); imports must have it lifted first.
OVERRIDABLE_SOURCE = "manual"

# Models ------------------------------------------------------------------------------------------


class ListCrmProvidersParams(WireModel):
    pass


class CrmProvider(WireModel):
    id: str
    name: str
    auth_type: Literal["api_key", "oauth2"]
    webhook_path: str


class Assignment(WireModel):
    id: UUID
    category: Category
    group: Group
    assigned_at: datetime
    superseded_at: datetime | None
    assigned_by: UUID | None
    reason: str | None


class Contact(WireModel):
    """A contact as lists show it; the raw CRM payload is never part of it."""

    id: UUID
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    postcode: str | None
    consent_status: ConsentStatus
    consent_timestamp: datetime | None
    import_source: ImportSource
    crm_connection_id: UUID | None
    external_id: str | None
    category: Category | None
    group: Group | None
    created_at: datetime
    updated_at: datetime
    # Archived in the CRM it came from (reversible: the CRM restoring it clears this).
    archived_at: datetime | None


class ContactDetail(Contact):
    active_assignment: Assignment | None


class ContactPage(WireModel):
    items: list[Contact]
    next_cursor: str | None


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Categories = Annotated[list[Category], Field(min_length=1, max_length=12)]


class ListContactsParams(WireModel):
    # One category or a list: the schema and the clients say so too (json_schema_input_type).
    category: (
        Annotated[Categories, BeforeValidator(_one_or_many, json_schema_input_type=Category | Categories)]
        | None
    ) = None
    group: Group | None = None
    consent_status: ConsentStatus | None = None
    import_source: ImportSource | None = None
    search: SearchText | None = None
    # Contacts archived in their CRM are left out by default; true lists only those, null both.
    archived: bool | None = False
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    cursor: str | None = Field(default=None, max_length=400)
    limit: int = Field(default=50, ge=1, le=100)


class GetContactParams(WireModel):
    id: UUID


class CreateContactParams(WireModel):
    first_name: Name | None = None
    last_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    postcode: Postcode | None = None
    consent_status: ConsentStatus | None = None
    consent_timestamp: ConsentTime | None = None
    import_source: ImportSource = "manual"
    crm_payload: CrmPayload | None = None
    crm_connection_id: UUID | None = None
    external_id: ExternalId | None = None
    category: Category | None = None
    reason: Reason | None = None
    suppression_override: suppression.SuppressionOverride | None = None
    consent_channels: consent.ConsentChannels | None = None


class UpdateContactParams(WireModel):
    """Absent fields stay as they are; an explicit null clears an optional field."""

    id: UUID
    first_name: Name | None = None
    last_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    postcode: Postcode | None = None
    consent_status: ConsentStatus | None = None
    consent_timestamp: ConsentTime | None = None
    crm_payload: CrmPayload | None = None
    external_id: ExternalId | None = Field(
        default=None, description="the contact's id in its CRM connection (crmConnectionId)"
    )
    category: Category | None = None
    reason: Reason | None = None
    suppression_override: suppression.SuppressionOverride | None = None
    consent_channels: consent.ConsentChannels | None = None


class AssignCategoryParams(WireModel):
    id: UUID
    category: Category
    reason: Reason | None = None


class GetCategoryHistoryParams(WireModel):
    id: UUID


class DeleteContactParams(WireModel):
    id: UUID


class Removed(WireModel):
    contacts: int
    category_assignments: int
    writeback_events: int
    connection_errors_cleared: int


class CrmHolder(WireModel):
    """A connected CRM that still holds the person: erasure is not pushed to CRMs."""

    connection_id: UUID
    provider_id: str
    provider_name: str
    status: str
    # source: the contact was imported from it; writeback: we sent it events about the contact.
    reason: Literal["source", "writeback"]
    external_id: str | None


class ContactErasure(WireModel):
    contact_id: UUID
    removed: Removed
    suppressed: list[Literal["email", "phone", "external_id"]]
    crms_still_holding: list[CrmHolder]


class GetConsentParams(WireModel):
    id: UUID


class ChannelConsents(WireModel):
    email: ConsentStatus
    sms: ConsentStatus
    phone: ConsentStatus
    post: ConsentStatus


class ContactConsent(WireModel):
    """A contact's consent: overall, per channel as held, per channel as it may be used
    (`effective`: the less permissive of the two), and every change with its evidence."""

    contact_id: UUID
    status: ConsentStatus
    consent_timestamp: datetime | None
    channels: ChannelConsents
    effective: ChannelConsents
    history: list[consent.ConsentEvent]


class ExportContactParams(WireModel):
    id: UUID


class ExportedContact(ContactDetail):
    """Every field held about the person, the raw CRM payload included."""

    crm_payload: dict[str, Any] | None


class ExportedAttempt(WireModel):
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


class ExportedWritebackEvent(WireModel):
    id: UUID
    connection_id: UUID | None
    provider_id: str
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    external_id: str | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: list[ExportedAttempt]


class PersonExport(WireModel):
    """A subject access export (UK GDPR Art. 15): everything held about one person."""

    format: Literal["nurturehub.subject-access"] = "nurturehub.subject-access"
    format_version: Literal[1] = 1
    exported_at: datetime
    organisation_id: UUID
    contact: ExportedContact
    category_history: list[Assignment]
    consent: ContactConsent
    writeback_events: list[ExportedWritebackEvent]
    audit_entries: list[AuditEntry]
    crms_holding: list[CrmHolder]


class ImportContactsParams(WireModel):
    source: BulkSource = Field(default="manual", description="where the rows came from")
    on_duplicate: OnDuplicate = Field(
        default="skip", description="a row whose email a contact already has: update it, or skip it"
    )
    rows: list[dict[str, Any]] = Field(
        min_length=1, max_length=1000,
        description="objects with contacts.create's fields: firstName, lastName, email, phone, "
        "postcode, consentStatus, consentTimestamp, category",
    )


class CheckSuppressionParams(WireModel):
    """One or more identifiers of a person, normalised as contacts.create normalises them."""

    email: Email | None = None
    phone: Phone | None = None
    external_id: ExternalId | None = None


class LiftSuppressionParams(CheckSuppressionParams):
    reason: Reason = Field(min_length=1, description="Why (no personal data): kept as evidence")


class SuppressionStatus(WireModel):
    suppressed: list[IdentifierKind]


class SuppressionLifted(WireModel):
    lifted: list[IdentifierKind]


# SQL ---------------------------------------------------------------------------------------------

SELECT_CRM_PROVIDERS = sql(
    "SELECT id, name, auth_type, webhook_path FROM crm_providers ORDER BY lower(name), id"
)

# Contact's fields, as selected from contacts AS c.
_CONTACT_SQL = {
    "id": "c.id",
    "first_name": "c.first_name",
    "last_name": "c.last_name",
    "email": "c.email",
    "phone": "c.phone",
    "postcode": "c.postcode",
    "consent_status": "c.consent_status",
    "consent_timestamp": "c.consent_timestamp",
    "import_source": "c.import_source",
    "crm_connection_id": "c.crm_connection_id",
    "external_id": "c.external_id",
    "category": "c.active_category",
    "group": "lead_category_group(c.active_category)",
    "created_at": "c.created_at",
    "updated_at": "c.updated_at",
    "archived_at": "c.archived_at",
}
_CONTACT_COLUMNS = ", ".join(f'{expression} AS "{name}"' for name, expression in _CONTACT_SQL.items())
# The same, under the wire names: list pages go to JSON as selected (server/encoded.py).
_CONTACT_WIRE_COLUMNS = wire_columns(Contact, _CONTACT_SQL)
_ASSIGNMENT_COLUMNS = """
    a.id, a.category, a.category_group AS "group", a.assigned_at, a.superseded_at,
    a.assigned_by, a.reason
"""

# Keyset pagination, newest first. `createdBefore` and the cursor are folded into one row bound
# (the tighter of the two): a second upper bound on created_at would keep PostgreSQL 18's btree
# from starting the scan at the cursor, so a deep page would walk every row before it. Absent
# bounds become +-infinity and the largest uuid, so they stay index conditions in generic plans.
_PAGE = """
    c.organisation_id = :organisation_id
    AND c.created_at > coalesce(CAST(:created_after AS timestamptz), '-infinity')
    AND (c.created_at, c.id) < (coalesce(CAST(:before_created_at AS timestamptz), 'infinity'),
                                coalesce(CAST(:before_id AS uuid),
                                         'ffffffff-ffff-ffff-ffff-ffffffffffff'))
"""
# Filters other than the one whose index a shape walks, checked on the rows it visits. The
# driving filter is left out: repeated, it would square the planner's row estimate.
_FILTERS = {
    "categories": """(CAST(:categories AS text[]) IS NULL
                      OR c.active_category = ANY (CAST(:categories AS text[])))""",
    "group": "(CAST(:group AS text) IS NULL OR lead_category_group(c.active_category) = :group)",
    "consent_status": "(CAST(:consent_status AS text) IS NULL OR c.consent_status = :consent_status)",
    "import_source": "(CAST(:import_source AS text) IS NULL OR c.import_source = :import_source)",
    "tsquery": "(CAST(:tsquery AS tsquery) IS NULL OR c.search_vector @@ CAST(:tsquery AS tsquery))",
    "archived": "(CAST(:archived AS boolean) IS NULL OR (c.archived_at IS NOT NULL) = :archived)",
}
_ORDER = "ORDER BY c.created_at DESC, c.id DESC LIMIT :fetch"
# The same order over rows already selected under wire names.
_WIRE_ORDER = 'ORDER BY c."createdAt" DESC, c.id DESC LIMIT :fetch'


def _residual(*driving_filters: str) -> str:
    return " AND ".join(sql for name, sql in _FILTERS.items() if name not in driving_filters)


def _list_walking(driving_condition: str, *driving_filters: str) -> str:
    return f"""SELECT {_CONTACT_WIRE_COLUMNS} FROM contacts AS c
                WHERE {_PAGE} AND {driving_condition} AND {_residual(*driving_filters)} {_ORDER}"""


# One statement per index a page can walk, so even a generic plan walks the right one.
LIST_CONTACTS = sql(_list_walking("true"))
LIST_CONTACTS_BY_CONSENT = sql(_list_walking("c.consent_status = :consent_status", "consent_status"))
LIST_CONTACTS_BY_SOURCE = sql(_list_walking("c.import_source = :import_source", "import_source"))
# Search, in two steps, so that neither a common term nor a rare one costs more than it must
# (the planner's estimates for prefix terms are too rough to choose between them reliably).
# Step 1: the newest SEARCH_WINDOW rows after the cursor, checked for the term and the filters:
# a common term ('smith', 'sw1a') fills its page here, at a bounded cost.
LIST_CONTACTS_BY_SEARCH_RECENT = sql(f"""
    WITH recent AS MATERIALIZED (
        SELECT c.id, c.first_name, c.last_name, c.email, c.phone, c.postcode, c.consent_status,
               c.consent_timestamp, c.import_source, c.crm_connection_id, c.external_id,
               c.active_category, c.search_vector, c.created_at, c.updated_at, c.archived_at
          FROM contacts AS c WHERE {_PAGE}
         ORDER BY c.created_at DESC, c.id DESC LIMIT :window)
    SELECT {_CONTACT_WIRE_COLUMNS} FROM recent AS c WHERE {_residual()} {_ORDER}
""")
# Step 2, when step 1 did not fill the page: every match by the GIN index, then the page of
# them. Its cost follows the number of matches, which step 1 has shown to be sparse.
LIST_CONTACTS_BY_SEARCH_MATCHES = sql(f"""
    WITH matches AS MATERIALIZED (
        SELECT {_CONTACT_WIRE_COLUMNS} FROM contacts AS c
         WHERE {_PAGE} AND c.search_vector @@ CAST(:tsquery AS tsquery) AND {_residual("tsquery")})
    SELECT * FROM matches AS c {_WIRE_ORDER}
""")
SEARCH_WINDOW = 10_000
# Several categories (or a group): walk contacts_category_idx once per category, each walk
# stopping after one page, and merge; a page costs at most 12 short index walks.
LIST_CONTACTS_BY_CATEGORIES = sql(f"""
    SELECT c.* FROM unnest(CAST(:walk_categories AS text[])) AS k (category)
    CROSS JOIN LATERAL ({_list_walking("c.active_category = k.category", "categories", "group")}) AS c
     WHERE CAST(:group AS text) IS NULL OR lead_category_group(k.category) = :group
    {_WIRE_ORDER}
""")

# One category, the filter agents use most: a single walk of contacts_category_idx, with no
# merge (bench/statement_cpu.py: PostgreSQL CPU per page 358-367 us against 467-468 us for the
# merge above given one category, on PostgreSQL 18; 440-467 against 535-540 us on 15).
LIST_CONTACTS_BY_CATEGORY = sql(_list_walking("c.active_category = :category", "categories", "group"))

_WITH_ACTIVE_ASSIGNMENT = """,
           a.id AS a_id, a.category AS a_category, a.category_group AS a_group,
           a.assigned_at AS a_assigned_at, a.superseded_at AS a_superseded_at,
           a.assigned_by AS a_assigned_by, a.reason AS a_reason
      FROM contacts AS c
      LEFT JOIN lead_category_assignments AS a
        ON a.organisation_id = c.organisation_id AND a.contact_id = c.id
       AND a.superseded_at IS NULL
     WHERE c.organisation_id = :organisation_id AND c.id = :id
"""
SELECT_CONTACT = sql(f"SELECT {_CONTACT_COLUMNS}{_WITH_ACTIVE_ASSIGNMENT}")
# The same, the contact's fields under their wire names: contacts.get sends it as selected.
SELECT_CONTACT_WIRE = sql(f"SELECT {_CONTACT_WIRE_COLUMNS}{_WITH_ACTIVE_ASSIGNMENT}")
# The active assignment's columns (a_<field>) and wire names, to nest them in such a row.
_ASSIGNMENT_WIRE = tuple(
    (f"a_{name}", field.alias or name) for name, field in Assignment.model_fields.items()
)

# Every change to a contact's category starts here, so concurrent changes queue on the row.
LOCK_CONTACT = sql("""
    SELECT id, first_name, last_name, email, phone, postcode, consent_status, consent_timestamp,
           import_source, crm_payload, crm_connection_id, external_id, active_category
      FROM contacts WHERE organisation_id = :organisation_id AND id = :id
       FOR UPDATE
""")

CONNECTION_EXISTS = sql("""
    SELECT EXISTS (SELECT 1 FROM crm_connections
                    WHERE organisation_id = :organisation_id AND id = :id)
""")

SELECT_ID_BY_EMAIL = sql("""
    SELECT id FROM contacts
     WHERE organisation_id = :organisation_id AND email = :email
       AND id IS DISTINCT FROM CAST(:except_id AS uuid)
""")

SELECT_ID_BY_EXTERNAL = sql("""
    SELECT id FROM contacts
     WHERE organisation_id = :organisation_id AND crm_connection_id = :crm_connection_id
       AND external_id = :external_id
""")

# Conflicts on the email are answered with the existing contact's id; others are CONFLICT.
# The contact, with a category its first assignment, and the audit row, in one statement: the
# whole transaction (a conflict or a suppressed identifier returns no row and writes nothing).
INSERT_CONTACT = sql(f"""
    WITH c AS (
    INSERT INTO contacts AS c (organisation_id, first_name, last_name, email, phone, postcode,
                          consent_status, consent_timestamp, import_source, crm_payload,
                          crm_connection_id, external_id, active_category)
    SELECT CAST(:organisation_id AS uuid), CAST(:first_name AS text), CAST(:last_name AS text),
           CAST(:email AS text), CAST(:phone AS text), CAST(:postcode AS text),
           coalesce(CAST(:consent_status AS text), 'unknown'),
           CASE WHEN CAST(:consent_timestamp AS timestamptz) IS NOT NULL
                    THEN CAST(:consent_timestamp AS timestamptz)
                WHEN CAST(:consent_status AS text) IS NOT NULL THEN now() END,
           CAST(:import_source AS text), CAST(:crm_payload AS jsonb), CAST(:crm_connection_id AS uuid),
           CAST(:external_id AS text), CAST(:category AS text)
     -- The erasure suppression list, checked in the same statement (procedures/suppression.py).
     WHERE NOT EXISTS (SELECT 1 FROM erasure_suppressions AS s
                        WHERE s.organisation_id = :organisation_id
                          AND s.identifier_hash = ANY (CAST(:suppression_hashes AS bytea[])))
    ON CONFLICT (organisation_id, email) WHERE email IS NOT NULL DO NOTHING
    RETURNING c.*),
    a AS (
        INSERT INTO lead_category_assignments AS a
                    (organisation_id, contact_id, category, assigned_at, assigned_by, reason)
        SELECT c.organisation_id, c.id, c.active_category, c.created_at, :assigned_by, :reason
          FROM c WHERE c.active_category IS NOT NULL
        RETURNING a.id AS a_id, a.category AS a_category, a.category_group AS a_group,
                  a.assigned_at AS a_assigned_at, a.superseded_at AS a_superseded_at,
                  a.assigned_by AS a_assigned_by, a.reason AS a_reason),
    -- The evidence of the consent given with the contact (procedures/consent.py).
    consent AS (
        INSERT INTO contact_consent_events
               (organisation_id, contact_id, channel, status, consented_at, source, actor_user_id,
                actor_token_id, crm_connection_id, request_id)
        SELECT c.organisation_id, c.id, e.channel, e.status, c.consent_timestamp, :consent_source,
               :audit_actor_user_id, :audit_actor_token_id, c.crm_connection_id, :audit_request_id
          FROM c CROSS JOIN unnest(CAST(:consent_channels AS text[]), CAST(:consent_statuses AS text[]))
                            AS e (channel, status)),
    {audit_cte("c", "c.id")}
    SELECT {_CONTACT_COLUMNS}, a.* FROM c LEFT JOIN a ON true CROSS JOIN audit
""", last=True)

# Each column changes only when its flag is set, so absent fields are left alone and an
# explicit null clears; consent_now moves consent_timestamp with a new consent status.
UPDATE_CONTACT = sql("""
    UPDATE contacts SET
        first_name = CASE WHEN :set_first_name THEN CAST(:first_name AS text) ELSE first_name END,
        last_name = CASE WHEN :set_last_name THEN CAST(:last_name AS text) ELSE last_name END,
        email = CASE WHEN :set_email THEN CAST(:email AS text) ELSE email END,
        phone = CASE WHEN :set_phone THEN CAST(:phone AS text) ELSE phone END,
        postcode = CASE WHEN :set_postcode THEN CAST(:postcode AS text) ELSE postcode END,
        consent_status = coalesce(CAST(:consent_status AS text), consent_status),
        consent_timestamp = CASE WHEN :set_consent_timestamp
                                     THEN CAST(:consent_timestamp AS timestamptz)
                                 WHEN :consent_now THEN now()
                                 ELSE consent_timestamp END,
        crm_payload = CASE WHEN :set_crm_payload THEN CAST(:crm_payload AS jsonb)
                           ELSE crm_payload END,
        external_id = CASE WHEN :set_external_id THEN CAST(:external_id AS text) ELSE external_id END,
        updated_at = now()
     WHERE organisation_id = :organisation_id AND id = :id
""")

# A category change: schema.sql's set_contact_category takes the contact's row lock, then makes
# the change as a query of its own, which sees every change committed before the lock. Its row
# is the new assignment (changed) or, when nothing changed, the active one; none for a contact
# that does not exist.
_SET_CATEGORY_CALL = """
    SELECT * FROM set_contact_category(:organisation_id, :contact_id, CAST(:category AS text),
                                       :assigned_by, CAST(:reason AS text))
"""

SET_CATEGORY = sql(_SET_CATEGORY_CALL)

# contacts.assignCategory: the lock, the change and its audit row in one statement, which is the
# whole transaction. A change that changes nothing is audited too, naming no fields.
ASSIGN_CATEGORY = sql(f"""
    WITH result AS MATERIALIZED ({_SET_CATEGORY_CALL}),
    {audit_cte("result", ":contact_id", changed_fields=(
        "CASE WHEN result.changed THEN CAST(:audit_changed_fields AS text[]) "
        "ELSE CAST('{}' AS text[]) END"))}
    SELECT result.* FROM result CROSS JOIN audit
""", last=True)

SELECT_CONSENT = sql("""
    SELECT consent_status, consent_timestamp
      FROM contacts WHERE organisation_id = :organisation_id AND id = :id
""")

SELECT_HISTORY = sql(f"""
    SELECT {_ASSIGNMENT_COLUMNS} FROM lead_category_assignments AS a
     WHERE a.organisation_id = :organisation_id AND a.contact_id = :contact_id
     ORDER BY a.assigned_at DESC, a.id DESC
""")

SELECT_PAYLOAD = sql("""
    SELECT crm_payload FROM contacts WHERE organisation_id = :organisation_id AND id = :id
""")

# The contact's writeback events with their attempt logs, oldest first.
SELECT_WRITEBACK_EVENTS = sql("""
    SELECT q.id, q.connection_id, q.provider_id, q.event_type, q.payload, q.status, q.attempts,
           q.last_error, q.external_id, q.created_at, q.completed_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                                'attempt', t.attempt, 'startedAt', t.started_at,
                                'durationMs', t.duration_ms, 'statusCode', t.status_code,
                                'outcome', t.outcome, 'error', t.error) ORDER BY t.attempt)
                       FROM crm_writeback_attempts AS t
                      WHERE t.organisation_id = q.organisation_id AND t.queue_id = q.id),
                    '[]'::jsonb) AS attempt_log
      FROM crm_writeback_queue AS q
     WHERE q.organisation_id = :organisation_id AND q.contact_id = :contact_id
     ORDER BY q.seq
""")

CONTACT_EXISTS = sql("""
    SELECT EXISTS (SELECT 1 FROM contacts WHERE organisation_id = :organisation_id AND id = :id)
""")

# Erasure ----------------------------------------------------------------------------------------

SELECT_CRM_HOLDERS = sql("""
    SELECT cc.id AS connection_id, cc.provider_id, p.name AS provider_name, cc.status,
           CASE WHEN cc.id = CAST(:source_id AS uuid) THEN 'source' ELSE 'writeback' END
               AS reason
      FROM crm_connections AS cc JOIN crm_providers AS p ON p.id = cc.provider_id
     WHERE cc.organisation_id = :organisation_id
       AND (cc.id = CAST(:source_id AS uuid)
            OR EXISTS (SELECT 1 FROM crm_writeback_queue AS q
                        WHERE q.organisation_id = cc.organisation_id
                          AND q.connection_id = cc.id AND q.contact_id = :contact_id))
     ORDER BY p.name, cc.id
""")

COUNT_DEPENDENTS = sql("""
    SELECT (SELECT count(*) FROM lead_category_assignments
             WHERE organisation_id = :organisation_id AND contact_id = :contact_id)
               AS category_assignments,
           (SELECT count(*) FROM crm_writeback_queue
             WHERE organisation_id = :organisation_id AND contact_id = :contact_id)
               AS writeback_events
""")

# A CRM's error message may quote the person it failed on; clear any that mention them.
CLEAR_CONNECTION_ERRORS = sql("""
    UPDATE crm_connections SET last_error_message = NULL
     WHERE organisation_id = :organisation_id AND last_error_message IS NOT NULL
       AND EXISTS (SELECT 1 FROM unnest(CAST(:needles AS text[])) AS n (needle)
                    WHERE strpos(lower(last_error_message), n.needle) > 0)
""")

INSERT_SUPPRESSIONS = sql("""
    INSERT INTO erasure_suppressions (organisation_id, identifier_hash, kind, created_by)
    SELECT :organisation_id, s.identifier_hash, s.kind, :created_by
      FROM unnest(CAST(:hashes AS bytea[]), CAST(:kinds AS text[])) AS s (identifier_hash, kind)
    ON CONFLICT (organisation_id, identifier_hash) DO NOTHING
""")

# Assignments and queued writeback events go with it (ON DELETE CASCADE).
DELETE_CONTACT = sql("DELETE FROM contacts WHERE organisation_id = :organisation_id AND id = :id")


# Helpers -----------------------------------------------------------------------------------------


def _not_found() -> NotFound:
    # The same answer for another organisation's id and an unknown one.
    return NotFound("Not found: no contact with this id")


def _assignment(row: Row, prefix: str = "") -> Assignment:
    return Assignment(
        id=row[f"{prefix}id"],
        category=row[f"{prefix}category"],
        group=row[f"{prefix}group"],
        assigned_at=row[f"{prefix}assigned_at"],
        superseded_at=row[f"{prefix}superseded_at"],
        assigned_by=row[f"{prefix}assigned_by"],
        reason=row[f"{prefix}reason"],
    )


def _contact_fields(row: Row) -> dict[str, Any]:
    return {name: row[name] for name in Contact.model_fields}


async def _detail(ctx: Context, contact_id: UUID) -> ContactDetail:
    row = await ctx.db.one(SELECT_CONTACT, {"organisation_id": ctx.organisation_id, "id": contact_id})
    if row is None:
        raise _not_found()
    active = _assignment(row, "a_") if row["a_id"] is not None else None
    return ContactDetail(**_contact_fields(row), active_assignment=active)


async def _lock(ctx: Context, contact_id: UUID) -> Row:
    row = await ctx.db.one(LOCK_CONTACT, {"organisation_id": ctx.organisation_id, "id": contact_id})
    if row is None:
        raise _not_found()
    return row


async def _check_email_free(ctx: Context, email: str | None, except_id: UUID | None) -> None:
    if email is None:
        return
    existing = await ctx.db.scalar(
        SELECT_ID_BY_EMAIL,
        {"organisation_id": ctx.organisation_id, "email": email, "except_id": except_id},
    )
    if existing is not None:
        raise _email_taken(existing)


def _email_taken(existing: UUID) -> Conflict:
    return Conflict(
        f"Conflict: contact {existing} in this organisation already has this email",
        data={"existingContactId": str(existing)},
    )


def list_filters(params: ListContactsParams) -> dict[str, Any]:
    """The list's filters as bound parameters, in one canonical form (cursors are bound to it).

    Public, with list_cursor_scope and list_query, for bench/list_scale.py.
    """
    tsquery = None
    if params.search is not None:
        tsquery = search_tsquery(params.search)
        if tsquery is None:
            raise InvalidParams.for_field("search", "must contain letters or digits")
    return {
        "categories": sorted(set(params.category)) if params.category else None,
        "group": params.group,
        "consent_status": params.consent_status,
        "import_source": params.import_source,
        "tsquery": tsquery,
        "archived": params.archived,
        # In UTC, so the same instant written with another offset keeps a cursor valid.
        "created_after": params.created_after.astimezone(UTC) if params.created_after else None,
        "created_before": params.created_before.astimezone(UTC) if params.created_before else None,
    }


def list_cursor_scope(organisation_id: UUID, filters: dict[str, Any]) -> list[Any]:
    """What a contacts.list cursor is bound to."""
    return [str(organisation_id), "contacts.list", filters]


def list_query(
    organisation_id: UUID,
    filters: dict[str, Any],
    after_created_at: datetime | None,
    after_id: UUID | None,
    fetch: int,
) -> tuple[Statement, dict[str, Any]]:
    """The statement for one page and its parameters.

    A search starts with its first step (see LIST_CONTACTS_BY_SEARCH_RECENT); a category or
    group filter walks contacts_category_idx (once for one category, once per category to merge
    for several or a group); else the consent, source or plain keyset index.
    Other filters are checked on the rows walked.
    """
    if filters["tsquery"] is not None:
        statement = LIST_CONTACTS_BY_SEARCH_RECENT
    elif filters["categories"] is not None and len(filters["categories"]) == 1 and filters["group"] is None:
        statement = LIST_CONTACTS_BY_CATEGORY
    elif filters["categories"] is not None or filters["group"] is not None:
        statement = LIST_CONTACTS_BY_CATEGORIES
    elif filters["consent_status"] is not None:
        statement = LIST_CONTACTS_BY_CONSENT
    elif filters["import_source"] is not None:
        statement = LIST_CONTACTS_BY_SOURCE
    else:
        statement = LIST_CONTACTS
    # (created_at, id) < (before, nil uuid) is exactly created_at < before.
    before_created_at, before_id = after_created_at, after_id
    created_before = filters["created_before"]
    if created_before is not None and (before_created_at is None or created_before <= before_created_at):
        before_created_at, before_id = created_before, NIL_UUID
    return statement, {
        **filters,
        "organisation_id": organisation_id,
        "category": filters["categories"][0] if filters["categories"] else None,
        "walk_categories": filters["categories"] or list(ALL_CATEGORIES),
        "before_created_at": before_created_at,
        "before_id": before_id,
        "fetch": fetch,
        "window": SEARCH_WINDOW,
    }


def _category_change(
    ctx: Context, contact_id: UUID, category: str | None, reason: str | None
) -> dict[str, Any]:
    """SET_CATEGORY's and ASSIGN_CATEGORY's parameters."""
    return {
        "organisation_id": ctx.organisation_id,
        "contact_id": contact_id,
        "category": category,
        "assigned_by": ctx.user.user_id,
        "reason": reason,
    }


# Handlers ----------------------------------------------------------------------------------------


@query(guard=AUTHED)
async def list_crm_providers(ctx: Context, params: ListCrmProvidersParams) -> list[CrmProvider]:
    """The CRMs an organisation can connect, for the connection UI."""
    rows = await ctx.db.all(SELECT_CRM_PROVIDERS)
    return [CrmProvider.model_validate(dict(row)) for row in rows]


@query(guard=AUTHED)
async def list_contacts(ctx: Context, params: ListContactsParams) -> Encoded[ContactPage]:
    """Contacts, newest first, a page at a time; pass `nextCursor` back as `cursor` for more."""
    filters = list_filters(params)
    key = cursor_key(ctx.settings)
    scope = list_cursor_scope(ctx.organisation_id, filters)
    after_created_at, after_id = None, None
    if params.cursor is not None:
        position = decode_cursor(key, scope, params.cursor)
        after_created_at, after_id = datetime.fromisoformat(position[0]), UUID(position[1])

    statement, bound = list_query(ctx.organisation_id, filters, after_created_at, after_id, params.limit + 1)
    rows = await ctx.db.all(statement, bound)
    if statement is LIST_CONTACTS_BY_SEARCH_RECENT and len(rows) < bound["fetch"]:
        rows = await ctx.db.all(LIST_CONTACTS_BY_SEARCH_MATCHES, bound)
    page = rows[: params.limit]
    next_cursor = None
    if len(rows) > params.limit:
        last = page[-1]
        next_cursor = encode_cursor(key, scope, [last["createdAt"].isoformat(), str(last["id"])])
    # The rows are Contact's fields under their wire names: no model is built per row, which
    # was most of a page's Python work (bench/: 585 -> 352 us of CPU per 50-row page).
    return encode({"items": page, "nextCursor": next_cursor})


@query(guard=AUTHED, errors=(NotFound,))
async def get_contact(ctx: Context, params: GetContactParams) -> Encoded[ContactDetail]:
    """One contact and its active category assignment (null when it has none)."""
    # As selected, without a model: building and dumping ContactDetail was 11-14 us of the
    # call's Python work, and ten calls of a batch pay it ten times (bench/results/batch-speed-*).
    row = await ctx.db.one(SELECT_CONTACT_WIRE, {"organisation_id": ctx.organisation_id, "id": params.id})
    if row is None:
        raise _not_found()
    assignment = {wire: row.pop(column) for column, wire in _ASSIGNMENT_WIRE}
    row["activeAssignment"] = assignment if assignment["id"] is not None else None
    return encode(row)


@mutation(guard=AUTHED, errors=(Conflict, Forbidden))
async def create_contact(ctx: Context, params: CreateContactParams) -> ContactDetail:
    """Create a contact, with its first category assignment when a category is given."""
    if params.crm_payload is not None and params.import_source != "crm_sync":
        raise InvalidParams.for_field("crmPayload", "is accepted only with importSource crm_sync")
    if params.external_id is not None and params.crm_connection_id is None:
        raise InvalidParams.for_field("externalId", "needs the crmConnectionId it belongs to")
    if params.reason is not None and params.category is None:
        raise InvalidParams.for_field("reason", "is accepted only with a category")
    org = ctx.organisation_id
    if params.crm_connection_id is not None and not await ctx.db.scalar(
        CONNECTION_EXISTS, {"organisation_id": org, "id": params.crm_connection_id}
    ):
        raise InvalidParams.for_field("crmConnectionId", "is not a CRM connection of this organisation")
    found = suppression.identifiers(params.email, params.phone, params.external_id)
    if params.suppression_override is not None:
        await suppression.refuse_or_override(
            ctx, found, params.suppression_override,
            can_override=params.import_source == OVERRIDABLE_SOURCE,
        )
    if params.external_id is not None:
        existing = await ctx.db.scalar(
            SELECT_ID_BY_EXTERNAL,
            {
                "organisation_id": org,
                "crm_connection_id": params.crm_connection_id,
                "external_id": params.external_id,
            },
        )
        if existing is not None:
            raise Conflict(
                f"Conflict: contact {existing} already has this CRM connection and external id",
                data={"existingContactId": str(existing)},
            )

    values = params.model_dump()
    values["crm_payload"] = (
        orjson.dumps(params.crm_payload).decode() if params.crm_payload is not None else None
    )
    given = params.model_dump(by_alias=True, exclude_unset=True, exclude={"reason"})
    channels = params.consent_channels.model_dump() if params.consent_channels else {}
    given_consent = {name: value for name, value in channels.items() if value is not None}
    if params.consent_status is not None:
        given_consent = {"overall": params.consent_status, **given_consent}
    values.update(
        organisation_id=org,
        assigned_by=ctx.user.user_id,
        suppression_hashes=suppression.hashes(suppression.suppression_key(ctx), org, found) if found else [],
        consent_source=consent.source_of(params.import_source),
        consent_channels=list(given_consent),
        consent_statuses=list(given_consent.values()),
    )
    row = await ctx.db.one(INSERT_CONTACT, ctx.audited(values, "contact", given))
    if row is None:
        # The insert was the transaction, and wrote nothing: say why, from reads on their own.
        suppressed = await ctx.db.afterwards(
            suppression.SELECT_SUPPRESSED, {"organisation_id": org, "hashes": values["suppression_hashes"]}
        )
        if suppressed:
            raise suppression.suppressed_conflict(
                sorted({r["kind"] for r in suppressed}),
                can_override=params.import_source == OVERRIDABLE_SOURCE,
            )
        holders = await ctx.db.afterwards(
            SELECT_ID_BY_EMAIL, {"organisation_id": org, "email": params.email, "except_id": None}
        )
        raise _email_taken(holders[0]["id"]) if holders else Conflict()
    active = _assignment(row, "a_") if row["a_id"] is not None else None
    # Built from what the inserts returned: no second read of the row just written.
    return ContactDetail(**_contact_fields(row), active_assignment=active)


# Update: wire name -> column, for the fields a caller may change or clear.
_UPDATABLE = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "phone": "phone",
    "postcode": "postcode",
    "consent_status": "consentStatus",
    "consent_timestamp": "consentTimestamp",
    "crm_payload": "crmPayload",
    "external_id": "externalId",
}


@mutation(guard=AUTHED, errors=(NotFound, Conflict, Forbidden))
async def update_contact(ctx: Context, params: UpdateContactParams) -> ContactDetail:
    """Change some fields; a new category supersedes the active assignment, keeping history."""
    given = params.model_fields_set
    if "consent_status" in given and params.consent_status is None:
        raise InvalidParams.for_field("consentStatus", "cannot be cleared; use unknown")
    if "reason" in given and "category" not in given:
        raise InvalidParams.for_field("reason", "is accepted only with a category")
    current = await _lock(ctx, params.id)
    if "crm_payload" in given and params.crm_payload is not None:
        if current["import_source"] != "crm_sync":
            raise InvalidParams.for_field("crmPayload", "is accepted only on contacts imported by crm_sync")

    changed = {
        column for column in _UPDATABLE if column in given and getattr(params, column) != current[column]
    }
    if "external_id" in changed and params.external_id is not None and current["crm_connection_id"] is None:
        raise InvalidParams.for_field("externalId", "needs the contact's crmConnectionId, which it has not")
    lifted = await suppression.refuse_or_override(
        ctx,
        suppression.identifiers(
            params.email if "email" in changed else None,
            params.phone if "phone" in changed else None,
            params.external_id if "external_id" in changed else None,
        ),
        params.suppression_override,
        can_override=True,
    )
    if "email" in changed:
        await _check_email_free(ctx, params.email, params.id)
    # A new consent status without a time of its own was given now.
    consent_now = "consent_status" in changed and "consent_timestamp" not in given
    channels = params.consent_channels.model_dump() if params.consent_channels else {}
    held = await consent.channels(ctx, params.id) if channels else {}
    consent_changes = {
        name: value for name, value in channels.items() if value is not None and value != held.get(name)
    }
    if "consent_status" in changed:
        consent_changes = {"overall": str(params.consent_status), **consent_changes}
    if changed or consent_changes:  # a consent change alone still moves updated_at
        values: dict[str, Any] = {f"set_{column}": column in changed for column in _UPDATABLE}
        values.update({column: getattr(params, column) for column in _UPDATABLE})
        values["crm_payload"] = (
            orjson.dumps(params.crm_payload).decode() if params.crm_payload is not None else None
        )
        values["consent_status"] = params.consent_status if "consent_status" in changed else None
        await ctx.db.execute(
            UPDATE_CONTACT,
            {**values, "consent_now": consent_now, "organisation_id": ctx.organisation_id, "id": params.id},
        )
    await consent.record_changes(
        ctx, params.id, consent_changes, source="manual",
        consented_at=params.consent_timestamp or datetime.now(UTC),
    )
    fields = [_UPDATABLE[column] for column in changed]
    if set(consent_changes) - {"overall"}:
        fields.append("consentChannels")
    if lifted:
        fields.append("suppressionOverride")
    if consent_now:
        fields.append("consentTimestamp")
    if "category" in given and params.category != current["active_category"]:
        # The row is locked (by _lock), so the category read above is still the contact's;
        # set_contact_category locks it again, which for this transaction is a re-check only.
        await ctx.db.execute(SET_CATEGORY, _category_change(ctx, params.id, params.category, params.reason))
        fields.append("category")
    ctx.record("contact", params.id, fields)
    return await _detail(ctx, params.id)


@mutation(guard=AUTHED, errors=(NotFound,))
async def assign_category(ctx: Context, params: AssignCategoryParams) -> Assignment:
    """(Re)assign the contact's category; the current category again changes nothing."""
    change = _category_change(ctx, params.id, params.category, params.reason)
    row = await ctx.db.one(ASSIGN_CATEGORY, ctx.audited(change, "contact", ["category"]))
    if row is None:
        raise _not_found()
    return _assignment(row)


@query(guard=AUTHED, errors=(NotFound,))
async def get_category_history(ctx: Context, params: GetCategoryHistoryParams) -> list[Assignment]:
    """Every category assignment of the contact, newest first."""
    keys = {"organisation_id": ctx.organisation_id, "id": params.id}
    if not await ctx.db.scalar(CONTACT_EXISTS, keys):
        raise _not_found()
    rows = await ctx.db.all(SELECT_HISTORY, {"organisation_id": ctx.organisation_id, "contact_id": params.id})
    return [_assignment(row) for row in rows]


@mutation(guard=ADMIN, errors=(NotFound,))
async def delete_contact(ctx: Context, params: DeleteContactParams) -> ContactErasure:
    """GDPR erasure: remove the person's data, and keep keyed hashes so imports stay out."""
    key = suppression.suppression_key(ctx)
    org = ctx.organisation_id
    contact = await _lock(ctx, params.id)
    keys = {"organisation_id": org, "contact_id": params.id}
    holders = await ctx.db.all(SELECT_CRM_HOLDERS, {**keys, "source_id": contact["crm_connection_id"]})
    counts = await ctx.db.one(COUNT_DEPENDENTS, keys)
    assert counts is not None

    identifiers = suppression.identifiers(contact["email"], contact["phone"], contact["external_id"])
    needles = [value.lower() for _, value in identifiers]
    if contact["phone"] is not None and contact["phone"].startswith("+44"):
        needles.append("0" + contact["phone"][3:])
    cleared = await ctx.db.execute(CLEAR_CONNECTION_ERRORS, {"organisation_id": org, "needles": needles})
    hashes = suppression.hashes(key, org, identifiers)
    kinds = [kind for kind, _ in identifiers]
    await ctx.db.execute(
        INSERT_SUPPRESSIONS,
        {"organisation_id": org, "created_by": ctx.user.user_id, "hashes": hashes, "kinds": kinds},
    )
    deleted = await ctx.db.execute(DELETE_CONTACT, {"organisation_id": org, "id": params.id})
    suppression.journal(ctx, "erasure", list(zip(kinds, hashes, strict=True)), params.id)
    # The audit row says that this contact was erased, by whom and when: nothing personal.
    ctx.record("contact", params.id)
    return ContactErasure(
        contact_id=params.id,
        removed=Removed(
            contacts=deleted,
            category_assignments=counts["category_assignments"],
            writeback_events=counts["writeback_events"],
            connection_errors_cleared=cleared,
        ),
        suppressed=[kind for kind, _ in identifiers],
        crms_still_holding=[
            CrmHolder(
                **row,
                external_id=contact["external_id"] if row["reason"] == "source" else None,
            )
            for row in holders
        ],
    )


@query(guard=AUTHED, errors=(NotFound,))
async def get_consent(ctx: Context, params: GetConsentParams) -> ContactConsent:
    """The contact's consent, overall and per channel, with every change and its evidence."""
    row = await ctx.db.one(SELECT_CONSENT, {"organisation_id": ctx.organisation_id, "id": params.id})
    if row is None:
        raise _not_found()
    held = await consent.channels(ctx, params.id)
    return ContactConsent(
        contact_id=params.id,
        status=row["consent_status"],
        consent_timestamp=row["consent_timestamp"],
        channels=ChannelConsents(**{name: held.get(name, "unknown") for name in consent.CHANNELS}),
        effective=ChannelConsents(**{
            name: consent.effective(row["consent_status"], held.get(name)) for name in consent.CHANNELS
        }),
        history=await consent.history(ctx, params.id),
    )


async def export_person(ctx: Context, contact_id: UUID) -> PersonExport:
    """Everything held about one person, read in one snapshot-consistent transaction."""
    org = ctx.organisation_id
    keys = {"organisation_id": org, "contact_id": contact_id}
    detail = await _detail(ctx, contact_id)
    payload = await ctx.db.scalar(SELECT_PAYLOAD, {"organisation_id": org, "id": contact_id})
    history = await ctx.db.all(SELECT_HISTORY, keys)
    events = await ctx.db.all(SELECT_WRITEBACK_EVENTS, keys)
    audit_rows = await ctx.db.all(SELECT_AUDIT_ENTRIES, {
        "organisation_id": org, "actor_user_id": None, "action": None, "target_type": "contact",
        "target_id": str(contact_id), "since": None, "until": None, "before_at": None,
        "before_id": None, "limit": 100_000,
    })
    holders = await ctx.db.all(SELECT_CRM_HOLDERS, {**keys, "source_id": detail.crm_connection_id})
    return PersonExport(
        exported_at=datetime.now(UTC),
        organisation_id=org,
        contact=ExportedContact(**detail.model_dump(), crm_payload=payload),
        category_history=[_assignment(row) for row in history],
        consent=await get_consent(ctx, GetConsentParams(id=contact_id)),
        writeback_events=[ExportedWritebackEvent(**row) for row in events],
        audit_entries=[AuditEntry(**row) for row in audit_rows],
        crms_holding=[
            CrmHolder(**row, external_id=detail.external_id if row["reason"] == "source" else None)
            for row in holders
        ],
    )


@mutation(guard=ADMIN, errors=(NotFound,))
async def export_contact(ctx: Context, params: ExportContactParams) -> PersonExport:
    """A subject access export (UK GDPR Art. 15): the contact's fields and raw CRM payload,
    category and consent history, writeback events and their attempts, the audit entries about
    them and the CRMs that hold them, as JSON with a format version. Audited, as a disclosure."""
    export = await export_person(ctx, params.id)
    ctx.record("contact", params.id)
    return export


async def export_for_operator(db: Database, organisation_id: UUID, contact_id: UUID) -> dict[str, Any]:
    """`nurturehub contacts export`: the same export for an operator at the command line, with
    an audit row of its own (no caller's token: an operator ran it)."""
    async with db.transaction() as tx:
        # The export reads as the organisation; nothing in it is written in this principal's name.
        operator = Principal(
            user_id=NIL_UUID, organisation_id=organisation_id, role="owner", token_id=NIL_UUID
        )
        ctx = Context(request_id="cli", procedure="cli.contacts.export", principal=operator, db=tx,
                      settings=Settings(database_url=db.url))
        export = await export_person(ctx, contact_id)
        await write_audit(tx, audit_params(
            action="cli.contacts.export", organisation_id=organisation_id, target_type="contact",
            target_id=str(contact_id),
        ))
    return export.model_dump(mode="json", by_alias=True)


@mutation(guard=AUTHED)
async def import_contacts(ctx: Context, params: ImportContactsParams) -> contact_import.ImportSummary:
    """Import a batch of rows (a spreadsheet's, a scraper's), each validated like contacts.create:
    a bad row is reported by its index and field and never stops the others; duplicates by email
    are updated or skipped; people erased at their request are refused and counted. One
    transaction for the batch, an audit entry per contact written."""
    outcome = contact_import.Outcome()
    valid = contact_import.validate(enumerate(params.rows), outcome)
    job = contact_import.Job(
        ctx.organisation_id, suppression.suppression_key(ctx), params.source, params.on_duplicate,
        ctx.audit_params(),
    )
    for chunk in contact_import.chunks(valid):
        await contact_import.write_chunk(ctx.db, job, contact_import.chunk_params(job, chunk), outcome)
    ctx.record("import", None, ["rows"])
    return outcome.summary()


def _given_identifiers(params: CheckSuppressionParams) -> list[tuple[suppression.IdentifierKind, str]]:
    found = suppression.identifiers(params.email, params.phone, params.external_id)
    if not found:
        raise InvalidParams.for_field("email", "give at least one of email, phone and externalId")
    return found


@query(guard=AUTHED)
async def check_suppression(ctx: Context, params: CheckSuppressionParams) -> SuppressionStatus:
    """Which of these identifiers are on the erasure suppression list (a person erased at their
    request, whom imports and creates refuse)."""
    rows = await suppression.check(ctx, _given_identifiers(params))
    return SuppressionStatus(suppressed=sorted({row["kind"] for row in rows}))


@mutation(guard=ADMIN, errors=(NotFound,))
async def lift_suppression(ctx: Context, params: LiftSuppressionParams) -> SuppressionLifted:
    """Take identifiers off the erasure suppression list, with the reason kept as evidence, so
    the person may be created or synced again (for one who came back and consented)."""
    lifted = await suppression.lift(ctx, _given_identifiers(params), params.reason)
    if not lifted:
        raise NotFound("Not found: none of these identifiers is on the erasure suppression list")
    # The audit row names the kinds lifted; the identifiers themselves appear nowhere.
    ctx.record("erasure_suppression", None, lifted)
    return SuppressionLifted(lifted=lifted)


router = Router(
    {
        "list": list_contacts,
        "get": get_contact,
        "create": create_contact,
        "update": update_contact,
        "assignCategory": assign_category,
        "getCategoryHistory": get_category_history,
        "getConsent": get_consent,
        "delete": delete_contact,
        "export": export_contact,
        "import": import_contacts,
        "checkSuppression": check_suppression,
        "liftSuppression": lift_suppression,
        "listCrmProviders": list_crm_providers,
    }
)
