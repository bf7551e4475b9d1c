"""Bearer tokens to principals: who is calling, for which organisation, with which role."""

from __future__ import annotations

from datetime import timedelta

from server import tokens
from server.context import Principal
from server.db import Database, sql
from server.errors import Unauthorized

__all__ = ["authenticate", "bearer_token"]

# last_used_at is written at most once a minute per token, so reads stay cheap.
LAST_USED_GRANULARITY = timedelta(minutes=1)

SELECT_PRINCIPAL = sql("""
    SELECT t.id AS token_id, t.organisation_id, t.user_id, m.role,
           (t.last_used_at IS NULL OR t.last_used_at < now() - :granularity) AS stale
      FROM api_tokens t
      JOIN memberships m ON m.organisation_id = t.organisation_id AND m.user_id = t.user_id
     WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL
""")

TOUCH_TOKEN = sql("""
    UPDATE api_tokens SET last_used_at = now()
     WHERE organisation_id = :organisation_id AND id = :token_id
       AND (last_used_at IS NULL OR last_used_at < now() - :granularity)
""")


def bearer_token(authorization: str | None) -> str:
    """The token from an `Authorization: Bearer ...` header, or Unauthorized."""
    if not authorization:
        raise Unauthorized("Unauthorized: send an Authorization: Bearer <token> header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Unauthorized: the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def authenticate(db: Database, authorization: str | None) -> Principal:
    token = bearer_token(authorization)
    if not tokens.is_well_formed(token):
        raise Unauthorized("Unauthorized: the token is malformed")
    async with db.transaction() as tx:
        row = await tx.one(
            SELECT_PRINCIPAL,
            {
                "token_hash": tokens.hash_token(token),
                "granularity": LAST_USED_GRANULARITY,
            },
        )
        if row is None:
            raise Unauthorized("Unauthorized: the token is unknown or revoked")
        if row["stale"]:
            await tx.execute(
                TOUCH_TOKEN,
                {
                    "organisation_id": row["organisation_id"],
                    "token_id": row["token_id"],
                    "granularity": LAST_USED_GRANULARITY,
                },
            )
    return Principal(
        user_id=row["user_id"],
        organisation_id=row["organisation_id"],
        role=row["role"],
        token_id=row["token_id"],
    )
