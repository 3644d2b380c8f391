"""Access tokens: Ed25519 signing keys with ids, rotation, JWKS, issuing and verification.

Keys live in a keyring file (`<DATA_DIR>/jwt-keys.json`, mode 0600, generated on first run)
or come from `JWT_SIGNING_KEYS` (the same JSON). Rotation adds a key that signs from then on;
a retired key stays in the JWKS and keeps verifying until every token it signed has expired.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from carebase.errors import Unauthenticated

ALGORITHM = "EdDSA"
MAX_TOKEN_BYTES = 4096
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
LEEWAY_S = 30
VERIFIED_CACHE_SIZE = 10_000
SESSION_AUDIENCE = "carebase-telemetry-session"
"""The audience of telemetry session tokens: never an access token's, so neither is taken for
the other (core verifies its own audience only)."""


class KeyringError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: int
    retired_at: int | None = None

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def to_json(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "kid": self.kid,
            "private_key": pem.decode(),
            "created_at": self.created_at,
            "retired_at": self.retired_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
            kid, created_at = str(data["kid"]), int(data["created_at"])
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyringError(f"unreadable signing key: {type(exc).__name__}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyringError(f"signing key {kid} is not an Ed25519 key")
        retired = data.get("retired_at")
        return cls(kid, key, created_at, int(retired) if retired is not None else None)

    @classmethod
    def generate(cls, now: int) -> SigningKey:
        return cls(f"k{now}-{secrets.token_hex(4)}", Ed25519PrivateKey.generate(), now)


class Keyring:
    """The signing keys: the newest unretired one signs; every unexpired one verifies."""

    def __init__(self, keys: Sequence[SigningKey], *, token_ttl_s: int) -> None:
        if not any(k.retired_at is None for k in keys):
            raise KeyringError("the keyring has no active signing key")
        self.keys = tuple(sorted(keys, key=lambda k: k.created_at))
        self.token_ttl_s = token_ttl_s
        self._by_kid = {k.kid: k for k in self.keys}
        # Deriving a public key from the private one costs ~40 µs; verification needs it often.
        self._public = {k.kid: k.public_key for k in self.keys}

    @property
    def active(self) -> SigningKey:
        return [k for k in self.keys if k.retired_at is None][-1]

    def verifying_key(self, kid: str, now: int) -> Ed25519PublicKey | None:
        key = self._by_kid.get(kid)
        if key is None or not self._still_verifies(key, now):
            return None
        return self._public[kid]

    def _still_verifies(self, key: SigningKey, now: int) -> bool:
        return key.retired_at is None or now < key.retired_at + self.token_ttl_s + LEEWAY_S

    def jwks(self, now: int) -> dict[str, list[dict[str, Any]]]:
        published = []
        for key in self.keys:
            if self._still_verifies(key, now):
                jwk = OKPAlgorithm.to_jwk(key.public_key, as_dict=True)
                published.append({**jwk, "kid": key.kid, "alg": ALGORITHM, "use": "sig"})
        return {"keys": published}

    def rotated(self, now: int) -> Keyring:
        """A new active key; the old ones retire now and drop out once their tokens expire."""
        kept = [
            SigningKey(k.kid, k.private_key, k.created_at, k.retired_at or now)
            for k in self.keys
            if self._still_verifies(k, now)
        ]
        return Keyring([*kept, SigningKey.generate(now)], token_ttl_s=self.token_ttl_s)

    def dumps(self) -> str:
        return json.dumps([k.to_json() for k in self.keys], indent=2)

    @classmethod
    def loads(cls, text: str, *, token_ttl_s: int) -> Keyring:
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"the keyring is not JSON: {exc.msg}") from None
        if not isinstance(entries, list) or not entries:
            raise KeyringError("the keyring must be a non-empty JSON list of keys")
        return cls([SigningKey.from_json(e) for e in entries], token_ttl_s=token_ttl_s)


def load_keyring(path: Path, *, token_ttl_s: int, from_env: str | None = None) -> Keyring:
    """The keyring from `JWT_SIGNING_KEYS` when given, else from `path`, created on first run."""
    if from_env:
        return Keyring.loads(from_env, token_ttl_s=token_ttl_s)
    if path.exists():
        return Keyring.loads(path.read_text(), token_ttl_s=token_ttl_s)
    keyring = Keyring([SigningKey.generate(int(time.time()))], token_ttl_s=token_ttl_s)
    save_keyring(keyring, path)
    return keyring


def save_keyring(keyring: Keyring, path: Path) -> None:
    """Written whole to a private temporary file, then renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(keyring.dumps())
    temporary.replace(path)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    organization_id: str | None
    role: str | None
    token_id: str
    issued_at: int
    expires_at: int
    impersonator: str | None = None
    session_id: str | None = None
    """A telemetry session token's session (`sid`): the one session it may send data for."""
    audience: str | None = None
    issuer: str | None = None
    email: str | None = None
    """An external identity provider's `email` claim (never in Carebase's own tokens)."""
    email_verified: bool = False
    name: str | None = None


class TokenService:
    """Issues and verifies Carebase's own access tokens.

    With `reload_from`, a keyring file rotated by `carebase keys rotate` is picked up by
    running processes within `reload_interval_s`: rotation needs no restart.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        issuer: str,
        audience: str,
        reload_from: Path | None = None,
        reload_interval_s: float = 5.0,
    ) -> None:
        self._keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self._reload_from = reload_from
        self._reload_interval_s = reload_interval_s
        self._checked_at = time.monotonic()
        self._mtime = _mtime(reload_from)
        self._verified: OrderedDict[str, tuple[AccessClaims, str]] = OrderedDict()

    @property
    def keyring(self) -> Keyring:
        if self._reload_from is not None:
            checked = time.monotonic()
            if checked - self._checked_at >= self._reload_interval_s:
                self._checked_at = checked
                mtime = _mtime(self._reload_from)
                if mtime != self._mtime:
                    self._mtime = mtime
                    text = self._reload_from.read_text()
                    self._keyring = Keyring.loads(text, token_ttl_s=self._keyring.token_ttl_s)
                    self._verified.clear()
        return self._keyring

    def issue(
        self,
        *,
        subject: str,
        organization_id: str | None,
        role: str | None,
        impersonator: str | None = None,
        ttl_s: int | None = None,
        now: int | None = None,
    ) -> str:
        issued = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "exp": issued + (ttl_s or self.keyring.token_ttl_s),
            "jti": uuid.uuid4().hex,
            "org": organization_id,
            "role": role,
        }
        if impersonator:
            claims["act"] = {"sub": impersonator}
        key = self.keyring.active
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def issue_session(
        self, *, subject: str, organization_id: str, session_id: str, expires_at: int
    ) -> str:
        """A telemetry session token: for one session's pose frames, until `expires_at`."""
        issued = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": SESSION_AUDIENCE,
            "sub": subject,
            "iat": issued,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
            "org": organization_id,
            "sid": session_id,
        }
        key = self.keyring.active
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def verify(self, token: str, *, now: int | None = None) -> AccessClaims:
        """Every failure is `Unauthenticated`, with a reason fit for the log, not the caller.

        `now` only decides which keys still verify; PyJWT checks `exp`, `nbf` and `iat`
        against the real clock.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("token too large")
        if now is None:
            known = self._verified.get(token)
            at = int(time.time())
            # Still unexpired, and its key still verifies (a reload may have dropped it).
            if (
                known is not None
                and known[0].expires_at > at
                and self.keyring.verifying_key(known[1], at) is not None
            ):
                return known[0]
        claims, kid = self._verify(token, now)
        if now is None:
            self._remember(token, claims, kid)
        return claims

    def _remember(self, token: str, claims: AccessClaims, kid: str) -> None:
        """The same bytes verify the same way until they expire: the signature (Ed25519, ~150 µs
        here) is checked once per token and process, not once per request. Bounded LRU."""
        self._verified[token] = (claims, kid)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)

    def _verify(self, token: str, now: int | None) -> tuple[AccessClaims, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("malformed token") from None
        # The algorithm is pinned per key (Ed25519 only); `jku`, `x5u`, `jwk` headers are never
        # followed: keys come from our keyring alone.
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise Unauthenticated("unexpected token header")
        at = int(time.time()) if now is None else now
        public_key = self.keyring.verifying_key(kid, at)
        if public_key is None:
            raise Unauthenticated("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        return claims_of(claims), kid


def _mtime(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path else None
    except FileNotFoundError:
        return None


def claims_of(claims: Mapping[str, Any]) -> AccessClaims:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("invalid token: sub")
    actor = claims.get("act")
    impersonator = actor.get("sub") if isinstance(actor, dict) else None
    org, role, session = claims.get("org"), claims.get("role"), claims.get("sid")
    audience = claims.get("aud")
    email, name, issuer = claims.get("email"), claims.get("name"), claims.get("iss")
    return AccessClaims(
        subject=subject,
        organization_id=org if isinstance(org, str) else None,
        role=role if isinstance(role, str) else None,
        token_id=str(claims.get("jti", "")),
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
        impersonator=impersonator if isinstance(impersonator, str) else None,
        session_id=session if isinstance(session, str) else None,
        audience=audience if isinstance(audience, str) else None,
        issuer=issuer if isinstance(issuer, str) else None,
        email=email if isinstance(email, str) else None,
        email_verified=claims.get("email_verified") is True,
        name=name if isinstance(name, str) else None,
    )
