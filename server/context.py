"""What a handler gets for one call: who is calling, its transaction, and its audit entry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from server.audit import audit_params
from server.db import Tx
from server.errors import Unauthorized
from server.settings import Settings

__all__ = ["AuditEntry", "Context", "Principal", "Role", "run_after_commit"]

log = logging.getLogger("nurturehub.rpc")

Role = str  # 'owner' | 'admin' | 'member', as memberships.role


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID
    organisation_id: UUID
    role: Role
    token_id: UUID

    @property
    def is_admin(self) -> bool:
        return self.role in ("owner", "admin")


@dataclass(slots=True)
class AuditEntry:
    """What a mutation changed: filled by the handler, written by the framework."""

    target_type: str | None = None
    target_id: str | None = None
    changed_fields: list[str] = field(default_factory=list)
    # True once the handler's own statement carries the row (Context.audited).
    in_statement: bool = False


@dataclass(slots=True)
class Context:
    request_id: str
    procedure: str
    principal: Principal | None
    db: Tx
    settings: Settings
    audit: AuditEntry = field(default_factory=AuditEntry)
    # Work for once the call's transaction has committed, never if it rolls back (after_commit).
    committed: list[Callable[[], None]] | None = None

    @property
    def user(self) -> Principal:
        """The caller; procedures guarded `authed` or `admin` always have one."""
        if self.principal is None:
            raise Unauthorized()
        return self.principal

    @property
    def organisation_id(self) -> UUID:
        return self.user.organisation_id

    def after_commit(self, work: Callable[[], None]) -> None:
        """Run `work` (blocking I/O is fine: it runs on a thread) once this call has committed:
        for what must record a change only if it happened, such as the erasure journal."""
        if self.committed is None:
            self.committed = []
        self.committed.append(work)

    def record(self, target_type: str, target_id: object, changed_fields: Iterable[str] = ()) -> None:
        """Say what this mutation touched; names of fields only, never their values."""
        self.audit.target_type = target_type
        self.audit.target_id = None if target_id is None else str(target_id)
        self.audit.changed_fields = sorted(set(changed_fields))

    def audited(
        self, params: Mapping[str, Any], target_type: str, changed_fields: Iterable[str] = ()
    ) -> dict[str, Any]:
        """`params` for a statement that writes this mutation's audit row itself (its SQL has
        server/audit.py's `audit_cte`, which takes the target id from the statement's rows).

        The framework then writes no row of its own. The statement must be `sql(...,
        last=True)`: it ends the transaction, and when it is the first it runs as a
        transaction of one statement, with no BEGIN and COMMIT round trips. So once it has
        run, the mutation is committed: build the result from its rows, and do no more.
        """
        self.record(target_type, None, changed_fields)
        self.audit.in_statement = True
        return {**params, **self.audit_params()}

    def audit_params(self) -> dict[str, Any]:
        """The audit row's values, from the caller and what the handler recorded."""
        principal = self.principal
        return audit_params(
            action=self.procedure,
            organisation_id=principal.organisation_id if principal else None,
            actor_user_id=principal.user_id if principal else None,
            actor_token_id=principal.token_id if principal else None,
            target_type=self.audit.target_type,
            target_id=self.audit.target_id,
            changed_fields=self.audit.changed_fields,
            request_id=self.request_id,
        )


async def run_after_commit(work: list[Callable[[], None]], procedure: str) -> None:
    """Run a committed call's after_commit work. A failure is logged, not raised: the change
    has happened, and the caller must not be told otherwise."""
    for item in work:
        try:
            await asyncio.to_thread(item)
        except Exception:
            log.exception("%s committed, but work after its commit failed", procedure)
