"""Shared steps for the contacts tests: make contacts and read rows behind the public surface."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support import Org, Rpc, query


def unique_email(tag: str = "person") -> str:
    return f"{tag}.{uuid.uuid4().hex[:10]}@example.co.uk"


def unique_phone() -> str:
    # A UK mobile number (any possible one is accepted, allocated or not: issue 20).
    return f"+4479111{uuid.uuid4().int % 100000:05d}"


def create(rpc: Rpc, org: Org, **fields: Any) -> dict[str, Any]:
    params = {"firstName": "Ada", "lastName": "Lovelace", "email": unique_email(), **fields}
    params = {k: v for k, v in params.items() if v is not ...}
    result: dict[str, Any] = rpc.call("contacts.create", params, org.member_token)
    return result


def count_rows(url: str, org: Org, table: str) -> int:
    # Table names come from the tests themselves, never from input.
    rows = query(url, f"SELECT count(*) FROM {table} WHERE organisation_id = %s", (org.id,))
    return int(rows[0][0])


def audit_rows(url: str, org: Org) -> list[tuple[Any, ...]]:
    """The organisation's audit rows written by contacts.* procedures, oldest first."""
    return query(
        url,
        "SELECT action, target_type, target_id, changed_fields, actor_user_id FROM audit_log"
        " WHERE organisation_id = %s AND action LIKE 'contacts.%%' ORDER BY id",
        (org.id,),
    )
