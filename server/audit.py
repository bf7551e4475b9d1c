"""The audit log: one append-only row per mutation, written in the mutation's transaction.

The framework writes the row after the handler, together with the COMMIT (`write_audit`). A
handler whose mutation is one statement can instead carry the row in that statement, as a CTE
from `audit_cte`: the statement is then the whole transaction, and costs one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from server.db import Tx, sql

__all__ = ["INSERT_AUDIT", "audit_cte", "audit_params", "write_audit"]

_COLUMNS = (
    "organisation_id, actor_user_id, actor_token_id, action, target_type, target_id, "
    "changed_fields, request_id"
)

INSERT_AUDIT = sql(f"""
    INSERT INTO audit_log ({_COLUMNS})
    VALUES (:audit_organisation_id, :audit_actor_user_id, :audit_actor_token_id, :audit_action,
            :audit_target_type, :audit_target_id, :audit_changed_fields, :audit_request_id)
""")


def audit_params(
    *,
    action: str,
    organisation_id: UUID | None,
    actor_user_id: UUID | None = None,
    actor_token_id: UUID | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    changed_fields: Sequence[str] = (),
    request_id: str | None = None,
) -> dict[str, Any]:
    """The values of the `:audit_*` parameters, for INSERT_AUDIT and for `audit_cte`."""
    return {
        "audit_organisation_id": organisation_id,
        "audit_actor_user_id": actor_user_id,
        "audit_actor_token_id": actor_token_id,
        "audit_action": action,
        "audit_target_type": target_type,
        "audit_target_id": target_id,
        "audit_changed_fields": list(changed_fields),
        "audit_request_id": request_id,
    }


def audit_cte(source: str, target_id: str, changed_fields: str = ":audit_changed_fields") -> str:
    """A CTE named `audit` that writes the mutation's audit row from the one row of `source`.

    `target_id` and `changed_fields` are SQL expressions over `source` (the parameters by
    default). Join `audit` into the statement's result, so that a result row means the audit
    row was written: PostgreSQL runs a data-modifying CTE even when nothing reads it, but only
    a join makes a source without rows (nothing changed) return nothing. Use the statement
    with `Context.audited`, which supplies the parameters and tells the framework not to write
    a second row.
    """
    return f"""audit AS (
        INSERT INTO audit_log ({_COLUMNS})
        SELECT CAST(:audit_organisation_id AS uuid), CAST(:audit_actor_user_id AS uuid),
               CAST(:audit_actor_token_id AS uuid), CAST(:audit_action AS text),
               CAST(:audit_target_type AS text), CAST({target_id} AS text),
               CAST({changed_fields} AS text[]), CAST(:audit_request_id AS text)
          FROM {source}
        RETURNING 1)"""


async def write_audit(tx: Tx, params: dict[str, Any], *, and_commit: bool = False) -> None:
    """Append the row; with `and_commit` it is the transaction's last statement and travels
    with its COMMIT, one round trip for both."""
    run = tx.commit_with if and_commit else tx.execute
    await run(INSERT_AUDIT, params)
