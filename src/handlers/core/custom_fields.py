"""Handlers for openapi/core/custom_fields.yaml, and the profile answer entities share."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models import core as api
from carebase.handlers.context import expected_version, not_modified, page_request, parse, principal
from carebase.persistence.custom_fields import DefinitionRow, FieldRow
from carebase.services.custom_fields import CustomFieldService, FieldChange, ProfileView
from carebase.web.responses import json_response, no_content, resource_response
from carebase.web.responses import not_modified as not_modified_response

BASE = "/v1/custom-fields"


class CustomFieldHandlers:
    def __init__(self, *, custom_fields: CustomFieldService) -> None:
        self._fields = custom_fields

    async def list_custom_fields(
        self,
        *,
        page: int | None = None,
        page_size: int | None = None,
        entity_type: str | None = None,
        include_archived: bool | None = None,
    ) -> ConnexionResponse:
        found = await self._fields.list_fields(
            principal(),
            page_request(page, page_size),
            entity_type=entity_type,
            include_archived=bool(include_archived),
        )
        return json_response(
            api.CustomFieldPage(
                data=[_field_model(row) for row in found.items], meta=api.PageMeta(**found.meta)
            )
        )

    async def create_custom_field(self, body: dict[str, Any]) -> ConnexionResponse:
        given = parse(api.CustomFieldCreate, body).model_dump(mode="json")
        created = await self._fields.create(
            principal(),
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
        return _field(created, status=201, location=f"{BASE}/{created.id}")

    async def get_custom_field(self, field_id: str) -> ConnexionResponse:
        found = await self._fields.get(principal(), UUID(field_id))
        if not_modified(found.version):
            return not_modified_response(found.version)
        return _field(found)

    async def update_custom_field(self, field_id: str, body: dict[str, Any]) -> ConnexionResponse:
        given = parse(api.CustomFieldUpdate, body).model_dump(mode="json", exclude_unset=True)
        change = FieldChange(given=frozenset(given), **given)
        changed = await self._fields.update(
            principal(), UUID(field_id), change, version=expected_version()
        )
        return _field(changed)

    async def delete_custom_field(self, field_id: str) -> ConnexionResponse:
        await self._fields.archive(principal(), UUID(field_id), version=expected_version())
        return no_content()

    async def list_custom_field_definitions(self, field_id: str) -> ConnexionResponse:
        found = await self._fields.definitions(principal(), UUID(field_id))
        return json_response(
            api.CustomFieldDefinitionList(data=[_definition_model(row) for row in found])
        )


def profile_response(view: ProfileView) -> ConnexionResponse:
    model = api.Profile.model_construct(
        entity_id=view.entity_id,
        values=view.values,
        fields=[
            api.FieldModel(field_id=field_id, key=key, definition=number)
            for field_id, key, number in view.fields
        ],
        version=view.version,
    )
    return resource_response(model, version=view.version)


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


def _field(row: FieldRow, *, status: int = 200, location: str | None = None) -> ConnexionResponse:
    return resource_response(
        _field_model(row), version=row.version, status=status, location=location
    )
