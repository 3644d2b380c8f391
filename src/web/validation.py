"""Request validators plugged into Connexion so that a problem lists every failing field.

Connexion 3.3 stops at the first error and reports it as a string; it also lets a non-UTF-8
body through to a 500 and does not check `format: uuid`. These subclasses answer each of
those with a typed error from `errors.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator
from connexion.validators import ParameterValidator as ConnexionParameterValidator
from jsonschema import Draft4Validator, FormatChecker
from jsonschema import ValidationError as SchemaError

from carebase.errors import (
    FieldError,
    MalformedRequest,
    PreconditionRequired,
    ValidationFailed,
    pointer_token,
)

# Every format jsonschema knows (uuid, date, date-time, email, …), not only Draft 4's few.
FORMAT_CHECKER = FormatChecker()
_LOCATIONS = ("path", "query", "header", "cookie")


def _pointer(prefix: str, path: Iterable[object]) -> str:
    return prefix + "".join(f"/{pointer_token(part)}" for part in path)


# jsonschema's own messages quote the failing value: a password, a whole oversized body.
# These say what the rule wants and never repeat what the caller sent.
_MESSAGES = {
    "maxLength": "Use at most {rule} characters.",
    "minLength": "Use at least {rule} characters.",
    "pattern": "Does not match the pattern {rule}.",
    "format": "Not a valid {rule}.",
    "type": "Must be of type {rule}.",
    "enum": "Must be one of: {choices}.",
    "maximum": "Must be at most {rule}.",
    "minimum": "Must be at least {rule}.",
    "maxItems": "Use at most {rule} items.",
    "minItems": "Use at least {rule} items.",
    "uniqueItems": "Items must be unique.",
    "minProperties": "Give at least {rule} field(s).",
    "maxProperties": "Give at most {rule} field(s).",
    "multipleOf": "Must be a multiple of {rule}.",
}


def _message(code: str, rule: object) -> str:
    template = _MESSAGES.get(code)
    if template is None:
        return f"Does not satisfy '{code}'."
    if isinstance(rule, list):
        choices = ", ".join(str(choice) for choice in rule)[:512]
        rule = " or ".join(str(choice) for choice in rule)[:512]
    else:
        choices = str(rule)
    return template.format(rule=rule, choices=choices)


def field_errors(errors: Iterable[SchemaError], prefix: str) -> list[FieldError]:
    """One `FieldError` per failing field, by pointer; a missing property points at itself."""
    found: list[FieldError] = []
    for error in errors:
        base = list(error.absolute_path)
        code = str(error.validator)
        instance, rule, schema = error.instance, error.validator_value, error.schema
        if code == "required" and isinstance(instance, dict) and isinstance(rule, list):
            found += [
                FieldError(_pointer(prefix, [*base, name]), "Required.", code)
                for name in rule
                if name not in instance
            ]
        elif code == "additionalProperties" and isinstance(instance, dict):
            allowed = set(schema.get("properties", {})) if isinstance(schema, dict) else set()
            found += [
                FieldError(_pointer(prefix, [*base, name]), "Unknown field.", "unknown")
                for name in sorted(set(instance) - allowed)
            ]
        else:
            found.append(FieldError(_pointer(prefix, base), _message(code, rule), code))
    # jsonschema reports `required` once per missing property, each naming the whole list.
    unique = {(e.pointer, e.code): e for e in reversed(found)}
    return sorted(unique.values(), key=lambda e: (e.pointer, e.code))


def _nul_characters(value: Any, pointer: str) -> list[FieldError]:
    """JSON allows U+0000 in strings; PostgreSQL text cannot store it, so no body may carry it."""
    if isinstance(value, str):
        if "\x00" in value:
            return [FieldError(pointer, "Must not contain the NUL character.", "nul")]
        return []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            child = f"{pointer}/{pointer_token(key)}"
            if "\x00" in key:
                found.append(FieldError(child, "Must not contain the NUL character.", "nul"))
            found += _nul_characters(item, child)
        return found
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _nul_characters(item, f"{pointer}/{i}")]
    return []


class BodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """JSON bodies: strict UTF-8, readable JSON, then every schema error at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._schema_validator = Draft4RequestValidator(self._schema, format_checker=FORMAT_CHECKER)

    async def _parse(self, stream: AsyncGenerator[bytes, None], scope: Any) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        try:
            text = raw.decode(self._encoding)
        except (UnicodeDecodeError, LookupError):
            raise MalformedRequest(f"The body is not valid {self._encoding} text.") from None
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedRequest(
                f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None

    def _validate(self, body: Any) -> None:
        if body is None and not self._nullable:
            raise ValidationFailed([FieldError("/body", "A JSON body is required.", "required")])
        found = field_errors(self._schema_validator.iter_errors(body), "/body")
        found += _nul_characters(body, "/body")
        if found:
            raise ValidationFailed(found)


class ParameterValidator(ConnexionParameterValidator):  # type: ignore[misc]
    """Path, query, header and cookie parameters, all checked, all reported."""

    def validate_request(self, request: Any) -> None:
        found: list[FieldError] = []
        if self.strict_validation:
            unknown = self.validate_query_parameter_list(
                request, security_params=self.security_query_params
            )
            found += [
                FieldError(f"/query/{pointer_token(name)}", "Unknown query parameter.", "unknown")
                for name in sorted(unknown)
            ]
        sources = {
            "path": lambda name: request.path_params.get(name.replace("-", "_")),
            "query": request.query_params.get,
            "header": request.headers.get,
            "cookie": request.cookies.get,
        }
        for location in _LOCATIONS:
            for parameter in self.parameters.get(location, []):
                name = parameter["name"]
                value = sources[location](name)
                prefix = f"/{location}/{pointer_token(name)}"
                if value is None:
                    if location == "header" and name.lower() == "if-match":
                        # A change to a versioned resource without its version: 428, not 422.
                        raise PreconditionRequired(
                            "Send If-Match with the ETag of the version you are changing."
                        )
                    if parameter.get("required"):
                        found.append(FieldError(prefix, "Required.", "required"))
                    continue
                validator = Draft4Validator(
                    parameter.get("schema", {}), format_checker=FORMAT_CHECKER
                )
                found += field_errors(validator.iter_errors(value), prefix)
        if found:
            raise ValidationFailed(found)
