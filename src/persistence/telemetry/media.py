"""Media sessions' state and summaries in telemetry's PostgreSQL database, and the ClickHouse
queries that summarize a session (through `ClickHouse.scoped`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from carebase.persistence.clickhouse import ClickHouse
from carebase.persistence.db import Querier

# As the caller's tenant (row-level security): the session's times, as events arrive.
TOUCH = """
INSERT INTO events.media_sessions (organization_id, session_id, started_at, ended_at, last_seen_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (organization_id, session_id) DO UPDATE
   SET started_at = COALESCE(events.media_sessions.started_at, EXCLUDED.started_at),
       ended_at = COALESCE(EXCLUDED.ended_at, events.media_sessions.ended_at),
       last_seen_at = now()
"""
SESSION = """
SELECT status, started_at, ended_at, p50_kbps, p95_kbps, stalls, samples
  FROM events.media_sessions WHERE organization_id = %s AND session_id = %s
"""
# The owner pool's sweep: sessions that ended a few seconds ago (every process has flushed
# their rows by then) or went quiet, claimed so two processes never summarize one twice.
DUE = """
SELECT organization_id, session_id, started_at, ended_at, last_seen_at
  FROM events.media_sessions
 WHERE summarized_at IS NULL
   AND ((ended_at IS NOT NULL AND last_seen_at < now() - make_interval(secs => %(settle_s)s))
        OR last_seen_at < now() - make_interval(secs => %(idle_s)s))
 ORDER BY last_seen_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
"""
SUMMARIZE = """
UPDATE events.media_sessions
   SET status = %(status)s, p50_kbps = %(p50)s, p95_kbps = %(p95)s, stalls = %(stalls)s,
       samples = %(samples)s, summarized_at = now()
 WHERE organization_id = %(org)s AND session_id = %(session)s
"""

SUMMARY_QUERY = """
SELECT quantileExact(0.5)(kbps_down), quantileExact(0.95)(kbps_down), count()
  FROM telemetry.media_samples
 WHERE organization_id = {organization_id:UUID} AND session_id = {session:UUID}
"""
STALLS_QUERY = """
SELECT countIf(type = 'stall')
  FROM telemetry.media_events
 WHERE organization_id = {organization_id:UUID} AND session_id = {session:UUID}
"""


@dataclass(frozen=True, slots=True)
class SessionRow:
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    p50_kbps: float | None
    p95_kbps: float | None
    stalls: int | None
    samples: int | None


@dataclass(frozen=True, slots=True)
class DueSession:
    organization_id: UUID
    session_id: UUID
    started_at: datetime | None
    ended_at: datetime | None
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class Quality:
    p50_kbps: float | None
    p95_kbps: float | None
    samples: int
    stalls: int


async def touch(
    q: Querier,
    organization_id: UUID,
    session_id: UUID,
    *,
    started_at: datetime | None,
    ended_at: datetime | None,
) -> None:
    await q.execute(TOUCH, (organization_id, session_id, started_at, ended_at))


async def session(q: Querier, organization_id: UUID, session_id: UUID) -> SessionRow | None:
    return await q.fetch_one(SESSION, (organization_id, session_id), row=SessionRow)


async def due(q: Querier, *, settle_s: float, idle_s: float, limit: int) -> list[DueSession]:
    params = {"settle_s": settle_s, "idle_s": idle_s, "limit": limit}
    return await q.fetch_all(DUE, params, row=DueSession)


async def summarize(q: Querier, row: DueSession, status: str, quality: Quality) -> None:
    await q.execute(
        SUMMARIZE,
        {
            "status": status,
            "p50": quality.p50_kbps,
            "p95": quality.p95_kbps,
            "stalls": quality.stalls,
            "samples": quality.samples,
            "org": row.organization_id,
            "session": row.session_id,
        },
    )


async def quality(store: ClickHouse, organization_id: UUID, session_id: UUID) -> Quality:
    """p50 and p95 of the received bitrate over the session's samples, and its stalls."""
    params = {"session": session_id}
    ((p50, p95, samples),) = await store.scoped(organization_id, SUMMARY_QUERY, params)
    ((stalls,),) = await store.scoped(organization_id, STALLS_QUERY, params)
    return Quality(
        p50_kbps=_number(p50) if samples else None,
        p95_kbps=_number(p95) if samples else None,
        samples=int(samples),
        stalls=int(stalls),
    )


def _number(value: object) -> float | None:
    return None if value is None else round(float(value), 3)  # type: ignore[arg-type]


PURGE = """
DELETE FROM events.media_sessions
 WHERE summarized_at IS NOT NULL AND last_seen_at < now() - make_interval(days => %s)
"""


async def purge(q: Querier, *, keep_days: int) -> int:
    """Drop summarized sessions past their retention (owner pool)."""
    return await q.execute(PURGE, (keep_days,))
