"""Handlers for openapi/core/patients.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models import core as api
from carebase.handlers.context import expected_version, not_modified, page_request, parse, principal
from carebase.handlers.core.custom_fields import profile_response
from carebase.services.patients import PatientService, PatientView
from carebase.web.responses import json_response, no_content, resource_response
from carebase.web.responses import not_modified as not_modified_response

BASE = "/v1/patients"


class PatientHandlers:
    def __init__(self, *, patients: PatientService) -> None:
        self._patients = patients

    async def list_patients(
        self,
        *,
        page: int | None = None,
        page_size: int | None = None,
        q: str | None = None,
        status: str | None = None,
        national_id: str | None = None,
        phone: str | None = None,
        sort: str | None = None,
    ) -> ConnexionResponse:
        found = await self._patients.list_patients(
            principal(),
            page_request(page, page_size),
            status=status,
            search=q,
            national_id=national_id,
            phone=phone,
            sort=sort or "name",
        )
        summaries = [api.PatientSummary.model_construct(**_summary(row)) for row in found.items]
        return json_response(api.PatientPage(data=summaries, meta=api.PageMeta(**found.meta)))

    async def create_patient(self, body: dict[str, Any]) -> ConnexionResponse:
        given = parse(api.PatientCreate, body).model_dump(mode="json", exclude_unset=True)
        created = await self._patients.create(principal(), given)
        return _patient(created, status=201, location=f"{BASE}/{created.id}")

    async def onboard_patient(self, body: dict[str, Any]) -> ConnexionResponse:
        given = parse(api.PatientOnboard, body).model_dump(mode="json", exclude_unset=True)
        created = await self._patients.onboard(principal(), given)
        return _patient(created, status=201, location=f"{BASE}/{created.id}")

    async def get_patient(self, patient_id: str) -> ConnexionResponse:
        found = await self._patients.get(principal(), UUID(patient_id))
        if not_modified(found.version):
            return not_modified_response(found.version)
        return _patient(found)

    async def update_patient(self, patient_id: str, body: dict[str, Any]) -> ConnexionResponse:
        changes = parse(api.PatientUpdate, body).model_dump(mode="json", exclude_unset=True)
        changed = await self._patients.update(
            principal(), UUID(patient_id), changes, version=expected_version()
        )
        return _patient(changed)

    async def delete_patient(self, patient_id: str) -> ConnexionResponse:
        await self._patients.delete(principal(), UUID(patient_id), version=expected_version())
        return no_content()

    async def get_patient_profile(self, patient_id: str) -> ConnexionResponse:
        found = await self._patients.profile(principal(), UUID(patient_id))
        if not_modified(found.version):
            return not_modified_response(found.version)
        return profile_response(found)

    async def update_patient_profile(
        self, patient_id: str, body: dict[str, Any]
    ) -> ConnexionResponse:
        parse(api.ProfileUpdate, body)
        # The contract checked the shapes; the raw values keep JSON's own types (1 vs 1.0).
        changed = await self._patients.update_profile(
            principal(), UUID(patient_id), body["values"], version=expected_version()
        )
        return profile_response(changed)

    async def get_patient_prefill(self, patient_id: str) -> ConnexionResponse:
        values = await self._patients.prefill(principal(), UUID(patient_id))
        return json_response(
            api.PatientPrefill.model_construct(patient_id=UUID(patient_id), values=values)
        )

    async def impersonate_patient(self, patient_id: str) -> ConnexionResponse:
        granted = await self._patients.impersonate(principal(), UUID(patient_id))
        return json_response(
            api.ImpersonationToken(
                access_token=granted.access_token,
                token_type=api.TokenType.Bearer,
                expires_in=granted.expires_in,
                user_id=granted.user_id,
                impersonator_id=granted.impersonator_id,
            ),
            headers={"Cache-Control": "no-store"},
        )


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "given_name": row.given_name,
        "family_name": row.family_name,
        "email": row.email,
        "status": row.status,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _patient(
    view: PatientView, *, status: int = 200, location: str | None = None
) -> ConnexionResponse:
    # Built from our own opened row, which the database constrained: no re-validation.
    model = api.Patient.model_construct(
        id=view.id,
        given_name=view.given_name,
        family_name=view.family_name,
        email=view.email,
        status=view.status,
        birth_date=view.birth_date,
        national_id=view.national_id,
        phone=view.phone,
        address=view.address,
        notes=view.notes,
        user_id=view.user_id,
        version=view.version,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )
    return resource_response(model, version=view.version, status=status, location=location)
