"""The audit trail and the event outbox, both written in the transaction of the change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page


@dataclass(frozen=True, slots=True)
class AuditEventRow:
    id: UUID
    occurred_at: datetime
    actor_user_id: UUID | None
    actor_api_key_id: UUID | None
    impersonator_id: UUID | None
    action: str
    entity_type: str
    entity_id: UUID | None
    changed_fields: list[str]
    request_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: UUID
    occurred_at: datetime
    organization_id: UUID | None
    actor_user_id: UUID | None
    actor_api_key_id: UUID | None
    impersonator_id: UUID | None
    action: str
    entity_type: str
    entity_id: UUID | None
    changed_fields: Sequence[str]
    request_id: str | None
    ip: str | None
    user_agent: str | None
    detail: Mapping[str, Any] | None = None


COLUMNS = """id, occurred_at, actor_user_id, actor_api_key_id, impersonator_id, action,
       entity_type, entity_id, changed_fields, request_id, host(ip) AS ip, user_agent, detail"""

# No RETURNING: only admins may read the trail back, and everyone writes it.
INSERT_EVENT = """
INSERT INTO audit.events
       (id, organization_id, occurred_at, actor_user_id, actor_api_key_id, impersonator_id,
        action, entity_type, entity_id, changed_fields, request_id, ip, user_agent, detail)
VALUES (%(id)s, %(organization_id)s, %(occurred_at)s, %(actor_user_id)s, %(actor_api_key_id)s,
        %(impersonator_id)s, %(action)s, %(entity_type)s, %(entity_id)s, %(changed_fields)s,
        %(request_id)s, %(ip)s::inet, %(user_agent)s, %(detail)s)
"""
INSERT_OUTBOX = """
INSERT INTO audit.outbox (organization_id, topic, payload, traceparent) VALUES (%s, %s, %s, %s)
"""

COUNT_EVENTS = """
SELECT count(*) FROM audit.events
 WHERE organization_id = %(org)s
   AND (%(action)s::text IS NULL OR action = %(action)s)
   AND (%(entity_type)s::text IS NULL OR entity_type = %(entity_type)s)
   AND (%(entity_id)s::uuid IS NULL OR entity_id = %(entity_id)s)
   AND (%(actor)s::uuid IS NULL OR actor_user_id = %(actor)s OR actor_api_key_id = %(actor)s)
   AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
"""
LIST_EVENTS = """
SELECT id, occurred_at, actor_user_id, actor_api_key_id, impersonator_id, action,
       entity_type, entity_id, changed_fields, request_id, host(ip) AS ip, user_agent, detail
  FROM audit.events
 WHERE organization_id = %(org)s
   AND (%(action)s::text IS NULL OR action = %(action)s)
   AND (%(entity_type)s::text IS NULL OR entity_type = %(entity_type)s)
   AND (%(entity_id)s::uuid IS NULL OR entity_id = %(entity_id)s)
   AND (%(actor)s::uuid IS NULL OR actor_user_id = %(actor)s OR actor_api_key_id = %(actor)s)
   AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)

 ORDER BY occurred_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: str | None = None
    entity_type: str | None = None
    entity_id: UUID | None = None
    actor: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


async def insert_event(q: Querier, event: NewEvent) -> None:
    params: dict[str, Any] = {name: getattr(event, name) for name in NewEvent.__dataclass_fields__}
    params["changed_fields"] = list(event.changed_fields)
    params["detail"] = Jsonb(dict(event.detail)) if event.detail is not None else None
    await q.execute(INSERT_EVENT, params)


async def insert_outbox(
    q: Querier,
    organization_id: UUID | None,
    topic: str,
    payload: dict[str, Any],
    traceparent: str | None = None,
) -> None:
    await q.execute(INSERT_OUTBOX, (organization_id, topic, Jsonb(payload), traceparent))


async def events(
    q: Querier, organization_id: UUID, page: PageRequest, where: AuditFilter
) -> tuple[list[AuditEventRow], int]:
    params = {
        "org": organization_id,
        "action": where.action,
        "entity_type": where.entity_type,
        "entity_id": where.entity_id,
        "actor": where.actor,
        "since": where.since,
        "until": where.until,
    }
    return await fetch_page(q, COUNT_EVENTS, LIST_EVENTS, params, page, row=AuditEventRow)
