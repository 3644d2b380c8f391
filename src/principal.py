"""Who is acting: the identity every transaction carries into row-level security."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from carebase.errors import NotFound


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, for the audit trail."""

    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID | None
    organization_id: UUID | None
    role: str | None
    """The membership role in `organization_id`, read from the database, not from a token alone."""
    is_superadmin: bool = False
    api_key_id: UUID | None = None
    impersonator_id: UUID | None = None
    origin: Origin | None = None
    session_id: UUID | None = None
    """Telemetry: the one session a session token may send data for."""

    @classmethod
    def anonymous(cls) -> Principal:
        """No tenant at all: row-level security shows such a principal no tenant row."""
        return cls(user_id=None, organization_id=None, role=None)

    @classmethod
    def system(cls, organization_id: UUID) -> Principal:
        """The platform acting on its own (no user, no key) inside an organization: the
        workers' and the unauthenticated endpoints' actor in the audit trail."""
        return cls(user_id=None, organization_id=organization_id, role=None)

    def with_origin(self, origin: Origin) -> Principal:
        return Principal(
            self.user_id,
            self.organization_id,
            self.role,
            self.is_superadmin,
            self.api_key_id,
            self.impersonator_id,
            origin,
            self.session_id,
        )

    @property
    def actor(self) -> str:
        """For logs and audit: who did it, in one string."""
        if self.api_key_id:
            return f"api_key:{self.api_key_id}"
        return f"user:{self.user_id}" if self.user_id else "anonymous"


def organization_of(principal: Principal, missing: str) -> UUID:
    """The organization the principal acts in. Acting in none, no tenant's row exists for
    them, so the answer is the same `NotFound(missing)` as for an absent row."""
    if principal.organization_id is None:
        raise NotFound(missing)
    return principal.organization_id
