"""The erasure suppression list, one rule for every path that brings a person in.

An erased person's email, phone and CRM external id are kept as keyed hashes (HMAC, scoped to
the organisation), never as values. Every write that brings one of those identifiers into the
organisation is checked against the list: an import is refused; an agent's own create or update
is refused too unless an admin overrides it with a reason, which lifts the suppression for those
identifiers in the same transaction and keeps the evidence (erasure_suppression_lifts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from uuid import UUID

from pydantic import Field

from procedures.contact_fields import Reason
from server.context import Context
from server.db import Row, sql
from server.errors import Conflict, Forbidden, InvalidParams, ServiceUnavailable
from server.keys import keyed_hash
from server.models import WireModel

__all__ = [
    "IdentifierKind",
    "SuppressionOverride",
    "check",
    "hashes",
    "identifiers",
    "lift",
    "refuse_or_override",
    "suppression_key",
    "suppressed_conflict",
]

IdentifierKind = Literal["email", "phone", "external_id"]
_WIRE_NAMES = {"email": "email", "phone": "phone", "external_id": "externalId"}


class SuppressionOverride(WireModel):
    """An admin's decision to hold a person again who was erased at their request."""

    reason: Reason = Field(min_length=1, description="Why (no personal data): kept as evidence")


SELECT_SUPPRESSED = sql("""
    SELECT kind, identifier_hash FROM erasure_suppressions
     WHERE organisation_id = :organisation_id AND identifier_hash = ANY (CAST(:hashes AS bytea[]))
     ORDER BY kind
""")

# Removes the suppressions and records each lift, in one statement.
LIFT = sql("""
    WITH lifted AS (
        DELETE FROM erasure_suppressions
         WHERE organisation_id = :organisation_id
           AND identifier_hash = ANY (CAST(:hashes AS bytea[]))
        RETURNING organisation_id, identifier_hash, kind, created_at)
    INSERT INTO erasure_suppression_lifts
           (organisation_id, identifier_hash, kind, suppressed_at, lifted_by, reason, request_id)
    SELECT organisation_id, identifier_hash, kind, created_at, :lifted_by, :reason, :request_id
      FROM lifted
    RETURNING kind
""")


def suppression_key(ctx: Context) -> bytes:
    key = ctx.settings.suppression_key
    if key is None:
        # Fail closed: without the key we can neither record an erasure nor honour one.
        raise ServiceUnavailable(
            "Service unavailable: erasure and import suppression need the server's "
            "NURTUREHUB_SUPPRESSION_KEY, which is not configured"
        )
    return key


def identifiers(
    email: str | None, phone: str | None, external_id: str | None
) -> list[tuple[IdentifierKind, str]]:
    pairs: list[tuple[IdentifierKind, str | None]] = [
        ("email", email), ("phone", phone), ("external_id", external_id)
    ]
    return [(kind, value) for kind, value in pairs if value is not None]


def hashes(key: bytes, organisation_id: UUID, found: Sequence[tuple[IdentifierKind, str]]) -> list[bytes]:
    # Scoped to the organisation, so two agencies' lists cannot be matched against each other.
    return [keyed_hash(key, str(organisation_id), kind, value) for kind, value in found]


async def check(ctx: Context, found: Sequence[tuple[IdentifierKind, str]]) -> list[Row]:
    """The suppressed ones among `found`: rows of (kind, identifier_hash)."""
    if not found:
        return []
    return list(await ctx.db.all(SELECT_SUPPRESSED, {
        "organisation_id": ctx.organisation_id,
        "hashes": hashes(suppression_key(ctx), ctx.organisation_id, found),
    }))


async def lift(ctx: Context, found: Sequence[tuple[IdentifierKind, str]], reason: str) -> list[str]:
    """Lift the suppressions of `found`, recording who, when and why; returns the kinds lifted."""
    rows = await ctx.db.all(LIFT, {
        "organisation_id": ctx.organisation_id,
        "hashes": hashes(suppression_key(ctx), ctx.organisation_id, found),
        "lifted_by": ctx.user.user_id,
        "reason": reason,
        "request_id": ctx.request_id,
    })
    return sorted({row["kind"] for row in rows})


def suppressed_conflict(kinds: Sequence[str], *, can_override: bool) -> Conflict:
    how = (
        "an admin may hold them again with suppressionOverride and a reason, or lift it with "
        "contacts.liftSuppression"
        if can_override
        else "an admin must lift it with contacts.liftSuppression before an import may bring "
        "them back"
    )
    return Conflict(
        "Conflict: this person was erased at their request (GDPR) and is on the erasure "
        f"suppression list ({', '.join(_WIRE_NAMES[k] for k in kinds)}); {how}",
        data={"suppressed": list(kinds)},
    )


async def refuse_or_override(
    ctx: Context,
    found: Sequence[tuple[IdentifierKind, str]],
    override: SuppressionOverride | None,
    *,
    can_override: bool,
) -> list[str]:
    """The one rule for a write bringing `found` in: refuse a suppressed identifier, unless an
    admin's override lifts it (returns the kinds lifted)."""
    if override is not None:
        if not can_override:
            raise InvalidParams.for_field(
                "suppressionOverride",
                "is accepted only with importSource manual; lift the suppression first "
                "(contacts.liftSuppression)",
            )
        if not ctx.user.is_admin:
            raise Forbidden("Forbidden: only an owner or admin may override the erasure suppression list")
    suppressed = await check(ctx, found)
    if not suppressed:
        return []
    kinds = sorted({row["kind"] for row in suppressed})
    if override is None:
        raise suppressed_conflict(kinds, can_override=can_override)
    return await lift(ctx, found, override.reason)
