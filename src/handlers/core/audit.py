"""Handlers for openapi/core/audit.yaml."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from carebase.generated.models import core as api
from carebase.pages import PageRequest
from carebase.persistence.audit import AuditEventRow, AuditFilter
from carebase.principal import Principal
from carebase.services.audit import AuditService
from carebase.web.results import Reply, ok


class AuditHandlers:
    def __init__(self, *, audit: AuditService) -> None:
        self._audit = audit

    async def list_audit_events(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        action: str | None,
        entity_type: str | None,
        entity_id: UUID | None,
        actor_id: UUID | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Reply:
        where = AuditFilter(
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            actor=actor_id,
            since=since,
            until=until,
        )
        found = await self._audit.events(principal, PageRequest(page, page_size), where)
        return ok(
            api.AuditEventPage.model_construct(
                data=[_event(row) for row in found.items], meta=found.meta
            )
        )


def _event(row: AuditEventRow) -> api.AuditEvent:
    return api.AuditEvent.model_validate(
        {
            "id": row.id,
            "occurred_at": row.occurred_at,
            "actor_user_id": row.actor_user_id,
            "actor_api_key_id": row.actor_api_key_id,
            "impersonator_id": row.impersonator_id,
            "action": row.action,
            "entity_type": row.entity_type,
            "entity_id": row.entity_id,
            "changed_fields": row.changed_fields,
            "request_id": row.request_id,
            "ip": row.ip,
            "user_agent": row.user_agent,
            "detail": row.detail,
        }
    )
