"""Specialties and specialists: the organization's professional directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

from carebase.errors import NotFound, PreconditionFailed
from carebase.pages import Page, PageRequest
from carebase.persistence import custom_fields as cf
from carebase.persistence import specialists as repo
from carebase.persistence.db import Database, one, search_term
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.services.audit import record
from carebase.services.custom_fields import (
    ProfileView,
    changed_keys,
    check_values,
    read_values,
)

NO_SPECIALTY = "No such specialty."
NO_SPECIALIST = "No such specialist."
CHANGED = "{} changed since it was read; read it again."


def aad(organization_id: UUID, specialist_id: UUID, column: str) -> bytes:
    return f"{repo.TABLE}|{organization_id}|{specialist_id}|{column}".encode()


class SpecialistService:
    def __init__(self, *, db: Database, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer

    # --- specialties --------------------------------------------------------------------------

    async def create_specialty(
        self, principal: Principal, *, name: str, description: str
    ) -> repo.SpecialtyRow:
        organization_id = organization_of(principal, NO_SPECIALTY)
        async with self._db.transaction(principal) as q:
            created = one(
                await repo.insert_specialty(
                    q, organization_id, uuid4(), name=name.strip(), description=description.strip()
                )
            )
            await record(
                q,
                principal,
                action="specialty.created",
                entity_type="specialty",
                entity_id=created.id,
                changed_fields=["name", "description"],
            )
        return created

    async def specialty(self, principal: Principal, specialty_id: UUID) -> repo.SpecialtyRow:
        q = self._db.reader(principal)
        found = await repo.specialty(q, organization_of(principal, NO_SPECIALTY), specialty_id)
        if found is None:
            raise NotFound(NO_SPECIALTY)
        return found

    async def specialties(
        self, principal: Principal, page: PageRequest, *, search: str | None, sort: str
    ) -> Page[repo.SpecialtyRow]:
        q = self._db.reader(principal)
        rows, total = await repo.specialties(
            q,
            organization_of(principal, NO_SPECIALTY),
            page,
            search=search_term(search),
            sort=sort,
        )
        return Page(rows, total, page)

    async def update_specialty(
        self,
        principal: Principal,
        specialty_id: UUID,
        changes: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.SpecialtyRow:
        organization_id = organization_of(principal, NO_SPECIALTY)
        async with self._db.transaction(principal) as q:
            current = await repo.specialty(q, organization_id, specialty_id)
            if current is None:
                raise NotFound(NO_SPECIALTY)
            name = str(changes.get("name", current.name)).strip()
            description = str(changes.get("description", current.description)).strip()
            changed = await repo.update_specialty(
                q,
                organization_id,
                specialty_id,
                name=name,
                description=description,
                version=version,
            )
            if changed is None:
                raise PreconditionFailed(CHANGED.format("The specialty"))
            await record(
                q,
                principal,
                action="specialty.updated",
                entity_type="specialty",
                entity_id=specialty_id,
                changed_fields=_differing(current, changes),
            )
        return changed

    async def delete_specialty(
        self, principal: Principal, specialty_id: UUID, *, version: int | None
    ) -> None:
        organization_id = organization_of(principal, NO_SPECIALTY)
        async with self._db.transaction(principal) as q:
            if await repo.specialty(q, organization_id, specialty_id) is None:
                raise NotFound(NO_SPECIALTY)
            if not await repo.delete_specialty(q, organization_id, specialty_id, version=version):
                raise PreconditionFailed(CHANGED.format("The specialty"))
            await record(
                q,
                principal,
                action="specialty.deleted",
                entity_type="specialty",
                entity_id=specialty_id,
            )

    # --- specialists --------------------------------------------------------------------------

    async def create_specialist(
        self,
        principal: Principal,
        *,
        user_id: UUID,
        fields: repo.SpecialistFields,
        specialty_ids: Sequence[UUID],
    ) -> repo.SpecialistRow:
        organization_id = organization_of(principal, NO_SPECIALIST)
        specialist_id = uuid4()
        async with self._db.transaction(principal) as q:
            await repo.insert_specialist(q, organization_id, specialist_id, user_id, fields)
            await repo.set_specialties(q, organization_id, specialist_id, specialty_ids)
            await record(
                q,
                principal,
                action="specialist.created",
                entity_type="specialist",
                entity_id=specialist_id,
                changed_fields=[
                    "user_id",
                    "display_name",
                    "title",
                    "bio",
                    "accepting_patients",
                    "specialty_ids",
                ],
            )
            return one(await repo.specialist(q, organization_id, specialist_id))

    async def specialist(self, principal: Principal, specialist_id: UUID) -> repo.SpecialistRow:
        q = self._db.reader(principal)
        found = await repo.specialist(q, organization_of(principal, NO_SPECIALIST), specialist_id)
        if found is None:
            raise NotFound(NO_SPECIALIST)
        return found

    async def specialists(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        search: str | None,
        specialty_id: UUID | None,
        accepting_patients: bool | None,
        sort: str,
    ) -> Page[repo.SpecialistRow]:
        q = self._db.reader(principal)
        rows, total = await repo.specialists(
            q,
            organization_of(principal, NO_SPECIALIST),
            page,
            search=search_term(search),
            specialty_id=specialty_id,
            accepting_patients=accepting_patients,
            sort=sort,
        )
        return Page(rows, total, page)

    async def update_specialist(
        self,
        principal: Principal,
        specialist_id: UUID,
        changes: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.SpecialistRow:
        organization_id = organization_of(principal, NO_SPECIALIST)
        async with self._db.transaction(principal) as q:
            current = await repo.specialist(q, organization_id, specialist_id)
            if current is None:
                raise NotFound(NO_SPECIALIST)
            fields = repo.SpecialistFields(
                display_name=str(changes.get("display_name", current.display_name)).strip(),
                title=str(changes.get("title", current.title)).strip(),
                bio=str(changes.get("bio", current.bio)).strip(),
                accepting_patients=bool(
                    changes.get("accepting_patients", current.accepting_patients)
                ),
            )
            if not await repo.update_specialist(
                q, organization_id, specialist_id, fields, version=version
            ):
                raise PreconditionFailed(CHANGED.format("The specialist"))
            if "specialty_ids" in changes:
                await repo.set_specialties(
                    q, organization_id, specialist_id, changes["specialty_ids"]
                )
            await record(
                q,
                principal,
                action="specialist.updated",
                entity_type="specialist",
                entity_id=specialist_id,
                changed_fields=_differing(current, changes),
            )
            return one(await repo.specialist(q, organization_id, specialist_id))

    async def delete_specialist(
        self, principal: Principal, specialist_id: UUID, *, version: int | None
    ) -> None:
        organization_id = organization_of(principal, NO_SPECIALIST)
        async with self._db.transaction(principal) as q:
            if await repo.specialist(q, organization_id, specialist_id) is None:
                raise NotFound(NO_SPECIALIST)
            if not await repo.delete_specialist(q, organization_id, specialist_id, version=version):
                raise PreconditionFailed(CHANGED.format("The specialist"))
            await record(
                q,
                principal,
                action="specialist.deleted",
                entity_type="specialist",
                entity_id=specialist_id,
            )

    async def profile(self, principal: Principal, specialist_id: UUID) -> ProfileView:
        organization_id = organization_of(principal, NO_SPECIALIST)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.specialist(q, organization_id, specialist_id)
            if row is None:
                raise NotFound(NO_SPECIALIST)
            fields = await cf.entity_fields(q, organization_id, "specialist")
        return self._profile(row, fields)

    async def update_profile(
        self,
        principal: Principal,
        specialist_id: UUID,
        values: Mapping[str, Any],
        *,
        version: int | None,
    ) -> ProfileView:
        organization_id = organization_of(principal, NO_SPECIALIST)
        async with self._db.transaction(principal) as q:
            current = await repo.specialist(q, organization_id, specialist_id)
            if current is None:
                raise NotFound(NO_SPECIALIST)
            fields = await cf.entity_fields(q, organization_id, "specialist")
            stored = check_values(
                fields,
                values,
                sealer=self._sealer,
                aad=aad(organization_id, specialist_id, "custom"),
            )
            if not await repo.update_custom(
                q,
                organization_id,
                specialist_id,
                values=stored.plain,
                sealed=stored.sealed,
                version=version,
            ):
                raise PreconditionFailed(CHANGED.format("The specialist"))
            await cf.mark_in_use(q, organization_id, stored.used)
            before = self._profile(current, fields).values
            changed = changed_keys(before, values)
            await record(
                q,
                principal,
                action="specialist.profile_updated",
                entity_type="specialist",
                entity_id=specialist_id,
                changed_fields=changed,
            )
            row = one(await repo.specialist(q, organization_id, specialist_id))
        return self._profile(row, fields)

    def _profile(self, row: repo.SpecialistRow, fields: list[cf.FieldRow]) -> ProfileView:
        values, used = read_values(
            fields,
            row.custom_values,
            row.custom_sealed,
            sealer=self._sealer,
            aad=aad(row.organization_id, row.id, "custom"),
        )
        return ProfileView(row.id, values, used, row.version)


def _differing(current: object, changes: Mapping[str, Any]) -> list[str]:
    return [name for name, value in changes.items() if getattr(current, name, None) != value]
