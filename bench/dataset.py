"""Load the benchmark dataset: `python -m bench.dataset --database-url URL --contacts N --out FILE`.

Shaped as issue 7 describes: three organisations, N contacts in the main one (100,000 by default)
and N/10 in each of the two others, so every query has other tenants' rows to skip. Each contact
has 1-3 category assignments chained without gaps (each superseded_at is the next assigned_at),
exactly one active, and contacts.active_category is that one; half the contacts came from a CRM
sync and carry a ~1 KB raw payload. Names, emails, UK mobile/London numbers (E.164), postcodes,
consent and creation times (spread over five years) are varied enough for realistic index shapes.

Rows are made by set-based SQL (generate_series, INSERT ... SELECT), one transaction per
organisation, then VACUUM ANALYZE, so 100,000 contacts load in seconds and 1,000,000 in minutes.
Organisations and their owner tokens are written in SQL with the columns every schema version has
(bench.migrations loads an old schema), and saved with the ids to the JSON file the load scripts
read. Each run adds new organisations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from seeds.crm_providers import seed
from server import tokens
from server.db import Database, sql
from server.migrate import Migrator

__all__ = ["CATEGORIES", "Dataset", "Organisation", "load", "main"]

CATEGORIES = (
    "seller", "buyer", "landlord", "tenant_applicant", "property_investor", "btl_investor",
    "active_seller", "active_buyer", "managed_landlord", "active_tenant",
    "active_property_investor", "active_btl_investor",
)  # fmt: skip

FIRST_NAMES = (
    "Oliver", "George", "Harry", "Jack", "Noah", "Leo", "Arthur", "Muhammad", "Oscar", "Charlie",
    "Jacob", "Thomas", "Henry", "William", "James", "Alfie", "Joshua", "Freddie", "Archie", "Ethan",
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Rosie", "Sophia",
    "Grace", "Freya", "Willow", "Florence", "Emily", "Ella", "Poppy", "Evie", "Elsie", "Charlotte",
    "Priya", "Aisha", "Fatima", "Zara", "Siobhan", "Niamh", "Rhys", "Owain", "Callum", "Fraser",
)  # fmt: skip

LAST_NAMES = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes",
    "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin",
    "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison",
    "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price",
    "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter", "Richardson", "Bailey",
    "Collins", "Bell", "Shaw", "Murphy", "O'Brien", "Khan", "Singh", "Ahmed", "MacDonald", "Chen",
)  # fmt: skip

DOMAINS = (
    "gmail.com", "outlook.com", "hotmail.co.uk", "yahoo.co.uk", "icloud.com", "btinternet.com",
    "sky.com", "live.co.uk", "protonmail.com", "virginmedia.com",
)  # fmt: skip

# Outward codes from across the UK; the inward part (digit + two letters) is generated.
OUTWARD_CODES = (
    "SW1A", "SW11", "SE15", "E14", "N1", "NW3", "W2", "EC1V", "M1", "M20", "B15", "LS6", "BS8",
    "EH3", "G12", "CF10", "L17", "NE1", "S10", "NG7", "OX2", "CB1", "BN1", "RG1", "GU1", "BA1",
)  # fmt: skip

STREETS = (
    "High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane", "Manor Road",
    "Park Avenue", "Mill Lane", "The Crescent", "Kings Road", "Queens Road", "New Road",
)  # fmt: skip

# One row per contact, computed once so that contacts and their assignment history agree:
# k assignments, the category of step s is categories[(c0 + 5(s-1)) mod 12] (consecutive steps
# always differ), and the active one is step k.
_MAKE_PEOPLE = sql("""
    CREATE TEMP TABLE bench_people ON COMMIT DROP AS
    SELECT i, id, k, c0, created_at, first_name, last_name, import_source, consent_status,
           lower(regexp_replace(first_name || '.' || last_name, '[^A-Za-z.]', '', 'g'))
               || '.' || i || '@' || (CAST(:domains AS text[]))[1 + (r / 7) % 10] AS email,
           CASE WHEN r % 10 < 8 THEN '+447' || substr('45789', 1 + (r / 43) % 5, 1)
                                        || lpad((r % 100000000)::text, 8, '0')
                WHEN r % 10 = 8 THEN '+4420' || (70000000 + r % 19999999)
           END AS phone,
           CASE WHEN (r / 41) % 10 <> 0 THEN
               (CAST(:outward AS text[]))[1 + (r / 11) % 26] || ' ' || ((r / 13) % 10)
               || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + (r / 17) % 20, 1)
               || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + (r / 19) % 20, 1)
           END AS postcode,
           (r / 23) % 300 + 1 AS house_number,
           (CAST(:streets AS text[]))[1 + (r / 29) % 12] AS street
      FROM (
        SELECT i, gen_random_uuid() AS id,
               r, 1 + r % 3 AS k, (r / 3) % 12 AS c0,
               now() - make_interval(secs => (i - random()) * :span_seconds / :n) AS created_at,
               (CAST(:first_names AS text[]))[1 + (r / 31) % 50] AS first_name,
               (CAST(:last_names AS text[]))[1 + (r / 37) % 66] AS last_name,
               CASE WHEN i % 2 = 0 THEN 'crm_sync'
                    WHEN r % 4 < 2 THEN 'manual'
                    WHEN r % 4 = 2 THEN 'apify'
                    ELSE 'land_registry' END AS import_source,
               CASE WHEN r % 20 < 8 THEN 'granted' WHEN r % 20 < 14 THEN 'unknown'
                    WHEN r % 20 < 17 THEN 'pending' ELSE 'denied' END AS consent_status
          FROM (SELECT i, (random() * 2147483646)::int AS r
                  FROM generate_series(1, :n) AS i) AS seeded
      ) AS people
""")

# The raw payload is shaped like a CRM's contact document, about 1 KB of JSON text.
_INSERT_CONTACTS = sql("""
    INSERT INTO contacts (organisation_id, id, first_name, last_name, email, phone, postcode,
                          consent_status, consent_timestamp, import_source, crm_payload,
                          active_category, created_at, updated_at)
    SELECT :organisation_id, p.id, p.first_name, p.last_name, p.email, p.phone, p.postcode,
           p.consent_status,
           CASE WHEN p.consent_status <> 'unknown' THEN p.created_at + interval '2 days' END,
           p.import_source,
           CASE WHEN p.import_source = 'crm_sync' THEN jsonb_build_object(
               'id', 'RPT' || lpad(p.i::text, 8, '0'),
               'created', p.created_at,
               'modified', p.created_at + interval '30 days',
               'title', CASE WHEN p.i % 3 = 0 THEN 'Mr' WHEN p.i % 3 = 1 THEN 'Ms' ELSE 'Dr' END,
               'forename', p.first_name,
               'surname', p.last_name,
               'email', p.email,
               'mobilePhone', p.phone,
               'marketingConsent', p.consent_status,
               'officeIds', jsonb_build_array('OXF', 'LON'),
               'negotiatorIds', jsonb_build_array('JAS', 'RMK'),
               'primaryAddress', jsonb_build_object(
                   'buildingNumber', p.house_number::text, 'line1', p.street,
                   'line3', 'United Kingdom', 'postcode', p.postcode, 'countryId', 'GB'),
               'source', jsonb_build_object('id', 'portal', 'type', 'source'),
               'metadata', jsonb_build_object('budgetMax', 250000 + p.i % 50 * 10000,
                                              'bedroomsMin', 1 + p.i % 4, 'notes',
                                              repeat(md5(p.id::text), 12)),
               '_eTag', md5(p.email)
           ) END,
           (CAST(:categories AS text[]))[1 + (p.c0 + (p.k - 1) * 5) % 12],
           p.created_at, p.created_at
      FROM bench_people AS p
""")

_INSERT_ASSIGNMENTS = sql("""
    INSERT INTO lead_category_assignments (organisation_id, contact_id, category, assigned_at,
                                           superseded_at, assigned_by, reason)
    SELECT :organisation_id, p.id,
           (CAST(:categories AS text[]))[1 + (p.c0 + (s - 1) * 5) % 12],
           p.created_at + (now() - p.created_at) * ((s - 1)::float8 / p.k),
           CASE WHEN s < p.k THEN p.created_at + (now() - p.created_at) * (s::float8 / p.k) END,
           :user_id,
           CASE WHEN s = 1 THEN 'first enquiry' ELSE 'recategorised after a call' END
      FROM bench_people AS p CROSS JOIN LATERAL generate_series(1, p.k) AS s
""")

_SAMPLE_IDS = sql("""
    SELECT id FROM contacts WHERE organisation_id = :organisation_id ORDER BY random() LIMIT :n
""")

# About five years of history, newest first by creation.
SPAN_SECONDS = 5 * 365 * 86400
SAMPLE_SIZE = 1000


@dataclass(frozen=True)
class Organisation:
    id: str
    name: str
    owner_user_id: str
    owner_token: str
    contacts: int


@dataclass(frozen=True)
class Dataset:
    """What the load scripts need; `organisations[0]` is the main one."""

    contacts: int
    organisations: list[Organisation]
    categories: list[str]
    sample_contact_ids: list[str]  # random contacts of the main organisation
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "contacts": self.contacts,
            "organisations": [
                {
                    "id": o.id,
                    "name": o.name,
                    "ownerUserId": o.owner_user_id,
                    "ownerToken": o.owner_token,
                    "contacts": o.contacts,
                }
                for o in self.organisations
            ],
            "mainOrganisationId": self.organisations[0].id,
            "mainToken": self.organisations[0].owner_token,
            "categories": self.categories,
            "sampleContactIds": self.sample_contact_ids,
            "seconds": round(self.seconds, 1),
        }


def _libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


# The organisation, its owner and the owner's token, with the columns every schema version has:
# bench.migrations loads this dataset into the oldest schema it upgrades, where this version's
# server.accounts (which writes newer columns) cannot run.
_INSERT_OWNER = sql("""
    WITH o AS (INSERT INTO organisations (name) VALUES (:name) RETURNING id),
         u AS (INSERT INTO users (email) VALUES (:email) RETURNING id),
         m AS (INSERT INTO memberships (organisation_id, user_id, role)
               SELECT o.id, u.id, 'owner' FROM o, u),
         t AS (INSERT INTO api_tokens (organisation_id, user_id, name, token_hash)
               SELECT o.id, u.id, 'bench', :token_hash FROM o, u RETURNING id)
    SELECT o.id AS organisation_id, u.id AS user_id FROM o, u, t
""")


async def _load_organisation(db: Database, name: str, owner_email: str, n: int) -> Organisation:
    token = tokens.generate()
    async with db.transaction() as tx:
        owner = await tx.one(
            _INSERT_OWNER, {"name": name, "email": owner_email, "token_hash": tokens.hash_token(token)}
        )
    assert owner is not None
    issued_user_id = owner["user_id"]
    common = {"organisation_id": owner["organisation_id"], "categories": list(CATEGORIES)}
    async with db.transaction() as tx:
        # Bulk load: nothing here needs to survive a crash before the commit returns.
        await tx.execute(sql("SET LOCAL synchronous_commit = off"))
        # A million rows take longer than the server's per-statement limit.
        await tx.execute(sql("SET LOCAL statement_timeout = 0"))
        await tx.execute(
            _MAKE_PEOPLE,
            {
                "n": n,
                "span_seconds": SPAN_SECONDS,
                "first_names": list(FIRST_NAMES),
                "last_names": list(LAST_NAMES),
                "domains": list(DOMAINS),
                "outward": list(OUTWARD_CODES),
                "streets": list(STREETS),
            },
        )
        await tx.execute(_INSERT_CONTACTS, common)
        await tx.execute(_INSERT_ASSIGNMENTS, {**common, "user_id": issued_user_id})
    return Organisation(
        id=str(owner["organisation_id"]),
        name=name,
        owner_user_id=str(issued_user_id),
        owner_token=token,
        contacts=n,
    )


def _vacuum_analyze(database_url: str) -> None:
    """Set the visibility map and statistics, as a long-running database would have them."""
    with psycopg.connect(_libpq_url(database_url), autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE) contacts, lead_category_assignments")
        connection.execute("ANALYZE")


async def load(database_url: str, contacts: int, *, others: int | None = None) -> Dataset:
    """Apply the schema and seeds when missing, then load three new organisations."""
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d%H%M%S")
    other_contacts = others if others is not None else max(1000, contacts // 10)
    plan = [
        ("Bench Estates", contacts),
        ("Bench Lettings", other_contacts),
        ("Bench Homes", other_contacts),
    ]
    db = Database(database_url, pool_size=2)
    try:
        migrator = Migrator(db.url)
        if (await migrator.status()).state == "empty":  # an older schema stays as it is (bench.migrations)
            await migrator.init()
        await seed(db)
        organisations = []
        for index, (name, n) in enumerate(plan):
            owner = f"owner-{index}-{stamp}@bench.example.com"
            organisations.append(await _load_organisation(db, f"{name} {stamp}", owner, n))
        await asyncio.to_thread(_vacuum_analyze, database_url)
        async with db.transaction() as tx:
            rows = await tx.all(_SAMPLE_IDS, {"organisation_id": UUID(organisations[0].id), "n": SAMPLE_SIZE})
    finally:
        await db.close()
    return Dataset(
        contacts=contacts,
        organisations=organisations,
        categories=list(CATEGORIES),
        sample_contact_ids=[str(row["id"]) for row in rows],
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--contacts", type=int, default=100_000, help="in the main organisation")
    parser.add_argument("--other-contacts", type=int, help="in each other organisation")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dataset.json"))
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set DATABASE_URL (the dataset is big: no default)")
    if args.contacts < 1:
        parser.error("--contacts must be positive")
    dataset = asyncio.run(load(args.database_url, args.contacts, others=args.other_contacts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # The file holds owner tokens: readable by this user only.
    args.out.write_text(json.dumps(dataset.to_json(), indent=2) + "\n")
    args.out.chmod(0o600)
    summary = {k: v for k, v in asdict(dataset).items() if k != "sample_contact_ids"}
    for organisation in summary["organisations"]:
        organisation.pop("owner_token")
    print(json.dumps({"out": str(args.out), **summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
