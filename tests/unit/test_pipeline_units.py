"""The compiled pipeline's pieces, without a server: parameters, bodies, rendering, and the
start-up checks that a handler fits its operation."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import orjson
import pytest

from carebase.errors import (
    FieldError,
    MalformedRequest,
    PreconditionRequired,
    UnsupportedMediaType,
    ValidationFailed,
)
from carebase.generated.models import core as api
from carebase.principal import Principal
from carebase.web.bodies import JsonBody
from carebase.web.contract import Operation, Parameter, RequestBody
from carebase.web.parameters import Parameters, python_name
from carebase.web.pipeline import Plan, Runtime
from carebase.web.render import dumps
from carebase.web.results import Reply
from carebase.web.schemas import SchemaValidator


def operation(*parameters: Parameter, body: RequestBody | None = None) -> Operation:
    return Operation(
        operation_id="doThing",
        method="POST" if body else "GET",
        path="/things/{thing_id}",
        permission=None,
        public=True,
        parameters=parameters,
        body=body,
    )


THING = Parameter("thing_id", "path", True, {"type": "string", "format": "uuid", "maxLength": 36})
PAGE = Parameter("page", "query", False, {"type": "integer", "minimum": 1, "default": 1})
SINCE = Parameter("since", "query", False, {"type": "string", "format": "date-time"})
FLAG = Parameter("dryRun", "query", False, {"type": "boolean"})
TAGS = Parameter("tag", "query", False, {"type": "array", "items": {"type": "string"}})
IF_MATCH = Parameter("If-Match", "header", True, {"type": "string", "maxLength": 128})
ID = "5c5ed5b6-1f8e-4b9a-9f4e-2f0b6f3a8e11"


def test_python_names() -> None:
    assert python_name("If-Match") == "if_match"
    assert python_name("pageSize") == "page_size"
    assert python_name("type") == "type_"
    assert python_name("page_size") == "page_size"


def test_parameters_are_coerced_typed_and_defaulted() -> None:
    parsed = Parameters(operation(THING, PAGE, SINCE, FLAG, TAGS)).parse(
        {"thing_id": ID}, b"since=2026-11-29T12:00:00Z&dryRun=TRUE&tag=a&tag=b", {}
    )
    assert parsed == {
        "thing_id": UUID(ID),
        "page": 1,
        "since": dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC),
        "dry_run": True,
        "tag": ["a", "b"],
    }


def test_every_parameter_failure_is_reported_with_its_pointer() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Parameters(operation(THING, PAGE, FLAG)).parse(
            {"thing_id": "not-a-uuid"}, b"page=0&dryRun=maybe&colour=red&page=1_0", {}
        )
    assert [(e.pointer, e.code) for e in caught.value.errors] == [
        ("/path/thing_id", "format"),
        ("/query/colour", "unknown"),
        ("/query/dryRun", "type"),
        ("/query/page", "type"),  # the last value counts, and `1_0` is not an integer
    ]


@pytest.mark.parametrize(
    "text",
    [
        ID,
        ID.upper(),
        ID.replace("-", ""),
        "{" + ID + "}",
        "urn:uuid:" + ID,
        ID + "}",
        ID[:-1] + "-",
        ID[:9] + "-" + ID[9:],
        "",
        "not-a-uuid",
        ID + "0",
    ],
)
def test_the_uuid_fast_path_judges_as_the_validator_does(text: str) -> None:
    """A plain `format: uuid` parameter skips the compiled validator; it must agree with it."""
    schema = THING.schema
    expected = SchemaValidator(schema).check(text)
    parsed: dict[str, Any] | None
    try:
        parsed = Parameters(operation(THING)).parse({"thing_id": text}, b"", {})
    except ValidationFailed:
        parsed = None
    assert (parsed is not None) is expected, text
    if parsed is not None:
        assert parsed["thing_id"] == UUID(text)


def test_nul_is_refused_in_parameters() -> None:
    with pytest.raises(ValidationFailed) as caught:
        Parameters(operation(SINCE)).parse({}, b"since=%00", {})
    assert caught.value.errors == (
        FieldError("/query/since", "Must not contain the NUL character.", "nul"),
    )


def test_a_missing_if_match_is_428_before_anything_else() -> None:
    with pytest.raises(PreconditionRequired):
        Parameters(operation(THING, IF_MATCH)).parse({"thing_id": "bad"}, b"x=1", {})


def test_unknown_query_parameters_pass_when_not_strict() -> None:
    assert Parameters(operation(PAGE), strict=False).parse({}, b"other=1", {}) == {"page": 1}


BODY = RequestBody(
    True,
    {
        "application/json": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 3}},
        }
    },
)


@pytest.mark.parametrize(
    ("content_type", "raw", "error"),
    [
        ("application/json", b"", MalformedRequest),
        ("text/plain", b"{}", UnsupportedMediaType),
        (None, b"{}", UnsupportedMediaType),
        ("application/json", b"{", MalformedRequest),
        ("application/json; charset=latin-9000", b"{}", MalformedRequest),
        ("application/json", b'{"name": "\xff"}', MalformedRequest),
    ],
)
def test_unreadable_bodies(content_type: str | None, raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        JsonBody(BODY).parse(content_type, raw)


def test_body_errors_all_reported_nul_included() -> None:
    with pytest.raises(ValidationFailed) as caught:
        JsonBody(BODY).parse("application/json", b'{"name": "long", "x\\u0000": 1}')
    assert [(e.pointer, e.code) for e in caught.value.errors] == [
        ("/body/name", "maxLength"),
        ("/body/x\x00", "nul"),
        ("/body/x\x00", "unknown"),
    ]


def test_a_valid_body_is_the_document() -> None:
    body = JsonBody(BODY).parse("application/json; charset=utf-8", b'{"name": "ok"}')
    assert body == {"name": "ok"}


def test_rendering_leaves_out_optional_nones_and_keeps_required_nulls() -> None:
    when = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    event = api.AuditEvent.model_construct(
        id=UUID(ID),
        occurred_at=when,
        actor_user_id=None,
        actor_api_key_id=None,
        impersonator_id=None,
        action="patient.created",
        entity_type="patient",
        entity_id=None,
        changed_fields=["given_name"],
        request_id=None,
        ip=None,
        user_agent=None,
    )
    document = orjson.loads(dumps(event))
    assert document["actor_user_id"] is None  # required and nullable: present as null
    assert document["id"] == ID
    assert document["occurred_at"] == "2026-11-29T00:00:00Z"
    me = api.Me.model_construct(
        id=UUID(ID),
        email="a@b.example",
        locale="en",
        email_verified=True,
        is_superadmin=False,
        organization=None,
        version=3,
    )
    assert "organization" not in orjson.loads(dumps(me))  # optional and None: left out


def test_rendering_writes_utc_times_with_z_and_nested_models() -> None:
    when = dt.datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)
    page = api.PageMeta(page=1, page_size=25, total=1, total_pages=1)
    assert orjson.loads(dumps({"at": when, "meta": page})) == {
        "at": "2026-11-29T12:00:00.123456Z",
        "meta": {"page": 1, "page_size": 25, "total": 1, "total_pages": 1},
    }


class FakeRuntime:
    """The plan compiler only reads the default rule and the response switch at compile time."""

    default_rule = None
    validate_responses = False


def compile_for(op: Operation, handler: Any) -> Plan:
    return Plan(op, handler, FakeRuntime())  # type: ignore[arg-type]


def test_a_handler_must_take_every_parameter_of_its_operation() -> None:
    async def handler(principal: Principal) -> Reply:
        return Reply()

    with pytest.raises(RuntimeError, match="must take the path parameter 'thing_id'"):
        compile_for(operation(THING), handler)


def test_a_handler_may_not_take_what_the_contract_lacks() -> None:
    async def handler(*, thing_id: UUID, colour: str) -> Reply:
        return Reply()

    with pytest.raises(RuntimeError, match="takes 'colour'"):
        compile_for(operation(THING), handler)


def test_a_parameter_is_typed_as_its_schema_says() -> None:
    async def handler(*, thing_id: str) -> Reply:
        return Reply()

    with pytest.raises(RuntimeError, match="annotate it as UUID"):
        compile_for(operation(THING), handler)


def test_the_body_model_is_the_one_the_contract_names() -> None:
    named = RequestBody(True, BODY.content, schema_name="PatientCreate")

    async def handler(*, body: api.PatientUpdate) -> Reply:
        return Reply()

    with pytest.raises(RuntimeError, match="the body is PatientCreate"):
        compile_for(operation(body=named), handler)


def test_a_fitting_handler_compiles() -> None:
    async def handler(principal: Principal, *, thing_id: UUID, page: int) -> Reply:
        return Reply()

    plan = compile_for(operation(THING, PAGE), handler)
    assert plan.wants_principal
    assert not plan.wants_body


def test_runtime_is_what_plans_share() -> None:
    assert set(Runtime.__dataclass_fields__) >= {"authenticator", "limiter", "idempotency"}
