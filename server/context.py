"""What a handler gets for one call: who is calling, its transaction, and its audit entry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from server.db import Tx
from server.errors import Unauthorized
from server.settings import Settings

__all__ = ["AuditEntry", "Context", "Principal", "Role"]

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


@dataclass(slots=True)
class Context:
    request_id: str
    procedure: str
    principal: Principal | None
    db: Tx
    settings: Settings
    audit: AuditEntry = field(default_factory=AuditEntry)

    @property
    def user(self) -> Principal:
        """The caller; procedures guarded `authed` or `admin` always have one."""
        if self.principal is None:
            raise Unauthorized()
        return self.principal

    @property
    def organisation_id(self) -> UUID:
        return self.user.organisation_id

    def record(
        self, target_type: str, target_id: object, changed_fields: Iterable[str] = ()
    ) -> None:
        """Say what this mutation touched; names of fields only, never their values."""
        self.audit.target_type = target_type
        self.audit.target_id = str(target_id)
        self.audit.changed_fields = sorted(set(changed_fields))
