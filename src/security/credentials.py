"""Opaque secrets (refresh tokens, email links, API keys): random, shown once, stored hashed.

They carry 256 bits of randomness, so a fast hash (SHA-256) is enough to store them: there
is nothing to brute-force, unlike passwords.
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "cbk"
_PREFIX_BYTES = 6


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_api_key() -> tuple[str, str]:
    """`(prefix, key)`; the key is `cbk_<prefix>_<secret>`, found by prefix, checked by hash."""
    prefix = secrets.token_hex(_PREFIX_BYTES)
    return prefix, f"{API_KEY_PREFIX}_{prefix}_{new_secret()}"


def split_api_key(key: str) -> tuple[str, str] | None:
    """`(prefix, key)` of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 2 * _PREFIX_BYTES:
        return None
    if not all(c in "0123456789abcdef" for c in parts[1]) or len(parts[2]) < 32:
        return None
    return parts[1], key
