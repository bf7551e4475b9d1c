"""audit.*: the organisation's audit log, for its compliance admins.

The log holds who did what to which record and the names of the fields changed, never their
values (server/audit.py), so nothing personal can be read back through it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, Field

from server.context import Context
from server.cursor import cursor_key, decode_cursor, encode_cursor
from server.db import sql
from server.errors import InvalidParams
from server.models import WireModel
from server.procedure import ADMIN, Router, query

# Models ------------------------------------------------------------------------------------------


class ListAuditParams(WireModel):
    actor_user_id: UUID | None = None
    action: str | None = Field(default=None, max_length=100, description="a procedure, e.g. contacts.delete")
    target_type: str | None = Field(default=None, max_length=50, description="e.g. contact")
    target_id: str | None = Field(default=None, max_length=100)
    since: AwareDatetime | None = Field(default=None, description="entries at or after this time")
    until: AwareDatetime | None = Field(default=None, description="entries before this time")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=400)


class AuditEntry(WireModel):
    id: int
    actor_user_id: UUID | None
    actor_token_id: UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    changed_fields: list[str]
    request_id: str | None
    created_at: datetime


class AuditPage(WireModel):
    items: list[AuditEntry]
    next_cursor: str | None


# SQL ---------------------------------------------------------------------------------------------

# Newest first, by (created_at, id): audit_log_org_idx walks the organisation's rows in that order.
SELECT_ENTRIES = sql("""
    SELECT id, actor_user_id, actor_token_id, action, target_type, target_id, changed_fields,
           request_id, created_at
      FROM audit_log
     WHERE organisation_id = :organisation_id
       AND (CAST(:actor_user_id AS uuid) IS NULL OR actor_user_id = :actor_user_id)
       AND (CAST(:action AS text) IS NULL OR action = :action)
       AND (CAST(:target_type AS text) IS NULL OR target_type = :target_type)
       AND (CAST(:target_id AS text) IS NULL OR target_id = :target_id)
       AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since)
       AND (CAST(:until AS timestamptz) IS NULL OR created_at < :until)
       AND (CAST(:before_at AS timestamptz) IS NULL
            OR (created_at, id) < (CAST(:before_at AS timestamptz), CAST(:before_id AS bigint)))
     ORDER BY created_at DESC, id DESC
     LIMIT :limit
""")


# Handlers ----------------------------------------------------------------------------------------


@query(guard=ADMIN)
async def list_audit(ctx: Context, params: ListAuditParams) -> AuditPage:
    """The audit log, newest first, filtered by actor, action, target and time.

    Pass `nextCursor` back as `cursor` (with the same filters) for the next page.
    """
    if params.since is not None and params.until is not None and params.since >= params.until:
        raise InvalidParams.for_field("until", "must be after since")
    filters: dict[str, Any] = {
        "actor_user_id": params.actor_user_id,
        "action": params.action,
        "target_type": params.target_type,
        "target_id": params.target_id,
        "since": params.since,
        "until": params.until,
    }
    key = cursor_key(ctx.settings)
    scope = ["audit.list", str(ctx.organisation_id), filters]
    before: list[Any] = [None, None]
    if params.cursor is not None:
        position = decode_cursor(key, scope, params.cursor)
        if len(position) != 2 or not isinstance(position[1], int):
            raise InvalidParams.for_field("cursor", "is not a cursor this list gave out")
        before = [datetime.fromisoformat(position[0]), position[1]]
    rows = await ctx.db.all(SELECT_ENTRIES, {
        "organisation_id": ctx.organisation_id,
        **filters,
        "before_at": before[0],
        "before_id": before[1],
        "limit": params.limit + 1,
    })
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    cursor = None
    if more:
        cursor = encode_cursor(key, scope, [rows[-1]["created_at"].isoformat(), rows[-1]["id"]])
    return AuditPage(items=[AuditEntry(**row) for row in rows], next_cursor=cursor)


router = Router({"list": list_audit})
