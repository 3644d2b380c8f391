"""Handlers for openapi/core/forms.yaml: forms filled, submitted, signed, amended, verified.

Bodies are read as the contract checked them (plain JSON): answers are data the service
checks against the pinned version, and a form update's null answers mean "clear". Forms
render as plain dicts, like appointments: the contract still checks the shape in tests.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.handlers.core.documents import pdf_reply
from carebase.pages import PageRequest
from carebase.principal import Principal
from carebase.services.forms import FormService, FormView, Verification
from carebase.web.results import Reply, created, no_content, ok, resource

FORMS = "/v1/forms"


class FormHandlers:
    def __init__(self, *, forms: FormService) -> None:
        self._forms = forms

    async def list_forms(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        patient_id: UUID | None,
        appointment_id: UUID | None,
        template_id: UUID | None,
        status: str | None,
    ) -> Reply:
        found = await self._forms.list_forms(
            principal,
            PageRequest(page, page_size),
            patient_id=patient_id,
            appointment_id=appointment_id,
            template_id=template_id,
            status=status,
        )
        return ok({"data": [form_json(view) for view in found.items], "meta": found.meta})

    async def create_form(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        view = await self._forms.create(principal, body)
        return created(form_json(view), location=f"{FORMS}/{view.row.id}", version=view.row.version)

    async def get_form(self, principal: Principal, *, form_id: UUID) -> Reply:
        view = await self._forms.get(principal, form_id)
        return resource(form_json(view), version=view.row.version)

    async def update_form(
        self, principal: Principal, *, form_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        view = await self._forms.update(principal, form_id, body["values"], version=if_match)
        return resource(form_json(view), version=view.row.version)

    async def delete_form(
        self, principal: Principal, *, form_id: UUID, if_match: int | None
    ) -> Reply:
        await self._forms.delete(principal, form_id, version=if_match)
        return no_content()

    async def submit_form(
        self, principal: Principal, *, form_id: UUID, if_match: int | None
    ) -> Reply:
        view = await self._forms.submit(principal, form_id, version=if_match)
        return resource(form_json(view), version=view.row.version)

    async def sign_form(
        self, principal: Principal, *, form_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        view = await self._forms.sign(principal, form_id, str(body["meaning"]), version=if_match)
        return resource(form_json(view), version=view.row.version)

    async def amend_form(
        self, principal: Principal, *, form_id: UUID, body: dict[str, Any]
    ) -> Reply:
        view = await self._forms.amend(principal, form_id, str(body["reason"]))
        return created(form_json(view), location=f"{FORMS}/{view.row.id}", version=view.row.version)

    async def get_form_pdf(self, principal: Principal, *, form_id: UUID) -> Reply:
        row, pdf = await self._forms.pdf(principal, form_id)
        return pdf_reply(pdf, f"form-{row.id}.pdf")

    async def verify_form(self, principal: Principal, *, form_id: UUID) -> Reply:
        return ok(_verification(await self._forms.verify(principal, form_id)))


def form_json(view: FormView) -> dict[str, Any]:
    row = view.row
    signature = None
    if row.status == "signed":
        signature = {
            "signer_user_id": row.signer_user_id,
            "signer_role": row.signer_role,
            "meaning": row.signature_meaning,
            "signed_at": row.signed_at,
            "content_sha256": row.content_sha256,
            "signature_sha256": row.signature_sha256,
        }
    return {
        "id": row.id,
        "template_id": row.template_id,
        "template_version": row.template_version,
        "title": row.title,
        "patient_id": row.patient_id,
        "appointment_id": row.appointment_id,
        "status": row.status,
        "values": view.values,
        "prefill_sources": row.prefill_sources,
        "submitted_at": row.submitted_at,
        "signature": signature,
        "amends_id": row.amends_id,
        "amend_reason": row.amend_reason,
        "amended_by_id": row.amended_by_id,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _verification(found: Verification) -> dict[str, Any]:
    return {
        "form_id": found.form_id,
        "valid": found.valid,
        "content_sha256": found.content_sha256,
        "computed_content_sha256": found.computed_content_sha256,
        "signature_sha256": found.signature_sha256,
        "computed_signature_sha256": found.computed_signature_sha256,
        "checked_at": found.checked_at,
    }
