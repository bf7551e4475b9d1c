"""Consent evidence: a contact's consent per channel, and the history of every change to it.

`consent_status` is the person's marketing consent as a whole; the four channels refine it as
the CRMs hold them (Reapit's communication preferences, Street's contact preferences). A channel
may be used only as far as both allow, the least permissive winning (README, Consent). Each
change, overall or per channel, is kept with the time of consent its source gave, how it reached
us (source) and who made it, in the same transaction as the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from procedures.contact_fields import ConsentStatus
from server.context import Context
from server.db import Row, sql
from server.models import WireModel

__all__ = [
    "CHANNELS",
    "ConsentChannels",
    "ConsentEvent",
    "ConsentSource",
    "effective",
    "history",
    "record_changes",
    "source_of",
]

Channel = Literal["overall", "email", "sms", "phone", "post"]
ConsentSource = Literal["manual", "import", "crm_sync", "api"]
CHANNELS: tuple[str, ...] = ("email", "sms", "phone", "post")
# Least permissive first: a deny anywhere denies the channel.
_ORDER = ("denied", "pending", "unknown", "granted")


class ConsentChannels(WireModel):
    """Consent per channel; an absent channel is left as it is (never asked: unknown)."""

    email: ConsentStatus | None = None
    sms: ConsentStatus | None = None
    phone: ConsentStatus | None = None
    post: ConsentStatus | None = None


class ConsentEvent(WireModel):
    channel: Channel
    status: ConsentStatus
    consented_at: datetime | None
    recorded_at: datetime
    source: ConsentSource
    actor_user_id: UUID | None
    actor_token_id: UUID | None
    crm_connection_id: UUID | None
    request_id: str | None


INSERT_EVENTS = sql("""
    INSERT INTO contact_consent_events
           (organisation_id, contact_id, channel, status, consented_at, source, actor_user_id,
            actor_token_id, crm_connection_id, request_id)
    SELECT :organisation_id, :contact_id, e.channel, e.status, :consented_at, :source,
           :actor_user_id, :actor_token_id, :crm_connection_id, :request_id
      FROM unnest(CAST(:channels AS text[]), CAST(:statuses AS text[])) AS e (channel, status)
""")

SELECT_HISTORY = sql("""
    SELECT channel, status, consented_at, recorded_at, source, actor_user_id, actor_token_id,
           crm_connection_id, request_id
      FROM contact_consent_events
     WHERE organisation_id = :organisation_id AND contact_id = :contact_id
     ORDER BY recorded_at DESC, id
""")


def source_of(import_source: str) -> ConsentSource:
    """How consent given with a create reached us, from the contact's import source."""
    if import_source == "crm_sync":
        return "crm_sync"
    return "manual" if import_source == "manual" else "import"


def effective(overall: str, channel: str | None) -> str:
    """What a channel may be used for: the less permissive of overall and the channel's own
    (a channel never asked follows the overall consent)."""
    if channel is None:
        return overall
    return min(overall, channel, key=_ORDER.index)


def event_params(
    ctx: Context,
    changes: dict[str, str],
    *,
    source: ConsentSource,
    consented_at: datetime | None,
    crm_connection_id: UUID | None = None,
) -> dict[str, Any]:
    """The parameters of INSERT_EVENTS (but :contact_id) for these changes, by channel."""
    principal = ctx.principal
    return {
        "organisation_id": ctx.organisation_id,
        "channels": list(changes),
        "statuses": list(changes.values()),
        "consented_at": consented_at,
        "source": source,
        "actor_user_id": principal.user_id if principal else None,
        "actor_token_id": principal.token_id if principal else None,
        "crm_connection_id": crm_connection_id,
        "request_id": ctx.request_id,
    }


async def record_changes(
    ctx: Context,
    contact_id: UUID,
    changes: dict[str, str],
    *,
    source: ConsentSource,
    consented_at: datetime | None,
) -> None:
    if changes:
        params = event_params(ctx, changes, source=source, consented_at=consented_at)
        await ctx.db.execute(INSERT_EVENTS, {**params, "contact_id": contact_id})


async def history(ctx: Context, contact_id: UUID) -> list[ConsentEvent]:
    rows: list[Row] = list(await ctx.db.all(
        SELECT_HISTORY, {"organisation_id": ctx.organisation_id, "contact_id": contact_id}
    ))
    return [ConsentEvent(**row) for row in rows]
