"""agentOS (formerly Letmc): connections yes, engagement writeback no.

agentOS issues an API key per agency (sent as the `api_key` header, 50 requests a minute) and
names the agency by its `shortName` in every path. Its public API documents diary and
maintenance writes but no endpoint for notes or events on a person, so there is nothing to map
our events to: every event is refused here, in this one place, until agentOS documents one.
"""

from __future__ import annotations

from pydantic import Field

from integrations.providers.base import WriteUnsupported
from server.models import WireModel

__all__ = ["UNSUPPORTED", "AgentOsAdapter", "ConnectionSettings", "Credentials"]

HINT_FIELD = "api_key"
UNSUPPORTED = "agentOS publishes no API for writing notes or events on a person"


class Credentials(WireModel):
    api_key: str = Field(min_length=8, max_length=200)
    short_name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")


class ConnectionSettings(WireModel):
    pass


class AgentOsAdapter(WriteUnsupported):
    provider_id = "agentos"
    name = "agentOS"
    unsupported = UNSUPPORTED
