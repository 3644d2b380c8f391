"""Verifying tokens signed by someone else's keys, published as a JWKS (RFC 7517).

Telemetry verifies core's access tokens against core's `/.well-known/jwks.json`, and core
accepts an external identity provider's tokens the same way (`AUTH_JWKS_URL`). The keys:

- are fetched at start and refreshed in the background (every `refresh_s`);
- are fetched again when a token names an unknown `kid` (a rotation), but at most once per
  `cooldown_s` however many such tokens arrive — concurrent callers share the one fetch — so
  a storm of forged `kid`s cannot turn into a storm of requests to the issuer;
- survive the issuer being down: a failed, oversized (> `max_bytes`) or invalid answer is
  logged and ignored, and the last good keys keep verifying;
- are fetched within `timeout_s`, redirects refused.

Each key verifies only with the algorithm its JWK names (or the one its key type implies);
`none`, HMAC algorithms and `jku`/`x5u`/`jwk` headers are never honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import jwt
import orjson
import structlog

from carebase.errors import Unauthenticated
from carebase.security.tokens import (
    LEEWAY_S,
    MAX_TOKEN_BYTES,
    REQUIRED_CLAIMS,
    VERIFIED_CACHE_SIZE,
    AccessClaims,
    claims_of,
)

_log = structlog.get_logger("carebase.security.jwks")

# Asymmetric algorithms only; the key type decides when a JWK names none.
ALGORITHMS = frozenset({"EdDSA", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
_DEFAULT_ALGORITHM = {"OKP": "EdDSA", "RSA": "RS256", "EC": "ES256"}


class JwksClient:
    def __init__(
        self,
        url: str,
        *,
        issuer: str,
        audience: str,
        also_accept: Sequence[str] = (),
        cooldown_s: float = 30.0,
        refresh_s: float = 300.0,
        timeout_s: float = 2.0,
        max_bytes: int = 64 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.issuer = issuer
        self.audience = audience
        self._audiences = [audience, *also_accept]
        self._cooldown_s = cooldown_s
        self._refresh_s = refresh_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport
        )
        self._keys: dict[str, tuple[Any, str]] = {}
        self._fetched_at: float | None = None
        self._in_flight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()
        self.fetches = 0
        """How many fetches were attempted (tests and the operator's numbers)."""

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def start(self) -> None:
        """Fetch the keys once (an unreachable issuer is not fatal) and keep them fresh."""
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def close(self) -> None:
        for task in (self._refresher, self._in_flight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._client.aclose()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    async def refresh(self) -> bool:
        """One fetch now, shared with whoever asks while it runs; True when keys changed."""
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return await asyncio.shield(self._in_flight)

    async def _fetch(self) -> bool:
        self.fetches += 1
        self._fetched_at = self._clock()
        try:
            document = await self._download()
            keys = parse_jwks(document)
        except (httpx.HTTPError, ValueError) as exc:
            _log.warning("jwks_fetch_failed", url=self.url, error=str(exc)[:200])
            return False
        if not keys:
            _log.warning("jwks_without_usable_keys", url=self.url)
            return False
        changed = keys.keys() != self._keys.keys()
        self._keys = keys
        if changed:
            self._verified.clear()
        return changed

    async def _download(self) -> Any:
        headers = {"accept": "application/json"}
        async with self._client.stream("GET", self.url, headers=headers) as r:
            if r.status_code != 200:
                raise ValueError(f"HTTP {r.status_code}")
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self._max_bytes:
                raise ValueError(f"JWKS larger than {self._max_bytes} bytes")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise ValueError(f"JWKS larger than {self._max_bytes} bytes")
        try:
            return orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise ValueError("JWKS is not JSON") from exc

    async def _key_for(self, kid: str) -> tuple[Any, str] | None:
        found = self._keys.get(kid)
        if found is not None:
            return found
        # An unknown kid: perhaps the issuer rotated. Ask again, at most once per cooldown.
        in_flight = self._in_flight is not None and not self._in_flight.done()
        cooled = self._fetched_at is None or self._clock() - self._fetched_at >= self._cooldown_s
        if in_flight or cooled:
            await self.refresh()
        return self._keys.get(kid)

    async def verify(self, token: str) -> AccessClaims:
        """The token's claims; `Unauthenticated` (with a reason for the log) otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("token too large")
        known = self._verified.get(token)
        if known is not None and known.expires_at > time.time():
            return known
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Unauthenticated("unexpected token header")
        found = await self._key_for(kid)
        if found is None:
            raise Unauthenticated("unknown signing key")
        key, algorithm = found
        if header.get("alg") != algorithm:
            raise Unauthenticated("unexpected token header")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audiences,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        verified = claims_of(claims)
        self._verified[token] = verified
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return verified


def parse_jwks(document: Any) -> dict[str, tuple[Any, str]]:
    """`{kid: (public key, algorithm)}` for every usable signing key; others are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, tuple[Any, str]] = {}
    for entry in document["keys"][:100]:
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        algorithm = entry.get("alg") or _DEFAULT_ALGORITHM.get(str(entry.get("kty")))
        if not isinstance(kid, str) or algorithm not in ALGORITHMS:
            continue
        try:
            key = jwt.PyJWK.from_dict(dict(entry), algorithm=algorithm).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        if hasattr(key, "private_bytes"):  # a private key published by mistake: never use it
            continue
        keys[kid] = (key, algorithm)
    return keys
