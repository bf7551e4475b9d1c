"""auth.*: who the caller is."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from server.context import Context
from server.db import sql
from server.errors import Unauthorized
from server.models import WireModel
from server.procedure import AUTHED, Router, query


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
    role: Literal["owner", "admin", "member"]


SELECT_WHOAMI = sql("""
    SELECT u.id AS user_id, u.email, o.id AS organisation_id, o.name AS organisation_name
      FROM users u, organisations o
     WHERE u.id = :user_id AND o.id = :organisation_id
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


router = Router({"whoami": whoami})
