"""Patient records. Rows carry sealed columns as bytes; `services.patients` opens them.

Row-level security scopes every statement to the organization, and a patient to their own
record. A version of `None` means "any version" (`If-Match: *`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from carebase.errors import Conflict
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

TABLE = "patients.patients"
SEALED = ("birth_date", "national_id", "phone", "address", "notes", "custom")
"""The sealed columns, each `<name>_sealed`."""


@dataclass(frozen=True, slots=True)
class PatientRow:
    organization_id: UUID
    id: UUID
    user_id: UUID | None
    given_name: str
    family_name: str
    email: str | None
    status: str
    birth_date_sealed: bytes | None
    national_id_sealed: bytes | None
    phone_sealed: bytes | None
    address_sealed: bytes | None
    notes_sealed: bytes | None
    national_id_index: bytes | None
    phone_index: bytes | None
    custom_values: dict[str, Any]
    custom_sealed: bytes | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PatientRecordRow:
    """What a patient's record shows: no custom values, no blind indexes."""

    organization_id: UUID
    id: UUID
    user_id: UUID | None
    given_name: str
    family_name: str
    email: str | None
    status: str
    birth_date_sealed: bytes | None
    national_id_sealed: bytes | None
    phone_sealed: bytes | None
    address_sealed: bytes | None
    notes_sealed: bytes | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PatientSummaryRow:
    id: UUID
    user_id: UUID | None
    given_name: str
    family_name: str
    email: str | None
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PatientFields:
    """What a create or update writes, sealed values and blind indexes included."""

    given_name: str
    family_name: str
    email: str | None
    status: str
    birth_date_sealed: bytes | None
    national_id_sealed: bytes | None
    national_id_index: bytes | None
    phone_sealed: bytes | None
    phone_index: bytes | None
    address_sealed: bytes | None
    notes_sealed: bytes | None


SELECT_PATIENT = """
SELECT organization_id, id, user_id, given_name, family_name, email, status,
       birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
       national_id_index, phone_index, custom_values, custom_sealed, version,
       created_at, updated_at
  FROM patients.patients
 WHERE organization_id = %s AND id = %s
"""
SELECT_RECORD = """
SELECT organization_id, id, user_id, given_name, family_name, email, status,
       birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
       version, created_at, updated_at
  FROM patients.patients
 WHERE organization_id = %s AND id = %s
"""
INSERT_PATIENT = """
INSERT INTO patients.patients
       (organization_id, id, user_id, given_name, family_name, email, status,
        birth_date_sealed, national_id_sealed, national_id_index, phone_sealed, phone_index,
        address_sealed, notes_sealed)
VALUES (%(organization_id)s, %(id)s, %(user_id)s, %(given_name)s, %(family_name)s, %(email)s,
        %(status)s, %(birth_date_sealed)s, %(national_id_sealed)s, %(national_id_index)s,
        %(phone_sealed)s, %(phone_index)s, %(address_sealed)s, %(notes_sealed)s)
RETURNING organization_id, id, user_id, given_name, family_name, email, status,
          birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
          national_id_index, phone_index, custom_values, custom_sealed, version,
       created_at, updated_at
"""
# The version check is part of the statement: two writers with one ETag cannot both win.
UPDATE_PATIENT = """
UPDATE patients.patients
   SET given_name = %(given_name)s, family_name = %(family_name)s, email = %(email)s,
       status = %(status)s, birth_date_sealed = %(birth_date_sealed)s,
       national_id_sealed = %(national_id_sealed)s, national_id_index = %(national_id_index)s,
       phone_sealed = %(phone_sealed)s, phone_index = %(phone_index)s,
       address_sealed = %(address_sealed)s, notes_sealed = %(notes_sealed)s,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(organization_id)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING organization_id, id, user_id, given_name, family_name, email, status,
          birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
          national_id_index, phone_index, custom_values, custom_sealed, version,
       created_at, updated_at
"""
UPDATE_CUSTOM = """
UPDATE patients.patients
   SET custom_values = %(values)s, custom_sealed = %(sealed)s,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(organization_id)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING organization_id, id, user_id, given_name, family_name, email, status,
          birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
          national_id_index, phone_index, custom_values, custom_sealed, version,
       created_at, updated_at
"""
DELETE_PATIENT = """
DELETE FROM patients.patients
 WHERE organization_id = %(organization_id)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
# Only staff roles onboard; the function refuses anyone else (see the migration).
ENROLL_ACCOUNT = "SELECT user_id, created FROM patients.enroll_patient_account(%s, %s)"

COUNT_PATIENTS = """
SELECT count(*) FROM patients.patients
 WHERE organization_id = %(org)s
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(search)s::text IS NULL
        OR lower(given_name || ' ' || family_name) LIKE '%%' || %(search)s || '%%')
   AND (%(national_id_index)s::bytea IS NULL OR national_id_index = %(national_id_index)s)
   AND (%(phone_index)s::bytea IS NULL OR phone_index = %(phone_index)s)
"""
LIST_PATIENTS = """
SELECT id, user_id, given_name, family_name, email, status, version, created_at, updated_at
  FROM patients.patients
 WHERE organization_id = %(org)s
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(search)s::text IS NULL
        OR lower(given_name || ' ' || family_name) LIKE '%%' || %(search)s || '%%')
   AND (%(national_id_index)s::bytea IS NULL OR national_id_index = %(national_id_index)s)
   AND (%(phone_index)s::bytea IS NULL OR phone_index = %(phone_index)s)
 ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s
"""
ORDERS = {
    "name": "lower(family_name), lower(given_name), id",
    "-name": "lower(family_name) DESC, lower(given_name) DESC, id DESC",
    "created_at": "created_at, id",
    "-created_at": "created_at DESC, id DESC",
    "updated_at": "updated_at, id",
    "-updated_at": "updated_at DESC, id DESC",
}
SORTS = frozenset(ORDERS)

# Only rows holding a sealed value: a re-seal pages through those, not through every patient
# (a clinic's imported list may have none, and each row read costs Python work).
SELECT_SEALED_BATCH = """
SELECT organization_id, id, user_id, given_name, family_name, email, status,
       birth_date_sealed, national_id_sealed, phone_sealed, address_sealed, notes_sealed,
       national_id_index, phone_index, custom_values, custom_sealed, version,
       created_at, updated_at
  FROM patients.patients
 WHERE (organization_id, id) > (%s, %s)
   AND (birth_date_sealed IS NOT NULL OR national_id_sealed IS NOT NULL
        OR phone_sealed IS NOT NULL OR address_sealed IS NOT NULL
        OR notes_sealed IS NOT NULL OR custom_sealed IS NOT NULL)
 ORDER BY organization_id, id LIMIT %s
"""
RESEAL = """
UPDATE patients.patients
   SET birth_date_sealed = %(birth_date_sealed)s, national_id_sealed = %(national_id_sealed)s,
       phone_sealed = %(phone_sealed)s, address_sealed = %(address_sealed)s,
       notes_sealed = %(notes_sealed)s, custom_sealed = %(custom_sealed)s
 WHERE organization_id = %(organization_id)s AND id = %(id)s
"""


def _params(fields: PatientFields) -> dict[str, Any]:
    return {name: getattr(fields, name) for name in PatientFields.__slots__}


async def patient(q: Querier, organization_id: UUID, patient_id: UUID) -> PatientRow | None:
    return await q.fetch_one(SELECT_PATIENT, (organization_id, patient_id), row=PatientRow)


async def record(q: Querier, organization_id: UUID, patient_id: UUID) -> PatientRecordRow | None:
    return await q.fetch_one(SELECT_RECORD, (organization_id, patient_id), row=PatientRecordRow)


async def insert_patient(
    q: Querier,
    organization_id: UUID,
    patient_id: UUID,
    fields: PatientFields,
    *,
    user_id: UUID | None,
) -> PatientRow:
    params = {
        **_params(fields),
        "organization_id": organization_id,
        "id": patient_id,
        "user_id": user_id,
    }
    try:
        return one(await q.fetch_one(INSERT_PATIENT, params, row=PatientRow))
    except psycopg.errors.UniqueViolation as exc:
        raise _conflict(exc) from None


async def update_patient(
    q: Querier,
    organization_id: UUID,
    patient_id: UUID,
    fields: PatientFields,
    *,
    version: int | None,
) -> PatientRow | None:
    params = {
        **_params(fields),
        "organization_id": organization_id,
        "id": patient_id,
        "version": version,
    }
    try:
        return await q.fetch_one(UPDATE_PATIENT, params, row=PatientRow)
    except psycopg.errors.UniqueViolation as exc:
        raise _conflict(exc) from None


async def update_custom(
    q: Querier,
    organization_id: UUID,
    patient_id: UUID,
    *,
    values: dict[str, Any],
    sealed: bytes | None,
    version: int | None,
) -> PatientRow | None:
    params = {
        "organization_id": organization_id,
        "id": patient_id,
        "values": Jsonb(values),
        "sealed": sealed,
        "version": version,
    }
    return await q.fetch_one(UPDATE_CUSTOM, params, row=PatientRow)


async def delete_patient(
    q: Querier, organization_id: UUID, patient_id: UUID, *, version: int | None
) -> bool:
    params = {"organization_id": organization_id, "id": patient_id, "version": version}
    return await q.execute(DELETE_PATIENT, params) == 1


async def enroll_account(q: Querier, *, email: str, display_name: str) -> tuple[UUID, bool]:
    try:
        row = await q.fetch_one(ENROLL_ACCOUNT, (email, display_name), row=_Enrolled)
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            "This person is already a member of the organization in another role."
        ) from None
    found = one(row)
    return found.user_id, found.created


@dataclass(frozen=True, slots=True)
class _Enrolled:
    user_id: UUID
    created: bool


@dataclass(frozen=True, slots=True)
class PatientFilter:
    status: str | None = None
    search: str | None = None
    national_id_index: bytes | None = None
    phone_index: bytes | None = None
    sort: str = "name"


async def patients(
    q: Querier, organization_id: UUID, page: PageRequest, where: PatientFilter
) -> tuple[list[PatientSummaryRow], int]:
    params = {
        "org": organization_id,
        "status": where.status,
        "search": where.search,
        "national_id_index": where.national_id_index,
        "phone_index": where.phone_index,
    }
    listing = sql.SQL(LIST_PATIENTS).format(order=sql.SQL(ORDERS[where.sort]))
    return await fetch_page(q, COUNT_PATIENTS, listing, params, page, row=PatientSummaryRow)


async def sealed_batch(q: Querier, after: tuple[UUID, UUID], limit: int) -> list[PatientRow]:
    return await q.fetch_all(SELECT_SEALED_BATCH, (*after, limit), row=PatientRow)


async def reseal(q: Querier, row: PatientRow, sealed: dict[str, bytes | None]) -> None:
    params = {"organization_id": row.organization_id, "id": row.id, **sealed}
    await q.execute(RESEAL, params)


def _conflict(exc: psycopg.errors.UniqueViolation) -> Conflict:
    constraint = exc.diag.constraint_name or ""
    if constraint == "patients_national_id_key":
        return Conflict("A patient with this national id exists in the organization.")
    if constraint == "patients_user_key":
        return Conflict("This account already has a patient record in the organization.")
    return Conflict("The patient conflicts with an existing one.")
