"""Handlers for openapi/core/custom_fields.yaml, and the profile answer entities share."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.generated.models import core as api
from carebase.pages import PageRequest
from carebase.persistence.custom_fields import DefinitionRow, FieldRow
from carebase.principal import Principal
from carebase.services.custom_fields import CustomFieldService, FieldChange, ProfileView
from carebase.web.results import Reply, created, no_content, ok, resource

BASE = "/v1/custom-fields"


class CustomFieldHandlers:
    def __init__(self, *, custom_fields: CustomFieldService) -> None:
        self._fields = custom_fields

    async def list_custom_fields(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        entity_type: str | None,
        include_archived: bool,
    ) -> Reply:
        found = await self._fields.list_fields(
            principal,
            PageRequest(page, page_size),
            entity_type=entity_type,
            include_archived=include_archived,
        )
        return ok(
            api.CustomFieldPage.model_construct(
                data=[_field_model(row) for row in found.items], meta=found.meta
            )
        )

    async def create_custom_field(
        self, principal: Principal, *, body: api.CustomFieldCreate
    ) -> Reply:
        given = body.model_dump(mode="json")
        row = await self._fields.create(
            principal,
            entity_type=given["entity_type"],
            key=given["key"],
            label=given["label"],
            field_type=given["type"],
            required=given["required"],
            sensitive=given["sensitive"],
            min_value=given["min"],
            max_value=given["max"],
            options=given["options"],
            pattern=given["pattern"],
        )
        return created(_field_model(row), location=f"{BASE}/{row.id}", version=row.version)

    async def get_custom_field(self, principal: Principal, *, field_id: UUID) -> Reply:
        row = await self._fields.get(principal, field_id)
        return resource(_field_model(row), version=row.version)

    async def update_custom_field(
        self,
        principal: Principal,
        *,
        field_id: UUID,
        if_match: int | None,
        body: api.CustomFieldUpdate,
    ) -> Reply:
        given = body.model_dump(mode="json", exclude_unset=True)
        change = FieldChange(given=frozenset(given), **given)
        row = await self._fields.update(principal, field_id, change, version=if_match)
        return resource(_field_model(row), version=row.version)

    async def delete_custom_field(
        self, principal: Principal, field_id: UUID, if_match: int | None
    ) -> Reply:
        await self._fields.archive(principal, field_id, version=if_match)
        return no_content()

    async def list_custom_field_definitions(self, principal: Principal, *, field_id: UUID) -> Reply:
        found = await self._fields.definitions(principal, field_id)
        return ok(api.CustomFieldDefinitionList(data=[_definition_model(row) for row in found]))


def profile_reply(view: ProfileView) -> Reply:
    model = api.Profile.model_construct(
        entity_id=view.entity_id,
        values=view.values,
        fields=[
            api.FieldModel(field_id=field_id, key=key, definition=number)
            for field_id, key, number in view.fields
        ],
        version=view.version,
    )
    return resource(model, version=view.version)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _field_model(row: FieldRow) -> api.CustomField:
    return api.CustomField.model_validate(
        {
            "id": row.id,
            "entity_type": row.entity_type,
            "key": row.key,
            "label": row.label,
            "type": row.type,
            "required": row.required,
            "sensitive": row.sensitive,
            "min": _number(row.min_value),
            "max": _number(row.max_value),
            "options": row.options,
            "pattern": row.pattern,
            "definition": row.definition,
            "archived": row.archived_at is not None,
            "version": row.version,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


def _definition_model(row: DefinitionRow) -> api.CustomFieldDefinition:
    return api.CustomFieldDefinition.model_validate(
        {
            "definition": row.definition,
            "label": row.label,
            "type": row.type,
            "required": row.required,
            "sensitive": row.sensitive,
            "min": _number(row.min_value),
            "max": _number(row.max_value),
            "options": row.options,
            "pattern": row.pattern,
            "in_use": row.in_use,
            "created_at": row.created_at,
        }
    )
