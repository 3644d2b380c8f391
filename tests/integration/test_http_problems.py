"""Every kind of bad input, through the real middleware, Connexion and error handlers.

The core contract has no body-taking operation yet, so a test-only operation (`POST
/test/widgets`) is added to a copy of the real bundle; everything else is the production app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from carebase.apps.core import create_app
from carebase.config import Settings
from carebase.web.contract import Contract
from carebase.web.results import Reply

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "count"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "count": {"type": "integer", "minimum": 0},
        "owner_id": {"type": "string", "format": "uuid", "maxLength": 36},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 8}},
    },
}


class WidgetHandlers:
    async def create_widget(self, *, dry_run: bool | None, body: dict[str, Any]) -> Reply:
        return Reply({"name": body["name"], "dry_run": bool(dry_run)}, status=201)

    async def explode(self) -> Reply:
        raise RuntimeError("secret-internal-detail: password=hunter2")


WIDGET_PATHS: dict[str, Any] = {
    "/test/widgets": {
        "post": {
            "operationId": "createWidget",
            "tags": ["System"],
            "summary": "Test-only",
            "security": [],
            "parameters": [
                {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WIDGET_SCHEMA}},
            },
            "responses": {
                "201": {
                    "description": "Created",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    },
    "/test/explode": {
        "get": {
            "operationId": "explode",
            "tags": ["System"],
            "summary": "Test-only",
            "security": [],
            "responses": {"200": {"description": "Never"}},
        }
    },
}


@pytest.fixture(scope="module")
async def widgets(
    settings: Settings, extended_contract: Callable[..., Contract]
) -> AsyncIterator[httpx.AsyncClient]:
    contract = extended_contract(WIDGET_PATHS, problems=("400", "413", "415", "422", "500"))
    app = create_app(
        settings,
        overrides={
            "contract": contract,
            "extra_handlers": [WidgetHandlers()],
        },
    )
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
            yield c


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code.replace("_", "-"))
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_valid_widget_is_created(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post("/test/widgets?dry_run=true", json={"name": "w", "count": 1})
    assert response.status_code == 201
    assert response.json() == {"name": "w", "dry_run": True}


async def test_body_errors_are_all_reported(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets",
        json={"count": -1, "owner_id": "not-a-uuid", "tags": ["a", "b", "c"], "extra": 1},
    )
    body = assert_problem(response, 422, "validation_failed")
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [
        ("/body/count", "minimum"),
        ("/body/extra", "unknown"),
        ("/body/name", "required"),
        ("/body/owner_id", "format"),
        ("/body/tags", "maxItems"),
    ]
    assert body["detail"] == "5 fields failed validation."


async def test_parameter_errors_are_all_reported(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets?dry_run=maybe&colour=red", json={"name": "w", "count": 1}
    )
    body = assert_problem(response, 422, "validation_failed")
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [
        ("/query/colour", "unknown"),
        ("/query/dry_run", "type"),
    ]


async def test_missing_body(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post("/test/widgets", headers={"content-type": "application/json"})
    assert_problem(response, 400, "bad_request")


async def test_malformed_json(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets", content=b'{"name": "w",', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 400, "bad_request")
    assert "not valid JSON" in body["detail"]


@pytest.mark.parametrize(
    ("content", "word"),
    [
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),  # past the parser's recursion
        (b'{"name": "w", "count": 1, "extra": NaN', "not valid JSON"),
    ],
    ids=["deep", "nan"],
)
async def test_json_bodies_the_fast_parser_hands_over(
    widgets: httpx.AsyncClient, content: bytes, word: str
) -> None:
    response = await widgets.post(
        "/test/widgets", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert word in response.text


async def test_non_utf8_json(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets",
        content=b'{"name": "\xff\xfe", "count": 1}',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, 400, "bad_request")
    assert "utf-8" in body["detail"]


async def test_wrong_content_type(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets", content=b"name=w", headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_body_too_large_by_content_length(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets", json={"name": "w", "count": 1, "pad": "x" * 5000}
    )
    body = assert_problem(response, 413, "payload_too_large")
    assert "4096" in body["detail"]


async def test_chunked_body_is_read(widgets: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "chunked",'
        yield b' "count": 2}'

    response = await widgets.post(
        "/test/widgets", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "chunked"


async def test_body_too_large_when_streamed(widgets: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "w", "count": 1, "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = await widgets.post(
        "/test/widgets", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


async def test_bad_content_length(widgets: httpx.AsyncClient) -> None:
    response = await widgets.post(
        "/test/widgets",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "two"},
    )
    assert_problem(response, 400, "bad_request")


async def test_unknown_route(widgets: httpx.AsyncClient) -> None:
    body = assert_problem(await widgets.get("/v1/nothing-here"), 404, "not_found")
    assert body["instance"] == "/v1/nothing-here"


async def test_wrong_method_lists_the_right_ones(widgets: httpx.AsyncClient) -> None:
    response = await widgets.delete("/test/widgets")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    response = await widgets.post("/health/live", json={})
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


async def test_unexpected_failure_leaks_nothing(
    widgets: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await widgets.get("/test/explode")
    body = assert_problem(response, 500, "internal")
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    logged = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "unhandled_exception"
    ]
    assert len(logged) == 1, "the 500 must be logged once"
    assert isinstance(logged[0]["exc_info"], RuntimeError)  # rendered as a traceback in the log
    assert logged[0]["request_id"] == body["request_id"]
