"""The compiled validators accept and reject exactly what jsonschema does, on the whole bundle.

The pipeline checks every parameter and body with a validator compiled by fastjsonschema and
asks jsonschema (Draft 4 with OpenAPI's `nullable`, as Connexion validated before) only to
list the errors of a value that failed. If the two disagreed, a request could pass that the
contract refuses. One rule is set on purpose in both: a pattern's `$` is the end of the input,
as ECMA-262 reads it (Python's `re`, which jsonschema uses as it comes, also matches before a
final newline; this corpus found that). The corpus:

- schemathesis' own cases for every operation, positive and negative: the parameters and
  bodies as a contract-testing client sends them;
- arbitrary JSON values against every schema a request or response is checked with;
- hand-picked edges where JSON Schema implementations are known to drift (booleans as
  integers, 1.0 as an integer, nullable enums, formats, Unicode lengths, patterns).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from carebase.config import PROJECT_ROOT
from carebase.web.contract import Contract
from carebase.web.schemas import (
    FORMAT_CHECKER,
    RequestExplainer,
    ResponseExplainer,
    SchemaValidator,
)

BUNDLE = PROJECT_ROOT / "generated" / "openapi" / "core.yaml"
CONTRACT = Contract(BUNDLE)
OPERATIONS = [result.ok() for result in schemathesis.openapi.from_path(BUNDLE).get_all_operations()]


def _request_schemas(operation_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    operation = CONTRACT.operations[operation_id]
    found = {(p.location, p.name): p.schema for p in operation.parameters}
    if operation.body is not None:
        for media, schema in operation.body.content.items():
            found[("body", media)] = schema
    return found


def _response_schemas() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{op.operation_id} {status} {media}", schema)
        for op in CONTRACT.operations.values()
        for status, content in op.responses.items()
        for media, schema in content.items()
        if schema
    ]


REQUEST_SCHEMAS = [
    (f"{op_id} {location}:{name}", schema)
    for op_id in CONTRACT.operations
    for (location, name), schema in _request_schemas(op_id).items()
]
RESPONSE_SCHEMAS = _response_schemas()


def _agree(schema: dict[str, Any], value: Any, *, response: bool = False) -> None:
    compiled = SchemaValidator(schema, response=response)
    reference = (ResponseExplainer if response else RequestExplainer)(
        schema, format_checker=FORMAT_CHECKER
    )
    expected = not any(True for _ in reference.iter_errors(value))
    assert compiled.check(value) is expected, (value, schema)
    assert (compiled.errors(value, "/x") == []) is expected


_compiled: dict[int, tuple[SchemaValidator, Any]] = {}


def _agree_cached(schema: dict[str, Any], value: Any, *, response: bool = False) -> None:
    key = id(schema)
    if key not in _compiled:
        _compiled[key] = (
            SchemaValidator(schema, response=response),
            (ResponseExplainer if response else RequestExplainer)(
                schema, format_checker=FORMAT_CHECKER
            ),
        )
    compiled, reference = _compiled[key]
    expected = not any(True for _ in reference.iter_errors(value))
    assert compiled.check(value) is expected, (value, schema)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{o.method.upper()} {o.path}" for o in OPERATIONS]
)
def test_schemathesis_cases_are_judged_alike(operation: Any, mode: GenerationMode) -> None:
    operation_id = operation.definition.raw["operationId"]
    schemas = _request_schemas(operation_id)
    if mode is GenerationMode.NEGATIVE and not schemas:
        pytest.skip("no parameter and no body: nothing a negative case could break")

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        for location, values in (
            ("path", case.path_parameters),
            ("query", case.query),
            ("header", case.headers),
        ):
            for name, value in (values or {}).items():
                key = (location, name)
                if key not in schemas:  # an undeclared parameter: the pipeline refuses it
                    key = next(
                        (k for k in schemas if k[0] == location and k[1].lower() == name.lower()),
                        key,
                    )
                if key in schemas:
                    _agree_cached(schemas[key], value)
        if case.body is not None and not isinstance(case.body, bytes | str):
            for (location, _), schema in schemas.items():
                if location == "body":
                    _agree_cached(schema, case.body)

    check()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.uuids().map(str)
    | st.sampled_from(["2026-11-29T12:00:00Z", "2026-11-29", "a@b.example", "", "x" * 300]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize(("name", "schema"), REQUEST_SCHEMAS, ids=[n for n, _ in REQUEST_SCHEMAS])
@given(value=JSON)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_arbitrary_json_against_request_schemas(
    name: str, schema: dict[str, Any], value: Any
) -> None:
    _agree_cached(schema, value)


@pytest.mark.parametrize(("name", "schema"), RESPONSE_SCHEMAS, ids=[n for n, _ in RESPONSE_SCHEMAS])
@given(value=JSON)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_arbitrary_json_against_response_schemas(
    name: str, schema: dict[str, Any], value: Any
) -> None:
    _agree_cached(schema, value, response=True)


EDGES: list[tuple[dict[str, Any], Any]] = [
    ({"type": "integer"}, True),
    ({"type": "integer"}, 1.0),
    ({"type": "integer"}, 2**70),
    ({"type": "number"}, False),
    ({"type": "number", "minimum": 0, "exclusiveMinimum": True}, 0),
    ({"type": "string", "nullable": True}, None),
    ({"type": "string", "enum": ["a"], "nullable": True}, None),
    ({"type": "string", "enum": ["a"]}, None),
    ({"type": "string", "maxLength": 2}, "ab"),
    ({"type": "string", "maxLength": 2}, "🦀🦀"),
    ({"type": "string", "maxLength": 2}, "🦀🦀🦀"),
    ({"type": "string", "format": "uuid"}, "5c5ed5b6-1f8e-4b9a-9f4e-2f0b6f3a8e11"),
    ({"type": "string", "format": "uuid"}, "5c5ed5b61f8e4b9a9f4e2f0b6f3a8e11"),
    ({"type": "string", "format": "uuid"}, "{5c5ed5b6-1f8e-4b9a-9f4e-2f0b6f3a8e11}"),
    ({"type": "string", "format": "date-time"}, "2026-11-29T12:00:00z"),
    ({"type": "string", "format": "date-time"}, "2026-11-29 12:00:00Z"),
    ({"type": "string", "format": "date"}, "2026-02-30"),
    ({"type": "string", "format": "email"}, "no-at-sign"),
    ({"type": "string", "pattern": r"^\S+$"}, "\x1c"),
    ({"type": "string", "pattern": "^[a-z]+$"}, "abc\n"),
    ({"type": "string", "pattern": "^[a-z]+\\$"}, "abc$"),
    ({"type": "array", "uniqueItems": True}, [1, True]),
    ({"type": "array", "uniqueItems": True}, [{"a": 1}, {"a": 1}]),
    (
        {"type": "object", "additionalProperties": False, "properties": {"example": {}}},
        {"example": 1},
    ),
    ({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}, {}),
    ({"allOf": [{"type": "object"}], "nullable": True}, None),
]


@pytest.mark.parametrize(("schema", "value"), EDGES)
def test_known_edges_are_judged_alike(schema: dict[str, Any], value: Any) -> None:
    _agree(schema, value)
