"""Replaying the erasure journal into a restored database (`nurturehub db restore`,
`nurturehub erasures replay`): erasures and lifts made after a backup, applied again in order.

Replaying is idempotent: a contact already gone stays gone, a hash already kept is kept once,
a lift already applied removes nothing; only what changes is audited.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from server import journal
from server.audit import audit_params, write_audit
from server.db import Database, sql

__all__ = ["replay"]

REPLAY_ERASURE = sql("""
    WITH gone AS (
        DELETE FROM contacts WHERE organisation_id = :organisation_id AND id = :contact_id
        RETURNING id),
    kept AS (
        INSERT INTO erasure_suppressions (organisation_id, identifier_hash, kind)
        SELECT :organisation_id, s.identifier_hash, s.kind
          FROM unnest(CAST(:hashes AS bytea[]), CAST(:kinds AS text[])) AS s (identifier_hash, kind)
         WHERE EXISTS (SELECT 1 FROM organisations WHERE id = :organisation_id)
        ON CONFLICT (organisation_id, identifier_hash) DO NOTHING
        RETURNING 1)
    SELECT (SELECT count(*) FROM gone) AS contacts, (SELECT count(*) FROM kept) AS suppressions
""")

REPLAY_LIFT = sql("""
    DELETE FROM erasure_suppressions
     WHERE organisation_id = :organisation_id AND identifier_hash = ANY (CAST(:hashes AS bytea[]))
""")


async def replay(db: Database, path: Path, since: datetime | None) -> dict[str, Any]:
    """Apply the journal's entries at or after `since`; returns what changed."""
    done = {"entries": 0, "contactsRemoved": 0, "suppressionsAdded": 0, "suppressionsLifted": 0}
    for entry in journal.entries(path, since):
        done["entries"] += 1
        organisation_id = UUID(entry["organisationId"])
        params = {
            "organisation_id": organisation_id,
            "hashes": [bytes.fromhex(s["hash"]) for s in entry["suppressions"]],
            "kinds": [s["kind"] for s in entry["suppressions"]],
        }
        async with db.transaction() as tx:
            if entry["type"] == "erasure":
                row = await tx.one(REPLAY_ERASURE, {**params, "contact_id": UUID(entry["contactId"])})
                assert row is not None
                changed = [field for field in ("contacts", "suppressions") if row[field]]
                done["contactsRemoved"] += row["contacts"]
                done["suppressionsAdded"] += row["suppressions"]
                target = ("contact", entry["contactId"])
            else:
                lifted = await tx.execute(REPLAY_LIFT, params)
                changed = ["suppressions"] if lifted else []
                done["suppressionsLifted"] += lifted
                target = ("erasure_suppression", None)
            if changed:
                await write_audit(tx, audit_params(
                    action=f"cli.erasures.replay.{entry['type']}", organisation_id=organisation_id,
                    target_type=target[0], target_id=target[1], changed_fields=changed,
                    request_id=entry.get("requestId"),
                ))
    return done
