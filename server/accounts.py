"""Organisations, users, memberships and API tokens, as the CLI creates them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import email_validator

from server import tokens
from server.audit import audit_params, write_audit
from server.auth import notify_auth_changed
from server.db import Tx, sql

__all__ = [
    "DuplicateOrganisationName",
    "IssuedToken",
    "PastExpiry",
    "ROLES",
    "create_organisation",
    "grant_token",
    "issue_token",
    "list_organisations",
    "list_tokens",
    "member",
    "normalise_email",
    "outranks",
    "revoke_token",
]

ROLES = ("owner", "admin", "member")
_RANK = {"owner": 3, "admin": 2, "member": 1}


def outranks(role: str, other: str) -> bool:
    """Whether `role` stands above `other` (owner > admin > member)."""
    return _RANK[role] > _RANK[other]

INSERT_ORGANISATION = sql("INSERT INTO organisations (name) VALUES (:name) RETURNING id")
UPSERT_USER = sql("""
    INSERT INTO users (email, name) VALUES (:email, :name)
    ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
    RETURNING id
""")
UPSERT_MEMBERSHIP = sql("""
    INSERT INTO memberships (organisation_id, user_id, role) VALUES (:organisation_id, :user_id, :role)
    ON CONFLICT (organisation_id, user_id) DO UPDATE SET role = EXCLUDED.role
""")
INSERT_TOKEN = sql("""
    INSERT INTO api_tokens (organisation_id, user_id, name, token_hash, expires_at)
    VALUES (:organisation_id, :user_id, :name, :token_hash, :expires_at)
    RETURNING id
""")
# No unique index on names (no schema change before migrations exist): a transaction lock on the
# name makes the check and the insert one step, so two concurrent creates cannot both pass.
LOCK_ORGANISATION_NAME = sql("SELECT pg_advisory_xact_lock(hashtextextended(lower(:name), 7411025002))")
ORGANISATION_NAMED = sql("""
    SELECT id FROM organisations WHERE lower(name) = lower(:name) ORDER BY created_at LIMIT 1
""")
ORGANISATION_EXISTS = sql("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = :id)")
REVOKE_TOKEN = sql("""
    UPDATE api_tokens SET revoked_at = now()
     WHERE id = :id AND revoked_at IS NULL
    RETURNING organisation_id
""")
# Newest first; `user_id` NULL lists the whole organisation's.
SELECT_TOKENS = sql("""
    SELECT t.id, t.name, t.user_id, u.email, m.role, t.created_at, t.last_used_at, t.revoked_at,
           t.expires_at
      FROM api_tokens t
      JOIN memberships m ON m.organisation_id = t.organisation_id AND m.user_id = t.user_id
      JOIN users u ON u.id = t.user_id
     WHERE t.organisation_id = :organisation_id
       AND (CAST(:user_id AS uuid) IS NULL OR t.user_id = :user_id)
       AND (:include_revoked OR t.revoked_at IS NULL)
     ORDER BY t.created_at DESC, t.id
     LIMIT :limit
""")
SELECT_ORGANISATIONS = sql("""
    SELECT o.id, o.name, o.created_at,
           (SELECT count(*) FROM memberships m WHERE m.organisation_id = o.id) AS members,
           (SELECT count(*) FROM api_tokens t
             WHERE t.organisation_id = o.id AND t.revoked_at IS NULL) AS active_tokens
      FROM organisations o
     ORDER BY o.created_at, o.id
     LIMIT :limit
""")
MEMBER = sql("""
    SELECT m.user_id, m.role FROM memberships m JOIN users u ON u.id = m.user_id
     WHERE m.organisation_id = :organisation_id AND u.email = :email
""")


class AccountError(Exception):
    """A request the CLI refuses; the message is safe to print."""


class DuplicateOrganisationName(AccountError):
    """An organisation already has this name (compared without case)."""

    def __init__(self, existing_id: UUID) -> None:
        super().__init__(f"an organisation with this name already exists (id {existing_id})")
        self.existing_id = existing_id


class PastExpiry(AccountError):
    """A token asked to expire at a time already past (or with no time zone)."""


@dataclass(frozen=True)
class IssuedToken:
    organisation_id: UUID
    user_id: UUID
    token_id: UUID
    token: str  # shown once, never stored


def normalise_email(raw: str) -> str:
    try:
        info = email_validator.validate_email(raw, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise AccountError("the email address is not valid") from None
    return info.normalized.lower()


async def _audit(
    tx: Tx, action: str, organisation_id: UUID, target_type: str, target_id: str, fields: list[str]
) -> None:
    """The audit row of a CLI change (no caller's token: an operator ran it)."""
    params = audit_params(
        action=action,
        organisation_id=organisation_id,
        target_type=target_type,
        target_id=target_id,
        changed_fields=fields,
    )
    await write_audit(tx, params)


async def issue_token(
    tx: Tx,
    organisation_id: UUID,
    email: str,
    role: str,
    name: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedToken:
    """An operator's token (the CLI): grant_token, with its audit row."""
    issued = await grant_token(tx, organisation_id, email, role, name, expires_at)
    await _audit(
        tx, "cli.token.create", organisation_id, "api_token", str(issued.token_id), ["role", "token"]
    )
    return issued


async def member(tx: Tx, organisation_id: UUID, email: str) -> tuple[UUID, str] | None:
    """The user id and role of the member with this email, or None if not a member."""
    row = await tx.one(MEMBER, {"organisation_id": organisation_id, "email": normalise_email(email)})
    return None if row is None else (row["user_id"], row["role"])


async def grant_token(
    tx: Tx,
    organisation_id: UUID,
    email: str,
    role: str,
    name: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Create the user and membership when missing (setting the role), then a new token, valid
    until `expires_at` (None: until revoked); the caller writes the audit row."""
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= datetime.now(UTC)):
        raise PastExpiry("the expiry must be a time in the future, with its time zone")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if not await tx.scalar(ORGANISATION_EXISTS, {"id": organisation_id}):
        raise AccountError("no organisation has that id")
    user_id = await tx.scalar(UPSERT_USER, {"email": normalise_email(email), "name": None})
    await tx.execute(
        UPSERT_MEMBERSHIP, {"organisation_id": organisation_id, "user_id": user_id, "role": role}
    )
    await notify_auth_changed(tx)  # the role may have changed for this user's existing tokens
    token = tokens.generate()
    token_id = await tx.scalar(
        INSERT_TOKEN,
        {
            "organisation_id": organisation_id,
            "user_id": user_id,
            "name": name,
            "token_hash": tokens.hash_token(token),
            "expires_at": expires_at,
        },
    )
    return IssuedToken(organisation_id, user_id, token_id, token)


async def create_organisation(
    tx: Tx, name: str, owner_email: str, *, allow_duplicate_name: bool = False
) -> IssuedToken:
    """The organisation and its owner's token; a name already taken is refused unless allowed."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AccountError("the organisation name must be 1 to 200 characters")
    if not allow_duplicate_name:
        await tx.execute(LOCK_ORGANISATION_NAME, {"name": name})
        existing = await tx.scalar(ORGANISATION_NAMED, {"name": name})
        if existing is not None:
            raise DuplicateOrganisationName(existing)
    organisation_id = await tx.scalar(INSERT_ORGANISATION, {"name": name})
    await _audit(tx, "cli.org.create", organisation_id, "organisation", str(organisation_id), ["name"])
    return await issue_token(tx, organisation_id, owner_email, "owner", name="owner")


async def list_tokens(
    tx: Tx,
    organisation_id: UUID,
    *,
    user_id: UUID | None = None,
    include_revoked: bool = False,
    limit: int = 1000,
) -> list[dict[str, object]]:
    """An organisation's tokens (or one member's), newest first; never a token or its hash."""
    rows = await tx.all(
        SELECT_TOKENS,
        {
            "organisation_id": organisation_id,
            "user_id": user_id,
            "include_revoked": include_revoked,
            "limit": limit,
        },
    )
    return [dict(row) for row in rows]


async def list_organisations(tx: Tx, *, limit: int = 10_000) -> list[dict[str, object]]:
    return [dict(row) for row in await tx.all(SELECT_ORGANISATIONS, {"limit": limit})]


async def revoke_token(tx: Tx, token_id: UUID) -> bool:
    """Revoke a token; the next call with it is refused. False if unknown or already revoked."""
    organisation_id = await tx.scalar(REVOKE_TOKEN, {"id": token_id})
    if organisation_id is None:
        return False
    await notify_auth_changed(tx)
    await _audit(tx, "cli.token.revoke", organisation_id, "api_token", str(token_id), ["revoked_at"])
    return True
