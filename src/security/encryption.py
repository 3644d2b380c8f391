"""Sealing health data at rest: AES-256-GCM with key ids, and a keyed blind index.

A sealed value is `0x01 | len(kid) | kid | nonce(12) | ciphertext+tag`. The key id travels
with the ciphertext, so rows sealed under an older key stay readable after rotation, and
`carebase keys rotate-data` re-seals them under the newest one. The caller passes the
row's identity (table, organization, id, column) as associated data: a ciphertext copied
into another row or column fails authentication instead of decrypting there.

The blind index is HMAC-SHA256 under a separate key over a normalised value: equal inputs
give equal indexes (for uniqueness and lookups), and the index reveals nothing without the
key. It does not rotate with the sealing keys: changing it means recomputing every index.

Keys come from `DATA_ENCRYPTION_KEYS` (JSON) or `<DATA_DIR>/data-keys.json`, generated on
first run with mode 0600; a running process re-reads the file when it changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = 1
NONCE_BYTES = 12
KEY_BYTES = 32


class DataKeyringError(Exception):
    """The keyring cannot be read or used (configuration, not data)."""


class UnsealError(Exception):
    """A sealed value failed to open: tampered, moved to another row, or an unknown key.

    Carries no plaintext and no ciphertext, only which key id the value named.
    """


@dataclass(frozen=True, slots=True)
class DataKey:
    kid: str
    secret: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "key": base64.b64encode(self.secret).decode(),
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataKey:
        try:
            kid, secret = str(data["kid"]), base64.b64decode(data["key"], validate=True)
            created_at = int(data["created_at"])
        except (KeyError, ValueError, TypeError) as exc:
            raise DataKeyringError(f"unreadable data key: {type(exc).__name__}") from None
        if len(secret) != KEY_BYTES or not 1 <= len(kid.encode()) <= 64:
            raise DataKeyringError(f"data key {kid!r} must be 32 bytes with a short id")
        return cls(kid, secret, created_at)

    @classmethod
    def generate(cls, now: int) -> DataKey:
        return cls(f"d{now}-{secrets.token_hex(4)}", secrets.token_bytes(KEY_BYTES), now)


class DataKeyring:
    """The newest key seals; every key opens what it sealed."""

    def __init__(self, keys: Sequence[DataKey], *, index_key: bytes) -> None:
        if not keys:
            raise DataKeyringError("the data keyring has no key")
        if len(index_key) != KEY_BYTES:
            raise DataKeyringError("the blind-index key must be 32 bytes")
        self.keys = tuple(sorted(keys, key=lambda k: k.created_at))
        self.index_key = index_key
        self._ciphers = {k.kid.encode(): AESGCM(k.secret) for k in self.keys}
        self.active = self.keys[-1]
        self._active_kid = self.active.kid.encode()
        self._active_cipher = self._ciphers[self._active_kid]

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        kid = self._active_kid
        return (
            bytes((FORMAT, len(kid)))
            + kid
            + nonce
            + self._active_cipher.encrypt(nonce, plaintext, aad)
        )

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        kid = key_id(sealed)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnsealError(f"no data key {kid.decode(errors='replace')!r} in the keyring")
        start = 2 + len(kid)
        nonce = sealed[start : start + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, sealed[start + NONCE_BYTES :], aad)
        except InvalidTag:
            raise UnsealError(
                f"a value sealed with key {kid.decode(errors='replace')!r} failed authentication"
            ) from None

    def is_current(self, sealed: bytes) -> bool:
        return key_id(sealed) == self._active_kid

    def blind_index(self, purpose: str, value: str) -> bytes:
        """Equal for equal (normalised) values within one purpose; unrelated across purposes."""
        message = purpose.encode() + b"\x00" + value.encode()
        return hmac.new(self.index_key, message, hashlib.sha256).digest()

    def rotated(self, now: int) -> DataKeyring:
        return DataKeyring([*self.keys, DataKey.generate(now)], index_key=self.index_key)

    def dumps(self) -> str:
        return json.dumps(
            {
                "keys": [k.to_json() for k in self.keys],
                "index_key": base64.b64encode(self.index_key).decode(),
            },
            indent=2,
        )

    @classmethod
    def loads(cls, text: str) -> DataKeyring:
        try:
            data = json.loads(text)
            entries, index = data["keys"], base64.b64decode(data["index_key"], validate=True)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataKeyringError(
                f"the data keyring must be JSON {{keys: [...], index_key}}: {type(exc).__name__}"
            ) from None
        if not isinstance(entries, list):
            raise DataKeyringError("the data keyring's keys must be a list")
        return cls([DataKey.from_json(e) for e in entries], index_key=index)

    @classmethod
    def generate(cls, now: int) -> DataKeyring:
        return cls([DataKey.generate(now)], index_key=secrets.token_bytes(KEY_BYTES))


def key_id(sealed: bytes) -> bytes:
    if len(sealed) < 2 + 1 + NONCE_BYTES + 16 or sealed[0] != FORMAT:
        raise UnsealError("not a sealed value")
    return sealed[2 : 2 + sealed[1]]


class Sealer:
    """The keyring a process uses, re-read from its file when rotated under it.

    An unknown key id triggers an immediate re-read: another process may have just rotated.
    """

    def __init__(
        self, keyring: DataKeyring, *, reload_from: Path | None = None, interval_s: float = 5.0
    ) -> None:
        self._keyring = keyring
        self._reload_from = reload_from
        self._interval_s = interval_s
        self._checked_at = time.monotonic()
        self._mtime = _mtime(reload_from)

    @property
    def keyring(self) -> DataKeyring:
        if (
            self._reload_from is not None
            and time.monotonic() - self._checked_at >= self._interval_s
        ):
            self._reload()
        return self._keyring

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return self.keyring.seal(plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        try:
            return self.keyring.open(sealed, aad)
        except UnsealError:
            if self._reload_from is None or not self._reload():
                raise
            return self._keyring.open(sealed, aad)

    def blind_index(self, purpose: str, value: str) -> bytes:
        return self.keyring.blind_index(purpose, value)

    def _reload(self) -> bool:
        self._checked_at = time.monotonic()
        mtime = _mtime(self._reload_from)
        if mtime == self._mtime or self._reload_from is None:
            return False
        self._mtime = mtime
        self._keyring = DataKeyring.loads(self._reload_from.read_text())
        return True


def load_data_keyring(path: Path, *, from_env: str | None = None) -> DataKeyring:
    """From `DATA_ENCRYPTION_KEYS` when given, else from `path`, created on first run."""
    if from_env:
        return DataKeyring.loads(from_env)
    if path.exists():
        return DataKeyring.loads(path.read_text())
    keyring = DataKeyring.generate(int(time.time()))
    save_data_keyring(keyring, path)
    return keyring


def save_data_keyring(keyring: DataKeyring, path: Path) -> None:
    """Written whole to a private temporary file, then renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keyring.dumps())
    temporary.replace(path)


def _mtime(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path else None
    except FileNotFoundError:
        return None
