"""Handlers for openapi/telemetry/media.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.principal import Principal
from carebase.services.telemetry.media import MediaIngest
from carebase.web.render import dumps
from carebase.web.results import Reply, accepted


class MediaHandlers:
    def __init__(self, *, ingest: MediaIngest) -> None:
        self._ingest = ingest

    async def ingest_media_events(
        self, principal: Principal, *, session_id: UUID, body: dict[str, Any]
    ) -> Reply:
        result = await self._ingest.events(principal, session_id, body)
        return accepted(dumps(result.as_json()))
