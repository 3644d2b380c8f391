"""Core's security events: stored once each (by event id), the actor hashed with the
organization's key and the address truncated; read back by the organization's admins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from carebase.pages import Page, PageRequest
from carebase.persistence.db import Database
from carebase.persistence.telemetry import security_events as repo
from carebase.principal import Principal, organization_of
from carebase.services.telemetry.ingest import IngestResult, plausible, uuid_or_none
from carebase.services.telemetry.privacy import PrivacyGate, truncate_ip

MAX_DETAIL_BYTES = 4096


class SecurityEventService:
    def __init__(self, *, db: Database, privacy: PrivacyGate) -> None:
        self._db = db
        self._privacy = privacy

    async def ingest(self, events: Sequence[Mapping[str, Any]]) -> IngestResult:
        rows: list[repo.NewSecurityEvent] = []
        rejected: list[tuple[int, str]] = []
        for event, occurred in plausible(events, rejected):
            organization = uuid_or_none(event.get("organization_id"))
            actor = uuid_or_none(event.get("actor_user_id"))
            state = await self._privacy.state(organization)
            detail = dict(event.get("detail") or {})
            rows.append(
                repo.NewSecurityEvent(
                    event_id=UUID(event["event_id"]),
                    organization_id=organization,
                    occurred_at=occurred,
                    kind=event["kind"],
                    actor_hash=state.hash(actor) if actor else None,
                    ip_prefix=truncate_ip(event.get("ip")) or None,
                    request_id=event.get("request_id"),
                    detail=detail if len(repr(detail)) <= MAX_DETAIL_BYTES else {"truncated": True},
                )
            )
        async with self._db.admin_transaction() as q:
            await repo.insert_new(q, rows)
        return IngestResult(len(rows), rejected)

    async def events(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        kind: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Page[repo.SecurityEventRow]:
        organization_id = organization_of(principal, "No organization to show.")
        async with self._db.transaction(principal, read_only=True) as q:
            rows, total = await repo.events(
                q, organization_id, page, kind=kind, since=since, until=until
            )
        return Page(rows, total, page)
