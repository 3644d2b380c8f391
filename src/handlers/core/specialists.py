"""Handlers for openapi/core/specialists.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models import core as api
from carebase.handlers.context import expected_version, not_modified, page_request, parse, principal
from carebase.handlers.core.custom_fields import profile_response
from carebase.persistence.specialists import SpecialistFields, SpecialistRow, SpecialtyRow
from carebase.services.specialists import SpecialistService
from carebase.web.responses import json_response, no_content, resource_response
from carebase.web.responses import not_modified as not_modified_response


class SpecialistHandlers:
    def __init__(self, *, specialists: SpecialistService) -> None:
        self._specialists = specialists

    # --- specialties --------------------------------------------------------------------------

    async def list_specialties(
        self,
        *,
        page: int | None = None,
        page_size: int | None = None,
        q: str | None = None,
        sort: str | None = None,
    ) -> ConnexionResponse:
        found = await self._specialists.specialties(
            principal(), page_request(page, page_size), search=q, sort=sort or "name"
        )
        return json_response(
            api.SpecialtyPage(
                data=[_specialty_model(row) for row in found.items],
                meta=api.PageMeta(**found.meta),
            )
        )

    async def create_specialty(self, body: dict[str, Any]) -> ConnexionResponse:
        given = parse(api.SpecialtyCreate, body)
        created = await self._specialists.create_specialty(
            principal(), name=given.name, description=given.description or ""
        )
        return _specialty(created, status=201, location=f"/v1/specialties/{created.id}")

    async def get_specialty(self, specialty_id: str) -> ConnexionResponse:
        found = await self._specialists.specialty(principal(), UUID(specialty_id))
        if not_modified(found.version):
            return not_modified_response(found.version)
        return _specialty(found)

    async def update_specialty(self, specialty_id: str, body: dict[str, Any]) -> ConnexionResponse:
        changes = parse(api.SpecialtyUpdate, body).model_dump(mode="json", exclude_unset=True)
        changed = await self._specialists.update_specialty(
            principal(), UUID(specialty_id), changes, version=expected_version()
        )
        return _specialty(changed)

    async def delete_specialty(self, specialty_id: str) -> ConnexionResponse:
        await self._specialists.delete_specialty(
            principal(), UUID(specialty_id), version=expected_version()
        )
        return no_content()

    # --- specialists --------------------------------------------------------------------------

    async def list_specialists(
        self,
        *,
        page: int | None = None,
        page_size: int | None = None,
        q: str | None = None,
        specialty_id: str | None = None,
        accepting_patients: bool | None = None,
        sort: str | None = None,
    ) -> ConnexionResponse:
        found = await self._specialists.specialists(
            principal(),
            page_request(page, page_size),
            search=q,
            specialty_id=UUID(specialty_id) if specialty_id else None,
            accepting_patients=accepting_patients,
            sort=sort or "name",
        )
        return json_response(
            api.SpecialistPage(
                data=[_specialist_model(row) for row in found.items],
                meta=api.PageMeta(**found.meta),
            )
        )

    async def create_specialist(self, body: dict[str, Any]) -> ConnexionResponse:
        given = parse(api.SpecialistCreate, body)
        created = await self._specialists.create_specialist(
            principal(),
            user_id=given.user_id,
            fields=SpecialistFields(
                display_name=given.display_name.strip(),
                title=(given.title or "").strip(),
                bio=(given.bio or "").strip(),
                accepting_patients=given.accepting_patients is not False,
            ),
            specialty_ids=list(given.specialty_ids or []),
        )
        return _specialist(created, status=201, location=f"/v1/specialists/{created.id}")

    async def get_specialist(self, specialist_id: str) -> ConnexionResponse:
        found = await self._specialists.specialist(principal(), UUID(specialist_id))
        if not_modified(found.version):
            return not_modified_response(found.version)
        return _specialist(found)

    async def update_specialist(
        self, specialist_id: str, body: dict[str, Any]
    ) -> ConnexionResponse:
        changes = parse(api.SpecialistUpdate, body).model_dump(exclude_unset=True)
        changed = await self._specialists.update_specialist(
            principal(), UUID(specialist_id), changes, version=expected_version()
        )
        return _specialist(changed)

    async def delete_specialist(self, specialist_id: str) -> ConnexionResponse:
        await self._specialists.delete_specialist(
            principal(), UUID(specialist_id), version=expected_version()
        )
        return no_content()

    async def get_specialist_profile(self, specialist_id: str) -> ConnexionResponse:
        found = await self._specialists.profile(principal(), UUID(specialist_id))
        if not_modified(found.version):
            return not_modified_response(found.version)
        return profile_response(found)

    async def update_specialist_profile(
        self, specialist_id: str, body: dict[str, Any]
    ) -> ConnexionResponse:
        parse(api.ProfileUpdate, body)
        changed = await self._specialists.update_profile(
            principal(), UUID(specialist_id), body["values"], version=expected_version()
        )
        return profile_response(changed)


def _specialty_model(row: SpecialtyRow) -> api.Specialty:
    return api.Specialty(
        id=row.id,
        name=row.name,
        description=row.description,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _specialty(
    row: SpecialtyRow, *, status: int = 200, location: str | None = None
) -> ConnexionResponse:
    return resource_response(
        _specialty_model(row), version=row.version, status=status, location=location
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


def _specialist(
    row: SpecialistRow, *, status: int = 200, location: str | None = None
) -> ConnexionResponse:
    return resource_response(
        _specialist_model(row), version=row.version, status=status, location=location
    )
