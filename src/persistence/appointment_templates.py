"""Appointment templates: what a clinic offers. A `version` of None means any (`If-Match: *`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from carebase.errors import Conflict, FieldError, ValidationFailed
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

COLUMNS = """id, slug, title, description, duration_minutes, buffer_before_minutes,
       buffer_after_minutes, min_notice_minutes, max_advance_days, specialty_id, video,
       requires_confirmation, form_template_ids, active, version, created_at, updated_at"""
FIELDS = (
    "slug",
    "title",
    "description",
    "duration_minutes",
    "buffer_before_minutes",
    "buffer_after_minutes",
    "min_notice_minutes",
    "max_advance_days",
    "specialty_id",
    "video",
    "requires_confirmation",
    "form_template_ids",
    "active",
)


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: UUID
    slug: str
    title: str
    description: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    min_notice_minutes: int
    max_advance_days: int
    specialty_id: UUID | None
    video: bool
    requires_confirmation: bool
    form_template_ids: list[UUID]
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime


SELECT_TEMPLATE = f"""
SELECT {COLUMNS} FROM scheduling.appointment_templates
 WHERE organization_id = %s AND id = %s
"""  # noqa: S608 - constant columns
SELECT_BY_SLUG = f"""
SELECT {COLUMNS} FROM scheduling.appointment_templates
 WHERE organization_id = %s AND slug = %s
"""  # noqa: S608 - constant columns
INSERT_TEMPLATE = f"""
INSERT INTO scheduling.appointment_templates
       (organization_id, id, slug, title, description, duration_minutes, buffer_before_minutes,
        buffer_after_minutes, min_notice_minutes, max_advance_days, specialty_id, video,
        requires_confirmation, form_template_ids, active)
VALUES (%(org)s, %(id)s, %(slug)s, %(title)s, %(description)s, %(duration_minutes)s,
        %(buffer_before_minutes)s, %(buffer_after_minutes)s, %(min_notice_minutes)s,
        %(max_advance_days)s, %(specialty_id)s, %(video)s, %(requires_confirmation)s,
        %(form_template_ids)s, %(active)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
UPDATE_TEMPLATE = f"""
UPDATE scheduling.appointment_templates
   SET slug = %(slug)s, title = %(title)s, description = %(description)s,
       duration_minutes = %(duration_minutes)s, buffer_before_minutes = %(buffer_before_minutes)s,
       buffer_after_minutes = %(buffer_after_minutes)s, min_notice_minutes = %(min_notice_minutes)s,
       max_advance_days = %(max_advance_days)s, specialty_id = %(specialty_id)s, video = %(video)s,
       requires_confirmation = %(requires_confirmation)s,
       form_template_ids = %(form_template_ids)s, active = %(active)s,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
DELETE_TEMPLATE = """
DELETE FROM scheduling.appointment_templates
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
WHERE_LISTED = sql.SQL("""
 WHERE organization_id = %(org)s
   AND (%(active)s::boolean IS NULL OR active = %(active)s)
   AND (%(search)s::text IS NULL OR lower(title) LIKE '%%' || %(search)s || '%%')
""")
COUNT_TEMPLATES = sql.SQL("SELECT count(*) FROM scheduling.appointment_templates {where}").format(
    where=WHERE_LISTED
)
LIST_TEMPLATES = sql.SQL(
    "SELECT {columns} FROM scheduling.appointment_templates {where}"
    " ORDER BY lower(title), id LIMIT %(limit)s OFFSET %(offset)s"
).format(columns=sql.SQL(COLUMNS), where=WHERE_LISTED)


def _translated(exc: psycopg.errors.IntegrityError) -> Exception:
    constraint = exc.diag.constraint_name or ""
    if constraint == "appointment_templates_slug_key":
        return Conflict("A template with this slug exists in the organization.")
    if constraint == "appointment_templates_specialty_fkey":
        return ValidationFailed(
            [FieldError("/body/specialty_id", "No such specialty.", "not_found")]
        )
    return exc


async def template(q: Querier, organization_id: UUID, template_id: UUID) -> TemplateRow | None:
    return await q.fetch_one(SELECT_TEMPLATE, (organization_id, template_id), row=TemplateRow)


async def by_slug(q: Querier, organization_id: UUID, slug: str) -> TemplateRow | None:
    return await q.fetch_one(SELECT_BY_SLUG, (organization_id, slug), row=TemplateRow)


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


async def insert(
    q: Querier, organization_id: UUID, template_id: UUID, fields: dict[str, Any]
) -> TemplateRow:
    try:
        return one(
            await q.fetch_one(
                INSERT_TEMPLATE,
                {"org": organization_id, "id": template_id, **fields},
                row=TemplateRow,
            )
        )
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def update(
    q: Querier,
    organization_id: UUID,
    template_id: UUID,
    fields: dict[str, Any],
    *,
    version: int | None,
) -> TemplateRow | None:
    try:
        return await q.fetch_one(
            UPDATE_TEMPLATE,
            {"org": organization_id, "id": template_id, "version": version, **fields},
            row=TemplateRow,
        )
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def delete(
    q: Querier, organization_id: UUID, template_id: UUID, *, version: int | None
) -> int:
    return await q.execute(
        DELETE_TEMPLATE, {"org": organization_id, "id": template_id, "version": version}
    )
