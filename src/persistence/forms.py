"""Form templates, their frozen versions, and forms.

A `version` of None means any (`If-Match: *`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from carebase.errors import Conflict, FieldError, ValidationFailed
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

# --- templates ----------------------------------------------------------------------------------

TEMPLATE_COLUMNS = """id, title, description, signer_roles, active, draft_items, draft_updated_at,
       latest_version, version, created_at, updated_at"""


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: UUID
    title: str
    description: str
    signer_roles: list[str]
    active: bool
    draft_items: list[dict[str, Any]] | None
    draft_updated_at: dt.datetime | None
    latest_version: int
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


SELECT_TEMPLATE = f"""
SELECT {TEMPLATE_COLUMNS} FROM forms.templates WHERE organization_id = %s AND id = %s
"""  # noqa: S608 - constant columns
LOCK_TEMPLATE = f"""
SELECT {TEMPLATE_COLUMNS} FROM forms.templates WHERE organization_id = %s AND id = %s FOR UPDATE
"""  # noqa: S608 - constant columns
INSERT_TEMPLATE = f"""
INSERT INTO forms.templates (organization_id, id, title, description, signer_roles, draft_items,
                             draft_updated_at)
VALUES (%(org)s, %(id)s, %(title)s, %(description)s, %(signer_roles)s, %(items)s, now())
RETURNING {TEMPLATE_COLUMNS}
"""  # noqa: S608 - constant columns
UPDATE_TEMPLATE = f"""
UPDATE forms.templates
   SET title = %(title)s, description = %(description)s, signer_roles = %(signer_roles)s,
       active = %(active)s, draft_items = %(items)s, draft_updated_at = now(),
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {TEMPLATE_COLUMNS}
"""  # noqa: S608 - constant columns
MARK_PUBLISHED = """
UPDATE forms.templates
   SET latest_version = %(number)s, draft_items = NULL, draft_updated_at = NULL,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
"""
DELETE_TEMPLATE = """
DELETE FROM forms.templates
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
WHERE_TEMPLATES = sql.SQL("""
 WHERE organization_id = %(org)s
   AND (%(active)s::boolean IS NULL OR active = %(active)s)
   AND (%(search)s::text IS NULL OR lower(title) LIKE '%%' || %(search)s || '%%')
""")
COUNT_TEMPLATES = sql.SQL("SELECT count(*) FROM forms.templates {where}").format(
    where=WHERE_TEMPLATES
)
LIST_TEMPLATES = sql.SQL(
    "SELECT {columns} FROM forms.templates {where}"
    " ORDER BY lower(title), id LIMIT %(limit)s OFFSET %(offset)s"
).format(columns=sql.SQL(TEMPLATE_COLUMNS), where=WHERE_TEMPLATES)
TEMPLATES_IN_USE = """
SELECT EXISTS (SELECT 1 FROM forms.forms WHERE organization_id = %s AND template_id = %s)
"""
PUBLISHED_AMONG = """
SELECT id FROM forms.templates
 WHERE organization_id = %s AND id = ANY(%s) AND latest_version > 0
"""
EXISTING_AMONG = "SELECT id FROM forms.templates WHERE organization_id = %s AND id = ANY(%s)"


async def template(q: Querier, organization_id: UUID, template_id: UUID) -> TemplateRow | None:
    return await q.fetch_one(SELECT_TEMPLATE, (organization_id, template_id), row=TemplateRow)


async def lock_template(q: Querier, organization_id: UUID, template_id: UUID) -> TemplateRow | None:
    """The template, locked until the transaction ends: publishing numbers versions in turn."""
    return await q.fetch_one(LOCK_TEMPLATE, (organization_id, template_id), row=TemplateRow)


async def templates(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    active: bool | None,
    search: str | None,
) -> tuple[list[TemplateRow], int]:
    params = {"org": organization_id, "active": active, "search": search}
    return await fetch_page(q, COUNT_TEMPLATES, LIST_TEMPLATES, params, page, row=TemplateRow)


async def insert_template(
    q: Querier,
    organization_id: UUID,
    template_id: UUID,
    *,
    title: str,
    description: str,
    signer_roles: list[str],
    items: list[dict[str, Any]],
) -> TemplateRow:
    params = {
        "org": organization_id,
        "id": template_id,
        "title": title,
        "description": description,
        "signer_roles": signer_roles,
        "items": Jsonb(items),
    }
    return one(await q.fetch_one(INSERT_TEMPLATE, params, row=TemplateRow))


async def update_template(
    q: Querier,
    organization_id: UUID,
    template_id: UUID,
    *,
    title: str,
    description: str,
    signer_roles: list[str],
    active: bool,
    items: list[dict[str, Any]],
    version: int | None,
) -> TemplateRow | None:
    params = {
        "org": organization_id,
        "id": template_id,
        "title": title,
        "description": description,
        "signer_roles": signer_roles,
        "active": active,
        "items": Jsonb(items),
        "version": version,
    }
    return await q.fetch_one(UPDATE_TEMPLATE, params, row=TemplateRow)


async def delete_template(
    q: Querier, organization_id: UUID, template_id: UUID, *, version: int | None
) -> int:
    return await q.execute(
        DELETE_TEMPLATE, {"org": organization_id, "id": template_id, "version": version}
    )


async def template_in_use(q: Querier, organization_id: UUID, template_id: UUID) -> bool:
    return bool(await q.fetch_value(TEMPLATES_IN_USE, (organization_id, template_id)))


async def published_among(q: Querier, organization_id: UUID, ids: Sequence[UUID]) -> set[UUID]:
    """Which of `ids` name a template with at least one published version."""
    rows = await q.fetch_all(PUBLISHED_AMONG, (organization_id, list(ids)), row=_Id)
    return {row.id for row in rows}


async def existing_among(q: Querier, organization_id: UUID, ids: Sequence[UUID]) -> set[UUID]:
    rows = await q.fetch_all(EXISTING_AMONG, (organization_id, list(ids)), row=_Id)
    return {row.id for row in rows}


@dataclass(frozen=True, slots=True)
class _Id:
    id: UUID


# --- versions -----------------------------------------------------------------------------------

VERSION_COLUMNS = """template_id, number, title, description, signer_roles, items, schema_sha256,
       published_at, published_by"""


@dataclass(frozen=True, slots=True)
class VersionRow:
    template_id: UUID
    number: int
    title: str
    description: str
    signer_roles: list[str]
    items: list[dict[str, Any]]
    schema_sha256: str
    published_at: dt.datetime
    published_by: UUID | None


@dataclass(frozen=True, slots=True)
class VersionSummaryRow:
    template_id: UUID
    number: int
    title: str
    item_count: int
    schema_sha256: str
    published_at: dt.datetime
    published_by: UUID | None


INSERT_VERSION = f"""
INSERT INTO forms.template_versions (organization_id, template_id, number, title, description,
                                     signer_roles, items, schema_sha256, published_by)
VALUES (%(org)s, %(template_id)s, %(number)s, %(title)s, %(description)s, %(signer_roles)s,
        %(items)s, %(schema_sha256)s, %(published_by)s)
RETURNING {VERSION_COLUMNS}
"""  # noqa: S608 - constant columns
SELECT_VERSION = f"""
SELECT {VERSION_COLUMNS} FROM forms.template_versions
 WHERE organization_id = %s AND template_id = %s AND number = %s
"""  # noqa: S608 - constant columns
LIST_VERSIONS = """
SELECT template_id, number, title, jsonb_array_length(items) AS item_count, schema_sha256,
       published_at, published_by
  FROM forms.template_versions
 WHERE organization_id = %s AND template_id = %s
 ORDER BY number DESC
"""


async def insert_version(
    q: Querier,
    organization_id: UUID,
    current: TemplateRow,
    *,
    number: int,
    items: list[dict[str, Any]],
    schema_sha256: str,
    published_by: UUID | None,
) -> VersionRow:
    params = {
        "org": organization_id,
        "template_id": current.id,
        "number": number,
        "title": current.title,
        "description": current.description,
        "signer_roles": current.signer_roles,
        "items": Jsonb(items),
        "schema_sha256": schema_sha256,
        "published_by": published_by,
    }
    created = one(await q.fetch_one(INSERT_VERSION, params, row=VersionRow))
    await q.execute(MARK_PUBLISHED, {"org": organization_id, "id": current.id, "number": number})
    return created


async def version_of(
    q: Querier, organization_id: UUID, template_id: UUID, number: int
) -> VersionRow | None:
    return await q.fetch_one(SELECT_VERSION, (organization_id, template_id, number), row=VersionRow)


async def versions(q: Querier, organization_id: UUID, template_id: UUID) -> list[VersionSummaryRow]:
    return await q.fetch_all(LIST_VERSIONS, (organization_id, template_id), row=VersionSummaryRow)


# --- forms --------------------------------------------------------------------------------------

FORM_COLUMNS = """f.id, f.organization_id, f.template_id, f.template_version, v.title, f.patient_id,
       f.appointment_id, f.status, f.answers, f.sealed_answers, f.prefill_sources,
       f.submitted_at, f.signer_user_id, f.signer_role, f.signature_meaning, f.signed_at,
       f.content_sha256, f.signature_sha256, f.amends_id, f.amend_reason, f.amended_by_id,
       f.version, f.created_at, f.updated_at"""
FORM_FROM = """forms.forms f
  JOIN forms.template_versions v
    ON v.organization_id = f.organization_id AND v.template_id = f.template_id
   AND v.number = f.template_version"""


@dataclass(frozen=True, slots=True)
class FormRow:
    id: UUID
    organization_id: UUID
    template_id: UUID
    template_version: int
    title: str
    patient_id: UUID
    appointment_id: UUID | None
    status: str
    answers: dict[str, Any]
    sealed_answers: bytes | None
    prefill_sources: dict[str, str]
    submitted_at: dt.datetime | None
    signer_user_id: UUID | None
    signer_role: str | None
    signature_meaning: str | None
    signed_at: dt.datetime | None
    content_sha256: str | None
    signature_sha256: str | None
    amends_id: UUID | None
    amend_reason: str | None
    amended_by_id: UUID | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class NewForm:
    id: UUID
    template_id: UUID
    template_version: int
    patient_id: UUID
    appointment_id: UUID | None
    status: str
    answers: dict[str, Any]
    sealed_answers: bytes | None
    prefill_sources: dict[str, str]
    amends_id: UUID | None = None
    amend_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Signature:
    signer_user_id: UUID | None
    signer_role: str
    meaning: str
    signed_at: dt.datetime
    content_sha256: str
    signature_sha256: str


SELECT_FORM = f"""
SELECT {FORM_COLUMNS} FROM {FORM_FROM} WHERE f.organization_id = %s AND f.id = %s
"""  # noqa: S608 - constant columns
LOCK_FORM = f"""
SELECT {FORM_COLUMNS} FROM {FORM_FROM}
 WHERE f.organization_id = %s AND f.id = %s FOR UPDATE OF f
"""  # noqa: S608 - constant columns
INSERT_FORM = f"""
WITH inserted AS (
    INSERT INTO forms.forms (organization_id, id, template_id, template_version, patient_id,
                             appointment_id, status, answers, sealed_answers, prefill_sources,
                             amends_id, amend_reason)
    VALUES (%(org)s, %(id)s, %(template_id)s, %(template_version)s, %(patient_id)s,
            %(appointment_id)s, %(status)s, %(answers)s, %(sealed_answers)s,
            %(prefill_sources)s, %(amends_id)s, %(amend_reason)s)
    ON CONFLICT DO NOTHING
    RETURNING *
)
SELECT {FORM_COLUMNS} FROM inserted f
  JOIN forms.template_versions v
    ON v.organization_id = f.organization_id AND v.template_id = f.template_id
   AND v.number = f.template_version
"""  # noqa: S608 - constant columns
UPDATE_ANSWERS = """
UPDATE forms.forms
   SET answers = %(answers)s, sealed_answers = %(sealed_answers)s, status = %(status)s,
       submitted_at = %(submitted_at)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
SIGN_FORM = """
UPDATE forms.forms
   SET status = 'signed', signer_user_id = %(signer_user_id)s, signer_role = %(signer_role)s,
       signature_meaning = %(meaning)s, signed_at = %(signed_at)s,
       content_sha256 = %(content_sha256)s, signature_sha256 = %(signature_sha256)s,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
MARK_AMENDED = """
UPDATE forms.forms SET amended_by_id = %s, version = version + 1, updated_at = now()
 WHERE organization_id = %s AND id = %s AND amended_by_id IS NULL
"""
DELETE_FORM = """
DELETE FROM forms.forms
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
SIGNED_OF_PATIENT = """
SELECT count(*) FROM forms.forms
 WHERE organization_id = %s AND patient_id = %s AND status = 'signed'
"""
WHERE_FORMS = sql.SQL("""
 WHERE f.organization_id = %(org)s
   AND (%(patient_id)s::uuid IS NULL OR f.patient_id = %(patient_id)s)
   AND (%(appointment_id)s::uuid IS NULL OR f.appointment_id = %(appointment_id)s)
   AND (%(template_id)s::uuid IS NULL OR f.template_id = %(template_id)s)
   AND (%(status)s::text IS NULL OR f.status = %(status)s)
""")
COUNT_FORMS = sql.SQL("SELECT count(*) FROM forms.forms f {where}").format(where=WHERE_FORMS)
LIST_FORMS = sql.SQL(
    "SELECT {columns} FROM {source} {where}"
    " ORDER BY f.created_at DESC, f.id LIMIT %(limit)s OFFSET %(offset)s"
).format(columns=sql.SQL(FORM_COLUMNS), source=sql.SQL(FORM_FROM), where=WHERE_FORMS)


def _translated(exc: psycopg.errors.IntegrityError) -> Exception:
    constraint = exc.diag.constraint_name or ""
    if constraint == "forms_patient_fkey":
        return ValidationFailed([FieldError("/body/patient_id", "No such patient.", "not_found")])
    if constraint == "forms_appointment_fkey":
        return ValidationFailed(
            [FieldError("/body/appointment_id", "No such appointment.", "not_found")]
        )
    if constraint == "forms_one_amendment":
        return Conflict("The form was amended already; amend the newest correction.")
    return exc


async def form(q: Querier, organization_id: UUID, form_id: UUID) -> FormRow | None:
    return await q.fetch_one(SELECT_FORM, (organization_id, form_id), row=FormRow)


async def lock_form(q: Querier, organization_id: UUID, form_id: UUID) -> FormRow | None:
    return await q.fetch_one(LOCK_FORM, (organization_id, form_id), row=FormRow)


async def insert_form(q: Querier, organization_id: UUID, new: NewForm) -> FormRow | None:
    """The new form, or None when the appointment already has one from this template."""
    params = {
        "org": organization_id,
        "id": new.id,
        "template_id": new.template_id,
        "template_version": new.template_version,
        "patient_id": new.patient_id,
        "appointment_id": new.appointment_id,
        "status": new.status,
        "answers": Jsonb(new.answers),
        "sealed_answers": new.sealed_answers,
        "prefill_sources": Jsonb(new.prefill_sources),
        "amends_id": new.amends_id,
        "amend_reason": new.amend_reason,
    }
    try:
        return await q.fetch_one(INSERT_FORM, params, row=FormRow)
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def update_answers(
    q: Querier,
    organization_id: UUID,
    form_id: UUID,
    *,
    answers: dict[str, Any],
    sealed_answers: bytes | None,
    status: str,
    submitted_at: dt.datetime | None,
    version: int | None,
) -> bool:
    params = {
        "org": organization_id,
        "id": form_id,
        "answers": Jsonb(answers),
        "sealed_answers": sealed_answers,
        "status": status,
        "submitted_at": submitted_at,
        "version": version,
    }
    return await q.execute(UPDATE_ANSWERS, params) == 1


async def sign(
    q: Querier, organization_id: UUID, form_id: UUID, signature: Signature, *, version: int | None
) -> bool:
    params = {
        "org": organization_id,
        "id": form_id,
        "signer_user_id": signature.signer_user_id,
        "signer_role": signature.signer_role,
        "meaning": signature.meaning,
        "signed_at": signature.signed_at,
        "content_sha256": signature.content_sha256,
        "signature_sha256": signature.signature_sha256,
        "version": version,
    }
    return await q.execute(SIGN_FORM, params) == 1


async def mark_amended(q: Querier, organization_id: UUID, form_id: UUID, by: UUID) -> bool:
    return await q.execute(MARK_AMENDED, (by, organization_id, form_id)) == 1


async def delete_form(
    q: Querier, organization_id: UUID, form_id: UUID, *, version: int | None
) -> bool:
    params = {"org": organization_id, "id": form_id, "version": version}
    return await q.execute(DELETE_FORM, params) == 1


async def signed_of_patient(q: Querier, organization_id: UUID, patient_id: UUID) -> int:
    return int(await q.fetch_value(SIGNED_OF_PATIENT, (organization_id, patient_id)))


async def forms(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    patient_id: UUID | None,
    appointment_id: UUID | None,
    template_id: UUID | None,
    status: str | None,
) -> tuple[list[FormRow], int]:
    params = {
        "org": organization_id,
        "patient_id": patient_id,
        "appointment_id": appointment_id,
        "template_id": template_id,
        "status": status,
    }
    return await fetch_page(q, COUNT_FORMS, LIST_FORMS, params, page, row=FormRow)


# --- key rotation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedRow:
    organization_id: UUID
    id: UUID
    sealed_answers: bytes


SELECT_SEALED_BATCH = """
SELECT organization_id, id, sealed_answers FROM forms.forms
 WHERE sealed_answers IS NOT NULL AND (organization_id, id) > (%s, %s)
 ORDER BY organization_id, id LIMIT %s
"""
RESEAL = "UPDATE forms.forms SET sealed_answers = %s WHERE organization_id = %s AND id = %s"


async def sealed_batch(q: Querier, after: tuple[UUID, UUID], limit: int) -> list[SealedRow]:
    return await q.fetch_all(SELECT_SEALED_BATCH, (*after, limit), row=SealedRow)


async def reseal(q: Querier, row: SealedRow, sealed: bytes) -> None:
    await q.execute(RESEAL, (sealed, row.organization_id, row.id))
