"""Loop (loop.software): connections yes, engagement writeback no.

Loop support issues one API key (a GUID) per team; its documented v1 API is read-only ("built
for websites"), so there is no public write endpoint to map our events to: every event is
refused here, in this one place, until Loop documents one.
"""

from __future__ import annotations

from pydantic import Field

from integrations.providers.base import WriteUnsupported
from server.models import WireModel

__all__ = ["UNSUPPORTED", "ConnectionSettings", "Credentials", "LoopAdapter"]

HINT_FIELD = "api_key"
UNSUPPORTED = "Loop's public API is read-only"


class Credentials(WireModel):
    api_key: str = Field(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )


class ConnectionSettings(WireModel):
    pass


class LoopAdapter(WriteUnsupported):
    provider_id = "loop"
    name = "Loop"
    unsupported = UNSUPPORTED
