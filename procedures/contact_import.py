"""Bulk import of contacts: `nurturehub import FILE` and contacts.import, one core for both.

Rows are validated like contacts.create (the same field types), then written a chunk at a time,
each chunk one transaction and, for new contacts, one statement: the suppression check, the
contacts, their first category assignments, their consent evidence and an audit row per contact.
A bad row is reported with its line and field and never stops the others; a row is written whole
or not at all. A duplicate by email (already in the organisation, or earlier in the file) is
updated or skipped, as the caller chooses; an erased person is refused and counted.

The file is read as a stream, a chunk at a time, so memory stays flat whatever its size.
"""

from __future__ import annotations

import asyncio
import csv
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import orjson
import pydantic
from pydantic import Field

from procedures import suppression
from procedures.contact_fields import Category, ConsentStatus, ConsentTime, Email, Name, Phone, Postcode
from server.audit import audit_params
from server.db import Database, Tx, sql
from server.keys import key_from_env
from server.models import WireModel
from server.rpc import field_issues

__all__ = [
    "CHUNK",
    "COLUMNS",
    "ImportRow",
    "ImportSummary",
    "OnDuplicate",
    "Outcome",
    "ImportRefused",
    "csv_rows",
    "Job",
    "chunk_params",
    "write_chunk",
    "import_file",
    "jsonl_rows",
    "validate",
]

OnDuplicate = Literal["skip", "update"]
BulkSource = Literal["manual", "apify", "land_registry"]
CHUNK = 500
PROBLEMS_KEPT = 1000  # a report lists this many bad rows; the count covers them all

# CSV headers, compared lower-cased without spaces, underscores or dashes: what a spreadsheet of
# an agency (or an Apify or Land Registry export) calls each field.
COLUMNS: dict[str, str] = {
    **dict.fromkeys(("firstname", "forename", "givenname"), "firstName"),
    **dict.fromkeys(("lastname", "surname", "familyname"), "lastName"),
    **dict.fromkeys(("email", "emailaddress"), "email"),
    **dict.fromkeys(("phone", "phonenumber", "mobile", "telephone", "tel"), "phone"),
    **dict.fromkeys(("postcode", "zip"), "postcode"),
    **dict.fromkeys(("consent", "consentstatus", "marketingconsent"), "consentStatus"),
    **dict.fromkeys(("consentdate", "consenttimestamp", "consentedat"), "consentTimestamp"),
    **dict.fromkeys(("category", "leadcategory"), "category"),
}


class ImportRow(WireModel):
    """One row: the fields of contacts.create that a spreadsheet holds."""

    first_name: Name | None = None
    last_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    postcode: Postcode | None = None
    consent_status: ConsentStatus | None = None
    consent_timestamp: ConsentTime | None = None
    category: Category | None = None


class Problem(WireModel):
    row: int = Field(description="the line of the file (a CSV's header is line 1), or the index in rows")
    field: str
    message: str


class ImportSummary(WireModel):
    rows: int
    created: int
    updated: int
    skipped: int = Field(description="duplicates by email, left as they were (onDuplicate: skip)")
    suppressed: int = Field(description="people erased at their request (GDPR): refused")
    invalid: int
    problems: list[Problem] = Field(description=f"the first {PROBLEMS_KEPT} bad rows")
    dry_run: bool = False


@dataclass
class Outcome:
    """What a run has done so far; `summary()` is its report."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    suppressed: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)

    def problem(self, row: int, field_name: str, message: str) -> None:
        self.invalid += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(Problem(row=row, field=field_name, message=message))

    def summary(self, *, dry_run: bool = False) -> ImportSummary:
        return ImportSummary(
            rows=self.rows, created=self.created, updated=self.updated, skipped=self.skipped,
            suppressed=self.suppressed, invalid=self.invalid, problems=self.problems, dry_run=dry_run,
        )


# Reading -----------------------------------------------------------------------------------------


def _header_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def csv_rows(lines: Iterable[str], outcome: Outcome) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, wire fields) per row; empty cells are absent. Unknown columns are ignored."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    fields = [COLUMNS.get(_header_key(name)) for name in header]
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        line = reader.line_num
        if len(record) > len(header):
            outcome.rows += 1
            outcome.problem(line, "row", f"has {len(record)} cells for {len(header)} columns")
            continue
        yield line, {f: cell.strip() for f, cell in zip(fields, record, strict=False) if f and cell.strip()}


def jsonl_rows(lines: Iterable[bytes | str], outcome: Outcome) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) per non-blank line; keys are contacts.create's wire names."""
    for line, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            outcome.rows += 1
            outcome.problem(line, "row", "is not a JSON object")
            continue
        if not isinstance(value, dict):
            outcome.rows += 1
            outcome.problem(line, "row", "is not a JSON object")
            continue
        yield line, value


def validate(
    rows: Iterable[tuple[int, Mapping[str, Any]]], outcome: Outcome
) -> Iterator[tuple[int, ImportRow, list[str]]]:
    """Valid rows with the wire names they gave; bad ones go to `outcome`."""
    for line, raw in rows:
        outcome.rows += 1
        try:
            row = ImportRow.model_validate(raw)
        except pydantic.ValidationError as exc:
            issue = field_issues(exc)[0]
            outcome.problem(line, issue["path"] or "row", issue["message"])
            continue
        if not (row.first_name or row.last_name or row.email or row.phone):
            outcome.problem(line, "row", "needs a name, an email or a phone")
            continue
        yield line, row, sorted(row.model_dump(by_alias=True, exclude_none=True))


# Writing -----------------------------------------------------------------------------------------

_CHUNK_ROWS = """
    r AS (SELECT * FROM unnest(
            CAST(:lines AS int[]), CAST(:ids AS uuid[]), CAST(:first_names AS text[]),
            CAST(:last_names AS text[]), CAST(:emails AS text[]), CAST(:phones AS text[]),
            CAST(:postcodes AS text[]), CAST(:consent_statuses AS text[]),
            CAST(:consent_timestamps AS timestamptz[]), CAST(:categories AS text[]),
            CAST(:email_hashes AS bytea[]), CAST(:phone_hashes AS bytea[]), CAST(:given AS text[]))
          AS r (line, id, first_name, last_name, email, phone, postcode, consent_status,
                consent_timestamp, category, email_hash, phone_hash, given)),
    blocked AS MATERIALIZED (
        SELECT DISTINCT r.line FROM r JOIN erasure_suppressions AS s
            ON s.organisation_id = :organisation_id
           AND s.identifier_hash IN (r.email_hash, r.phone_hash)),
    -- The duplicates as they were before this statement (every CTE reads one snapshot).
    prior AS (SELECT p.id, p.email, p.consent_status FROM contacts AS p JOIN r
                ON p.organisation_id = :organisation_id AND p.email = r.email)"""

_ON_DUPLICATE = {
    "skip": "DO NOTHING",
    # Given cells replace, empty ones keep; the category goes through set_contact_category after.
    "update": """DO UPDATE SET
        first_name = coalesce(EXCLUDED.first_name, c.first_name),
        last_name = coalesce(EXCLUDED.last_name, c.last_name),
        phone = coalesce(EXCLUDED.phone, c.phone),
        postcode = coalesce(EXCLUDED.postcode, c.postcode),
        consent_status = CASE WHEN EXCLUDED.consent_timestamp IS NULL THEN c.consent_status
                              ELSE EXCLUDED.consent_status END,
        consent_timestamp = coalesce(EXCLUDED.consent_timestamp, c.consent_timestamp),
        updated_at = now()""",
}


def _chunk_statement(on_duplicate: OnDuplicate) -> Any:
    return sql(f"""
    WITH {_CHUNK_ROWS},
    c AS (
        INSERT INTO contacts AS c (organisation_id, id, first_name, last_name, email, phone, postcode,
                                   consent_status, consent_timestamp, import_source, active_category)
        SELECT :organisation_id, r.id, r.first_name, r.last_name, r.email, r.phone, r.postcode,
               coalesce(r.consent_status, 'unknown'),
               CASE WHEN r.consent_timestamp IS NOT NULL THEN r.consent_timestamp
                    WHEN r.consent_status IS NOT NULL THEN now() END,
               :import_source, r.category
          FROM r WHERE r.line NOT IN (SELECT line FROM blocked)
        ON CONFLICT (organisation_id, email) WHERE email IS NOT NULL {_ON_DUPLICATE[on_duplicate]}
        RETURNING c.id, c.email, c.consent_timestamp, (c.xmax = 0) AS created),
    done AS (
        SELECT c.*, r.line, r.category, r.consent_status, r.given,
               p.consent_status AS prior_consent
          FROM c JOIN r ON (c.created AND r.id = c.id) OR (NOT c.created AND r.email = c.email)
          LEFT JOIN prior AS p ON NOT c.created AND p.id = c.id),
    assigned AS (
        INSERT INTO lead_category_assignments
               (organisation_id, contact_id, category, assigned_at, assigned_by, reason)
        SELECT :organisation_id, d.id, d.category, now(), :audit_actor_user_id, 'import'
          FROM done AS d WHERE d.created AND d.category IS NOT NULL),
    consented AS (
        INSERT INTO contact_consent_events
               (organisation_id, contact_id, channel, status, consented_at, source, actor_user_id,
                actor_token_id, request_id)
        SELECT :organisation_id, d.id, 'overall', d.consent_status, d.consent_timestamp, 'import',
               :audit_actor_user_id, :audit_actor_token_id, :audit_request_id
          FROM done AS d
         WHERE d.consent_status IS NOT NULL
           AND (d.created OR d.consent_status IS DISTINCT FROM d.prior_consent)),
    audited AS (
        INSERT INTO audit_log (organisation_id, actor_user_id, actor_token_id, action, target_type,
                               target_id, changed_fields, request_id)
        SELECT :organisation_id, :audit_actor_user_id, :audit_actor_token_id, :audit_action,
               'contact', CAST(d.id AS text), string_to_array(d.given, ','), :audit_request_id
          FROM done AS d)
    SELECT 'suppressed' AS outcome, line, NULL::uuid AS id, NULL AS category FROM blocked
    UNION ALL
    SELECT CASE WHEN created THEN 'created' ELSE 'updated' END, line, id, category FROM done
    """)


CHUNK_STATEMENTS = {mode: _chunk_statement(mode) for mode in ("skip", "update")}

# A duplicate's new category: the same change as contacts.assignCategory.
SET_CATEGORIES = sql("""
    SELECT count(*) FROM unnest(CAST(:ids AS uuid[]), CAST(:categories AS text[])) AS u (id, category),
           LATERAL set_contact_category(:organisation_id, u.id, u.category, :assigned_by, 'import') AS s
     WHERE s.changed
""")


@dataclass(frozen=True)
class Job:
    """What every chunk of one import shares."""

    organisation_id: UUID
    key: bytes
    source: BulkSource
    on_duplicate: OnDuplicate
    audit: Mapping[str, Any]


def chunk_params(job: Job, chunk: list[tuple[int, ImportRow, list[str]]]) -> dict[str, Any]:
    """The chunk statement's parameters: plain CPU work, which a file import does on a thread
    while the database writes the chunk before."""

    def digest(kind: suppression.IdentifierKind, value: str | None) -> bytes | None:
        return suppression.hashes(job.key, job.organisation_id, [(kind, value)])[0] if value else None

    rows = [row for _, row, _ in chunk]
    return {
        "organisation_id": job.organisation_id,
        "import_source": job.source,
        "lines": [line for line, _, _ in chunk],
        "ids": [uuid.uuid4() for _ in chunk],
        "first_names": [r.first_name for r in rows],
        "last_names": [r.last_name for r in rows],
        "emails": [r.email for r in rows],
        "phones": [r.phone for r in rows],
        "postcodes": [r.postcode for r in rows],
        "consent_statuses": [r.consent_status for r in rows],
        "consent_timestamps": [r.consent_timestamp for r in rows],
        "categories": [r.category for r in rows],
        "email_hashes": [digest("email", r.email) for r in rows],
        "phone_hashes": [digest("phone", r.phone) for r in rows],
        "given": [",".join(given) for _, _, given in chunk],
        **job.audit,
    }


async def write_chunk(tx: Tx, job: Job, params: dict[str, Any], outcome: Outcome) -> None:
    """Write one chunk (rows with distinct emails) in `tx`; counts go to `outcome`."""
    if not params["lines"]:
        return
    results = await tx.all(CHUNK_STATEMENTS[job.on_duplicate], params)
    counts = {"created": 0, "updated": 0, "suppressed": 0}
    recategorise: dict[UUID, str] = {}
    for result in results:
        counts[result["outcome"]] += 1
        if result["outcome"] == "updated" and result["category"] is not None:
            recategorise[result["id"]] = result["category"]
    if recategorise:
        await tx.execute(SET_CATEGORIES, {
            "organisation_id": job.organisation_id,
            "ids": list(recategorise),
            "categories": list(recategorise.values()),
            "assigned_by": job.audit["audit_actor_user_id"],
        })
    outcome.created += counts["created"]
    outcome.updated += counts["updated"]
    outcome.suppressed += counts["suppressed"]
    outcome.skipped += len(params["lines"]) - len(results)


def chunks(
    valid: Iterable[tuple[int, ImportRow, list[str]]], size: int = CHUNK
) -> Iterator[list[tuple[int, ImportRow, list[str]]]]:
    """Chunks of at most `size` rows, none holding one email twice: a row whose email the chunk
    has already waits for the next chunk, where it meets the first as a duplicate (in file order)."""
    chunk: list[tuple[int, ImportRow, list[str]]] = []
    emails: set[str] = set()
    waiting: list[tuple[int, ImportRow, list[str]]] = []

    def take(item: tuple[int, ImportRow, list[str]]) -> None:
        email = item[1].email
        if email is not None and email in emails:
            waiting.append(item)
            return
        chunk.append(item)
        if email is not None:
            emails.add(email)

    for item in valid:
        take(item)
        if len(chunk) >= size:
            yield chunk
            chunk, emails = [], set()
            held, waiting[:] = list(waiting), []
            for early in held:
                take(early)
    while chunk or waiting:
        yield chunk
        chunk, emails = [], set()
        held, waiting[:] = list(waiting), []
        for early in held:
            take(early)


class _DryRun(Exception):
    """Rolls a dry run's transaction back once everything has been counted."""


async def import_file(
    db: Database,
    path: Path,
    *,
    organisation_id: UUID,
    source: BulkSource,
    on_duplicate: OnDuplicate,
    dry_run: bool,
    progress: Callable[[Outcome], None] = lambda outcome: None,
) -> dict[str, Any]:
    """`nurturehub import FILE`: a CSV or JSON Lines file, streamed a chunk at a time; each chunk
    commits on its own (a dry run writes everything in one transaction, then rolls it back, so
    its counts are exact). Returns the summary as JSON.

    A thread reads, validates and hashes the next chunk while the database writes the one
    before, at most two chunks ahead, so memory stays flat."""
    key = key_from_env()
    if key is None:
        raise ImportRefused(
            "importing checks the erasure suppression list, which needs NURTUREHUB_SUPPRESSION_KEY"
            " (with the embedded database, run `nurturehub serve` once to create it)"
        )
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ImportRefused(f"{path.name}: give a .csv, .jsonl or .ndjson file")
    async with db.transaction() as tx:
        if not await tx.scalar(ORGANISATION_EXISTS, {"id": organisation_id}):
            raise ImportRefused("no organisation has this id")
    audit = audit_params(action="cli.contacts.import", organisation_id=organisation_id, request_id="cli")
    job = Job(organisation_id, key, source, on_duplicate, audit)
    outcome = Outcome()
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=2)

    def produce() -> None:
        try:
            with path.open("rb" if reader is jsonl_rows else "r", **_OPEN[reader]) as file:
                for chunk in chunks(validate(reader(file, outcome), outcome)):
                    asyncio.run_coroutine_threadsafe(ready.put(chunk_params(job, chunk)), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(ready.put(None), loop).result()

    producing = loop.run_in_executor(None, produce)

    async def consume(tx: Tx | None) -> None:
        while (params := await ready.get()) is not None:
            if tx is not None:
                await write_chunk(tx, job, params, outcome)
            else:
                async with db.transaction() as own:
                    await write_chunk(own, job, params, outcome)
            progress(outcome)

    try:
        if dry_run:
            async with db.transaction() as tx:
                await consume(tx)
                raise _DryRun
        await consume(None)
    except _DryRun:
        pass
    finally:
        while not producing.done():  # let a reader stopped by a failure finish
            if ready.empty():
                await asyncio.sleep(0.01)
            else:
                ready.get_nowait()
        await producing
    return outcome.summary(dry_run=dry_run).model_dump(mode="json", by_alias=True)


class ImportRefused(Exception):
    """The file cannot be imported at all; the message is one line."""


ORGANISATION_EXISTS = sql("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = :id)")
_READERS: dict[str, Callable[..., Iterator[tuple[int, dict[str, Any]]]]] = {
    ".csv": csv_rows, ".jsonl": jsonl_rows, ".ndjson": jsonl_rows,
}
_OPEN: dict[Any, dict[str, Any]] = {csv_rows: {"newline": "", "encoding": "utf-8-sig"}, jsonl_rows: {}}
