"""Loop (loop.software): connections yes, engagement writeback no.

Loop support issues one API key (a GUID) per team; its documented v1 API is read-only ("built
for websites"), so there is no public write endpoint to map our events to: every event is
refused here, in this one place, until Loop documents one.
"""

from __future__ import annotations

import httpx
from pydantic import Field

from procedures.writeback.adapters.base import Delivery, NotDeliverable
from procedures.writeback.config import WritebackConfig
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


class LoopAdapter:
    provider_id = "loop"
    name = "Loop"

    def __init__(self, config: WritebackConfig) -> None:
        self._config = config

    async def deliver(self, http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        raise NotDeliverable(UNSUPPORTED)

    def external_id(self, response: httpx.Response) -> str | None:
        return None
