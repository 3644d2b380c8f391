"""Handlers for openapi/core/reports.yaml: session reports (drafts, final, amended, withdrawn)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.handlers.core.documents import DocumentHandlers
from carebase.principal import Principal
from carebase.services.documents import DocumentService
from carebase.web.results import Reply


class ReportHandlers(DocumentHandlers):
    def __init__(self, *, documents: DocumentService) -> None:
        super().__init__(documents=documents, base="/v1/reports")

    async def list_reports(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        patient_id: UUID | None,
        appointment_id: UUID | None,
        status: str | None,
    ) -> Reply:
        return await self._list(
            principal,
            page=page,
            page_size=page_size,
            patient_id=patient_id,
            appointment_id=appointment_id,
            status=status,
        )

    async def create_report(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        return await self._create(principal, body)

    async def get_report(self, principal: Principal, *, report_id: UUID) -> Reply:
        return await self._get(principal, report_id)

    async def get_report_pdf(self, principal: Principal, *, report_id: UUID) -> Reply:
        return await self._pdf(principal, report_id)

    async def update_report(
        self, principal: Principal, *, report_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        return await self._update(principal, report_id, if_match, body)

    async def delete_report(
        self, principal: Principal, *, report_id: UUID, if_match: int | None
    ) -> Reply:
        return await self._delete(principal, report_id, if_match)

    async def finalize_report(
        self, principal: Principal, *, report_id: UUID, if_match: int | None
    ) -> Reply:
        return await self._finalize(principal, report_id, if_match)

    async def amend_report(
        self, principal: Principal, *, report_id: UUID, body: dict[str, Any]
    ) -> Reply:
        return await self._amend(principal, report_id, body)

    async def mark_report_entered_in_error(
        self, principal: Principal, *, report_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        return await self._withdraw(principal, report_id, if_match, body)
