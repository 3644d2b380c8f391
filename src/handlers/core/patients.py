"""Handlers for openapi/core/patients.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.generated.models import core as api
from carebase.handlers.core.custom_fields import profile_reply
from carebase.pages import PageRequest
from carebase.persistence.patients import PatientSummaryRow
from carebase.principal import Principal
from carebase.services.patients import PatientService, PatientView
from carebase.web.results import NO_STORE, Reply, created, no_content, ok, resource

BASE = "/v1/patients"


class PatientHandlers:
    def __init__(self, *, patients: PatientService) -> None:
        self._patients = patients

    async def list_patients(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        q: str | None,
        status: str | None,
        national_id: str | None,
        phone: str | None,
        sort: str,
    ) -> Reply:
        found = await self._patients.list_patients(
            principal,
            PageRequest(page, page_size),
            status=status,
            search=q,
            national_id=national_id,
            phone=phone,
            sort=sort,
        )
        summaries = [_summary(row) for row in found.items]
        return ok(api.PatientPage.model_construct(data=summaries, meta=found.meta))

    async def create_patient(self, principal: Principal, *, body: api.PatientCreate) -> Reply:
        given = body.model_dump(mode="json", exclude_unset=True)
        view = await self._patients.create(principal, given)
        return created(_patient(view), location=f"{BASE}/{view.id}", version=view.version)

    async def onboard_patient(self, principal: Principal, *, body: api.PatientOnboard) -> Reply:
        given = body.model_dump(mode="json", exclude_unset=True)
        view = await self._patients.onboard(principal, given)
        return created(_patient(view), location=f"{BASE}/{view.id}", version=view.version)

    async def get_patient(self, principal: Principal, *, patient_id: UUID) -> Reply:
        view = await self._patients.get(principal, patient_id)
        return resource(_patient(view), version=view.version)

    async def update_patient(
        self, principal: Principal, patient_id: UUID, if_match: int | None, body: api.PatientUpdate
    ) -> Reply:
        changes = body.model_dump(mode="json", exclude_unset=True)
        view = await self._patients.update(principal, patient_id, changes, version=if_match)
        return resource(_patient(view), version=view.version)

    async def delete_patient(
        self, principal: Principal, patient_id: UUID, if_match: int | None
    ) -> Reply:
        await self._patients.delete(principal, patient_id, version=if_match)
        return no_content()

    async def get_patient_profile(self, principal: Principal, *, patient_id: UUID) -> Reply:
        return profile_reply(await self._patients.profile(principal, patient_id))

    async def update_patient_profile(
        self, principal: Principal, patient_id: UUID, if_match: int | None, body: dict[str, Any]
    ) -> Reply:
        # The contract checked the shapes; the raw values keep JSON's own types (1 vs 1.0).
        changed = await self._patients.update_profile(
            principal, patient_id, body["values"], version=if_match
        )
        return profile_reply(changed)

    async def get_patient_prefill(self, principal: Principal, *, patient_id: UUID) -> Reply:
        values = await self._patients.prefill(principal, patient_id)
        return ok(api.PatientPrefill.model_construct(patient_id=patient_id, values=values))

    async def impersonate_patient(self, principal: Principal, *, patient_id: UUID) -> Reply:
        granted = await self._patients.impersonate(principal, patient_id)
        token = api.ImpersonationToken(
            access_token=granted.access_token,
            token_type=api.TokenType.Bearer,
            expires_in=granted.expires_in,
            user_id=granted.user_id,
            impersonator_id=granted.impersonator_id,
        )
        return ok(token, headers=NO_STORE)


def _summary(row: PatientSummaryRow) -> api.PatientSummary:
    return api.PatientSummary.model_construct(
        id=row.id,
        user_id=row.user_id,
        given_name=row.given_name,
        family_name=row.family_name,
        email=row.email,
        status=row.status,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _patient(view: PatientView) -> api.Patient:
    # Built from our own opened row, which the database constrained: no re-validation.
    return api.Patient.model_construct(
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
