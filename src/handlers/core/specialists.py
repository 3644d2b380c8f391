"""Handlers for openapi/core/specialists.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.generated.models import core as api
from carebase.handlers.core.custom_fields import profile_reply
from carebase.pages import PageRequest
from carebase.persistence.specialists import SpecialistFields, SpecialistRow, SpecialtyRow
from carebase.principal import Principal
from carebase.services.specialists import SpecialistService
from carebase.web.results import Reply, created, no_content, ok, resource


class SpecialistHandlers:
    def __init__(self, *, specialists: SpecialistService) -> None:
        self._specialists = specialists

    # --- specialties --------------------------------------------------------------------------

    async def list_specialties(
        self, principal: Principal, page: int, page_size: int, q: str | None, sort: str
    ) -> Reply:
        found = await self._specialists.specialties(
            principal, PageRequest(page, page_size), search=q, sort=sort
        )
        return ok(
            api.SpecialtyPage.model_construct(
                data=[_specialty_model(row) for row in found.items], meta=found.meta
            )
        )

    async def create_specialty(self, principal: Principal, *, body: api.SpecialtyCreate) -> Reply:
        row = await self._specialists.create_specialty(
            principal, name=body.name, description=body.description or ""
        )
        return created(
            _specialty_model(row), location=f"/v1/specialties/{row.id}", version=row.version
        )

    async def get_specialty(self, principal: Principal, *, specialty_id: UUID) -> Reply:
        row = await self._specialists.specialty(principal, specialty_id)
        return resource(_specialty_model(row), version=row.version)

    async def update_specialty(
        self,
        principal: Principal,
        *,
        specialty_id: UUID,
        if_match: int | None,
        body: api.SpecialtyUpdate,
    ) -> Reply:
        changes = body.model_dump(mode="json", exclude_unset=True)
        row = await self._specialists.update_specialty(
            principal, specialty_id, changes, version=if_match
        )
        return resource(_specialty_model(row), version=row.version)

    async def delete_specialty(
        self, principal: Principal, specialty_id: UUID, if_match: int | None
    ) -> Reply:
        await self._specialists.delete_specialty(principal, specialty_id, version=if_match)
        return no_content()

    # --- specialists --------------------------------------------------------------------------

    async def list_specialists(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        q: str | None,
        specialty_id: UUID | None,
        accepting_patients: bool | None,
        sort: str,
    ) -> Reply:
        found = await self._specialists.specialists(
            principal,
            PageRequest(page, page_size),
            search=q,
            specialty_id=specialty_id,
            accepting_patients=accepting_patients,
            sort=sort,
        )
        return ok(
            api.SpecialistPage.model_construct(
                data=[_specialist_model(row) for row in found.items], meta=found.meta
            )
        )

    async def create_specialist(self, principal: Principal, *, body: api.SpecialistCreate) -> Reply:
        row = await self._specialists.create_specialist(
            principal,
            user_id=body.user_id,
            fields=SpecialistFields(
                display_name=body.display_name.strip(),
                title=(body.title or "").strip(),
                bio=(body.bio or "").strip(),
                accepting_patients=body.accepting_patients is not False,
            ),
            specialty_ids=list(body.specialty_ids or []),
        )
        return created(
            _specialist_model(row), location=f"/v1/specialists/{row.id}", version=row.version
        )

    async def get_specialist(self, principal: Principal, *, specialist_id: UUID) -> Reply:
        row = await self._specialists.specialist(principal, specialist_id)
        return resource(_specialist_model(row), version=row.version)

    async def update_specialist(
        self,
        principal: Principal,
        *,
        specialist_id: UUID,
        if_match: int | None,
        body: api.SpecialistUpdate,
    ) -> Reply:
        changes: dict[str, Any] = body.model_dump(exclude_unset=True)
        row = await self._specialists.update_specialist(
            principal, specialist_id, changes, version=if_match
        )
        return resource(_specialist_model(row), version=row.version)

    async def delete_specialist(
        self, principal: Principal, specialist_id: UUID, if_match: int | None
    ) -> Reply:
        await self._specialists.delete_specialist(principal, specialist_id, version=if_match)
        return no_content()

    async def get_specialist_profile(self, principal: Principal, *, specialist_id: UUID) -> Reply:
        return profile_reply(await self._specialists.profile(principal, specialist_id))

    async def update_specialist_profile(
        self,
        principal: Principal,
        *,
        specialist_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        changed = await self._specialists.update_profile(
            principal, specialist_id, body["values"], version=if_match
        )
        return profile_reply(changed)


def _specialty_model(row: SpecialtyRow) -> api.Specialty:
    return api.Specialty(
        id=row.id,
        name=row.name,
        description=row.description,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _specialist_model(row: SpecialistRow) -> api.Specialist:
    return api.Specialist.model_validate(
        {
            "id": row.id,
            "user_id": row.user_id,
            "display_name": row.display_name,
            "title": row.title,
            "bio": row.bio,
            "accepting_patients": row.accepting_patients,
            "specialty_ids": row.specialty_ids,
            "version": row.version,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )
