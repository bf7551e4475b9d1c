"""API token format: `nh_` + 32 random base62 characters + a 6-character CRC32 checksum.

As GitHub's tokens do: the prefix makes a leaked token easy to scan for, and the checksum lets
a mistyped or truncated token be refused before any database query. Only a SHA-256 of the token
is stored; the token itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

__all__ = ["PREFIX", "generate", "hash_token", "is_well_formed"]

PREFIX = "nh_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 32  # log2(62) * 32 = 190 bits
_CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LENGTH)


def generate() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return PREFIX + body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """Prefix, length, alphabet and checksum all right: worth a database look-up."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PREFIX):
        return False
    body, checksum = token[len(PREFIX) : -_CHECKSUM_LENGTH], token[-_CHECKSUM_LENGTH:]
    if any(ch not in _ALPHABET for ch in body):
        return False
    return secrets.compare_digest(_checksum(body), checksum)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()
