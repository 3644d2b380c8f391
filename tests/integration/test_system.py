"""Health, the served contract, and the cross-cutting layers, against the real engines."""

from __future__ import annotations

import json
import shutil
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

from carebase.apps.common import build_database
from carebase.apps.core import CoreApp, create_app
from carebase.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.integration


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_head_is_answered_where_get_is(client: httpx.AsyncClient) -> None:
    response = await client.head("/health/live")
    assert response.status_code == 200
    assert response.content == b""


async def test_readiness_names_every_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert [(c["name"], c["status"]) for c in body["checks"]] == [
        ("database", "ok"),
        ("database_admin", "ok"),
        ("redis", "ok"),
        ("migrations", "ok"),
    ]


async def test_readiness_fails_when_redis_is_down(settings: Settings, tmp_path: Any) -> None:
    dead = Redis.from_url(f"unix://{tmp_path}/no-redis.sock", socket_timeout=0.2)
    app = create_app(
        settings, overrides={"redis": dead, "database": build_database(settings, service="core")}
    )
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["detail"] == "Failing checks: redis."
    outcome = {c["name"]: c["status"] for c in body["checks"]}
    assert outcome == {
        "database": "ok",
        "database_admin": "ok",
        "redis": "fail",
        "migrations": "ok",
    }


async def test_readiness_reports_pending_migrations(settings: Settings, tmp_path: Any) -> None:
    """A release that ships a migration the database has not run is not ready.

    The shared test database keeps its data: the pending migration exists only in a copy of
    sql/ that this app is told to expect.
    """
    shipped = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", shipped)
    (shipped / "identity" / "9999_not_yet_applied.sql").write_text(
        "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;\n"
    )
    app = create_app(settings.model_copy(update={"migrations_dir": shipped}))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.get("/health/ready")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["migrations"]["status"] == "fail"
    assert checks["migrations"]["detail"] == "pending: identity/9999"


async def test_request_id_is_echoed_when_sane(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123_XYZ.42"})
    assert response.headers["x-request-id"] == "abc-123_XYZ.42"


@pytest.mark.parametrize(
    "given", ["short", "has spaces in it", "x" * 200, "<script>alert(1)</script>"]
)
async def test_request_id_is_replaced_when_not_sane(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32


async def test_request_id_is_generated(client: httpx.AsyncClient) -> None:
    first = (await client.get("/health/live")).headers["x-request-id"]
    second = (await client.get("/health/live")).headers["x-request-id"]
    assert first != second


@pytest.mark.parametrize("path", ["/health/live", "/v1/missing", "/openapi.yaml"])
async def test_security_headers_on_api_answers(client: httpx.AsyncClient, path: str) -> None:
    headers = (await client.get(path)).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["cache-control"] == "no-store"


async def test_swagger_ui_renders_with_its_own_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/ui/")
    assert response.status_code == 200
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text
    assert "script-src 'self' 'unsafe-inline'" in response.headers["content-security-policy"]
    assert (await client.get("/ui/swagger-ui-bundle.js")).status_code == 200


async def test_openapi_yaml_is_the_committed_bundle_byte_for_byte(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/yaml"
    assert response.content == (PROJECT_ROOT / "generated" / "openapi" / "core.yaml").read_bytes()


async def test_openapi_json_is_the_same_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    committed = yaml.safe_load((PROJECT_ROOT / "generated" / "openapi" / "core.yaml").read_text())
    assert json.loads(response.content) == committed
    assert "$ref" in response.text, "components must stay named for client generators"


async def test_openapi_document_refuses_other_methods(client: httpx.AsyncClient) -> None:
    response = await client.post("/openapi.yaml")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/.env",
        b"/.git/config",
        b"/wp-admin/install.php",
        b"/wp-login.php",
        b"/phpmyadmin/",
        b"/health/../../etc/passwd",
        b"/static/%2e%2e/%2e%2e/etc/shadow",
    ],
)
async def test_attack_paths_get_a_fast_404(
    app: CoreApp, raw_path: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path.decode(),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"carebase.test"), (b"user-agent", b"scanner/1.0")],
        "client": ("198.51.100.9", 4444),
        "server": ("carebase.test", 80),
    }
    await app(scope, receive, send)
    start = sent[0]
    assert start["status"] == 404
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(sent[1]["body"])["code"] == "not_found"
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert any(e.get("event") == "security_event" and e["ip"] == "198.51.100.9" for e in events)
