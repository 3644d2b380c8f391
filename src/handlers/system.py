"""Handlers for the paths of openapi/common.yaml (liveness, readiness): every service's.

The schemas live in common.yaml, so each service's generated models hold the same classes;
these handlers render with core's, which serialize to the same JSON."""

from __future__ import annotations

from carebase.generated.models.core import (
    CheckStatus,
    HealthCheck,
    Liveness,
    Readiness,
    ServiceStatus,
)
from carebase.services.system import HealthService
from carebase.web import problems
from carebase.web.render import dumps
from carebase.web.results import Reply, ok, problem

# Nothing about the process changes what liveness says: rendered once.
LIVE = dumps(Liveness(status=ServiceStatus.ok))


class SystemHandlers:
    def __init__(self, *, health: HealthService) -> None:
        self._health = health

    async def get_liveness(self) -> Reply:
        return ok(LIVE)

    async def get_readiness(self) -> Reply:
        results = await self._health.readiness()
        checks = [
            HealthCheck(
                name=r.name,
                status=CheckStatus.ok if r.ok else CheckStatus.fail,
                duration_ms=r.duration_ms,
                detail=r.detail,
            )
            for r in results
        ]
        if all(r.ok for r in results):
            return ok(Readiness(status=ServiceStatus.ok, checks=checks))
        failing = ", ".join(r.name for r in results if not r.ok)
        rendered = problems.render(
            problems.NOT_READY,
            instance="/health/ready",
            detail=f"Failing checks: {failing}.",
            headers={"Retry-After": "5"},
            extra={"checks": [c.model_dump(mode="json", exclude_none=True) for c in checks]},
        )
        return problem(rendered)
