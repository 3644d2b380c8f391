"""Who is calling: `Authorization: Bearer <jwt>` or `X-API-Key: <key>` → a `Principal`.

The pipeline (`web.pipeline`) runs this for every operation that does not say `security: []`,
then checks its `x-permission` against `permissions`.

The role comes from the database membership, not from the token: a process trusts what it
read for `cache_s` seconds, so a removed member or a revoked key stops working within that.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import structlog

from carebase.errors import Unauthenticated
from carebase.persistence import identity
from carebase.persistence.db import Database
from carebase.principal import Principal
from carebase.security import credentials
from carebase.security.jwks import JwksClient
from carebase.security.tokens import SESSION_AUDIENCE, AccessClaims, TokenService

_log = structlog.get_logger("carebase.security.auth")

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small LRU whose entries expire; per process, so its TTL bounds staleness everywhere."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class Authenticates(Protocol):
    """What the pipeline asks of a service's authenticator."""

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal: ...


SERVICE_ROLE = "service"
"""The role of core's relay calling telemetry (a service credential, no person)."""
SESSION_ROLE = "telemetry_session"
"""The role of a telemetry session token: one session's pose frames, nothing else."""


@dataclass(frozen=True, slots=True)
class _Access:
    is_superadmin: bool
    role: str | None


class Authenticator:
    def __init__(
        self,
        *,
        tokens: TokenService,
        db: Database,
        cache_s: float,
        external: JwksClient | None = None,
    ) -> None:
        """`external`: an identity provider's JWKS (`AUTH_JWKS_URL`); its tokens are accepted
        beside Carebase's own, their users provisioned on first sight by `iss` and `sub`."""
        self._tokens = tokens
        self._external = external
        self._db = db
        self._access = TtlCache[tuple[UUID, UUID | None], _Access](cache_s)
        self._keys = TtlCache[str, identity.ApiKeyRow](cache_s)
        self._principals = TtlCache[str, Principal](cache_s)

    def forget(self) -> None:
        """Drop what this process trusts (after a membership or key changed here)."""
        self._access.clear()
        self._keys.clear()
        self._principals.clear()

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The principal the credentials name; `Unauthenticated` when there are none or they
        cannot be trusted. A bearer token wins over an API key."""
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("Use `Authorization: Bearer <access token>`.")
            return await self._bearer(token.strip())
        if api_key is not None:
            return await self._api_key(api_key.strip())
        raise Unauthenticated(
            "This operation needs an access token or an API key.", credentials_given=False
        )

    async def _bearer(self, token: str) -> Principal:
        external = False
        try:
            claims = self._tokens.verify(token)  # remembered per process until it expires
        except Unauthenticated as exc:
            if self._external is None:
                _log.info("token_refused", reason=str(exc))
                raise Unauthenticated("The access token is invalid or expired.") from None
            try:
                claims = await self._external.verify(token)
            except Unauthenticated as also:
                _log.info("token_refused", reason=str(exc), external=str(also))
                raise Unauthenticated("The access token is invalid or expired.") from None
            external = True
        known = self._principals.get(token)
        if known is not None:
            return known
        if external:
            return await self._external_principal(token, claims)
        try:
            user_id = UUID(claims.subject)
            organization_id = UUID(claims.organization_id) if claims.organization_id else None
            impersonator = UUID(claims.impersonator) if claims.impersonator else None
        except ValueError as exc:
            _log.info("token_refused", reason=str(exc))
            raise Unauthenticated("The access token is invalid or expired.") from None
        access = await self._user_access(user_id, organization_id)
        if access is None:
            raise Unauthenticated("The access token is invalid or expired.")
        principal = Principal(
            user_id=user_id,
            # A token for an organization the user has left acts in none.
            organization_id=organization_id if access.role else None,
            role=access.role,
            is_superadmin=access.is_superadmin,
            impersonator_id=impersonator,
        )
        # Trusted as long as the role it carries: the same AUTH_CACHE_S, cleared by forget().
        self._principals.put(token, principal)
        return principal

    async def _external_principal(self, token: str, claims: AccessClaims) -> Principal:
        """The identity provider's user, provisioned on first sight; acting in the organization
        its token names (an `org` claim) only where it is a member, otherwise in none (it then
        switches with `POST /v1/auth/switch-organization`)."""
        subject = f"{claims.issuer}|{claims.subject}"[:500]
        async with self._db.admin_transaction() as q:
            user_id = await identity.user_by_external_subject(q, subject)
            if user_id is None:
                user_id = await _provision(q, subject, claims)
        organization_id = None
        with contextlib.suppress(ValueError):
            organization_id = UUID(claims.organization_id) if claims.organization_id else None
        access = await self._user_access(user_id, organization_id)
        if access is None:
            raise Unauthenticated("The access token is invalid or expired.")
        principal = Principal(
            user_id=user_id,
            organization_id=organization_id if access.role else None,
            role=access.role,
            is_superadmin=access.is_superadmin,
        )
        self._principals.put(token, principal)
        return principal

    async def _user_access(self, user_id: UUID, organization_id: UUID | None) -> _Access | None:
        key = (user_id, organization_id)
        cached = self._access.get(key)
        if cached is not None:
            return cached
        # As the user alone: row-level security shows their own row and memberships.
        as_user = Principal(user_id=user_id, organization_id=None, role=None)
        row = await identity.user_access(self._db.reader(as_user), user_id, organization_id)
        if row is None:
            return None
        access = _Access(row.is_superadmin, row.role)
        self._access.put(key, access)
        return access

    async def _api_key(self, key: str) -> Principal:
        parts = credentials.split_api_key(key)
        if parts is None:
            raise Unauthenticated("The API key is invalid or revoked.")
        prefix, _ = parts
        row = self._keys.get(prefix)
        if row is None:
            async with self._db.admin_transaction() as q:
                row = await identity.api_key_by_prefix(q, prefix)
                if row is not None:
                    await identity.touch_api_key(q, row.id)
            if row is not None:
                self._keys.put(prefix, row)
        usable = (
            row is not None
            and row.revoked_at is None
            and (row.expires_at is None or row.expires_at > datetime.now(UTC))
            and hmac.compare_digest(credentials.digest(key), row.secret_hash)
        )
        if not usable or row is None:
            raise Unauthenticated("The API key is invalid or revoked.")
        return Principal(
            user_id=None, organization_id=row.organization_id, role=row.role, api_key_id=row.id
        )


async def _provision(q: Any, subject: str, claims: AccessClaims) -> UUID:
    """A local account for an identity provider's user. A verified address that already has a
    local account is linked to it; an unverified one never is (whoever controls the provider
    could claim anyone's address), and gets an address of its own under `.invalid`."""
    email = (claims.email or "").strip().lower()
    name = (claims.name or "")[:200]
    usable = bool(email) and 3 <= len(email) <= 254 and "@" in email
    if usable and claims.email_verified:
        linked = await identity.link_external(q, subject, email)
        if linked is not None:
            return linked
    if usable:
        created = await identity.insert_external(
            q, subject, email=email, name=name, verified=claims.email_verified
        )
        if created is not None:
            return created
    placeholder = f"{hashlib.sha256(subject.encode()).hexdigest()[:32]}@external.invalid"
    created = await identity.insert_external(
        q, subject, email=placeholder, name=name, verified=False
    )
    if created is None:  # provisioned by a concurrent request a moment ago
        found = await identity.user_by_external_subject(q, subject)
        if found is None:
            raise Unauthenticated("The access token is invalid or expired.")
        return found
    return created


class TokenAuthenticator:
    """Telemetry's callers: core's access tokens, verified against core's JWKS, or core's
    service credential.

    Telemetry has no membership table of its own, so the organization and role come from the
    token, which core signed after reading them from its database: trusted for the token's
    life (`ACCESS_TOKEN_TTL_S`, 15 minutes by default) — the delay after which a removed
    member's telemetry calls stop.
    """

    def __init__(self, *, verifier: JwksClient, service_token: str | None) -> None:
        self._verifier = verifier
        self._service_token = service_token.encode() if service_token else None

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        del api_key  # telemetry takes no API keys
        if authorization is None:
            raise Unauthenticated("This operation needs an access token.", credentials_given=False)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Use `Authorization: Bearer <access token>`.")
        if self._service_token is not None and hmac.compare_digest(
            token.encode(), self._service_token
        ):
            return Principal(user_id=None, organization_id=None, role=SERVICE_ROLE)
        try:
            claims = await self._verifier.verify(token)
            user_id = UUID(claims.subject)
            organization_id = UUID(claims.organization_id) if claims.organization_id else None
            impersonator = UUID(claims.impersonator) if claims.impersonator else None
            if claims.audience == SESSION_AUDIENCE:
                if organization_id is None or claims.session_id is None:
                    raise ValueError("a session token without its organization or session")
                return Principal(
                    user_id=user_id,
                    organization_id=organization_id,
                    role=SESSION_ROLE,
                    session_id=UUID(claims.session_id),
                )
        except (Unauthenticated, ValueError) as exc:
            _log.info("token_refused", reason=str(exc))
            raise Unauthenticated("The access token is invalid or expired.") from None
        return Principal(
            user_id=user_id,
            organization_id=organization_id,
            role=claims.role if organization_id else None,
            impersonator_id=impersonator,
        )
