"""A GET by id costs one database round trip: counted at the driver, so a regression shows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from psycopg_pool import AsyncConnectionPool
from support import Person

from carebase.apps.core import create_app
from carebase.config import Settings
from carebase.operations.devstack import EmbeddedStack
from carebase.persistence.db import Database
from carebase.persistence.pools import IdleCheck

pytestmark = pytest.mark.integration


class CountingCursor(psycopg.AsyncCursor[Any]):
    """Every `execute` is one round trip to PostgreSQL (no pipeline mode is used)."""

    sent: ClassVar[list[str]] = []

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        text = query.decode() if isinstance(query, bytes) else str(query)
        type(self).sent.append(text)
        return await super().execute(query, params, **kwargs)


def _pool(url: str) -> AsyncConnectionPool[Any]:
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=2,
        open=False,
        check=IdleCheck(),
        kwargs={"autocommit": True, "cursor_factory": CountingCursor},
    )


@pytest.fixture
async def counted(settings: Settings, stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    """The core app over a counting pool; roles trusted for 30 s, as in production."""
    database = Database(_pool(stack.database_url), _pool(stack.database_admin_url))
    app = create_app(
        settings.model_copy(update={"auth_cache_s": 30.0}), overrides={"database": database}
    )
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
            yield c


async def test_a_get_by_id_is_one_round_trip(
    counted: httpx.AsyncClient,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    staff = person(new_org(), "staff")
    created = await counted.post(
        "/v1/patients", json={"given_name": "Ana", "family_name": "Kovač"}, headers=staff.auth
    )
    assert created.status_code == 201, created.text
    url = f"/v1/patients/{created.json()['id']}"
    for _ in range(2):  # the role cache and the connection's prepared statements warm up
        assert (await counted.get(url, headers=staff.auth)).status_code == 200
    CountingCursor.sent.clear()
    answer = await counted.get(url, headers=staff.auth)
    assert answer.status_code == 200
    assert answer.json()["given_name"] == "Ana"
    assert len(CountingCursor.sent) == 1, CountingCursor.sent
    assert "platform.enter_tenant" in CountingCursor.sent[0]
