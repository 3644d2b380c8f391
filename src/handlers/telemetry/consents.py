"""Handlers for openapi/telemetry/consents.yaml."""

from __future__ import annotations

from uuid import UUID

from carebase.generated.models import telemetry as api
from carebase.pages import PageRequest
from carebase.persistence.telemetry.privacy import ConsentRow
from carebase.principal import Principal
from carebase.services.telemetry.consents import ConsentService
from carebase.web.results import Reply, created, ok

BASE = "/v1/consents"


class ConsentHandlers:
    def __init__(self, *, consents: ConsentService) -> None:
        self._consents = consents

    async def record_consent(self, principal: Principal, *, body: api.ConsentCreate) -> Reply:
        row = await self._consents.record(
            principal,
            purpose=body.purpose.value,
            granted=body.granted,
            notice_version=body.notice_version,
        )
        return created(_consent(row), location=f"{BASE}?subject_id={row.subject_id}")

    async def list_consents(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        subject_id: UUID | None,
        purpose: str | None,
    ) -> Reply:
        found = await self._consents.history(
            principal, PageRequest(page, page_size), subject_id=subject_id, purpose=purpose
        )
        return ok(
            api.ConsentPage.model_construct(
                data=[_consent(row) for row in found.items], meta=found.meta
            )
        )


def _consent(row: ConsentRow) -> api.Consent:
    return api.Consent(
        id=row.id,
        subject_id=row.subject_id,
        purpose=api.ConsentPurpose(row.purpose),
        granted=row.granted,
        notice_version=row.notice_version,
        recorded_at=row.recorded_at,
    )
