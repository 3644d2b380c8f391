"""Handlers for openapi/telemetry/security.yaml."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from carebase.pages import PageRequest
from carebase.principal import Principal
from carebase.services.telemetry.security_events import SecurityEventService
from carebase.web.render import dumps
from carebase.web.results import Reply, accepted, ok


class SecurityHandlers:
    def __init__(self, *, security: SecurityEventService) -> None:
        self._security = security

    async def ingest_security_events(self, *, body: dict[str, Any]) -> Reply:
        result = await self._security.ingest(body["events"])
        return accepted(dumps(result.as_json()))

    async def list_security_events(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        kind: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Reply:
        found = await self._security.events(
            principal, PageRequest(page, page_size), kind=kind, since=since, until=until
        )
        return ok(
            {
                "data": [
                    {
                        "id": str(row.event_id),
                        "kind": row.kind,
                        "occurred_at": row.occurred_at,
                        "actor": row.actor_hash,
                        "ip_prefix": row.ip_prefix,
                        "request_id": row.request_id,
                        "detail": row.detail,
                    }
                    for row in found.items
                ],
                "meta": found.meta,
            }
        )
