"""AES-256-GCM for secrets at rest: a keyring, a self-describing envelope, and the key file.

Envelope: version byte (1) | key id length (1 byte) | key id (ASCII) | 96-bit nonce | ciphertext+tag.
The key id travels with the ciphertext so keys can rotate: the first key of the keyring encrypts,
every key decrypts. The caller's associated data (organisation, table, column, row id) is
authenticated but not stored, so a ciphertext copied to another row does not decrypt. Errors say
what is wrong (no key, unknown key, does not decrypt) and never carry key or plaintext material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "CryptoError",
    "DecryptionFailed",
    "Keyring",
    "KeyringError",
    "NoEncryptionKey",
    "associated_data",
    "ensure_key_file",
    "new_key_entry",
]

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class CryptoError(Exception):
    """A secret cannot be encrypted or decrypted; the message is safe to show."""


class NoEncryptionKey(CryptoError):
    pass


class DecryptionFailed(CryptoError):
    pass


class KeyringError(ValueError):
    """NURTUREHUB_ENCRYPTION_KEYS (or the key file) is malformed."""


def associated_data(organisation_id: object, table: str, column: str, row_id: object) -> bytes:
    """What a ciphertext is bound to; NUL-separated so no two bindings share an encoding."""
    parts = ("nurturehub", str(organisation_id), table, column, str(row_id))
    return "\x00".join(parts).encode()


@dataclass(frozen=True)
class Keyring:
    """Named 32-byte keys; the first one encrypts."""

    keys: tuple[tuple[str, bytes], ...] = ()

    def __repr__(self) -> str:  # never print key material
        return f"Keyring(ids={list(self.ids)!r})"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id for key_id, _ in self.keys)

    @property
    def primary_id(self) -> str | None:
        return self.keys[0][0] if self.keys else None

    def __bool__(self) -> bool:
        return bool(self.keys)

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """`id:base64key,id2:base64key`; whitespace and newlines separate entries too."""
        keys: list[tuple[str, bytes]] = []
        for entry in re.split(r"[,\s]+", spec.strip()):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep or not _KEY_ID.match(key_id):
                raise KeyringError(
                    "each encryption key must be 'id:base64key' with an id of letters, digits, "
                    "'.', '_' or '-' (at most 40)"
                )
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"encryption key {key_id!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"encryption key {key_id!r} must decode to {KEY_BYTES} bytes, not {len(key)}"
                )
            if any(existing == key_id for existing, _ in keys):
                raise KeyringError(f"encryption key id {key_id!r} is listed twice")
            keys.append((key_id, key))
        return cls(tuple(keys))

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        if not self.keys:
            raise NoEncryptionKey(
                "no encryption key is configured: set NURTUREHUB_ENCRYPTION_KEYS to store secrets"
            )
        key_id, key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
        encoded_id = key_id.encode()
        return bytes([VERSION, len(encoded_id)]) + encoded_id + nonce + sealed

    def decrypt(self, envelope: bytes, aad: bytes) -> bytes:
        key_id, nonce, sealed = _split(envelope)
        key = dict(self.keys).get(key_id)
        if key is None:
            raise DecryptionFailed(f"the secret was encrypted with key {key_id!r}, which is not configured")
        try:
            return AESGCM(key).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptionFailed(
                "the secret does not decrypt: wrong key, altered data, or stored for another record"
            ) from None

    @staticmethod
    def key_id_of(envelope: bytes) -> str:
        return _split(envelope)[0]


def _split(envelope: bytes) -> tuple[str, bytes, bytes]:
    if len(envelope) < 2 or envelope[0] != VERSION:
        raise DecryptionFailed("the secret is not in a known envelope format")
    id_length = envelope[1]
    body = envelope[2 + id_length :]
    if id_length == 0 or len(body) < NONCE_BYTES + 16:
        raise DecryptionFailed("the secret is not in a known envelope format")
    try:
        key_id = envelope[2 : 2 + id_length].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionFailed("the secret is not in a known envelope format") from None
    return key_id, body[:NONCE_BYTES], body[NONCE_BYTES:]


def new_key_entry() -> str:
    """A fresh `id:base64key` entry, its id naming the day it was made."""
    key_id = f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}"
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def ensure_key_file(path: Path) -> tuple[str, bool]:
    """The key file's keyring spec, creating it (mode 0600) with one new key when missing.

    Returns (spec, created). A file readable by others is refused rather than used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key_entry() + "\n")
        created = True
    if path.stat().st_mode & 0o077:
        raise KeyringError(f"{path} must be readable by its owner only (chmod 600)")
    return path.read_text(), created
