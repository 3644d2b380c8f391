"""CORS at the edge: exact origins, preflights answered from the contract, and the allowed
origin's headers on every answer to it; nothing for anyone else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import Clinic

from carebase.apps.core import create_app
from carebase.config import Settings

pytestmark = pytest.mark.integration

APP_ORIGIN = "https://app.carebase.test"
OTHER_ORIGIN = "https://elsewhere.example.com"


@pytest.fixture(scope="module")
async def cors_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={"cors_allowed_origins": f"{APP_ORIGIN},http://localhost:5173"}
    )
    app = create_app(configured)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.41", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
            yield c


def preflight(
    origin: str, method: str, headers: str = "authorization, content-type"
) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": headers,
    }


async def test_a_preflight_from_an_allowed_origin_gets_what_the_path_serves(
    cors_client: httpx.AsyncClient,
) -> None:
    answer = await cors_client.options(
        "/v1/patients/0b6a3f1e-4a9e-4d0e-9a51-5b1b2d3c4e5f",
        headers=preflight(APP_ORIGIN, "PATCH", "authorization, content-type, if-match"),
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert answer.headers["access-control-allow-credentials"] == "true"
    methods = {m.strip() for m in answer.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "PATCH"} <= methods
    assert "POST" not in methods  # what this path serves, not every method the API has
    allowed = answer.headers["access-control-allow-headers"].lower()
    for name in ("authorization", "content-type", "if-match", "idempotency-key", "traceparent"):
        assert name in allowed
    assert answer.headers["access-control-max-age"] == "600"
    assert "Origin" in answer.headers["vary"]


async def test_a_preflight_from_elsewhere_or_for_an_unserved_method_is_refused(
    cors_client: httpx.AsyncClient,
) -> None:
    elsewhere = await cors_client.options("/v1/patients", headers=preflight(OTHER_ORIGIN, "POST"))
    assert elsewhere.status_code == 403
    assert elsewhere.headers["content-type"] == "application/problem+json"
    assert "access-control-allow-origin" not in elsewhere.headers
    unserved = await cors_client.options("/v1/patients", headers=preflight(APP_ORIGIN, "PUT"))
    assert unserved.status_code == 403
    nowhere = await cors_client.options("/v1/nothing", headers=preflight(APP_ORIGIN, "GET"))
    assert nowhere.status_code == 404
    # A look-alike is another origin: matching is exact.
    lookalike = await cors_client.options(
        "/v1/patients", headers=preflight(APP_ORIGIN + ".evil.example", "POST")
    )
    assert lookalike.status_code == 403


async def test_answers_carry_the_allowed_origin_and_the_headers_a_client_reads(
    cors_client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    path = f"/v1/patients/{c.patient_id}"
    allowed = await cors_client.get(path, headers={**c.staff.auth, "origin": APP_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert {"etag", "location", "retry-after", "x-request-id"} <= {
        name.strip() for name in exposed.split(",")
    }
    # A refusal is readable by the app too (its problem document).
    refused = await cors_client.get(path, headers={"origin": APP_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP_ORIGIN
    other = await cors_client.get(path, headers={**c.staff.auth, "origin": OTHER_ORIGIN})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    assert other.headers["vary"] == "Origin"


async def test_without_origins_configured_there_is_no_cross_origin_access(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.options("/v1/patients", headers=preflight(APP_ORIGIN, "POST"))
    assert answer.status_code == 405
    assert "access-control-allow-origin" not in answer.headers
