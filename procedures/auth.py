"""auth.*: who the caller is, and API tokens (list, create, revoke)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, Field

from server.accounts import (
    AccountError,
    PastExpiry,
    grant_token,
    list_tokens,
    member,
    normalise_email,
    outranks,
)
from server.auth import notify_auth_changed
from server.context import Context
from server.db import sql
from server.errors import Forbidden, InvalidParams, NotFound, Unauthorized
from server.models import WireModel
from server.procedure import ADMIN, AUTHED, Router, mutation, query

Role = Literal["owner", "admin", "member"]


class WhoamiParams(WireModel):
    pass


class WhoamiUser(WireModel):
    id: UUID
    email: str


class WhoamiOrganisation(WireModel):
    id: UUID
    name: str


class Whoami(WireModel):
    user: WhoamiUser
    organisation: WhoamiOrganisation
    role: Role


class ListTokensParams(WireModel):
    user_id: UUID | None = None  # one member's tokens; all of the organisation's when left out
    include_revoked: bool = False


class MyTokensParams(WireModel):
    include_revoked: bool = False


class Token(WireModel):
    """A token's record: never the token itself, which is shown once, when created."""

    id: UUID
    name: str | None
    user_id: UUID
    email: str
    role: Role  # the member's role, which the token acts with
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None  # refused from then on; null: valid until revoked
    current: bool  # the token this call was made with


class TokenList(WireModel):
    items: list[Token]


class CreateTokenParams(WireModel):
    email: str = Field(min_length=3, max_length=320)
    role: Role
    name: str | None = Field(default=None, min_length=1, max_length=200)
    # When the token stops working (with its time zone, in the future); left out: until revoked.
    expires_at: AwareDatetime | None = None


class CreatedToken(WireModel):
    id: UUID
    user_id: UUID
    role: Role
    name: str | None
    expires_at: datetime | None
    token: str  # shown this once; only its hash is kept


class RevokeTokenParams(WireModel):
    id: UUID


class RevokedToken(WireModel):
    id: UUID
    revoked_at: datetime


SELECT_WHOAMI = sql("""
    SELECT u.id AS user_id, u.email, o.id AS organisation_id, o.name AS organisation_name
      FROM users u, organisations o
     WHERE u.id = :user_id AND o.id = :organisation_id
""")
# The token's owner's role comes along, for the rank check; only an active token of the caller's
# organisation is found.
REVOKE_TOKEN = sql("""
    UPDATE api_tokens t SET revoked_at = now()
      FROM memberships m
     WHERE t.organisation_id = :organisation_id AND t.id = :id AND t.revoked_at IS NULL
       AND m.organisation_id = t.organisation_id AND m.user_id = t.user_id
       AND (t.user_id = :user_id OR (:is_admin AND m.role <> ALL(CAST(:above AS text[]))))
    RETURNING t.id, t.revoked_at
""")


@query(guard=AUTHED)
async def whoami(ctx: Context, params: WhoamiParams) -> Whoami:
    """The calling user, their organisation and their role in it."""
    principal = ctx.user
    row = await ctx.db.one(
        SELECT_WHOAMI,
        {
            "user_id": principal.user_id,
            "organisation_id": principal.organisation_id,
        },
    )
    if row is None:  # the membership went away between authentication and now
        raise Unauthorized()
    return Whoami(
        user=WhoamiUser(id=row["user_id"], email=row["email"]),
        organisation=WhoamiOrganisation(id=row["organisation_id"], name=row["organisation_name"]),
        role=principal.role,
    )


def _tokens(ctx: Context, rows: list[dict[str, object]]) -> TokenList:
    current = ctx.user.token_id
    return TokenList(items=[Token.model_validate({**row, "current": row["id"] == current}) for row in rows])


@query(guard=ADMIN)
async def list_tokens_of_organisation(ctx: Context, params: ListTokensParams) -> TokenList:
    """The organisation's API tokens (or one member's), newest first, without the tokens."""
    rows = await list_tokens(
        ctx.db, ctx.organisation_id, user_id=params.user_id, include_revoked=params.include_revoked
    )
    return _tokens(ctx, rows)


@query(guard=AUTHED)
async def my_tokens(ctx: Context, params: MyTokensParams) -> TokenList:
    """The caller's own API tokens, newest first, the one in use marked `current`."""
    rows = await list_tokens(
        ctx.db, ctx.organisation_id, user_id=ctx.user.user_id, include_revoked=params.include_revoked
    )
    return _tokens(ctx, rows)


@mutation(guard=ADMIN, errors=(Forbidden,))
async def create_token(ctx: Context, params: CreateTokenParams) -> CreatedToken:
    """A new token for a member of the caller's organisation, acting with `role` (the member's
    role is set to it; a new email becomes a member). Never a role above the caller's, nor for
    a member ranked above the caller. The token is in this reply only."""
    caller = ctx.user
    try:
        email = normalise_email(params.email)
    except AccountError:
        raise InvalidParams.for_field("email", "is not a valid email address") from None
    if outranks(params.role, caller.role):
        raise Forbidden(f"Forbidden: your role ({caller.role}) cannot grant the {params.role} role")
    existing = await member(ctx.db, caller.organisation_id, email)
    if existing is not None and outranks(existing[1], caller.role):
        raise Forbidden(f"Forbidden: your role ({caller.role}) cannot issue tokens to an owner")
    if existing is not None and existing[0] == caller.user_id and params.role != caller.role:
        # Else an organisation's last owner could demote itself and leave it with none.
        raise Forbidden("Forbidden: a token for yourself keeps your own role")
    try:
        issued = await grant_token(
            ctx.db, caller.organisation_id, email, params.role, params.name, params.expires_at
        )
    except PastExpiry:
        raise InvalidParams.for_field("expiresAt", "must be in the future") from None
    ctx.record("api_token", issued.token_id, ["role", "token"])
    return CreatedToken(
        id=issued.token_id,
        user_id=issued.user_id,
        role=params.role,
        name=params.name,
        expires_at=params.expires_at,
        token=issued.token,
    )


@mutation(guard=AUTHED, errors=(NotFound,))
async def revoke_token(ctx: Context, params: RevokeTokenParams) -> RevokedToken:
    """Revoke a token at once, on every server. Anyone may revoke their own; owners and admins
    any of their organisation's, except those of members ranked above them."""
    caller = ctx.user
    above = [role for role in ("owner", "admin", "member") if outranks(role, caller.role)]
    row = await ctx.db.one(
        REVOKE_TOKEN,
        {
            "organisation_id": caller.organisation_id,
            "id": params.id,
            "user_id": caller.user_id,
            "is_admin": caller.is_admin,
            "above": above,
        },
    )
    if row is None:
        raise NotFound("Not found: no active token with this id that you may revoke")
    await notify_auth_changed(ctx.db)
    ctx.record("api_token", params.id, ["revoked_at"])
    return RevokedToken(id=row["id"], revoked_at=row["revoked_at"])


router = Router(
    {
        "whoami": whoami,
        "listTokens": list_tokens_of_organisation,
        "myTokens": my_tokens,
        "createToken": create_token,
        "revokeToken": revoke_token,
    }
)
