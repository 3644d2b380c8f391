"""Recording every change, and reading the trail back.

`record` runs inside the service's transaction: the audit row and the outbox event commit
or roll back with the change itself, so the trail never claims a change that did not
happen nor misses one that did. It stores field *names* only, never health values. The outbox
event keeps the request's trace context, so what the relays do with it joins the request's
trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from carebase.errors import NotFound
from carebase.pages import Page, PageRequest
from carebase.persistence import audit
from carebase.persistence.db import Database, Querier
from carebase.principal import Principal
from carebase.tracing import current_traceparent

TOPIC = "audit.event"


async def record(
    q: Querier,
    principal: Principal,
    *,
    action: str,
    entity_type: str,
    entity_id: UUID | None,
    changed_fields: Iterable[str] = (),
    organization_id: UUID | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """`organization_id` names the tenant when it is not the one acting (a new organization).
    `detail` is what the action did beyond the fields it changed (an export's filters and
    counts): kept in the trail, never sent to webhooks, never health data."""
    origin = principal.origin
    tenant = organization_id or principal.organization_id
    event = audit.NewEvent(
        id=uuid4(),
        occurred_at=datetime.now(UTC),
        organization_id=tenant,
        actor_user_id=principal.user_id,
        actor_api_key_id=principal.api_key_id,
        impersonator_id=principal.impersonator_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changed_fields=sorted(set(changed_fields)),
        request_id=origin.request_id if origin else None,
        ip=origin.ip if origin else None,
        user_agent=origin.user_agent[:512] if origin and origin.user_agent else None,
        detail=detail,
    )
    await audit.insert_event(q, event)
    await audit.insert_outbox(
        q,
        tenant,
        TOPIC,
        {
            "event_id": str(event.id),
            "occurred_at": event.occurred_at.isoformat(),
            "organization_id": _text(event.organization_id),
            "actor_user_id": _text(event.actor_user_id),
            "actor_api_key_id": _text(event.actor_api_key_id),
            "impersonator_id": _text(event.impersonator_id),
            "action": action,
            "entity_type": entity_type,
            "entity_id": _text(entity_id),
            "changed_fields": list(event.changed_fields),
            "request_id": event.request_id,
        },
        traceparent=current_traceparent(),
    )


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


class AuditService:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def events(
        self, principal: Principal, page: PageRequest, where: audit.AuditFilter
    ) -> Page[audit.AuditEventRow]:
        if principal.organization_id is None:
            raise NotFound("No organization to read the trail of.")
        q = self._db.reader(principal)
        rows, total = await audit.events(q, principal.organization_id, page, where)
        return Page(rows, total, page)
