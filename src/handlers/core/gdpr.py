"""Handlers for openapi/core/gdpr.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.pages import PageRequest
from carebase.persistence.gdpr import RequestRow
from carebase.principal import Principal
from carebase.services import data_map
from carebase.services.gdpr import GdprService
from carebase.web.results import Reply, ok

BASE = "/v1/gdpr/requests"


class GdprHandlers:
    def __init__(self, *, gdpr: GdprService) -> None:
        self._gdpr = gdpr

    async def list_gdpr_requests(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        status: str | None,
        kind: str | None,
    ) -> Reply:
        found = await self._gdpr.list_requests(
            principal, PageRequest(page, page_size), status=status, kind=kind
        )
        return ok({"data": [request_json(row) for row in found.items], "meta": found.meta})

    async def create_gdpr_request(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        patient, user = body.get("patient_id"), body.get("user_id")
        row = await self._gdpr.create(
            principal,
            kind=body["kind"],
            patient_id=UUID(patient) if patient else None,
            user_id=UUID(user) if user else None,
            reason=body["reason"],
        )
        return _accepted(row)

    async def get_gdpr_request(self, principal: Principal, *, request_id: UUID) -> Reply:
        return ok(request_json(await self._gdpr.get(principal, request_id)))

    async def approve_gdpr_request(self, principal: Principal, *, request_id: UUID) -> Reply:
        return Reply(request_json(await self._gdpr.approve(principal, request_id)), status=202)

    async def reject_gdpr_request(
        self, principal: Principal, *, request_id: UUID, body: dict[str, Any]
    ) -> Reply:
        return ok(request_json(await self._gdpr.reject(principal, request_id, body["reason"])))

    async def get_gdpr_export(self, principal: Principal, *, request_id: UUID) -> Reply:
        link = await self._gdpr.export_link(principal, request_id)
        return ok(
            {"url": link.url, "expires_at": link.expires_at, "size_bytes": link.size_bytes},
            headers={"Cache-Control": "no-store"},
        )

    async def get_gdpr_data_map(self, principal: Principal) -> Reply:
        return ok(
            {
                "data": [
                    {
                        "store": t.store,
                        "table": t.table,
                        "subject": t.subject,
                        "erase": t.erase,
                        "exported": t.exported,
                        "basis": t.basis,
                        "retention_years": t.years,
                    }
                    for t in data_map.DATA_MAP
                ]
            }
        )

    async def export_gdpr_user(self, principal: Principal, *, user_id: UUID) -> Reply:
        return _accepted(await self._gdpr.shortcut(principal, kind="export", user_id=user_id))

    async def erase_gdpr_user(self, principal: Principal, *, user_id: UUID) -> Reply:
        return _accepted(await self._gdpr.shortcut(principal, kind="erase", user_id=user_id))

    async def anonymize_gdpr_user(self, principal: Principal, *, user_id: UUID) -> Reply:
        return _accepted(await self._gdpr.shortcut(principal, kind="anonymize", user_id=user_id))


def _accepted(row: RequestRow) -> Reply:
    return Reply(request_json(row), status=202, location=f"{BASE}/{row.id}")


def request_json(row: RequestRow) -> dict[str, Any]:
    export = (
        {"size_bytes": row.export_size, "expires_at": row.export_expires_at}
        if row.export_key and row.export_size is not None and row.export_expires_at
        else None
    )
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "patient_id": row.patient_id,
        "user_id": row.user_id,
        "reason": row.reason,
        "received_at": row.received_at,
        "due_at": row.due_at,
        "approved_at": row.approved_at,
        "rejected_reason": row.rejected_reason,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "steps": [
            {
                "name": s["name"],
                "status": s["status"],
                "rows": s.get("rows"),
                "detail": s.get("detail"),
            }
            for s in row.steps
        ],
        "export": export,
    }
