"""Opaque keyset cursors: a position in a list, signed and bound to the query that made it.

A cursor is `base64url(position) . base64url(mac)`, where the MAC (HMAC-SHA256, truncated to
128 bits) covers the position and the caller's scope: organisation, procedure and filters. A
cursor that was edited, or made for another organisation or other filters, fails the check and
is refused as invalid params on the `cursor` field, so it can never move a caller into rows
their query does not cover.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import orjson

from server.errors import InvalidParams
from server.keys import derive_key, process_key

if TYPE_CHECKING:
    from server.settings import Settings

__all__ = ["cursor_key", "decode_cursor", "encode_cursor", "signing_key"]

_LABEL = "keyset-cursor/v1"
_MAC_BYTES = 16
_REFUSED = "is not a cursor this list gave out for this query; start again without one"


def cursor_key(settings: Settings) -> bytes:
    """Derived from the suppression key, else from the deployment's shared key in the database;
    without either (the database could not give one at start), valid in this process only."""
    secret = settings.suppression_key or settings.shared_cursor_secret
    return signing_key(secret) if secret else process_key(_LABEL)


def signing_key(secret: bytes) -> bytes:
    """The cursor key derived from a secret (so it is never the secret itself)."""
    return derive_key(secret, _LABEL)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, scope: Any, payload: bytes) -> bytes:
    # Canonical JSON never holds a raw NUL byte (orjson escapes it), so the separator is unambiguous.
    canonical = orjson.dumps(scope, option=orjson.OPT_SORT_KEYS, default=str)
    return hmac.new(key, canonical + b"\x00" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(key: bytes, scope: Any, position: list[Any]) -> str:
    payload = orjson.dumps(position)
    return f"{_b64(payload)}.{_b64(_mac(key, scope, payload))}"


def decode_cursor(key: bytes, scope: Any, cursor: str) -> list[Any]:
    """The position, or InvalidParams naming `cursor` when the cursor is not ours for `scope`."""
    head, dot, tail = cursor.partition(".")
    try:
        payload, mac = _unb64(head), _unb64(tail)
    except (binascii.Error, ValueError):
        raise InvalidParams.for_field("cursor", _REFUSED) from None
    if not dot or not hmac.compare_digest(mac, _mac(key, scope, payload)):
        raise InvalidParams.for_field("cursor", _REFUSED)
    try:
        position = orjson.loads(payload)
    except orjson.JSONDecodeError:  # only a key holder can sign, so this is a bug, not an attack
        raise InvalidParams.for_field("cursor", _REFUSED) from None
    if not isinstance(position, list):
        raise InvalidParams.for_field("cursor", _REFUSED)
    return position
