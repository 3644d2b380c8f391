"""What the report and prescription handlers share: one service per kind, one rendering."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.integrations.pdf import MEDIA_TYPE
from carebase.pages import PageRequest
from carebase.persistence.documents import SummaryRow
from carebase.principal import Principal
from carebase.services.documents import DocumentService, DocumentView
from carebase.web.results import NO_STORE, Reply, created, no_content, ok, resource


class DocumentHandlers:
    """What reports and prescriptions share; each spec module names its own operations."""

    def __init__(self, *, documents: DocumentService, base: str) -> None:
        self._documents = documents
        self._base = base

    async def _list(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        patient_id: UUID | None,
        appointment_id: UUID | None,
        status: str | None,
    ) -> Reply:
        found = await self._documents.list_documents(
            principal,
            PageRequest(page, page_size),
            patient_id=patient_id,
            appointment_id=appointment_id,
            status=status,
        )
        return ok({"data": [_summary(row) for row in found.items], "meta": found.meta})

    async def _pdf(self, principal: Principal, document_id: UUID) -> Reply:
        row, pdf = await self._documents.pdf(principal, document_id)
        return pdf_reply(pdf, f"{row.kind}-{row.id}.pdf")

    async def _create(self, principal: Principal, body: dict[str, Any]) -> Reply:
        view = await self._documents.create(principal, body)
        return created(
            document_json(view), location=f"{self._base}/{view.row.id}", version=view.row.version
        )

    async def _get(self, principal: Principal, document_id: UUID) -> Reply:
        view = await self._documents.get(principal, document_id)
        return resource(document_json(view), version=view.row.version)

    async def _update(
        self, principal: Principal, document_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        view = await self._documents.update(principal, document_id, body, version=if_match)
        return resource(document_json(view), version=view.row.version)

    async def _delete(self, principal: Principal, document_id: UUID, if_match: int | None) -> Reply:
        await self._documents.delete(principal, document_id, version=if_match)
        return no_content()

    async def _finalize(
        self, principal: Principal, document_id: UUID, if_match: int | None
    ) -> Reply:
        view = await self._documents.finalize(principal, document_id, version=if_match)
        return resource(document_json(view), version=view.row.version)

    async def _amend(self, principal: Principal, document_id: UUID, body: dict[str, Any]) -> Reply:
        view = await self._documents.amend(principal, document_id, str(body["reason"]))
        return created(
            document_json(view), location=f"{self._base}/{view.row.id}", version=view.row.version
        )

    async def _withdraw(
        self, principal: Principal, document_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        view = await self._documents.enter_in_error(
            principal, document_id, str(body["reason"]), version=if_match
        )
        return resource(document_json(view), version=view.row.version)


def document_json(view: DocumentView) -> dict[str, Any]:
    row = view.row
    return {
        "id": row.id,
        "appointment_id": row.appointment_id,
        "patient_id": row.patient_id,
        "title": row.title,
        "status": row.status,
        "body": view.body,
        "author_user_id": row.author_user_id,
        "finalized_at": row.finalized_at,
        "finalized_by": row.finalized_by,
        "content_sha256": row.content_sha256,
        "amends_id": row.amends_id,
        "amended_by_id": row.amended_by_id,
        "error_reason": row.error_reason,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _summary(row: SummaryRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "appointment_id": row.appointment_id,
        "patient_id": row.patient_id,
        "title": row.title,
        "status": row.status,
        "author_user_id": row.author_user_id,
        "finalized_at": row.finalized_at,
        "amends_id": row.amends_id,
        "amended_by_id": row.amended_by_id,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def pdf_reply(pdf: bytes, filename: str) -> Reply:
    """A PDF shown in the browser; health data, so never kept in a shared cache."""
    return Reply(
        pdf,
        headers={"Content-Disposition": f'inline; filename="{filename}"', **NO_STORE},
        media_type=MEDIA_TYPE,
    )
