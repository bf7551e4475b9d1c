"""The provider registry: each CRM's credential and settings models, and its adapter.

Which providers can take writeback is decided here and nowhere else (`unsupported`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from integrations.config import CrmConfig
from integrations.providers import agentos, alto, loop, reapit, street
from integrations.providers.base import (
    Adapter,
    AuthRejected,
    Delivery,
    NotDeliverable,
    TransientFailure,
    reaching,
)
from server.models import WireModel

__all__ = [
    "PROVIDERS",
    "Adapter",
    "AuthRejected",
    "Delivery",
    "NotDeliverable",
    "ProviderSpec",
    "TransientFailure",
    "build_adapters",
    "pollable",
    "reaching",
]


@dataclass(frozen=True)
class ProviderSpec:
    credentials: type[WireModel]
    settings: type[WireModel]
    hint_field: str  # the credential whose last characters the hint shows
    adapter: Callable[[CrmConfig], Adapter]
    unsupported: str | None = None  # why this CRM takes no writeback, if it does not
    # The credential that selects the agency in the CRM, stored in plaintext as tenant_ref so
    # a webhook finds its connection without decrypting anything; None: the key itself selects.
    tenant_field: str | None = None
    no_webhooks: str | None = None  # why this CRM's webhook path takes nothing, if it does not


PROVIDERS: dict[str, ProviderSpec] = {
    "reapit": ProviderSpec(
        reapit.Credentials,
        reapit.ConnectionSettings,
        reapit.HINT_FIELD,
        reapit.ReapitAdapter,
        tenant_field=reapit.TENANT_FIELD,
    ),
    "alto": ProviderSpec(
        alto.Credentials,
        alto.ConnectionSettings,
        alto.HINT_FIELD,
        alto.AltoAdapter,
        tenant_field="agency_ref",
    ),
    "street": ProviderSpec(
        street.Credentials, street.ConnectionSettings, street.HINT_FIELD, street.StreetAdapter
    ),
    "agentos": ProviderSpec(
        agentos.Credentials,
        agentos.ConnectionSettings,
        agentos.HINT_FIELD,
        agentos.AgentOsAdapter,
        agentos.UNSUPPORTED,
        no_webhooks="agentOS documents no webhooks (its public API is pull only)",
    ),
    "loop": ProviderSpec(
        loop.Credentials,
        loop.ConnectionSettings,
        loop.HINT_FIELD,
        loop.LoopAdapter,
        loop.UNSUPPORTED,
        no_webhooks="Loop documents no webhooks and no contact API",
    ),
}


def pollable(adapter: object) -> bool:
    """Whether `nurturehub sync` polls this CRM: by changes (fetch_people) or by full scans."""
    return hasattr(adapter, "fetch_people") or hasattr(adapter, "fetch_scan")


def build_adapters(config: CrmConfig) -> dict[str, Adapter]:
    return {provider_id: spec.adapter(config) for provider_id, spec in PROVIDERS.items()}
