"""Specialties, and the specialists (members with a professional profile) who hold them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from carebase.errors import Conflict, FieldError, ValidationFailed
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page

TABLE = "specialists.specialists"

# --- specialties -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecialtyRow:
    id: UUID
    name: str
    description: str
    version: int
    created_at: datetime
    updated_at: datetime


SELECT_SPECIALTY = """
SELECT id, name, description, version, created_at, updated_at FROM specialists.specialties
 WHERE organization_id = %s AND id = %s
"""
INSERT_SPECIALTY = """
INSERT INTO specialists.specialties (organization_id, id, name, description)
VALUES (%s, %s, %s, %s)
RETURNING id, name, description, version, created_at, updated_at
"""
UPDATE_SPECIALTY = """
UPDATE specialists.specialties
   SET name = %(name)s, description = %(description)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING id, name, description, version, created_at, updated_at
"""
DELETE_SPECIALTY = """
DELETE FROM specialists.specialties
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
COUNT_SPECIALTIES = """
SELECT count(*) FROM specialists.specialties
 WHERE organization_id = %(org)s
   AND (%(search)s::text IS NULL OR lower(name) LIKE '%%' || %(search)s || '%%')
"""
LIST_SPECIALTIES = """
SELECT id, name, description, version, created_at, updated_at FROM specialists.specialties
 WHERE organization_id = %(org)s
   AND (%(search)s::text IS NULL OR lower(name) LIKE '%%' || %(search)s || '%%')
 ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s
"""
SPECIALTY_ORDERS = {
    "name": "lower(name), id",
    "-name": "lower(name) DESC, id DESC",
    "created_at": "created_at, id",
    "-created_at": "created_at DESC, id DESC",
}


def _specialty_conflict() -> Conflict:
    return Conflict("A specialty with this name exists in the organization.")


async def specialty(q: Querier, organization_id: UUID, specialty_id: UUID) -> SpecialtyRow | None:
    return await q.fetch_one(SELECT_SPECIALTY, (organization_id, specialty_id), row=SpecialtyRow)


async def insert_specialty(
    q: Querier, organization_id: UUID, specialty_id: UUID, *, name: str, description: str
) -> SpecialtyRow | None:
    try:
        return await q.fetch_one(
            INSERT_SPECIALTY, (organization_id, specialty_id, name, description), row=SpecialtyRow
        )
    except psycopg.errors.UniqueViolation:
        raise _specialty_conflict() from None


async def update_specialty(
    q: Querier,
    organization_id: UUID,
    specialty_id: UUID,
    *,
    name: str,
    description: str,
    version: int | None,
) -> SpecialtyRow | None:
    params = {
        "org": organization_id,
        "id": specialty_id,
        "name": name,
        "description": description,
        "version": version,
    }
    try:
        return await q.fetch_one(UPDATE_SPECIALTY, params, row=SpecialtyRow)
    except psycopg.errors.UniqueViolation:
        raise _specialty_conflict() from None


async def delete_specialty(
    q: Querier, organization_id: UUID, specialty_id: UUID, *, version: int | None
) -> bool:
    params = {"org": organization_id, "id": specialty_id, "version": version}
    try:
        return await q.execute(DELETE_SPECIALTY, params) == 1
    except (psycopg.errors.ForeignKeyViolation, psycopg.errors.RestrictViolation):
        raise Conflict("Specialists hold this specialty; remove it from them first.") from None


async def specialties(
    q: Querier, organization_id: UUID, page: PageRequest, *, search: str | None, sort: str
) -> tuple[list[SpecialtyRow], int]:
    listing = sql.SQL(LIST_SPECIALTIES).format(order=sql.SQL(SPECIALTY_ORDERS[sort]))
    params = {"org": organization_id, "search": search}
    return await fetch_page(q, COUNT_SPECIALTIES, listing, params, page, row=SpecialtyRow)


# --- specialists -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecialistRow:
    organization_id: UUID
    id: UUID
    user_id: UUID
    display_name: str
    title: str
    bio: str
    accepting_patients: bool
    specialty_ids: list[UUID]
    custom_values: dict[str, Any]
    custom_sealed: bytes | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SpecialistFields:
    display_name: str
    title: str
    bio: str
    accepting_patients: bool


SELECT_SPECIALIST = """
SELECT s.organization_id, s.id, s.user_id, s.display_name, s.title, s.bio, s.accepting_patients,
       coalesce((SELECT array_agg(ss.specialty_id ORDER BY ss.specialty_id)
                   FROM specialists.specialist_specialties ss
                  WHERE ss.organization_id = s.organization_id AND ss.specialist_id = s.id),
                ARRAY[]::uuid[]) AS specialty_ids,
       s.custom_values, s.custom_sealed, s.version, s.created_at, s.updated_at
  FROM specialists.specialists s
 WHERE s.organization_id = %s AND s.id = %s
"""
INSERT_SPECIALIST = """
INSERT INTO specialists.specialists
       (organization_id, id, user_id, display_name, title, bio, accepting_patients)
VALUES (%(org)s, %(id)s, %(user_id)s, %(display_name)s, %(title)s, %(bio)s,
        %(accepting_patients)s)
"""
UPDATE_SPECIALIST = """
UPDATE specialists.specialists
   SET display_name = %(display_name)s, title = %(title)s, bio = %(bio)s,
       accepting_patients = %(accepting_patients)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
UPDATE_SPECIALIST_CUSTOM = """
UPDATE specialists.specialists
   SET custom_values = %(values)s, custom_sealed = %(sealed)s, version = version + 1,
       updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
DELETE_SPECIALIST = """
DELETE FROM specialists.specialists
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
CLEAR_SPECIALTIES = """
DELETE FROM specialists.specialist_specialties WHERE organization_id = %s AND specialist_id = %s
"""
ADD_SPECIALTIES = """
INSERT INTO specialists.specialist_specialties (organization_id, specialist_id, specialty_id)
SELECT %s, %s, unnest(%s::uuid[])
"""
COUNT_SPECIALISTS = """
SELECT count(*) FROM specialists.specialists s
 WHERE s.organization_id = %(org)s
   AND (%(search)s::text IS NULL OR lower(s.display_name) LIKE '%%' || %(search)s || '%%')
   AND (%(accepting)s::boolean IS NULL OR s.accepting_patients = %(accepting)s)
   AND (%(specialty)s::uuid IS NULL OR EXISTS (
        SELECT 1 FROM specialists.specialist_specialties f
         WHERE f.organization_id = s.organization_id AND f.specialist_id = s.id
           AND f.specialty_id = %(specialty)s))
"""
LIST_SPECIALISTS = """
SELECT s.organization_id, s.id, s.user_id, s.display_name, s.title, s.bio, s.accepting_patients,
       coalesce((SELECT array_agg(ss.specialty_id ORDER BY ss.specialty_id)
                   FROM specialists.specialist_specialties ss
                  WHERE ss.organization_id = s.organization_id AND ss.specialist_id = s.id),
                ARRAY[]::uuid[]) AS specialty_ids,
       s.custom_values, s.custom_sealed, s.version, s.created_at, s.updated_at
  FROM specialists.specialists s

 WHERE s.organization_id = %(org)s
   AND (%(search)s::text IS NULL OR lower(s.display_name) LIKE '%%' || %(search)s || '%%')
   AND (%(accepting)s::boolean IS NULL OR s.accepting_patients = %(accepting)s)
   AND (%(specialty)s::uuid IS NULL OR EXISTS (
        SELECT 1 FROM specialists.specialist_specialties f
         WHERE f.organization_id = s.organization_id AND f.specialist_id = s.id
           AND f.specialty_id = %(specialty)s))
 ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s
"""
SPECIALIST_ORDERS = {
    "name": "lower(s.display_name), s.id",
    "-name": "lower(s.display_name) DESC, s.id DESC",
    "created_at": "s.created_at, s.id",
    "-created_at": "s.created_at DESC, s.id DESC",
}
SELECT_SEALED_BATCH = """
SELECT s.organization_id, s.id, s.user_id, s.display_name, s.title, s.bio, s.accepting_patients,
       coalesce((SELECT array_agg(ss.specialty_id ORDER BY ss.specialty_id)
                   FROM specialists.specialist_specialties ss
                  WHERE ss.organization_id = s.organization_id AND ss.specialist_id = s.id),
                ARRAY[]::uuid[]) AS specialty_ids,
       s.custom_values, s.custom_sealed, s.version, s.created_at, s.updated_at
  FROM specialists.specialists s
 WHERE (s.organization_id, s.id) > (%s, %s) ORDER BY s.organization_id, s.id LIMIT %s
"""
RESEAL = """
UPDATE specialists.specialists SET custom_sealed = %(custom_sealed)s
 WHERE organization_id = %(organization_id)s AND id = %(id)s
"""


async def specialist(
    q: Querier, organization_id: UUID, specialist_id: UUID
) -> SpecialistRow | None:
    return await q.fetch_one(SELECT_SPECIALIST, (organization_id, specialist_id), row=SpecialistRow)


async def insert_specialist(
    q: Querier, organization_id: UUID, specialist_id: UUID, user_id: UUID, fields: SpecialistFields
) -> None:
    params = {"org": organization_id, "id": specialist_id, "user_id": user_id, **_fields(fields)}
    try:
        await q.execute(INSERT_SPECIALIST, params)
    except psycopg.errors.UniqueViolation:
        raise Conflict("This member already has a specialist profile.") from None
    except psycopg.errors.ForeignKeyViolation:
        raise ValidationFailed(
            [FieldError("/body/user_id", "Not a member of this organization.", "member")]
        ) from None


async def update_specialist(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    fields: SpecialistFields,
    *,
    version: int | None,
) -> bool:
    params = {"org": organization_id, "id": specialist_id, "version": version, **_fields(fields)}
    return await q.execute(UPDATE_SPECIALIST, params) == 1


async def update_custom(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    *,
    values: dict[str, Any],
    sealed: bytes | None,
    version: int | None,
) -> bool:
    params = {
        "org": organization_id,
        "id": specialist_id,
        "values": Jsonb(values),
        "sealed": sealed,
        "version": version,
    }
    return await q.execute(UPDATE_SPECIALIST_CUSTOM, params) == 1


async def delete_specialist(
    q: Querier, organization_id: UUID, specialist_id: UUID, *, version: int | None
) -> bool:
    params = {"org": organization_id, "id": specialist_id, "version": version}
    try:
        return await q.execute(DELETE_SPECIALIST, params) == 1
    except (psycopg.errors.ForeignKeyViolation, psycopg.errors.RestrictViolation):
        # Appointments keep their specialist (scheduling.appointments … ON DELETE RESTRICT).
        raise Conflict(
            "The specialist has appointments, which keep their history; set"
            " accepting_patients to false instead of deleting the profile."
        ) from None


async def set_specialties(
    q: Querier, organization_id: UUID, specialist_id: UUID, specialty_ids: Sequence[UUID]
) -> None:
    await q.execute(CLEAR_SPECIALTIES, (organization_id, specialist_id))
    if not specialty_ids:
        return
    try:
        await q.execute(ADD_SPECIALTIES, (organization_id, specialist_id, list(specialty_ids)))
    except psycopg.errors.ForeignKeyViolation:
        raise ValidationFailed(
            [FieldError("/body/specialty_ids", "No such specialty in this organization.", "exists")]
        ) from None


async def specialists(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    search: str | None,
    specialty_id: UUID | None,
    accepting_patients: bool | None,
    sort: str,
) -> tuple[list[SpecialistRow], int]:
    listing = sql.SQL(LIST_SPECIALISTS).format(order=sql.SQL(SPECIALIST_ORDERS[sort]))
    params = {
        "org": organization_id,
        "search": search,
        "specialty": specialty_id,
        "accepting": accepting_patients,
    }
    return await fetch_page(q, COUNT_SPECIALISTS, listing, params, page, row=SpecialistRow)


async def sealed_batch(q: Querier, after: tuple[UUID, UUID], limit: int) -> list[SpecialistRow]:
    return await q.fetch_all(SELECT_SEALED_BATCH, (*after, limit), row=SpecialistRow)


async def reseal(q: Querier, row: SpecialistRow, custom_sealed: bytes | None) -> None:
    params = {"organization_id": row.organization_id, "id": row.id, "custom_sealed": custom_sealed}
    await q.execute(RESEAL, params)


def _fields(fields: SpecialistFields) -> dict[str, Any]:
    return {
        "display_name": fields.display_name,
        "title": fields.title,
        "bio": fields.bio,
        "accepting_patients": fields.accepting_patients,
    }
