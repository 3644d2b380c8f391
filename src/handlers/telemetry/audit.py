"""Handlers for openapi/telemetry/audit.yaml."""

from __future__ import annotations

from typing import Any

from carebase.services.telemetry.ingest import AuditIngest
from carebase.web.render import dumps
from carebase.web.results import Reply, accepted


class AuditHandlers:
    def __init__(self, *, ingest: AuditIngest) -> None:
        self._ingest = ingest

    async def ingest_audit_events(self, *, body: dict[str, Any]) -> Reply:
        result = await self._ingest.ingest(body["events"])
        return accepted(dumps(result.as_json()))
