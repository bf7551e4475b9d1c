"""schema.sql and its init, the provider seed, and the rules the constraints carry."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from seeds.crm_providers import PROVIDERS, seed
from server.db import Database
from server.migrate import MigrationError, Migrator
from server.schema import SCHEMA_PATH, version_of
from tests.support import query


@pytest.fixture
def fresh_url(postgres) -> str:
    return postgres.create_database()


def run(loop, url: str, work):
    async def go():
        db = Database(url, pool_size=1)
        try:
            return await work(db)
        finally:
            await db.close()

    return loop.run(go())


async def init_schema(db: Database) -> str:
    return await Migrator(db.url).init()


def expected_version() -> int:
    return version_of(SCHEMA_PATH.read_text())


def table_names(url: str) -> set[str]:
    return {r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_init_creates_every_table_and_records_the_version(loop, fresh_url: str) -> None:
    assert run(loop, fresh_url, init_schema) == "created"
    assert table_names(fresh_url) >= {
        "organisations",
        "users",
        "memberships",
        "api_tokens",
        "contacts",
        "lead_category_assignments",
        "crm_providers",
        "crm_connections",
        "crm_writeback_queue",
        "crm_writeback_attempts",
        "audit_log",
        "erasure_suppressions",
        "schema_version",
    }
    assert query(fresh_url, "SELECT version FROM schema_version") == [(expected_version(),)]


def test_init_again_at_the_same_version_changes_nothing(loop, fresh_url: str) -> None:
    run(loop, fresh_url, init_schema)
    before = query(fresh_url, "SELECT version, applied_at FROM schema_version")
    assert run(loop, fresh_url, init_schema) == "unchanged"
    assert query(fresh_url, "SELECT version, applied_at FROM schema_version") == before


def test_init_against_another_version_stops_and_says_what_to_do(loop, fresh_url: str) -> None:
    run(loop, fresh_url, init_schema)
    query(fresh_url, "UPDATE schema_version SET version = 999")
    with pytest.raises(MigrationError) as caught:
        run(loop, fresh_url, init_schema)
    message = str(caught.value)
    assert "999" in message and str(expected_version()) in message
    assert "release that knows version 999" in message


def test_init_against_an_older_version_names_db_migrate(loop, fresh_url: str) -> None:
    run(loop, fresh_url, init_schema)
    query(fresh_url, "UPDATE schema_version SET version = 1 WHERE version = %s", (expected_version(),))
    with pytest.raises(MigrationError, match="run 'nurturehub db migrate'"):
        run(loop, fresh_url, init_schema)


def test_init_refuses_a_database_with_our_tables_but_no_version(loop, fresh_url: str) -> None:
    run(loop, fresh_url, init_schema)
    query(fresh_url, "DROP TABLE schema_version")
    with pytest.raises(MigrationError, match="version is unknown"):
        run(loop, fresh_url, init_schema)


def test_seed_writes_five_providers_and_is_idempotent(loop, fresh_url: str) -> None:
    run(loop, fresh_url, init_schema)
    assert run(loop, fresh_url, seed) == {"inserted": 5, "updated": 0, "unchanged": 0}
    first = query(
        fresh_url, "SELECT id, name, auth_type, webhook_path, updated_at FROM crm_providers ORDER BY id"
    )
    assert run(loop, fresh_url, seed) == {"inserted": 0, "updated": 0, "unchanged": 5}
    second = query(
        fresh_url, "SELECT id, name, auth_type, webhook_path, updated_at FROM crm_providers ORDER BY id"
    )
    assert first == second
    assert sorted(r[1] for r in second) == sorted(p.name for p in PROVIDERS)
    assert {r[1] for r in second} == {"agentOS", "Reapit", "Alto", "Street", "Loop"}


def test_seed_updates_a_changed_field(loop, fresh_url: str) -> None:
    run(loop, fresh_url, init_schema)
    run(loop, fresh_url, seed)
    query(fresh_url, "UPDATE crm_providers SET webhook_path = '/old/path' WHERE id = 'reapit'")
    assert run(loop, fresh_url, seed) == {"inserted": 0, "updated": 1, "unchanged": 4}
    assert query(fresh_url, "SELECT webhook_path FROM crm_providers WHERE id = 'reapit'") == [
        ("/webhooks/crm/reapit",)
    ]
    assert query(fresh_url, "SELECT count(*) FROM crm_providers") == [(5,)]


# Constraints carry the rules ---------------------------------------------------------------------


@pytest.fixture
def contact(world, database_url: str) -> tuple[str, str]:
    org = world.org()
    contact_id = str(uuid.uuid4())
    query(
        database_url,
        "INSERT INTO contacts (organisation_id, id, first_name) VALUES (%s, %s, 'Test')",
        (org.id, contact_id),
    )
    return org.id, contact_id


@pytest.mark.parametrize(
    "column, value",
    [
        ("consent_status", "maybe"),
        ("import_source", "csv"),
        ("active_category", "vendor"),
        ("phone", "07700900123"),  # not E.164
        ("first_name", "x" * 201),
        ("last_name", "x" * 201),
        ("email", "x" * 321),
        ("postcode", "SW1A 1AAX"),
        ("external_id", "x" * 201),
    ],
)
def test_enumerations_and_formats_are_checked(database_url: str, contact, column: str, value: str) -> None:
    org_id, contact_id = contact
    with pytest.raises(psycopg.errors.CheckViolation):
        query(
            database_url,
            f"UPDATE contacts SET {column} = %s WHERE organisation_id = %s AND id = %s",
            (value, org_id, contact_id),
        )


ENUMERATIONS = {
    ("memberships", "role"): {"owner", "admin", "member"},
    ("crm_connections", "status"): {"active", "paused", "error", "pending"},
    ("crm_writeback_queue", "event_type"): {
        "email_sent",
        "email_opened",
        "email_clicked",
        "lead_score_update",
        "journey_completed",
        "hot_alert_fired",
    },
    ("crm_writeback_queue", "status"): {"pending", "processing", "success", "failed"},
    ("contacts", "consent_status"): {"granted", "denied", "unknown", "pending"},
    ("contacts", "import_source"): {"crm_sync", "manual", "apify", "land_registry"},
    ("lead_category_assignments", "category_group"): {"prospect", "existing_client"},
    ("lead_category_assignments", "category"): {
        "seller",
        "buyer",
        "landlord",
        "tenant_applicant",
        "property_investor",
        "btl_investor",
        "active_seller",
        "active_buyer",
        "managed_landlord",
        "active_tenant",
        "active_property_investor",
        "active_btl_investor",
    },
}


@pytest.mark.parametrize("table, column", sorted(ENUMERATIONS))
def test_every_enumeration_has_a_check_listing_exactly_its_values(
    database_url: str, table: str, column: str
) -> None:
    import re

    # The check is the table's, naming the column, or that of the domain the column is typed with.
    definitions = query(
        database_url,
        """
        SELECT pg_get_constraintdef(c.oid), c.contypid <> 0 FROM pg_constraint c
         WHERE c.contype = 'c'
           AND (c.conrelid = %(table)s::regclass
                OR c.contypid = (SELECT atttypid FROM pg_attribute
                                  WHERE attrelid = %(table)s::regclass AND attname = %(column)s))""",
        {"table": table, "column": column},
    )
    listed = [
        set(re.findall(r"'([a-z_]+)'::text", d))
        for d, on_domain in definitions
        if (on_domain or re.search(rf"\b{column}\b", d)) and "ANY" in d
    ]
    assert ENUMERATIONS[(table, column)] in listed


@pytest.mark.parametrize("column, value", [("category", "vendor"), ("reason", "x" * 501)])
def test_assignment_values_are_checked(database_url: str, contact, column: str, value: str) -> None:
    org_id, contact_id = contact
    values = {"category": "seller", "reason": None, column: value}
    with pytest.raises(psycopg.errors.CheckViolation):
        query(
            database_url,
            "INSERT INTO lead_category_assignments (organisation_id, contact_id, category, reason) "
            "VALUES (%s, %s, %s, %s)",
            (org_id, contact_id, values["category"], values["reason"]),
        )


def test_one_active_assignment_per_contact(database_url: str, contact) -> None:
    org_id, contact_id = contact
    insert = (
        "INSERT INTO lead_category_assignments (organisation_id, contact_id, category) VALUES (%s, %s, %s)"
    )
    query(database_url, insert, (org_id, contact_id, "seller"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(database_url, insert, (org_id, contact_id, "buyer"))
    rows = query(
        database_url,
        "SELECT category, category_group FROM lead_category_assignments "
        "WHERE organisation_id = %s AND contact_id = %s",
        (org_id, contact_id),
    )
    assert rows == [("seller", "prospect")]


def test_the_group_follows_from_the_category(database_url: str, contact) -> None:
    org_id, contact_id = contact
    query(
        database_url,
        "INSERT INTO lead_category_assignments (organisation_id, contact_id, category) "
        "VALUES (%s, %s, 'managed_landlord')",
        (org_id, contact_id),
    )
    assert query(
        database_url,
        "SELECT category_group FROM lead_category_assignments WHERE contact_id = %s",
        (contact_id,),
    ) == [("existing_client",)]


def test_rows_cannot_point_into_another_organisation(world, database_url: str, contact) -> None:
    _, contact_id = contact
    other = world.org()
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        query(
            database_url,
            "INSERT INTO lead_category_assignments (organisation_id, contact_id, category) "
            "VALUES (%s, %s, 'seller')",
            (other.id, contact_id),
        )
