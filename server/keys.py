"""The server's HMAC key (NURTUREHUB_SUPPRESSION_KEY): loading it, and the keys derived from it.

One secret, kept outside the database, keys the GDPR erasure suppression hashes, so a copy of the
database alone cannot confirm whether a given email was erased. Other uses (signing list cursors)
get their own key derived from it with a label, so no two uses ever share a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from server.db import sql

if TYPE_CHECKING:
    from server.db import Database

__all__ = [
    "KEY_ENV",
    "KEY_FILE_NAME",
    "KeyConfigError",
    "derive_key",
    "ensure_key_file",
    "key_from_env",
    "keyed_hash",
    "parse_key",
    "prepare_for_serve",
    "process_key",
    "shared_secret",
]

KEY_ENV = "NURTUREHUB_SUPPRESSION_KEY"
KEY_FILE_NAME = "suppression.key"
MIN_KEY_BYTES = 32

# For a server started without a key: lasts as long as the process, never written anywhere.
_PROCESS_KEY = secrets.token_bytes(32)


class KeyConfigError(ValueError):
    """The configured key is unusable; the message says why, never what the key is."""


def parse_key(encoded: str) -> bytes:
    """Base64 of at least 32 random bytes."""
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{KEY_ENV} must be base64 (e.g. `openssl rand -base64 32`)") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyConfigError(f"{KEY_ENV} must decode to at least {MIN_KEY_BYTES} bytes")
    return key


def key_from_env() -> bytes | None:
    """The key in NURTUREHUB_SUPPRESSION_KEY, or None when it is not set."""
    raw = os.environ.get(KEY_ENV, "")
    return parse_key(raw) if raw.strip() else None


def ensure_key_file(data_dir: Path) -> tuple[bytes, Path, bool]:
    """The key in `data_dir/suppression.key`, made (mode 0600) on first use; True when made now."""
    path = data_dir / KEY_FILE_NAME
    try:
        return parse_key(path.read_text()), path, False
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    encoded = base64.b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode()
    # O_EXCL: two servers starting at once cannot both write a key; the loser reads the winner's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return parse_key(path.read_text()), path, False
    with os.fdopen(fd, "w") as handle:
        handle.write(encoded + "\n")
    return parse_key(encoded), path, True


def derive_key(key: bytes, label: str) -> bytes:
    """A key for one purpose, so a value signed for one use is never valid for another."""
    return hmac.new(key, b"nurturehub/" + label.encode(), hashlib.sha256).digest()


def process_key(label: str) -> bytes:
    """A key for `label` valid only in this process (for a server run without a configured key)."""
    return derive_key(_PROCESS_KEY, label)


def keyed_hash(key: bytes, *parts: str) -> bytes:
    """HMAC-SHA256 over length-prefixed parts, so ('ab', 'c') and ('a', 'bc') never collide."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode()
        mac.update(len(data).to_bytes(4, "big") + data)
    return mac.digest()


def prepare_for_serve(data_dir: Path | None) -> str:
    """For `nurturehub serve`: make the key reach the server processes; says where it came from.

    `data_dir` is the embedded database's folder (None with DATABASE_URL): the key is kept beside
    the data it protects, made once. With DATABASE_URL the operator must provide it.
    """
    if key_from_env() is not None:
        return f"NurtureHub: erasure suppression key from {KEY_ENV}"
    if data_dir is None:
        return (
            f"NurtureHub: warning: {KEY_ENV} is not set, so contacts.delete and every write "
            "that brings in an email, phone or CRM id (checked against the erasure suppression "
            "list) will be refused, and list cursors last only until a restart; set it to "
            "`openssl rand -base64 32`"
        )
    key, path, created = ensure_key_file(data_dir)
    os.environ[KEY_ENV] = base64.b64encode(key).decode()  # for the server's worker processes
    made = "created a new" if created else "using the"
    return f"NurtureHub: {made} erasure suppression key {path} (back it up with the data)"


# The deployment's shared secrets (server_keys): made by whichever process asks first, read by
# the rest, so every process on one database agrees without a variable set by hand.
_INSERT_SHARED = sql(
    "INSERT INTO server_keys (name, key) VALUES (:name, :key) ON CONFLICT (name) DO NOTHING"
)
_SELECT_SHARED = sql("SELECT key FROM server_keys WHERE name = :name")


async def shared_secret(db: Database, name: str) -> bytes:
    """The deployment's secret called `name`, made now if no process has made it yet."""
    async with db.transaction() as tx:
        await tx.execute(_INSERT_SHARED, {"name": name, "key": secrets.token_bytes(MIN_KEY_BYTES)})
        return bytes(await tx.scalar(_SELECT_SHARED, {"name": name}))
