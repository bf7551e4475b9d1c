"""CRM connection credentials at rest: sealed with AES-256-GCM, bound to their row, rotatable."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson

from server.crypto import Keyring, associated_data
from server.db import Database, sql

__all__ = ["credentials_hint", "open_credentials", "rotate_keys", "seal_credentials"]

TABLE, COLUMN = "crm_connections", "encrypted_credentials"

SELECT_ALL_SEALED = sql("""
    SELECT organisation_id, id, encrypted_credentials FROM crm_connections
     ORDER BY organisation_id, id
       FOR UPDATE
""")
UPDATE_SEALED = sql("""
    UPDATE crm_connections SET encrypted_credentials = :sealed
     WHERE organisation_id = :organisation_id AND id = :id
""")


def _aad(organisation_id: UUID, connection_id: UUID) -> bytes:
    return associated_data(organisation_id, TABLE, COLUMN, connection_id)


def seal_credentials(
    keyring: Keyring, organisation_id: UUID, connection_id: UUID, credentials: dict[str, Any]
) -> bytes:
    return keyring.encrypt(orjson.dumps(credentials), _aad(organisation_id, connection_id))


def open_credentials(
    keyring: Keyring, organisation_id: UUID, connection_id: UUID, sealed: bytes
) -> dict[str, Any]:
    plain: dict[str, Any] = orjson.loads(keyring.decrypt(sealed, _aad(organisation_id, connection_id)))
    return plain


def credentials_hint(secret: str) -> str:
    """The last four characters of a long secret, so admins can tell keys apart; else nothing."""
    return f"…{secret[-4:]}" if len(secret) >= 16 else "…"


async def rotate_keys(db: Database, keyring: Keyring) -> dict[str, Any]:
    """Re-encrypt every credential under the keyring's first key, in one transaction.

    Any credential that does not decrypt stops the rotation and nothing is changed, so an old
    key is never removed while something still needs it.
    """
    reencrypted = unchanged = 0
    async with db.transaction() as tx:
        for row in await tx.all(SELECT_ALL_SEALED):
            sealed = bytes(row["encrypted_credentials"])
            if Keyring.key_id_of(sealed) == keyring.primary_id:
                unchanged += 1
                continue
            aad = _aad(row["organisation_id"], row["id"])
            fresh = keyring.encrypt(keyring.decrypt(sealed, aad), aad)
            await tx.execute(
                UPDATE_SEALED,
                {"sealed": fresh, "organisation_id": row["organisation_id"], "id": row["id"]},
            )
            reencrypted += 1
    return {"primaryKey": keyring.primary_id, "reencrypted": reencrypted, "unchanged": unchanged}
