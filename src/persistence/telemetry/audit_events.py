"""Core's audit events in telemetry's PostgreSQL database (owner pool: ingest is system work)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.types.json import Jsonb

from carebase.persistence.db import Querier


@dataclass(frozen=True, slots=True)
class NewAuditEvent:
    event_id: UUID
    organization_id: UUID | None
    occurred_at: datetime
    action: str
    entity_type: str
    entity_id: UUID | None
    changed_fields: list[str]
    actor_type: str
    actor_hash: str | None
    impersonator_hash: str | None
    request_id: str | None


# One statement for the batch; the event id makes a repeated event store nothing.
INSERT_NEW = """
INSERT INTO events.audit_events (event_id, organization_id, occurred_at, action, entity_type,
                                 entity_id, changed_fields, actor_type, actor_hash,
                                 impersonator_hash, request_id)
SELECT e.event_id, e.organization_id, e.occurred_at, e.action, e.entity_type, e.entity_id,
       ARRAY(SELECT jsonb_array_elements_text(e.changed_fields)), e.actor_type, e.actor_hash,
       e.impersonator_hash, e.request_id
  FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::text[], %s::text[], %s::uuid[],
              %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::text[])
       AS e(event_id, organization_id, occurred_at, action, entity_type, entity_id,
            changed_fields, actor_type, actor_hash, impersonator_hash, request_id)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""


@dataclass(frozen=True, slots=True)
class _Id:
    event_id: UUID


async def insert_new(q: Querier, rows: Sequence[NewAuditEvent]) -> list[UUID]:
    """Store the events not stored yet; answers their ids."""
    if not rows:
        return []
    params = (
        [r.event_id for r in rows],
        [r.organization_id for r in rows],
        [r.occurred_at for r in rows],
        [r.action for r in rows],
        [r.entity_type for r in rows],
        [r.entity_id for r in rows],
        [Jsonb(r.changed_fields) for r in rows],
        [r.actor_type for r in rows],
        [r.actor_hash for r in rows],
        [r.impersonator_hash for r in rows],
        [r.request_id for r in rows],
    )
    found = await q.fetch_all(INSERT_NEW, params, row=_Id)
    return [row.event_id for row in found]


PURGE = """
DELETE FROM events.audit_events
 WHERE occurred_at < now() - make_interval(days => %s)
"""


async def purge(q: Querier, *, keep_days: int) -> int:
    """Drop events past their retention (owner pool)."""
    return await q.execute(PURGE, (keep_days,))
