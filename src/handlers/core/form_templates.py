"""Handlers for openapi/core/form_templates.yaml: templates, their drafts and frozen versions.

Items are read as the contract checked them (plain JSON): the service checks them as a whole.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.pages import PageRequest
from carebase.persistence.forms import TemplateRow, VersionRow, VersionSummaryRow
from carebase.principal import Principal
from carebase.services.forms import FormTemplateService
from carebase.web.results import Reply, created, no_content, ok, resource

TEMPLATES = "/v1/form-templates"


class FormTemplateHandlers:
    def __init__(self, *, templates: FormTemplateService) -> None:
        self._templates = templates

    async def list_form_templates(
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
        return ok({"data": [_template(row) for row in found.items], "meta": found.meta})

    async def create_form_template(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        row = await self._templates.create(principal, body)
        return created(_template(row), location=f"{TEMPLATES}/{row.id}", version=row.version)

    async def get_form_template(self, principal: Principal, *, form_template_id: UUID) -> Reply:
        row = await self._templates.get(principal, form_template_id)
        return resource(_template(row), version=row.version)

    async def update_form_template(
        self,
        principal: Principal,
        *,
        form_template_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        row = await self._templates.update(principal, form_template_id, body, version=if_match)
        return resource(_template(row), version=row.version)

    async def delete_form_template(
        self, principal: Principal, *, form_template_id: UUID, if_match: int | None
    ) -> Reply:
        await self._templates.delete(principal, form_template_id, version=if_match)
        return no_content()

    async def publish_form_template(
        self, principal: Principal, *, form_template_id: UUID, if_match: int | None
    ) -> Reply:
        row = await self._templates.publish(principal, form_template_id, version=if_match)
        return created(
            _version(row), location=f"{TEMPLATES}/{form_template_id}/versions/{row.number}"
        )

    async def list_form_template_versions(
        self, principal: Principal, *, form_template_id: UUID
    ) -> Reply:
        rows = await self._templates.versions(principal, form_template_id)
        return ok({"data": [_summary(row) for row in rows]})

    async def get_form_template_version(
        self, principal: Principal, *, form_template_id: UUID, number: int
    ) -> Reply:
        row = await self._templates.version(principal, form_template_id, number)
        return resource(_version(row), version=row.number)


def _template(row: TemplateRow) -> dict[str, Any]:
    draft = None
    if row.draft_items is not None:
        draft = {
            "items": [_item(item) for item in row.draft_items],
            "updated_at": row.draft_updated_at,
        }
    return {
        "id": row.id,
        "title": row.title,
        "description": row.description,
        "signer_roles": row.signer_roles,
        "active": row.active,
        "draft": draft,
        "latest_version": row.latest_version,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as stored (every key), without the keys left at their defaults' null."""
    return {key: value for key, value in item.items() if value is not None}


def _version(row: VersionRow) -> dict[str, Any]:
    return {
        "template_id": row.template_id,
        "number": row.number,
        "title": row.title,
        "description": row.description,
        "signer_roles": row.signer_roles,
        "items": [_item(item) for item in row.items],
        "schema_sha256": row.schema_sha256,
        "published_at": row.published_at,
        "published_by": row.published_by,
    }


def _summary(row: VersionSummaryRow) -> dict[str, Any]:
    return {
        "template_id": row.template_id,
        "number": row.number,
        "title": row.title,
        "item_count": row.item_count,
        "schema_sha256": row.schema_sha256,
        "published_at": row.published_at,
        "published_by": row.published_by,
    }
