"""Validators compiled once from the contract's schemas.

A request pays for one compiled check (fastjsonschema turns a schema into a Python function).
Only a value that fails it is walked again by jsonschema, which lists every failing field
with its JSON pointer — the answer a caller needs, and the rare path. Both read the same
OpenAPI 3.0 dialect: `nullable: true` lets `null` pass `type` and `enum`, as Connexion's
Draft 4 request validator has it, formats are checked by the same `FormatChecker`
functions, and `pattern`'s `$` is the end of the input (ECMA-262) in both, so the two agree
on what they accept (tests/unit/test_validator_corpus.py proves it on the bundle).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import fastjsonschema
import structlog
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator
from jsonschema import FormatChecker
from jsonschema import ValidationError as SchemaError
from jsonschema.validators import extend

from carebase.errors import FieldError, pointer_token

# Every format jsonschema knows (uuid, date, date-time, email, …), not only Draft 4's few.
FORMAT_CHECKER = FormatChecker()
_DRAFT4 = "http://json-schema.org/draft-04/schema#"
# Keywords of OpenAPI's dialect that JSON Schema Draft 4 does not have (or must not apply).
_OPENAPI_ONLY = frozenset(
    {"nullable", "example", "examples", "discriminator", "xml", "externalDocs", "deprecated"}
)

# Keywords whose value maps names to schemas, and keywords whose value is data, not a schema.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions"})
_LITERALS = frozenset({"enum", "required", "default", "const"})

_log = structlog.get_logger("carebase.validation")


def _formats_of(schema: Any, found: set[str]) -> set[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("format"), str):
            found.add(schema["format"])
        for value in schema.values():
            _formats_of(value, found)
    elif isinstance(schema, list):
        for item in schema:
            _formats_of(item, found)
    return found


def _format_function(name: str) -> Callable[[str], bool]:
    if name not in FORMAT_CHECKER.checkers:
        return lambda _: True  # jsonschema ignores a format it does not know; so do we

    def conforms(value: str) -> bool:
        return FORMAT_CHECKER.conforms(value, name)

    return conforms


def json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's schema dialect as plain JSON Schema Draft 4."""
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _OPENAPI_ONLY or key.startswith("x-"):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in _LITERALS:
            out[key] = value
        else:
            out[key] = json_schema(value)
    if schema.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"] if "null" not in types else types
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


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


# ECMA-262, which JSON Schema names for `pattern`, reads an unescaped `$` as the end of the
# input; Python's `re` also matches it before a final newline, so `^[a-z]+$` would accept
# "abc\n" (a slug PostgreSQL's own CHECK then refuses). fastjsonschema rewrites `$` to `\Z`;
# the explainer below does the same, so the two agree and follow the standard.
_DOLLAR = re.compile(r"(?<!\\)\$")
_patterns: dict[str, re.Pattern[str]] = {}


def ecma_pattern(pattern: str) -> re.Pattern[str]:
    found = _patterns.get(pattern)
    if found is None:
        found = _patterns[pattern] = re.compile(_DOLLAR.sub(r"\\Z", pattern))
    return found


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[SchemaError]:
    if isinstance(instance, str) and not ecma_pattern(pattern).search(instance):
        yield SchemaError(f"does not match {pattern!r}")


# Connexion's validators come untyped; jsonschema's extend() keeps their shape.
RequestExplainer: Any = extend(Draft4RequestValidator, {"pattern": _pattern})  # type: ignore[no-untyped-call]
ResponseExplainer: Any = extend(Draft4ResponseValidator, {"pattern": _pattern})  # type: ignore[no-untyped-call]


# fastjsonschema's function for each distinct schema, made once per process. Generating the
# code is ~95 % of building an app (~9 s for core's ~2,300 schemas, responses included); a
# process that builds several apps (the test suite builds one per configuration) pays once.
# The functions are pure, so sharing them is safe; the contract bounds how many there are.
_CHECKS: dict[tuple[str, tuple[str, ...]], Callable[[Any], Any]] = {}


def _compiled(compiled: dict[str, Any], schema: dict[str, Any]) -> Callable[[Any], Any]:
    names = tuple(sorted(_formats_of(schema, set())))
    key = (json.dumps(compiled, sort_keys=True, default=repr), names)
    check = _CHECKS.get(key)
    if check is None:
        formats = {name: _format_function(name) for name in names}
        check = _CHECKS[key] = fastjsonschema.compile(compiled, formats=formats, use_default=False)
    return check


class SchemaValidator:
    """One schema of the contract: `check` is the compiled yes/no, `errors` lists them all."""

    __slots__ = ("_check", "_explain", "schema")

    def __init__(self, schema: dict[str, Any], *, response: bool = False) -> None:
        self.schema = schema
        self._check = _compiled({"$schema": _DRAFT4, **json_schema(schema)}, schema)
        explainer = ResponseExplainer if response else RequestExplainer
        self._explain = explainer(schema, format_checker=FORMAT_CHECKER)

    def check(self, value: Any) -> bool:
        try:
            self._check(value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def errors(self, value: Any, prefix: str) -> list[FieldError]:
        """Every failing field, or none when the value is valid."""
        if self.check(value):
            return []
        found = field_errors(self._explain.iter_errors(value), prefix)
        if not found:
            # The compiled check and jsonschema disagree; the corpus test exists to keep this
            # from happening. jsonschema is the reference, so the value is accepted.
            _log.error("validator_disagreement", prefix=prefix)
        return found
