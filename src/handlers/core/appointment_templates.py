"""Handlers for openapi/core/appointment_templates.yaml."""

from __future__ import annotations

from uuid import UUID

from carebase.generated.models import core as api
from carebase.pages import PageRequest
from carebase.persistence.appointment_templates import TemplateRow
from carebase.principal import Principal
from carebase.services.appointment_templates import AppointmentTemplateService
from carebase.web.results import Reply, created, no_content, ok, resource

BASE = "/v1/appointment-templates"


class AppointmentTemplateHandlers:
    def __init__(self, *, templates: AppointmentTemplateService) -> None:
        self._templates = templates

    async def list_appointment_templates(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        q: str | None,
        active: bool | None,
    ) -> Reply:
        found = await self._templates.list_templates(
            principal, PageRequest(page, page_size), active=active, search=q
        )
        return ok(
            api.AppointmentTemplatePage.model_construct(
                data=[_template(row) for row in found.items], meta=found.meta
            )
        )

    async def create_appointment_template(
        self, principal: Principal, *, body: api.AppointmentTemplateCreate
    ) -> Reply:
        row = await self._templates.create(principal, body.model_dump(exclude_unset=True))
        return created(_template(row), location=f"{BASE}/{row.id}", version=row.version)

    async def get_appointment_template_by_slug(
        self, principal: Principal, *, template_slug: str
    ) -> Reply:
        row = await self._templates.by_slug(principal, template_slug)
        return resource(_template(row), version=row.version)

    async def get_appointment_template(self, principal: Principal, *, template_id: UUID) -> Reply:
        row = await self._templates.get(principal, template_id)
        return resource(_template(row), version=row.version)

    async def update_appointment_template(
        self,
        principal: Principal,
        *,
        template_id: UUID,
        if_match: int | None,
        body: api.AppointmentTemplateUpdate,
    ) -> Reply:
        row = await self._templates.update(
            principal, template_id, body.model_dump(exclude_unset=True), version=if_match
        )
        return resource(_template(row), version=row.version)

    async def delete_appointment_template(
        self, principal: Principal, *, template_id: UUID, if_match: int | None
    ) -> Reply:
        await self._templates.delete(principal, template_id, version=if_match)
        return no_content()


def _template(row: TemplateRow) -> api.AppointmentTemplate:
    return api.AppointmentTemplate.model_construct(
        id=row.id,
        slug=row.slug,
        title=row.title,
        description=row.description,
        duration_minutes=row.duration_minutes,
        buffer_before_minutes=row.buffer_before_minutes,
        buffer_after_minutes=row.buffer_after_minutes,
        min_notice_minutes=row.min_notice_minutes,
        max_advance_days=row.max_advance_days,
        specialty_id=row.specialty_id,
        video=row.video,
        requires_confirmation=row.requires_confirmation,
        form_template_ids=row.form_template_ids,
        active=row.active,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
