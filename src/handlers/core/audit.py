"""Handlers for openapi/core/audit.yaml."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models import core as api
from carebase.handlers.context import page_request, principal
from carebase.persistence.audit import AuditEventRow, AuditFilter
from carebase.services.audit import AuditService
from carebase.web.responses import json_response


class AuditHandlers:
    def __init__(self, *, audit: AuditService) -> None:
        self._audit = audit

    async def list_audit_events(
        self,
        *,
        page: int | None = None,
        page_size: int | None = None,
        action: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> ConnexionResponse:
        where = AuditFilter(
            action=action,
            entity_type=entity_type,
            entity_id=UUID(entity_id) if entity_id else None,
            actor=UUID(actor_id) if actor_id else None,
            since=datetime.fromisoformat(since) if since else None,
            until=datetime.fromisoformat(until) if until else None,
        )
        found = await self._audit.events(principal(), page_request(page, page_size), where)
        return json_response(
            api.AuditEventPage(
                data=[_event(row) for row in found.items], meta=api.PageMeta(**found.meta)
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
        }
    )
