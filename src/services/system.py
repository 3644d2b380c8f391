"""Readiness: can this process serve traffic right now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from carebase.persistence import system as repo
from carebase.persistence.db import Database


class Pingable(Protocol):
    def ping(self) -> Awaitable[object]: ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    duration_ms: float
    detail: str | None = None


class HealthService:
    def __init__(
        self,
        *,
        db: Database,
        redis: Pingable,
        expected_migrations: Mapping[str, set[str]],
        more: Mapping[str, Callable[[], Awaitable[str | None]]] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        """`more`: a service's own checks by name (telemetry: ClickHouse), each answering
        None when ready or what is wrong."""
        self._db = db
        self._redis = redis
        self._expected = expected_migrations
        self._more = dict(more or {})
        self._timeout_s = timeout_s

    async def readiness(self) -> list[CheckResult]:
        """Every check runs, concurrently, each within the timeout; none raises."""
        checks: dict[str, Callable[[], Awaitable[str | None]]] = {
            "database": self._database,
            "database_admin": self._database_admin,
            "redis": self._redis_ping,
            "migrations": self._migrations,
            **self._more,
        }
        return list(await asyncio.gather(*(self._run(n, c) for n, c in checks.items())))

    async def _run(self, name: str, check: Callable[[], Awaitable[str | None]]) -> CheckResult:
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(check(), self._timeout_s)
        except TimeoutError:
            detail = "timeout"
        except Exception as exc:  # a readiness check reports failures, it never raises them
            detail = type(exc).__name__
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return CheckResult(name=name, ok=detail is None, duration_ms=elapsed, detail=detail)

    async def _database(self) -> str | None:
        async with self._db.connection() as q:
            await repo.ping(q)
        return None

    async def _database_admin(self) -> str | None:
        async with self._db.admin_transaction() as q:
            await repo.ping(q)
        return None

    async def _redis_ping(self) -> str | None:
        await self._redis.ping()
        return None

    async def _migrations(self) -> str | None:
        pending: list[str] = []
        async with self._db.admin_transaction() as q:
            for module, versions in self._expected.items():
                missing = versions - await repo.applied_migrations(q, module)
                pending += [f"{module}/{version}" for version in sorted(missing)]
        return f"pending: {', '.join(pending)}" if pending else None
