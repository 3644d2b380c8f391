from __future__ import annotations

from jsonschema import Draft4Validator

from carebase.errors import FieldError
from carebase.web.schemas import FORMAT_CHECKER, field_errors

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["a/b", "name"],
    "properties": {
        "a/b": {"type": "string"},
        "name": {"type": "string", "maxLength": 3},
        "id": {"type": "string", "format": "uuid"},
        "items": {"type": "array", "items": {"type": "integer"}},
    },
}


def errors(instance: object) -> list[FieldError]:
    validator = Draft4Validator(SCHEMA, format_checker=FORMAT_CHECKER)
    return field_errors(validator.iter_errors(instance), "/body")


def test_each_missing_property_points_at_itself_escaped() -> None:
    assert errors({}) == [
        FieldError("/body/a~1b", "Required.", "required"),
        FieldError("/body/name", "Required.", "required"),
    ]


def test_unknown_fields_are_each_named() -> None:
    found = errors({"a/b": "x", "name": "n", "zeta": 1, "alpha": 2})
    assert [(e.pointer, e.code) for e in found] == [
        ("/body/alpha", "unknown"),
        ("/body/zeta", "unknown"),
    ]


def test_nested_pointer_and_format() -> None:
    found = errors({"a/b": "x", "name": "long", "id": "nope", "items": [1, "two"]})
    assert [(e.pointer, e.code) for e in found] == [
        ("/body/id", "format"),
        ("/body/items/1", "type"),
        ("/body/name", "maxLength"),
    ]


def test_uuid_format_is_checked() -> None:
    assert errors({"a/b": "x", "name": "n", "id": "5c5ed5b6-1f8e-4b9a-9f4e-2f0b6f3a8e11"}) == []
