"""Server configuration, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from server.crypto import Keyring, KeyringError
from server.keys import KeyConfigError, key_from_env

# Calls per minute that no honest web app or script reaches: 200 a second from one token for a
# whole minute, 1,000 a second from one agency (a bulk read is a list of 50 rows, one call).
DEFAULT_RATE_LIMIT_PER_TOKEN = 12_000
DEFAULT_RATE_LIMIT_PER_ORG = 60_000


def _int_env(name: str, default: int, *, allow_zero: bool = False) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise SystemExit(f"{name} must be positive, got {value}")
    return value


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def _bool_env(name: str) -> bool:
    return os.environ.get(name, "") in ("1", "true", "yes")


def default_data_dir() -> Path:
    """Per-user data folder (XDG), moved by NURTUREHUB_DATA_DIR."""
    explicit = os.environ.get("NURTUREHUB_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "nurturehub"


@dataclass(frozen=True)
class Settings:
    database_url: str
    max_body_bytes: int = 1024 * 1024
    max_batch_length: int = 50
    pool_size: int = 10
    pool_max_overflow: int = 0
    # Seconds a call waits for a free database connection before it is refused.
    pool_timeout: float = 2.0
    cors_origins: tuple[str, ...] = ()
    # Strict JSON-RPC clients may want every response as HTTP 200.
    always_http_200: bool = False
    # Seconds a resolved token is trusted without a query; revocations still apply at once
    # (see server/auth.py). 0 turns the cache off.
    auth_cache_seconds: float = 5.0
    # AES-256-GCM keys for secrets at rest (CRM credentials); empty: storing a secret fails closed.
    encryption_keys: Keyring = Keyring()
    # HMAC key for erasure suppression hashes (and, derived, list cursors). None: erasure and
    # import suppression checks fail closed. Never in repr, so it never reaches a log.
    suppression_key: bytes | None = field(default=None, repr=False)
    # Without a suppression key, list cursors are signed with a key every process of the
    # deployment shares, kept in the database (server_keys) and loaded at start (server/app.py).
    shared_cursor_secret: bytes | None = field(default=None, repr=False)
    # The erasure journal (server/journal.py): every erasure, kept outside the database so a
    # restore can replay it. None: not kept (tests that do not need it).
    erasure_journal: Path | None = None
    # Validate results a handler serialised itself (server/encoded.py) against their model, as
    # the tests do; off in production, where the rows' types come from the schema.
    verify_encoded_results: bool = False
    # GET /explorer, the API explorer page; NURTUREHUB_EXPLORER=0 turns it off.
    explorer: bool = True
    # Calls of one batch run at once; 0: half the pool.
    batch_concurrency: int = 0
    # An organisation's share of the pool (calls in flight per process); 0: half the pool.
    organisation_max_in_flight: int = 0
    # Seconds callers may queue for a connection before calls beyond their organisation's
    # share are refused at once (503 with Retry-After) instead of waiting.
    shed_after: float = 0.25
    # GET /metrics, for a scraper sending this as a bearer token; None: no /metrics at all.
    metrics_token: str | None = field(default=None, repr=False)
    # Where each server process keeps its metrics for the others to add up (server/metrics.py);
    # `serve` makes it. None: this process's own figures only.
    metrics_dir: Path | None = None
    # Rate limits in JSON-RPC calls per minute (a batch of 50 is 50 calls), shared by every
    # server process on the database (server/ratelimit.py); 0 turns one off. Off when Settings
    # is built in code (tests, benches); `serve` reads the environment, whose defaults are
    # DEFAULT_RATE_LIMIT_PER_TOKEN and DEFAULT_RATE_LIMIT_PER_ORG.
    rate_limit_per_token: int = 0
    rate_limit_per_organisation: int = 0

    @classmethod
    def from_env(cls, database_url: str) -> Settings:
        origins = os.environ.get("NURTUREHUB_CORS_ORIGINS", "")
        return cls(
            database_url=database_url,
            max_body_bytes=_int_env("NURTUREHUB_MAX_BODY_BYTES", 1024 * 1024),
            max_batch_length=_int_env("NURTUREHUB_MAX_BATCH", 50),
            pool_size=_int_env("NURTUREHUB_DB_POOL_SIZE", 10),
            pool_timeout=_float_env("NURTUREHUB_DB_POOL_TIMEOUT", 2.0),
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            always_http_200=_bool_env("NURTUREHUB_RPC_ALWAYS_200"),
            auth_cache_seconds=_float_env("NURTUREHUB_AUTH_CACHE_SECONDS", 5.0),
            encryption_keys=keyring_from_env(),
            suppression_key=_suppression_key_from_env(),
            verify_encoded_results=_bool_env("NURTUREHUB_VERIFY_ENCODED_RESULTS"),
            explorer=os.environ.get("NURTUREHUB_EXPLORER", "1") not in ("0", "false", "no"),
            erasure_journal=erasure_journal_path(),
            batch_concurrency=_int_env("NURTUREHUB_BATCH_CONCURRENCY", 0, allow_zero=True),
            organisation_max_in_flight=_int_env("NURTUREHUB_ORG_MAX_IN_FLIGHT", 0, allow_zero=True),
            shed_after=_float_env("NURTUREHUB_SHED_AFTER", 0.25),
            metrics_token=os.environ.get("NURTUREHUB_METRICS_TOKEN", "").strip() or None,
            metrics_dir=Path(folder) if (folder := os.environ.get("NURTUREHUB_METRICS_DIR")) else None,
            rate_limit_per_token=_int_env(
                "NURTUREHUB_RATE_LIMIT_PER_TOKEN", DEFAULT_RATE_LIMIT_PER_TOKEN, allow_zero=True
            ),
            rate_limit_per_organisation=_int_env(
                "NURTUREHUB_RATE_LIMIT_PER_ORG", DEFAULT_RATE_LIMIT_PER_ORG, allow_zero=True
            ),
        )


def erasure_journal_path() -> Path:
    """NURTUREHUB_ERASURE_JOURNAL, else erasures.jsonl in the data folder. Several machines on
    one database need it on storage they share (README, Backups and restores)."""
    explicit = os.environ.get("NURTUREHUB_ERASURE_JOURNAL")
    return Path(explicit).expanduser() if explicit else default_data_dir() / "erasures.jsonl"


def migration_lock_timeout() -> float:
    """Seconds a migration step waits for a table lock before it gives way and tries again."""
    return _float_env("NURTUREHUB_MIGRATION_LOCK_TIMEOUT", 5.0)


def shutdown_timeout() -> float:
    """Seconds `serve` waits for calls in progress when it is stopped, before it ends them."""
    return _float_env("NURTUREHUB_SHUTDOWN_TIMEOUT", 20.0)


def _suppression_key_from_env() -> bytes | None:
    try:
        return key_from_env()
    except KeyConfigError as exc:
        raise SystemExit(str(exc)) from None


def keyring_from_env() -> Keyring:
    """NURTUREHUB_ENCRYPTION_KEYS (`id:base64key,...`), else the file NURTUREHUB_ENCRYPTION_KEYS_FILE."""
    spec = os.environ.get("NURTUREHUB_ENCRYPTION_KEYS", "")
    source = "NURTUREHUB_ENCRYPTION_KEYS"
    key_file = os.environ.get("NURTUREHUB_ENCRYPTION_KEYS_FILE", "")
    if not spec.strip() and key_file:
        source = key_file
        try:
            spec = Path(key_file).read_text()
        except OSError as exc:
            raise SystemExit(f"cannot read the encryption key file {key_file}: {exc.strerror}") from None
    try:
        return Keyring.parse(spec)
    except KeyringError as exc:
        raise SystemExit(f"{source}: {exc}") from None
