"""Handlers for openapi/core/export.yaml."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from carebase.principal import Principal
from carebase.services.export import ExportRequest, ExportService
from carebase.web.results import Reply, Stream, ok

CSV = "text/csv; charset=utf-8"


class ExportHandlers:
    def __init__(self, *, export: ExportService) -> None:
        self._export = export

    async def list_export_columns(self, principal: Principal) -> Reply:
        return ok(
            {
                "data": [
                    {
                        "entity": entity,
                        "key": column.key,
                        "label": column.label,
                        "health_data": column.health_data,
                        "default": default,
                    }
                    for entity, column, default in self._export.columns()
                ]
            }
        )

    async def export_csv(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        segment = body.get("segment_id")
        request = ExportRequest(
            entity=body["entity"],
            columns=body.get("columns"),
            segment_id=UUID(segment) if segment else None,
            first_day=dt.date.fromisoformat(body["from"]) if body.get("from") else None,
            last_day=dt.date.fromisoformat(body["to"]) if body.get("to") else None,
            bom=body.get("bom", True),
        )
        exported = await self._export.csv(principal, request)
        return Reply(
            Stream(exported.chunks),
            media_type=CSV,
            headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
        )
