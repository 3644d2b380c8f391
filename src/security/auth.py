"""Who is calling (authentication) and may they (authorization), as two Connexion middlewares.

- `Authenticate` turns `Authorization: Bearer <jwt>` or `X-API-Key: <key>` into a `Principal`
  on `scope["state"]["principal"]`, for every operation that does not say `security: []`.
- `Authorize` checks the operation's `x-permission` from the bundle against the principal.

The role comes from the database membership, not from the token: a process trusts what it
read for `cache_s` seconds, so a removed member or a revoked key stops working within that.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar
from uuid import UUID

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from carebase.errors import Forbidden, Unauthenticated
from carebase.persistence import identity
from carebase.persistence.db import Database
from carebase.principal import Origin, Principal
from carebase.security import credentials, permissions
from carebase.security.tokens import TokenService
from carebase.web.contract import Operation
from carebase.web.middleware import HttpLayer, header, operation_id, principal_of

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


@dataclass(frozen=True, slots=True)
class _Access:
    is_superadmin: bool
    role: str | None


class Authenticator:
    def __init__(self, *, tokens: TokenService, db: Database, cache_s: float) -> None:
        self._tokens = tokens
        self._db = db
        self._access = TtlCache[tuple[UUID, UUID | None], _Access](cache_s)
        self._keys = TtlCache[str, identity.ApiKeyRow](cache_s)

    def forget(self) -> None:
        """Drop what this process trusts (after a membership or key changed here)."""
        self._access.clear()
        self._keys.clear()

    async def authenticate(self, scope: Scope) -> Principal:
        headers = _headers(scope)
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("Use `Authorization: Bearer <access token>`.")
            return await self._bearer(token.strip())
        api_key = headers.get("x-api-key")
        if api_key is not None:
            return await self._api_key(api_key.strip())
        raise Unauthenticated(
            "This operation needs an access token or an API key.", credentials_given=False
        )

    async def _bearer(self, token: str) -> Principal:
        try:
            claims = self._tokens.verify(token)
            user_id = UUID(claims.subject)
            organization_id = UUID(claims.organization_id) if claims.organization_id else None
            impersonator = UUID(claims.impersonator) if claims.impersonator else None
        except (Unauthenticated, ValueError) as exc:
            _log.info("token_refused", reason=str(exc))
            raise Unauthenticated("The access token is invalid or expired.") from None
        access = await self._user_access(user_id, organization_id)
        if access is None:
            raise Unauthenticated("The access token is invalid or expired.")
        return Principal(
            user_id=user_id,
            # A token for an organization the user has left acts in none.
            organization_id=organization_id if access.role else None,
            role=access.role,
            is_superadmin=access.is_superadmin,
            impersonator_id=impersonator,
        )

    async def _user_access(self, user_id: UUID, organization_id: UUID | None) -> _Access | None:
        key = (user_id, organization_id)
        cached = self._access.get(key)
        if cached is not None:
            return cached
        # As the user alone: row-level security shows their own row and memberships.
        as_user = Principal(user_id=user_id, organization_id=None, role=None)
        async with self._db.transaction(as_user, read_only=True) as q:
            row = await identity.user_access(q, user_id, organization_id)
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


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() in (b"authorization", b"x-api-key")
    }


def _origin(scope: Scope) -> Origin:
    """Request id, client address (after TRUSTED_PROXIES) and user agent, for the audit trail."""
    client = scope.get("client")
    agent = header(scope, b"user-agent")
    return Origin(
        request_id=(scope.get("state") or {}).get("request_id"),
        ip=_ip(client[0]) if client else None,
        user_agent=agent[:512] if agent else None,
    )


def _ip(host: str) -> str | None:
    """The client's address when it is one (a unix socket or a test client has none)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _operation(scope: Scope, operations: Mapping[str, Operation]) -> Operation | None:
    return operations.get(operation_id(scope) or "")


class Authenticate(HttpLayer):
    def __init__(
        self, app: ASGIApp, *, authenticator: Authenticator, operations: Mapping[str, Operation]
    ) -> None:
        super().__init__(app)
        self.authenticator = authenticator
        self.operations = operations

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = _operation(scope, self.operations)
        if operation is not None and not operation.public:
            principal = await self.authenticator.authenticate(scope)
            principal = dataclasses.replace(principal, origin=_origin(scope))
            scope.setdefault("state", {})["principal"] = principal
            structlog.contextvars.bind_contextvars(actor=principal.actor)
        await self.app(scope, receive, send)


class Authorize(HttpLayer):
    def __init__(self, app: ASGIApp, *, operations: Mapping[str, Operation]) -> None:
        super().__init__(app)
        self.operations = operations

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = _operation(scope, self.operations)
        if operation is not None and not operation.public:
            permission = operation.permission
            if permission is None or not permissions.allows(principal_of(scope), permission):
                raise Forbidden(f"This operation needs the permission {permission!r}.")
        await self.app(scope, receive, send)
