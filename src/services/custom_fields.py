"""The custom field library, and checking and storing the values entities hold.

Values live on their entity's row: `custom_values` (JSON) for ordinary fields and
`custom_sealed` (one sealed JSON document) for sensitive ones, each value keyed by field id
with the definition number it was checked against.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import re2

from carebase.errors import (
    DataIntegrity,
    FieldError,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    pointer_token,
)
from carebase.pages import Page, PageRequest
from carebase.persistence import custom_fields as cf
from carebase.persistence.db import Database, one
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer, UnsealError
from carebase.services.audit import record

NO_FIELD = "No such custom field."
CHOICE_TYPES = frozenset({"select", "multi_select"})
BOUNDED_TYPES = frozenset({"text", "number", "multi_select"})


@dataclass(frozen=True, slots=True)
class FieldChange:
    """A PATCH: only the names in `given` change."""

    given: frozenset[str]
    label: str | None = None
    required: bool | None = None
    sensitive: bool | None = None
    min: float | None = None
    max: float | None = None
    options: list[str] | None = None
    pattern: str | None = None


class CustomFieldService:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def create(
        self,
        principal: Principal,
        *,
        entity_type: str,
        key: str,
        label: str,
        field_type: str,
        required: bool,
        sensitive: bool,
        min_value: float | None,
        max_value: float | None,
        options: list[str] | None,
        pattern: str | None,
    ) -> cf.FieldRow:
        definition = cf.Definition(
            label=label.strip(),
            type=field_type,
            required=required,
            sensitive=sensitive,
            min_value=_decimal(min_value),
            max_value=_decimal(max_value),
            options=options,
            pattern=pattern,
        )
        _check_definition(definition)
        organization_id = organization_of(principal, NO_FIELD)
        async with self._db.transaction(principal) as q:
            created = await cf.insert_field(
                q, organization_id, uuid4(), entity_type=entity_type, key=key, definition=definition
            )
            await record(
                q,
                principal,
                action="custom_field.created",
                entity_type="custom_field",
                entity_id=created.id,
                changed_fields=[
                    "entity_type",
                    "key",
                    "label",
                    "type",
                    "required",
                    "sensitive",
                    "min",
                    "max",
                    "options",
                    "pattern",
                ],
            )
        return created

    async def get(self, principal: Principal, field_id: UUID) -> cf.FieldRow:
        q = self._db.reader(principal)
        found = await cf.field(q, organization_of(principal, NO_FIELD), field_id)
        if found is None:
            raise NotFound(NO_FIELD)
        return found

    async def list_fields(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        entity_type: str | None,
        include_archived: bool,
    ) -> Page[cf.FieldRow]:
        q = self._db.reader(principal)
        rows, total = await cf.fields(
            q,
            organization_of(principal, NO_FIELD),
            page,
            entity_type=entity_type,
            include_archived=include_archived,
        )
        return Page(rows, total, page)

    async def update(
        self, principal: Principal, field_id: UUID, change: FieldChange, *, version: int | None
    ) -> cf.FieldRow:
        organization_id = organization_of(principal, NO_FIELD)
        async with self._db.transaction(principal) as q:
            current = await cf.field(q, organization_id, field_id)
            if current is None:
                raise NotFound(NO_FIELD)
            if current.archived_at is not None:
                raise PreconditionFailed("The field is archived; archived fields do not change.")
            definition = _changed(current, change)
            _check_definition(definition)
            if not await cf.redefine(q, organization_id, current, definition, version=version):
                raise PreconditionFailed("The field changed since it was read; read it again.")
            await record(
                q,
                principal,
                action="custom_field.updated",
                entity_type="custom_field",
                entity_id=field_id,
                changed_fields=sorted(change.given),
            )
            return one(await cf.field(q, organization_id, field_id))

    async def archive(self, principal: Principal, field_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, NO_FIELD)
        async with self._db.transaction(principal) as q:
            current = await cf.field(q, organization_id, field_id)
            if current is None or current.archived_at is not None:
                raise NotFound(NO_FIELD)
            if not await cf.archive(q, organization_id, field_id, version=version):
                raise PreconditionFailed("The field changed since it was read; read it again.")
            await record(
                q,
                principal,
                action="custom_field.archived",
                entity_type="custom_field",
                entity_id=field_id,
                changed_fields=["archived"],
            )

    async def definitions(self, principal: Principal, field_id: UUID) -> list[cf.DefinitionRow]:
        q = self._db.reader(principal)
        found = await cf.definitions(q, organization_of(principal, NO_FIELD), field_id)
        if not found:
            raise NotFound(NO_FIELD)
        return found


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _changed(current: cf.FieldRow, change: FieldChange) -> cf.Definition:
    def pick(name: str, value: Any, old: Any) -> Any:
        return value if name in change.given else old

    return cf.Definition(
        label=pick("label", (change.label or "").strip(), current.label),
        type=current.type,
        required=bool(pick("required", change.required, current.required)),
        sensitive=bool(pick("sensitive", change.sensitive, current.sensitive)),
        min_value=pick("min", _decimal(change.min), current.min_value),
        max_value=pick("max", _decimal(change.max), current.max_value),
        options=pick("options", change.options, current.options),
        pattern=pick("pattern", change.pattern, current.pattern),
    )


def _check_definition(definition: cf.Definition) -> None:
    problems = []
    if definition.type in CHOICE_TYPES and not definition.options:
        problems.append(FieldError("/body/options", "A choice field needs options.", "required"))
    if definition.type not in CHOICE_TYPES and definition.options is not None:
        problems.append(FieldError("/body/options", "Only choice fields have options.", "unknown"))
    if definition.type not in BOUNDED_TYPES:
        for name, value in (("min", definition.min_value), ("max", definition.max_value)):
            if value is not None:
                problems.append(
                    FieldError(
                        f"/body/{name}", f"A {definition.type} field has no {name}.", "unknown"
                    )
                )
    if (
        definition.min_value is not None
        and definition.max_value is not None
        and definition.min_value > definition.max_value
    ):
        problems.append(FieldError("/body/min", "min is greater than max.", "minimum"))
    if definition.type != "text" and definition.pattern is not None:
        problems.append(FieldError("/body/pattern", "Only text fields have a pattern.", "unknown"))
    if definition.pattern is not None and _compile(definition.pattern) is None:
        problems.append(
            FieldError("/body/pattern", "The pattern is not a valid RE2 expression.", "pattern")
        )
    if problems:
        raise ValidationFailed(problems)


def _compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except re2.error:
        return None


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredValues:
    """What an entity row holds: plain values and the sealed document of sensitive ones."""

    plain: dict[str, Any]
    sealed: bytes | None
    used: list[tuple[UUID, int]]


@dataclass(frozen=True, slots=True)
class ProfileView:
    entity_id: UUID
    values: dict[str, Any]
    fields: list[tuple[UUID, str, int]]
    version: int


def check_values(
    fields: Sequence[cf.FieldRow],
    given: Mapping[str, Any],
    *,
    sealer: Sealer,
    aad: bytes,
) -> StoredValues:
    """Every given value against its field's current definition; all failures at once."""
    by_key = {f.key: f for f in fields}
    problems: list[FieldError] = []
    plain: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    used: list[tuple[UUID, int]] = []
    for key, value in given.items():
        pointer = f"/body/values/{pointer_token(key)}"
        found = by_key.get(key)
        if found is None or found.archived_at is not None:
            problems.append(FieldError(pointer, "No active custom field has this key.", "unknown"))
            continue
        if value is None:
            continue
        failure = _check_value(found, value)
        if failure is not None:
            problems.append(FieldError(pointer, failure[1], failure[0]))
            continue
        entry = {"d": found.definition, "v": value}
        (secret if found.sensitive else plain)[str(found.id)] = entry
        used.append((found.id, found.definition))
    for found in fields:
        if found.required and found.archived_at is None and given.get(found.key) is None:
            problems.append(
                FieldError(
                    f"/body/values/{pointer_token(found.key)}", "A value is required.", "required"
                )
            )
    if problems:
        raise ValidationFailed(problems)
    sealed = sealer.seal(_dumps(secret), aad) if secret else None
    return StoredValues(plain, sealed, used)


def read_values(
    fields: Iterable[cf.FieldRow],
    plain: Mapping[str, Any],
    sealed: bytes | None,
    *,
    sealer: Sealer,
    aad: bytes,
) -> tuple[dict[str, Any], list[tuple[UUID, str, int]]]:
    """The stored values by field key, with the definitions they were checked against."""
    entries = dict(plain)
    if sealed is not None:
        entries.update(json.loads(open_sealed(sealer, sealed, aad)))
    keys = {str(f.id): f.key for f in fields}
    values: dict[str, Any] = {}
    used: list[tuple[UUID, str, int]] = []
    for field_id, entry in sorted(entries.items(), key=lambda item: keys.get(item[0], "")):
        key = keys.get(field_id)
        if key is None:
            continue
        values[key] = entry["v"]
        used.append((UUID(field_id), key, int(entry["d"])))
    return values, used


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """The field keys whose value a profile update changed (added, altered or removed)."""
    return {key for key in set(before) | set(after) if before.get(key) != after.get(key)}


def open_sealed(sealer: Sealer, sealed: bytes, aad: bytes) -> bytes:
    """Open a stored value; a failure is a data-integrity problem that names nothing."""
    try:
        return sealer.open(sealed, aad)
    except UnsealError as exc:
        raise DataIntegrity(
            "A stored value failed its integrity check; the incident has been logged."
        ) from exc


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


Refusal = tuple[str, str] | None
"""(code, message) for a value its definition refuses; None when it passes. Never the value."""


def _check_value(found: cf.FieldRow, value: Any) -> Refusal:
    low = float(found.min_value) if found.min_value is not None else None
    high = float(found.max_value) if found.max_value is not None else None
    return _CHECKS[found.type](found, value, low, high)


def _check_text(found: cf.FieldRow, value: Any, low: float | None, high: float | None) -> Refusal:
    if not isinstance(value, str):
        return "type", "Expected text."
    if low is not None and len(value) < low:
        return "minLength", f"At least {int(low)} characters."
    if high is not None and len(value) > high:
        return "maxLength", f"At most {int(high)} characters."
    if found.pattern is not None and not re2.search(found.pattern, value):
        return "pattern", "Does not match the field's pattern."
    return None


def _check_number(_: cf.FieldRow, value: Any, low: float | None, high: float | None) -> Refusal:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "type", "Expected a number."
    if low is not None and value < low:
        return "minimum", f"At least {low:g}."
    if high is not None and value > high:
        return "maximum", f"At most {high:g}."
    return None


def _check_boolean(_: cf.FieldRow, value: Any, low: float | None, high: float | None) -> Refusal:
    return None if isinstance(value, bool) else ("type", "Expected true or false.")


def _check_date(_: cf.FieldRow, value: Any, low: float | None, high: float | None) -> Refusal:
    try:
        if isinstance(value, str) and len(value) == 10:
            dt.date.fromisoformat(value)
            return None
    except ValueError:
        pass
    return "format", "Expected a date as YYYY-MM-DD."


def _check_select(found: cf.FieldRow, value: Any, low: float | None, high: float | None) -> Refusal:
    if not isinstance(value, str) or value not in (found.options or ()):
        return "enum", "Not one of the field's options."
    return None


def _check_multi(found: cf.FieldRow, value: Any, low: float | None, high: float | None) -> Refusal:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "type", "Expected a list of options."
    if len(set(value)) != len(value):
        return "uniqueItems", "An option is listed twice."
    if not set(value) <= set(found.options or ()):
        return "enum", "Not all are the field's options."
    if low is not None and len(value) < low:
        return "minItems", f"At least {int(low)} options."
    if high is not None and len(value) > high:
        return "maxItems", f"At most {int(high)} options."
    return None


_CHECKS = {
    "text": _check_text,
    "number": _check_number,
    "boolean": _check_boolean,
    "date": _check_date,
    "select": _check_select,
    "multi_select": _check_multi,
}
