"""One operation's parameters, compiled: read from the wire, coerced, validated, typed.

Path, query and header values arrive as text. Each declared parameter gets, once at start-up,
a coercion from its schema's type (`integer`, `number`, `boolean`, arrays of them), a
compiled validator, and a conversion to the Python type its format names (`uuid` → UUID,
`date-time` → datetime, `date` → date), so a handler receives typed values under their
Python names (`If-Match` → `if_match`, `pageSize` → `page_size`). Every failure of every
parameter is reported at once with its pointer (`/query/page`); a query parameter the
contract does not declare is refused; U+0000 is refused anywhere.
"""

from __future__ import annotations

import builtins
import datetime as dt
import keyword
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from carebase.errors import FieldError, PreconditionRequired, ValidationFailed, pointer_token
from carebase.web.contract import Operation, Parameter
from carebase.web.schemas import SchemaValidator

_INTEGER = re.compile(r"-?[0-9]{1,400}")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,400})(?:\.[0-9]{1,400})?(?:[eE][+-]?[0-9]{1,4})?")
NUL = "Must not contain the NUL character."
IF_MATCH = "if-match"
SUPPORTED = ("path", "query", "header")


def python_name(name: str) -> str:
    """`If-Match` → `if_match`, `pageSize` → `page_size`, `type` → `type_`."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).replace("-", "_").lower()
    snake = re.sub(r"\W", "_", snake)
    return snake + "_" if keyword.iskeyword(snake) or hasattr(builtins, snake) else snake


def _scalar(schema: Mapping[str, Any]) -> Callable[[str], Any]:
    """Text → the JSON type the schema wants; text that is not one stays text (a type error)."""
    kind = schema.get("type")
    if kind == "integer":
        return lambda text: int(text) if _INTEGER.fullmatch(text) else text
    if kind == "number":

        def number(text: str) -> Any:
            if _INTEGER.fullmatch(text):
                return int(text)
            return float(text) if _NUMBER.fullmatch(text) else text

        return number
    if kind == "boolean":
        return lambda text: {"true": True, "false": False}.get(text.lower(), text)
    return lambda text: text


_UUID_ONLY = frozenset({"type", "format", "minLength", "maxLength", "description", "example"})
_DASHES = (8, 13, 18, 23)


def _plain_uuid(schema: Mapping[str, Any]) -> tuple[int, int] | None:
    """(minLength, maxLength) of a schema that is a UUID string and nothing more, else None."""
    if (
        schema.get("type") == "string"
        and schema.get("format") == "uuid"
        and set(schema) <= _UUID_ONLY
    ):
        return int(schema.get("minLength", 0)), int(schema.get("maxLength", 1 << 30))
    return None


def _uuid(text: str, lengths: tuple[int, int]) -> UUID | None:
    """jsonschema's `uuid` check (UUID() parses it, dashes where they belong) and the length
    bounds, computed once: the UUID parsed to check it is the value the handler gets."""
    if not lengths[0] <= len(text) <= lengths[1]:
        return None
    try:
        value = UUID(text)
    except ValueError:
        return None
    return value if all(text[i] == "-" for i in _DASHES) else None


def _converter(schema: Mapping[str, Any]) -> Callable[[Any], Any] | None:
    """A valid value → the Python type its format names."""
    fmt = schema.get("format") if schema.get("type") == "string" else None
    if fmt == "uuid":
        return UUID
    if fmt == "date-time":
        return lambda text: dt.datetime.fromisoformat(text.upper())
    if fmt == "date":
        return dt.date.fromisoformat
    if schema.get("type") == "array":
        inner = _converter(schema.get("items", {}))
        if inner is not None:
            return lambda values: [inner(v) for v in values]
    return None


class CompiledParameter:
    __slots__ = (
        "coerce",
        "convert",
        "default",
        "is_array",
        "keep",
        "key",
        "location",
        "name",
        "pointer",
        "required",
        "uuid_lengths",
        "validator",
        "wire",
    )

    def __init__(self, parameter: Parameter, *, keep: bool = True) -> None:
        if parameter.location not in SUPPORTED:
            raise ValueError(
                f"{parameter.location} parameter {parameter.name!r}: the pipeline reads path, "
                "query and header parameters only"
            )
        schema = parameter.schema
        self.name = parameter.name
        self.location = parameter.location
        self.key = python_name(parameter.name)
        self.keep = keep
        """Whether the handler takes it; every parameter is checked either way."""
        self.wire = parameter.name.lower() if parameter.location == "header" else parameter.name
        self.required = parameter.required
        self.pointer = f"/{parameter.location}/{pointer_token(parameter.name)}"
        self.is_array = schema.get("type") == "array"
        if self.is_array:
            item = _scalar(schema.get("items", {}))
            if parameter.explode and parameter.location == "query":
                self.coerce: Callable[[Any], Any] = lambda values: [item(v) for v in values]
            else:
                self.coerce = lambda values: [item(v) for v in ",".join(values).split(",")]
        else:
            self.coerce = _scalar(schema)
        self.validator = SchemaValidator(schema)
        self.convert = _converter(schema)
        self.uuid_lengths = _plain_uuid(schema)
        converted = schema.get("default")
        if converted is not None and self.convert is not None:
            converted = self.convert(converted)
        self.default = converted


class Parameters:
    """`parse` turns one request's path, query and headers into the handler's keywords."""

    __slots__ = ("_by_location", "_declared_query", "_if_match", "_query", "strict")

    def __init__(
        self, operation: Operation, *, keep: frozenset[str] | None = None, strict: bool = True
    ) -> None:
        compiled = [
            CompiledParameter(p, keep=keep is None or python_name(p.name) in keep)
            for p in operation.parameters
        ]
        self._by_location = {
            location: tuple(p for p in compiled if p.location == location) for location in SUPPORTED
        }
        self._query = self._by_location["query"]
        self._declared_query = frozenset(p.name for p in self._query)
        # Only a required If-Match makes its absence a 428; an optional one guards when given.
        self._if_match = any(p.wire == IF_MATCH and p.required for p in self._by_location["header"])
        self.strict = strict

    @property
    def compiled(self) -> tuple[CompiledParameter, ...]:
        return tuple(p for location in SUPPORTED for p in self._by_location[location])

    def parse(
        self, path_params: Mapping[str, str], query_string: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        if self._if_match and IF_MATCH not in headers:
            # A change to a versioned resource without its version: 428, before anything else.
            raise PreconditionRequired(
                "Send If-Match with the ETag of the version you are changing."
            )
        found: list[FieldError] = []
        values: dict[str, Any] = {}
        query = self._parse_query(query_string, found) if query_string or self._query else {}
        for parameter in self._by_location["path"]:
            given = path_params.get(parameter.name)
            # Connexion routes an integer path parameter with Starlette's int convertor, which
            # hands over an int: parse it as the text it came as, like every other parameter.
            self._one(
                parameter,
                given if given is None or isinstance(given, str) else str(given),
                values,
                found,
            )
        for parameter in self._query:
            raw = query.get(parameter.name)
            self._one(
                parameter, raw if parameter.is_array or raw is None else raw[-1], values, found
            )
        for parameter in self._by_location["header"]:
            self._one(parameter, headers.get(parameter.wire), values, found)
        if found:
            raise ValidationFailed(sorted(found, key=lambda e: (e.pointer, e.code)))
        return values

    def _parse_query(self, query_string: bytes, found: list[FieldError]) -> dict[str, list[str]]:
        query: dict[str, list[str]] = {}
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            query.setdefault(name, []).append(value)
        if self.strict:
            found += [
                FieldError(f"/query/{pointer_token(name)}", "Unknown query parameter.", "unknown")
                for name in sorted(set(query) - self._declared_query)
            ]
        return query

    @staticmethod
    def _one(
        parameter: CompiledParameter,
        raw: Any,
        values: dict[str, Any],
        found: list[FieldError],
    ) -> None:
        if raw is None:
            if parameter.required:
                found.append(FieldError(parameter.pointer, "Required.", "required"))
            elif parameter.keep:
                values[parameter.key] = parameter.default
            return
        if parameter.uuid_lengths is not None:
            plain = _uuid(raw, parameter.uuid_lengths) if isinstance(raw, str) else None
            if plain is not None:
                if parameter.keep:
                    values[parameter.key] = plain
                return
        texts = raw if isinstance(raw, list) else (raw,)
        if any("\x00" in text for text in texts):
            found.append(FieldError(parameter.pointer, NUL, "nul"))
            return
        value = parameter.coerce(raw)
        failed = parameter.validator.errors(value, parameter.pointer)
        if failed:
            found += failed
            return
        if parameter.convert is not None:
            try:
                value = parameter.convert(value)
            except ValueError:
                found.append(FieldError(parameter.pointer, "Not a valid value.", "format"))
                return
        if parameter.keep:
            values[parameter.key] = value
