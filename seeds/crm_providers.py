"""Seed the CRM provider registry: `python -m seeds.crm_providers` (or `nurturehub seed`).

Idempotent: a second run inserts nothing and updates only the fields that changed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from server.db import Database, sql

__all__ = ["PROVIDERS", "Provider", "main", "seed"]


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    auth_type: str  # 'api_key' | 'oauth2'
    webhook_path: str


# Alto is OAuth2, not the "API key" of the v1.0.1 release notes: Alto's API uses the platform's
# client credentials plus a per-agency AgencyRef header (see README, CRM providers).
PROVIDERS = (
    Provider("agentos", "agentOS", "api_key", "/webhooks/crm/agentos"),
    Provider("reapit", "Reapit", "oauth2", "/webhooks/crm/reapit"),
    Provider("alto", "Alto", "oauth2", "/webhooks/crm/alto"),
    Provider("street", "Street", "api_key", "/webhooks/crm/street"),
    Provider("loop", "Loop", "api_key", "/webhooks/crm/loop"),
)

UPSERT_PROVIDER = sql("""
    INSERT INTO crm_providers (id, name, auth_type, webhook_path)
    VALUES (:id, :name, :auth_type, :webhook_path)
    ON CONFLICT (id) DO UPDATE
       SET name = EXCLUDED.name, auth_type = EXCLUDED.auth_type,
           webhook_path = EXCLUDED.webhook_path, updated_at = now()
     WHERE (crm_providers.name, crm_providers.auth_type, crm_providers.webhook_path)
           IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.auth_type, EXCLUDED.webhook_path)
    RETURNING (xmax = 0) AS inserted
""")


async def seed(db: Database) -> dict[str, int]:
    """Write the providers; returns how many rows were inserted, updated and left unchanged."""
    inserted = updated = 0
    async with db.transaction() as tx:
        for provider in PROVIDERS:
            row = await tx.one(
                UPSERT_PROVIDER,
                {
                    "id": provider.id,
                    "name": provider.name,
                    "auth_type": provider.auth_type,
                    "webhook_path": provider.webhook_path,
                },
            )
            if row is None:
                continue
            if row["inserted"]:
                inserted += 1
            else:
                updated += 1
    return {
        "inserted": inserted,
        "updated": updated,
        "unchanged": len(PROVIDERS) - inserted - updated,
    }


def main() -> int:
    from server.cli import main as cli_main

    return cli_main(["seed", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
