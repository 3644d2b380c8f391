"""Appointment templates: what a clinic offers, and the rules a booking from it must respect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID, uuid4

from carebase.errors import FieldError, NotFound, PreconditionFailed, ValidationFailed
from carebase.pages import Page, PageRequest
from carebase.persistence import appointment_templates as repo
from carebase.persistence import forms
from carebase.persistence.db import Database, Querier, search_term
from carebase.principal import Principal, organization_of
from carebase.services.audit import record

NO_TEMPLATE = "No such appointment template."
CHANGED = "The template changed since it was read; read it again."
DEFAULTS: Mapping[str, Any] = {
    "description": "",
    "buffer_before_minutes": 0,
    "buffer_after_minutes": 0,
    "min_notice_minutes": 0,
    "max_advance_days": 90,
    "specialty_id": None,
    "video": False,
    "requires_confirmation": False,
    "form_template_ids": [],
    "active": True,
}


class AppointmentTemplateService:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def create(self, principal: Principal, given: Mapping[str, Any]) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        fields = {**DEFAULTS, **{k: v for k, v in given.items() if k in repo.FIELDS}}
        fields["title"] = str(fields["title"]).strip()
        async with self._db.transaction(principal) as q:
            await _check_forms(q, organization_id, given.get("form_template_ids") or [])
            created = await repo.insert(q, organization_id, uuid4(), fields)
            await record(
                q,
                principal,
                action="appointment_template.created",
                entity_type="appointment_template",
                entity_id=created.id,
                changed_fields=given.keys(),
            )
        return created

    async def get(self, principal: Principal, template_id: UUID) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        found = await repo.template(self._db.reader(principal), organization_id, template_id)
        if found is None:
            raise NotFound(NO_TEMPLATE)
        return found

    async def by_slug(self, principal: Principal, slug: str) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        found = await repo.by_slug(self._db.reader(principal), organization_id, slug)
        if found is None:
            raise NotFound(NO_TEMPLATE)
        return found

    async def list_templates(
        self, principal: Principal, page: PageRequest, *, active: bool | None, search: str | None
    ) -> Page[repo.TemplateRow]:
        organization_id = organization_of(principal, NO_TEMPLATE)
        rows, total = await repo.templates(
            self._db.reader(principal),
            organization_id,
            page,
            active=active,
            search=search_term(search),
        )
        return Page(rows, total, page)

    async def update(
        self,
        principal: Principal,
        template_id: UUID,
        changes: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal) as q:
            current = await repo.template(q, organization_id, template_id)
            if current is None:
                raise NotFound(NO_TEMPLATE)
            fields = {name: getattr(current, name) for name in repo.FIELDS}
            fields.update({k: v for k, v in changes.items() if k in repo.FIELDS})
            fields["title"] = str(fields["title"]).strip()
            await _check_forms(q, organization_id, changes.get("form_template_ids") or [])
            changed = await repo.update(q, organization_id, template_id, fields, version=version)
            if changed is None:
                raise PreconditionFailed(CHANGED)
            await record(
                q,
                principal,
                action="appointment_template.updated",
                entity_type="appointment_template",
                entity_id=template_id,
                changed_fields=[k for k in changes if getattr(current, k, None) != changes[k]],
            )
        return changed

    async def delete(self, principal: Principal, template_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal) as q:
            if await repo.template(q, organization_id, template_id) is None:
                raise NotFound(NO_TEMPLATE)
            if not await repo.delete(q, organization_id, template_id, version=version):
                raise PreconditionFailed(CHANGED)
            await record(
                q,
                principal,
                action="appointment_template.deleted",
                entity_type="appointment_template",
                entity_id=template_id,
            )


async def _check_forms(q: Querier, organization_id: UUID, template_ids: list[UUID]) -> None:
    if not template_ids:
        return
    existing = await forms.existing_among(q, organization_id, template_ids)
    missing = [
        FieldError(f"/body/form_template_ids/{index}", "No such form template.", "not_found")
        for index, template_id in enumerate(template_ids)
        if template_id not in existing
    ]
    if missing:
        raise ValidationFailed(missing)
