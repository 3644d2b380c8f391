"""Handlers for openapi/telemetry/analytics.yaml."""

from __future__ import annotations

from typing import Any

from carebase.principal import Principal
from carebase.services.telemetry.ingest import AnalyticsIngest
from carebase.web.render import dumps
from carebase.web.results import Reply, accepted


class AnalyticsHandlers:
    def __init__(self, *, ingest: AnalyticsIngest) -> None:
        self._ingest = ingest

    async def ingest_analytics_batch(
        self, principal: Principal, *, body: dict[str, Any], sec_gpc: str | None
    ) -> Reply:
        # The body stays the validated document (no model): this is the hot path.
        gpc = sec_gpc is not None and sec_gpc.strip() == "1"
        result = await self._ingest.track(principal, body, gpc=gpc)
        return accepted(dumps(result.as_json()))
