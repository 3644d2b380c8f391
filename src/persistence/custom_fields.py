"""The custom field library: fields, and the numbered definitions each has had."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from carebase.errors import Conflict
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one


@dataclass(frozen=True, slots=True)
class FieldRow:
    """A field at its current definition."""

    id: UUID
    entity_type: str
    key: str
    label: str
    type: str
    required: bool
    sensitive: bool
    min_value: Decimal | None
    max_value: Decimal | None
    options: list[str] | None
    pattern: str | None
    definition: int
    in_use: bool
    archived_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DefinitionRow:
    field_id: UUID
    definition: int
    label: str
    type: str
    required: bool
    sensitive: bool
    min_value: Decimal | None
    max_value: Decimal | None
    options: list[str] | None
    pattern: str | None
    in_use: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Definition:
    """What a create or an edit writes as a definition."""

    label: str
    type: str
    required: bool
    sensitive: bool
    min_value: Decimal | None
    max_value: Decimal | None
    options: list[str] | None
    pattern: str | None


SELECT_FIELD = """
SELECT f.id, f.entity_type, f.key, d.label, d.type, d.required, d.sensitive, d.min_value,
       d.max_value, d.options, d.pattern, f.current_definition AS definition, d.in_use,
       f.archived_at, f.version, f.created_at, f.updated_at
  FROM custom_fields.fields f
  JOIN custom_fields.definitions d
    ON d.organization_id = f.organization_id AND d.field_id = f.id
   AND d.definition = f.current_definition
 WHERE f.organization_id = %s AND f.id = %s
"""
SELECT_ENTITY_FIELDS = """
SELECT f.id, f.entity_type, f.key, d.label, d.type, d.required, d.sensitive, d.min_value,
       d.max_value, d.options, d.pattern, f.current_definition AS definition, d.in_use,
       f.archived_at, f.version, f.created_at, f.updated_at
  FROM custom_fields.fields f
  JOIN custom_fields.definitions d
    ON d.organization_id = f.organization_id AND d.field_id = f.id
   AND d.definition = f.current_definition
 WHERE f.organization_id = %s AND f.entity_type = %s ORDER BY f.key
"""
COUNT_FIELDS = """
SELECT count(*) FROM custom_fields.fields f
 WHERE f.organization_id = %(org)s
   AND (%(entity_type)s::text IS NULL OR f.entity_type = %(entity_type)s)
   AND (%(include_archived)s OR f.archived_at IS NULL)
"""
LIST_FIELDS = """
SELECT f.id, f.entity_type, f.key, d.label, d.type, d.required, d.sensitive, d.min_value,
       d.max_value, d.options, d.pattern, f.current_definition AS definition, d.in_use,
       f.archived_at, f.version, f.created_at, f.updated_at
  FROM custom_fields.fields f
  JOIN custom_fields.definitions d
    ON d.organization_id = f.organization_id AND d.field_id = f.id
   AND d.definition = f.current_definition

 WHERE f.organization_id = %(org)s
   AND (%(entity_type)s::text IS NULL OR f.entity_type = %(entity_type)s)
   AND (%(include_archived)s OR f.archived_at IS NULL)
 ORDER BY f.entity_type, f.key LIMIT %(limit)s OFFSET %(offset)s
"""
INSERT_FIELD = """
INSERT INTO custom_fields.fields (organization_id, id, entity_type, key)
VALUES (%s, %s, %s, %s)
"""
INSERT_DEFINITION = """
INSERT INTO custom_fields.definitions
       (organization_id, field_id, definition, label, type, required, sensitive, min_value,
        max_value, options, pattern)
VALUES (%(org)s, %(field_id)s, %(definition)s, %(label)s, %(type)s, %(required)s,
        %(sensitive)s, %(min_value)s, %(max_value)s, %(options)s, %(pattern)s)
"""
DELETE_DEFINITION = """
DELETE FROM custom_fields.definitions
 WHERE organization_id = %s AND field_id = %s AND definition = %s AND NOT in_use
"""
BUMP_FIELD = """
UPDATE custom_fields.fields
   SET current_definition = %(definition)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND archived_at IS NULL
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
SET_DEFINITION = """
UPDATE custom_fields.fields SET current_definition = %s WHERE organization_id = %s AND id = %s
"""
ARCHIVE_FIELD = """
UPDATE custom_fields.fields
   SET archived_at = now(), version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND archived_at IS NULL
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
LIST_DEFINITIONS = """
SELECT field_id, definition, label, type, required, sensitive, min_value, max_value, options,
       pattern, in_use, created_at
  FROM custom_fields.definitions
 WHERE organization_id = %s AND field_id = %s
 ORDER BY definition DESC
"""
# Saving values freezes the definitions they were checked against.
MARK_IN_USE = """
UPDATE custom_fields.definitions SET in_use = true
 WHERE organization_id = %s AND NOT in_use
   AND (field_id, definition) IN (SELECT * FROM unnest(%s::uuid[], %s::integer[]))
"""


def _definition_params(
    organization_id: UUID, field_id: UUID, number: int, definition: Definition
) -> dict[str, Any]:
    return {
        "org": organization_id,
        "field_id": field_id,
        "definition": number,
        "label": definition.label,
        "type": definition.type,
        "required": definition.required,
        "sensitive": definition.sensitive,
        "min_value": definition.min_value,
        "max_value": definition.max_value,
        "options": definition.options,
        "pattern": definition.pattern,
    }


async def insert_field(
    q: Querier,
    organization_id: UUID,
    field_id: UUID,
    *,
    entity_type: str,
    key: str,
    definition: Definition,
) -> FieldRow:
    try:
        await q.execute(INSERT_FIELD, (organization_id, field_id, entity_type, key))
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"A {entity_type} field with the key {key!r} exists.") from None
    await q.execute(INSERT_DEFINITION, _definition_params(organization_id, field_id, 1, definition))
    return one(await field(q, organization_id, field_id))


async def field(q: Querier, organization_id: UUID, field_id: UUID) -> FieldRow | None:
    return await q.fetch_one(SELECT_FIELD, (organization_id, field_id), row=FieldRow)


async def entity_fields(q: Querier, organization_id: UUID, entity_type: str) -> list[FieldRow]:
    """Every field of the entity type, archived ones included (stored values may name them)."""
    return await q.fetch_all(SELECT_ENTITY_FIELDS, (organization_id, entity_type), row=FieldRow)


async def fields(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    entity_type: str | None,
    include_archived: bool,
) -> tuple[list[FieldRow], int]:
    params = {
        "org": organization_id,
        "entity_type": entity_type,
        "include_archived": include_archived,
    }
    return await fetch_page(q, COUNT_FIELDS, LIST_FIELDS, params, page, row=FieldRow)


async def redefine(
    q: Querier,
    organization_id: UUID,
    current: FieldRow,
    definition: Definition,
    *,
    version: int | None,
) -> bool:
    """Change in place while no value uses the definition, otherwise add the next one.

    False when the field changed since `version` (or was archived meanwhile).
    """
    number = current.definition + 1 if current.in_use else current.definition
    params = {"org": organization_id, "id": current.id, "definition": number, "version": version}
    if await q.execute(BUMP_FIELD, params) != 1:
        return False
    if (
        not current.in_use
        and await q.execute(DELETE_DEFINITION, (organization_id, current.id, current.definition))
        != 1
    ):
        # A value was saved under it meanwhile: keep it and add the next definition.
        number = current.definition + 1
        await q.execute(SET_DEFINITION, (number, organization_id, current.id))
    await q.execute(
        INSERT_DEFINITION, _definition_params(organization_id, current.id, number, definition)
    )
    return True


async def archive(
    q: Querier, organization_id: UUID, field_id: UUID, *, version: int | None
) -> bool:
    params = {"org": organization_id, "id": field_id, "version": version}
    return await q.execute(ARCHIVE_FIELD, params) == 1


async def definitions(q: Querier, organization_id: UUID, field_id: UUID) -> list[DefinitionRow]:
    return await q.fetch_all(LIST_DEFINITIONS, (organization_id, field_id), row=DefinitionRow)


async def mark_in_use(q: Querier, organization_id: UUID, used: Sequence[tuple[UUID, int]]) -> None:
    if used:
        await q.execute(
            MARK_IN_USE,
            (organization_id, [field_id for field_id, _ in used], [number for _, number in used]),
        )
