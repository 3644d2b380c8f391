"""Who is acting: the identity every transaction carries into row-level security."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: UUID | None
    organization_id: UUID | None
    role: str | None

    @classmethod
    def anonymous(cls) -> Principal:
        """No tenant at all: row-level security shows such a principal no tenant row."""
        return cls(user_id=None, organization_id=None, role=None)
