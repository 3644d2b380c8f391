"""Handlers for openapi/core/prescriptions.yaml: the same document operations as reports."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.handlers.core.documents import DocumentHandlers
from carebase.principal import Principal
from carebase.services.documents import DocumentService
from carebase.web.results import Reply


class PrescriptionHandlers(DocumentHandlers):
    def __init__(self, *, documents: DocumentService) -> None:
        super().__init__(documents=documents, base="/v1/prescriptions")

    async def list_prescriptions(
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

    async def create_prescription(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        return await self._create(principal, body)

    async def get_prescription(self, principal: Principal, *, prescription_id: UUID) -> Reply:
        return await self._get(principal, prescription_id)

    async def get_prescription_pdf(self, principal: Principal, *, prescription_id: UUID) -> Reply:
        return await self._pdf(principal, prescription_id)

    async def update_prescription(
        self,
        principal: Principal,
        *,
        prescription_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        return await self._update(principal, prescription_id, if_match, body)

    async def delete_prescription(
        self, principal: Principal, *, prescription_id: UUID, if_match: int | None
    ) -> Reply:
        return await self._delete(principal, prescription_id, if_match)

    async def finalize_prescription(
        self, principal: Principal, *, prescription_id: UUID, if_match: int | None
    ) -> Reply:
        return await self._finalize(principal, prescription_id, if_match)

    async def amend_prescription(
        self, principal: Principal, *, prescription_id: UUID, body: dict[str, Any]
    ) -> Reply:
        return await self._amend(principal, prescription_id, body)

    async def mark_prescription_entered_in_error(
        self,
        principal: Principal,
        *,
        prescription_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        return await self._withdraw(principal, prescription_id, if_match, body)
