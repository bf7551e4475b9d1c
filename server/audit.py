"""The audit log: one append-only row per mutation, written in the mutation's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from server.db import Tx, sql

__all__ = ["write_audit"]

INSERT_AUDIT = sql("""
    INSERT INTO audit_log (organisation_id, actor_user_id, actor_token_id, action,
                           target_type, target_id, changed_fields, request_id)
    VALUES (:organisation_id, :actor_user_id, :actor_token_id, :action,
            :target_type, :target_id, :changed_fields, :request_id)
""")


async def write_audit(
    tx: Tx,
    *,
    action: str,
    organisation_id: UUID | None,
    actor_user_id: UUID | None = None,
    actor_token_id: UUID | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    changed_fields: Sequence[str] = (),
    request_id: str | None = None,
    and_commit: bool = False,
) -> None:
    """Append the row; with `and_commit` it is the transaction's last statement and travels
    with its COMMIT, one round trip for both."""
    run = tx.commit_with if and_commit else tx.execute
    await run(
        INSERT_AUDIT,
        {
            "organisation_id": organisation_id,
            "actor_user_id": actor_user_id,
            "actor_token_id": actor_token_id,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "changed_fields": list(changed_fields),
            "request_id": request_id,
        },
    )
