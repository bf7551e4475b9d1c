"""CRM settings, from the environment: CRM base URLs, platform OAuth2 clients, timings."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CrmConfig"]


@dataclass(frozen=True)
class CrmConfig:
    # Base URLs: configurable so tests (and sandboxes) can point adapters elsewhere.
    reapit_api_url: str = "https://platform.reapit.cloud"
    reapit_token_url: str = "https://connect.reapit.cloud/token"
    reapit_api_version: str = "2020-01-31"
    alto_api_url: str = "https://api.alto.zoopla.co.uk"
    alto_token_url: str = "https://api.alto.zoopla.co.uk/token"
    street_api_url: str = "https://street.co.uk/open-api/v1"
    agentos_api_url: str = "https://live-api.letmc.com"
    loop_api_url: str = ""
    # Reapit's and Alto's OAuth2 client credentials belong to the platform, not to an agency.
    reapit_client_id: str = ""
    reapit_client_secret: str = ""
    alto_client_id: str = ""
    alto_client_secret: str = ""
    # One HTTP call (connect, write and read) may take at most this long.
    crm_timeout: float = 10.0
    # A whole delivery (token fetch and write, every byte of the answer) may take at most this
    # long; 0: twice crm_timeout.
    crm_deadline: float = 0.0
    # How long a claimed event is held unrenewed: a live worker renews its in-flight events'
    # leases every third of this, so a worker killed mid-delivery loses them after at most this.
    writeback_lease_seconds: float = 15.0
    # Retry n waits about backoff_base * 4**(n-1) seconds (with jitter), at most backoff_cap:
    # with the defaults, 8 attempts span about ten hours.
    writeback_backoff_base: float = 10.0
    writeback_backoff_cap: float = 6 * 3600.0
    writeback_max_retry_after: float = 3600.0
    writeback_poll_interval: float = 1.0
    # On SIGTERM, in-flight deliveries get this long to finish before they are released.
    writeback_grace_seconds: float = 15.0
    # Inbound sync. Reapit does not say whether a retried webhook is signed anew, and retries
    # span about 33 minutes: an hour's window, with duplicates recognised by event identity.
    reapit_webhook_tolerance_seconds: float = 3600.0
    # The shared secret Alto sends in x-signature (set up with Alto support); empty: Alto's
    # webhooks are answered 503, so Alto retries them until it is configured.
    alto_webhook_secret: str = ""
    webhook_max_body_bytes: float = 256 * 1024.0
    sync_lease_seconds: float = 120.0
    sync_poll_interval: float = 1.0
    sync_page_size: float = 100.0
    # Attempts at one webhook event before it is dead (listed for admins, replayable).
    inbox_max_attempts: float = 5.0
    sync_grace_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.crm_deadline <= 0:
            object.__setattr__(self, "crm_deadline", 2 * self.crm_timeout)
        # The lease may be shorter than a delivery (it is renewed), not shorter than a few
        # renewals' round trips.
        if self.writeback_lease_seconds < 3.0:
            object.__setattr__(self, "writeback_lease_seconds", 3.0)

    def __repr__(self) -> str:  # the client secrets stay out of logs
        return "CrmConfig(...)"

    @classmethod
    def from_env(cls, **overrides: Any) -> CrmConfig:
        """Each field from NURTUREHUB_<FIELD> (e.g. NURTUREHUB_REAPIT_API_URL), else its default."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = os.environ.get(f"NURTUREHUB_{spec.name.upper()}")
            if raw is None or raw == "":
                continue
            if spec.type == "float":
                try:
                    values[spec.name] = float(raw)
                except ValueError:
                    raise SystemExit(f"NURTUREHUB_{spec.name.upper()} must be a number") from None
            else:
                values[spec.name] = raw.rstrip("/") if spec.name.endswith("_url") else raw
        values.update(overrides)
        return cls(**values)
