"""Core's security events in telemetry's PostgreSQL database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page


@dataclass(frozen=True, slots=True)
class NewSecurityEvent:
    event_id: UUID
    organization_id: UUID | None
    occurred_at: datetime
    kind: str
    actor_hash: str | None
    ip_prefix: str | None
    request_id: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SecurityEventRow:
    event_id: UUID
    kind: str
    occurred_at: datetime
    actor_hash: str | None
    ip_prefix: str | None
    request_id: str | None
    detail: dict[str, Any]


# Owner pool (ingest is system work); the event id makes a repeat store nothing.
INSERT_NEW = """
INSERT INTO events.security_events (event_id, organization_id, occurred_at, kind, actor_hash,
                                    ip_prefix, request_id, detail)
SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::text[], %s::text[],
                     %s::text[], %s::text[], %s::jsonb[])
ON CONFLICT (event_id) DO NOTHING
"""
COUNT = """
SELECT count(*) FROM events.security_events
 WHERE organization_id = %(org)s
   AND (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
"""
LIST = """
SELECT event_id, kind, occurred_at, actor_hash, ip_prefix, request_id, detail
  FROM events.security_events
 WHERE organization_id = %(org)s
   AND (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
 ORDER BY occurred_at DESC, event_id DESC LIMIT %(limit)s OFFSET %(offset)s
"""


async def insert_new(q: Querier, rows: Sequence[NewSecurityEvent]) -> int:
    if not rows:
        return 0
    return await q.execute(
        INSERT_NEW,
        (
            [r.event_id for r in rows],
            [r.organization_id for r in rows],
            [r.occurred_at for r in rows],
            [r.kind for r in rows],
            [r.actor_hash for r in rows],
            [r.ip_prefix for r in rows],
            [r.request_id for r in rows],
            [Jsonb(r.detail) for r in rows],
        ),
    )


async def events(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[list[SecurityEventRow], int]:
    params = {"org": organization_id, "kind": kind, "since": since, "until": until}
    return await fetch_page(q, COUNT, LIST, params, page, row=SecurityEventRow)


PURGE = """
DELETE FROM events.security_events
 WHERE occurred_at < now() - make_interval(days => %s)
"""


async def purge(q: Querier, *, keep_days: int) -> int:
    """Drop events past their retention (owner pool)."""
    return await q.execute(PURGE, (keep_days,))
