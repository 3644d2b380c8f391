"""Reports and prescriptions: one table with a kind. A `version` of None means any."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import psycopg
from psycopg import sql

from carebase.errors import FieldError, ValidationFailed
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

COLUMNS = """organization_id, id, kind, appointment_id, patient_id, title, status, body_sealed,
       author_user_id, finalized_at, finalized_by, content_sha256, amends_id, amend_reason,
       amended_by_id, error_reason, version, created_at, updated_at"""
SUMMARY_COLUMNS = """id, appointment_id, patient_id, title, status, author_user_id, finalized_at,
       amends_id, amended_by_id, version, created_at, updated_at"""


@dataclass(frozen=True, slots=True)
class DocumentRow:
    organization_id: UUID
    id: UUID
    kind: str
    appointment_id: UUID
    patient_id: UUID
    title: str
    status: str
    body_sealed: bytes
    author_user_id: UUID | None
    finalized_at: dt.datetime | None
    finalized_by: UUID | None
    content_sha256: str | None
    amends_id: UUID | None
    amend_reason: str | None
    amended_by_id: UUID | None
    error_reason: str | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SummaryRow:
    id: UUID
    appointment_id: UUID
    patient_id: UUID
    title: str
    status: str
    author_user_id: UUID | None
    finalized_at: dt.datetime | None
    amends_id: UUID | None
    amended_by_id: UUID | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class NewDocument:
    id: UUID
    kind: str
    appointment_id: UUID
    patient_id: UUID
    title: str
    body_sealed: bytes
    author_user_id: UUID | None
    amends_id: UUID | None = None
    amend_reason: str | None = None


SELECT_DOCUMENT = f"""
SELECT {COLUMNS} FROM documents.documents WHERE organization_id = %s AND id = %s AND kind = %s
"""  # noqa: S608 - constant columns
LOCK_DOCUMENT = f"""
SELECT {COLUMNS} FROM documents.documents
 WHERE organization_id = %s AND id = %s AND kind = %s FOR UPDATE
"""  # noqa: S608 - constant columns
INSERT_DOCUMENT = f"""
INSERT INTO documents.documents (organization_id, id, kind, appointment_id, patient_id, title,
                                 body_sealed, author_user_id, amends_id, amend_reason)
VALUES (%(org)s, %(id)s, %(kind)s, %(appointment_id)s, %(patient_id)s, %(title)s,
        %(body_sealed)s, %(author_user_id)s, %(amends_id)s, %(amend_reason)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
UPDATE_DRAFT = f"""
UPDATE documents.documents
   SET title = %(title)s, body_sealed = %(body_sealed)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND status = 'draft'
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
FINALIZE = f"""
UPDATE documents.documents
   SET status = 'final', finalized_at = now(), finalized_by = %(by)s,
       content_sha256 = %(sha256)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND status = 'draft'
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
WITHDRAW = f"""
UPDATE documents.documents
   SET status = 'entered_in_error', error_reason = %(reason)s, version = version + 1,
       updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND status = 'final'
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
MARK_AMENDED = """
UPDATE documents.documents SET amended_by_id = %s, version = version + 1, updated_at = now()
 WHERE organization_id = %s AND id = %s AND amended_by_id IS NULL
"""
DELETE_DRAFT = """
DELETE FROM documents.documents
 WHERE organization_id = %(org)s AND id = %(id)s AND status = 'draft'
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
KEPT_OF_PATIENT = """
SELECT count(*) FROM documents.documents
 WHERE organization_id = %s AND patient_id = %s AND status <> 'draft'
"""
WHERE_LISTED = sql.SQL("""
 WHERE organization_id = %(org)s AND kind = %(kind)s
   AND (%(patient_id)s::uuid IS NULL OR patient_id = %(patient_id)s)
   AND (%(appointment_id)s::uuid IS NULL OR appointment_id = %(appointment_id)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
""")
COUNT_DOCUMENTS = sql.SQL("SELECT count(*) FROM documents.documents {where}").format(
    where=WHERE_LISTED
)
LIST_DOCUMENTS = sql.SQL(
    "SELECT {columns} FROM documents.documents {where}"
    " ORDER BY created_at DESC, id LIMIT %(limit)s OFFSET %(offset)s"
).format(columns=sql.SQL(SUMMARY_COLUMNS), where=WHERE_LISTED)


def _translated(exc: psycopg.errors.IntegrityError) -> Exception:
    constraint = exc.diag.constraint_name or ""
    if constraint == "documents_appointment_fkey":
        return ValidationFailed(
            [FieldError("/body/appointment_id", "No such appointment.", "not_found")]
        )
    if constraint == "documents_patient_fkey":
        return ValidationFailed([FieldError("/body/patient_id", "No such patient.", "not_found")])
    return exc


async def document(
    q: Querier, organization_id: UUID, document_id: UUID, kind: str
) -> DocumentRow | None:
    return await q.fetch_one(SELECT_DOCUMENT, (organization_id, document_id, kind), row=DocumentRow)


async def lock(
    q: Querier, organization_id: UUID, document_id: UUID, kind: str
) -> DocumentRow | None:
    return await q.fetch_one(LOCK_DOCUMENT, (organization_id, document_id, kind), row=DocumentRow)


async def insert(q: Querier, organization_id: UUID, new: NewDocument) -> DocumentRow:
    params = {
        "org": organization_id,
        "id": new.id,
        "kind": new.kind,
        "appointment_id": new.appointment_id,
        "patient_id": new.patient_id,
        "title": new.title,
        "body_sealed": new.body_sealed,
        "author_user_id": new.author_user_id,
        "amends_id": new.amends_id,
        "amend_reason": new.amend_reason,
    }
    try:
        return one(await q.fetch_one(INSERT_DOCUMENT, params, row=DocumentRow))
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def update_draft(
    q: Querier,
    organization_id: UUID,
    document_id: UUID,
    *,
    title: str,
    body_sealed: bytes,
    version: int | None,
) -> DocumentRow | None:
    params = {
        "org": organization_id,
        "id": document_id,
        "title": title,
        "body_sealed": body_sealed,
        "version": version,
    }
    return await q.fetch_one(UPDATE_DRAFT, params, row=DocumentRow)


async def finalize(
    q: Querier,
    organization_id: UUID,
    document_id: UUID,
    *,
    by: UUID | None,
    sha256: str,
    version: int | None,
) -> DocumentRow | None:
    params = {
        "org": organization_id,
        "id": document_id,
        "by": by,
        "sha256": sha256,
        "version": version,
    }
    return await q.fetch_one(FINALIZE, params, row=DocumentRow)


async def withdraw(
    q: Querier, organization_id: UUID, document_id: UUID, *, reason: str, version: int | None
) -> DocumentRow | None:
    params = {"org": organization_id, "id": document_id, "reason": reason, "version": version}
    return await q.fetch_one(WITHDRAW, params, row=DocumentRow)


async def mark_amended(q: Querier, organization_id: UUID, document_id: UUID, by: UUID) -> bool:
    return await q.execute(MARK_AMENDED, (by, organization_id, document_id)) == 1


async def delete_draft(
    q: Querier, organization_id: UUID, document_id: UUID, *, version: int | None
) -> bool:
    params = {"org": organization_id, "id": document_id, "version": version}
    return await q.execute(DELETE_DRAFT, params) == 1


async def kept_of_patient(q: Querier, organization_id: UUID, patient_id: UUID) -> int:
    return int(await q.fetch_value(KEPT_OF_PATIENT, (organization_id, patient_id)))


async def documents(
    q: Querier,
    organization_id: UUID,
    kind: str,
    page: PageRequest,
    *,
    patient_id: UUID | None,
    appointment_id: UUID | None,
    status: str | None,
) -> tuple[list[SummaryRow], int]:
    params = {
        "org": organization_id,
        "kind": kind,
        "patient_id": patient_id,
        "appointment_id": appointment_id,
        "status": status,
    }
    return await fetch_page(q, COUNT_DOCUMENTS, LIST_DOCUMENTS, params, page, row=SummaryRow)


# --- key rotation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedRow:
    organization_id: UUID
    id: UUID
    body_sealed: bytes


SELECT_SEALED_BATCH = """
SELECT organization_id, id, body_sealed FROM documents.documents
 WHERE (organization_id, id) > (%s, %s) ORDER BY organization_id, id LIMIT %s
"""
RESEAL = "UPDATE documents.documents SET body_sealed = %s WHERE organization_id = %s AND id = %s"


async def sealed_batch(q: Querier, after: tuple[UUID, UUID], limit: int) -> list[SealedRow]:
    return await q.fetch_all(SELECT_SEALED_BATCH, (*after, limit), row=SealedRow)


async def reseal(q: Querier, row: SealedRow, sealed: bytes) -> None:
    await q.execute(RESEAL, (sealed, row.organization_id, row.id))


# --- printing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrintContext:
    """Who and where a printed document names: the clinic, the patient, the author, the visit."""

    clinic: str
    given_name: str
    family_name: str
    author: str | None
    starts_at: dt.datetime | None
    time_zone: str | None


SELECT_PRINT_CONTEXT = """
SELECT o.name AS clinic, p.given_name, p.family_name,
       (SELECT s.display_name FROM specialists.specialists s
         WHERE s.organization_id = o.id AND s.user_id = %(author)s
         ORDER BY s.created_at LIMIT 1) AS author,
       a.starts_at, a.time_zone
  FROM platform.organizations o
  JOIN patients.patients p ON p.organization_id = o.id AND p.id = %(patient)s
  LEFT JOIN scheduling.appointments a ON a.organization_id = o.id AND a.id = %(appointment)s
 WHERE o.id = %(org)s
"""


async def print_context(
    q: Querier,
    organization_id: UUID,
    *,
    patient_id: UUID,
    author_user_id: UUID | None,
    appointment_id: UUID | None,
) -> PrintContext | None:
    params = {
        "org": organization_id,
        "patient": patient_id,
        "author": author_user_id,
        "appointment": appointment_id,
    }
    return await q.fetch_one(SELECT_PRINT_CONTEXT, params, row=PrintContext)
