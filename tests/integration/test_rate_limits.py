"""Rate limits against the real Redis: exact under concurrency, honest headers, chosen failure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import fresh_ip

from carebase.apps.core import CoreApp, create_app
from carebase.config import Settings
from carebase.integrations.redis_pipe import RedisPipe
from carebase.web.contract import Contract
from carebase.web.results import Reply, ok

pytestmark = pytest.mark.integration


class LimitedHandlers:
    async def get_limited(self) -> Reply:
        return ok({})

    async def get_guarded(self) -> Reply:
        return ok({})


LIMITED_PATHS: dict[str, Any] = {
    path: {
        "get": {
            "operationId": operation_id,
            "tags": ["System"],
            "summary": "Test-only",
            "security": [],
            "x-rate-limit": rule,
            "responses": {
                "200": {
                    "description": "ok",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    }
    for path, operation_id, rule in (
        ("/test/limited", "getLimited", {"limit": 100, "window_s": 60, "key": "ip"}),
        ("/test/guarded", "getGuarded", {"limit": 5, "window_s": 60, "fail": "closed"}),
    )
}


@pytest.fixture(scope="module")
def limited_contract(extended_contract: Callable[..., Contract]) -> Contract:
    return extended_contract(LIMITED_PATHS, problems=("400", "422", "429", "500", "503"))


@asynccontextmanager
async def serve(
    settings: Settings, contract: Contract, **overrides: Any
) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    app: CoreApp = create_app(
        settings,
        overrides={
            "contract": contract,
            "extra_handlers": [LimitedHandlers()],
            **overrides,
        },
    )
    async with LifespanManager(app):

        def client_from(ip: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(ip, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://carebase.test")

        yield client_from


def counting(settings: Settings) -> Settings:
    """For tests that count admissions exactly: on a loaded machine a Redis call can outlast the
    250 ms default and fail open (admitted, uncounted), which another test covers; these are
    about the counting, so Redis gets 5 s."""
    return settings.model_copy(update={"redis_timeout_ms": 5000})


async def test_concurrent_requests_are_admitted_exactly_up_to_the_limit(
    settings: Settings, limited_contract: Contract
) -> None:
    patient = counting(settings)
    async with serve(patient, limited_contract) as client_from, client_from(fresh_ip()) as client:
        responses = await asyncio.gather(*(client.get("/test/limited") for _ in range(200)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 100
    assert statuses.count(429) == 100


async def test_answers_carry_the_rate_limit_headers(
    settings: Settings, limited_contract: Contract
) -> None:
    patient = counting(settings)
    async with serve(patient, limited_contract) as client_from, client_from(fresh_ip()) as client:
        first = await client.get("/test/limited")
        assert first.headers["ratelimit-limit"] == "100"
        assert first.headers["ratelimit-remaining"] == "99"
        assert 0 < int(first.headers["ratelimit-reset"]) <= 60
        for _ in range(99):
            await client.get("/test/limited")
        refused = await client.get("/test/limited")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert json.loads(refused.content)["code"] == "rate_limited"
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "100"
    assert refused.headers["ratelimit-remaining"] == "0"


async def test_each_caller_has_its_own_window(
    settings: Settings, limited_contract: Contract
) -> None:
    async with serve(counting(settings), limited_contract) as client_from:
        async with client_from(fresh_ip()) as greedy:
            for _ in range(100):
                await greedy.get("/test/limited")
            assert (await greedy.get("/test/limited")).status_code == 429
        async with client_from(fresh_ip()) as other:
            assert (await other.get("/test/limited")).status_code == 200


async def test_probes_opt_out_and_the_rest_get_the_default(
    settings: Settings, limited_contract: Contract
) -> None:
    async with serve(settings, limited_contract) as client_from, client_from(fresh_ip()) as client:
        assert "ratelimit-limit" not in (await client.get("/health/live")).headers
        jwks = await client.get("/.well-known/jwks.json")
    assert jwks.headers["ratelimit-limit"] == str(settings.rate_limit_default_limit)


async def test_redis_down_fails_open_or_closed_as_declared(
    settings: Settings,
    limited_contract: Contract,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = RedisPipe(f"unix://{tmp_path}/no-redis.sock", timeout_s=0.2)
    async with (
        serve(settings, limited_contract, redis_pipe=dead) as client_from,
        client_from(fresh_ip()) as c,
    ):
        open_answer = await c.get("/test/limited")
        closed_answer = await c.get("/test/guarded")
    assert open_answer.status_code == 200
    assert "ratelimit-limit" not in open_answer.headers
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert any(e.get("event") == "rate_limit_failed_open" for e in events)
    assert closed_answer.status_code == 503
    assert closed_answer.headers["content-type"] == "application/problem+json"
    assert closed_answer.headers["retry-after"]
