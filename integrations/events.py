"""The six engagement events written back to CRMs: one payload model each, and their wording.

Every adapter describes an event with `describe()`, so a note reads the same in every CRM:
`[NurtureHub] Email opened: Spring valuation offer (2026-03-20 09:15 UTC)`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Literal

from pydantic import AwareDatetime, Field

from server.models import WireModel

__all__ = ["EVENT_TYPES", "PAYLOADS", "EventType", "Payload", "describe"]

EventType = Literal[
    "email_sent",
    "email_opened",
    "email_clicked",
    "lead_score_update",
    "journey_completed",
    "hot_alert_fired",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "email_sent",
    "email_opened",
    "email_clicked",
    "lead_score_update",
    "journey_completed",
    "hot_alert_fired",
)

Subject = Field(min_length=1, max_length=300)


class EmailSentPayload(WireModel):
    subject: str = Subject
    sent_at: AwareDatetime


class EmailOpenedPayload(WireModel):
    subject: str = Subject
    opened_at: AwareDatetime


class EmailClickedPayload(WireModel):
    subject: str = Subject
    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://")
    clicked_at: AwareDatetime


class LeadScoreUpdatePayload(WireModel):
    previous_score: int | None = Field(default=None, ge=0, le=100)
    score: int = Field(ge=0, le=100)
    reason: str | None = Field(default=None, max_length=300)
    scored_at: AwareDatetime


class JourneyCompletedPayload(WireModel):
    journey_name: str = Field(min_length=1, max_length=200)
    completed_at: AwareDatetime


class HotAlertFiredPayload(WireModel):
    reason: str = Field(min_length=1, max_length=300)
    score: int | None = Field(default=None, ge=0, le=100)
    fired_at: AwareDatetime


Payload = (
    EmailSentPayload
    | EmailOpenedPayload
    | EmailClickedPayload
    | LeadScoreUpdatePayload
    | JourneyCompletedPayload
    | HotAlertFiredPayload
)

PAYLOADS: dict[str, type[Payload]] = {
    "email_sent": EmailSentPayload,
    "email_opened": EmailOpenedPayload,
    "email_clicked": EmailClickedPayload,
    "lead_score_update": LeadScoreUpdatePayload,
    "journey_completed": JourneyCompletedPayload,
    "hot_alert_fired": HotAlertFiredPayload,
}


def describe(payload: Payload) -> tuple[str, str]:
    """A short title and the note text for one event."""
    match payload:
        case EmailSentPayload():
            title, detail, at = "Email sent", payload.subject, payload.sent_at
        case EmailOpenedPayload():
            title, detail, at = "Email opened", payload.subject, payload.opened_at
        case EmailClickedPayload():
            title, at = "Email link clicked", payload.clicked_at
            detail = f"{payload.subject} ({payload.url})"
        case LeadScoreUpdatePayload():
            title, at = "Lead score updated", payload.scored_at
            before = "" if payload.previous_score is None else f"{payload.previous_score} -> "
            detail = f"{before}{payload.score}" + (f", {payload.reason}" if payload.reason else "")
        case JourneyCompletedPayload():
            title, detail, at = "Journey completed", payload.journey_name, payload.completed_at
        case HotAlertFiredPayload():
            title, at = "Hot lead alert", payload.fired_at
            detail = payload.reason + ("" if payload.score is None else f" (score {payload.score})")
    return title, f"[NurtureHub] {title}: {detail} ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
