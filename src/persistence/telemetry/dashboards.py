"""Dashboard reads: the aggregates the materialized views keep (sql/clickhouse/0003…), each
query scoped to one organization through `ClickHouse.scoped`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from carebase.persistence.clickhouse import ClickHouse

ANALYTICS_DAYS = """
SELECT day, sum(events), uniqExactMerge(active_patients)
  FROM telemetry.daily_analytics
 WHERE organization_id = {organization_id:UUID} AND day BETWEEN {first:Date} AND {last:Date}
 GROUP BY day
"""
POSE_DAYS = """
SELECT day, uniqExactMerge(minutes)
  FROM telemetry.daily_pose
 WHERE organization_id = {organization_id:UUID} AND day BETWEEN {first:Date} AND {last:Date}
 GROUP BY day
"""
MEDIA_DAYS = """
SELECT day, count(), median(p50_kbps), sum(stalls)
  FROM telemetry.media_summaries FINAL
 WHERE organization_id = {organization_id:UUID} AND day BETWEEN {first:Date} AND {last:Date}
 GROUP BY day
"""
STAFF_ROWS = """
SELECT day, actor_hash, sum(actions) AS total, uniqExactMerge(active_minutes),
       uniqExactMerge(patients)
  FROM telemetry.daily_staff
 WHERE organization_id = {organization_id:UUID} AND day BETWEEN {first:Date} AND {last:Date}
 GROUP BY day, actor_hash
 ORDER BY day, total DESC, actor_hash
 LIMIT {limit:UInt32} OFFSET {offset:UInt32}
"""
STAFF_COUNT = """
SELECT count() FROM (
    SELECT day, actor_hash FROM telemetry.daily_staff
     WHERE organization_id = {organization_id:UUID} AND day BETWEEN {first:Date} AND {last:Date}
     GROUP BY day, actor_hash)
"""
SESSION_POSE = """
SELECT sum(frames), uniqExactMerge(minutes), min(first_at), max(last_at)
  FROM telemetry.session_pose
 WHERE organization_id = {organization_id:UUID} AND session_id = {session:UUID}
"""


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    events: int = 0
    active_patients: int = 0
    completed_sessions: int = 0
    pose_minutes: int = 0
    median_bitrate_kbps: float | None = None
    stalls: int = 0


@dataclass(frozen=True, slots=True)
class StaffRow:
    day: date
    actor: str
    actions: int
    active_minutes: int
    distinct_patients: int


@dataclass(frozen=True, slots=True)
class PoseRow:
    frames: int
    minutes: int
    first_at: datetime
    last_at: datetime


async def days(store: ClickHouse, organization_id: UUID, first: date, last: date) -> list[Day]:
    """Every day from `first` to `last`, zero where nothing happened."""
    span: dict[str, Any] = {"first": first, "last": last}
    figures: dict[date, dict[str, Any]] = {}
    for day, events, patients in await store.scoped(organization_id, ANALYTICS_DAYS, span):
        figures.setdefault(day, {}).update(events=int(events), active_patients=int(patients))
    for day, minutes in await store.scoped(organization_id, POSE_DAYS, span):
        figures.setdefault(day, {}).update(pose_minutes=int(minutes))
    for day, completed, median, stalls in await store.scoped(organization_id, MEDIA_DAYS, span):
        figures.setdefault(day, {}).update(
            completed_sessions=int(completed),
            median_bitrate_kbps=None if median is None else round(float(median), 3),
            stalls=int(stalls),
        )
    count = (last - first).days + 1
    return [
        Day(day=day, **figures.get(day, {}))
        for day in (date.fromordinal(first.toordinal() + i) for i in range(count))
    ]


async def staff(
    store: ClickHouse, organization_id: UUID, first: date, last: date, *, limit: int, offset: int
) -> tuple[list[StaffRow], int]:
    span: dict[str, Any] = {"first": first, "last": last}
    rows = await store.scoped(
        organization_id, STAFF_ROWS, {**span, "limit": limit, "offset": offset}
    )
    found = [
        StaffRow(day, actor, int(actions), int(minutes), int(patients))
        for day, actor, actions, minutes, patients in rows
    ]
    if offset == 0 and len(found) < limit:
        return found, len(found)
    ((total,),) = await store.scoped(organization_id, STAFF_COUNT, span)
    return found, int(total)


async def session_pose(
    store: ClickHouse, organization_id: UUID, session_id: UUID
) -> PoseRow | None:
    ((frames, minutes, first, last),) = await store.scoped(
        organization_id, SESSION_POSE, {"session": session_id}
    )
    if not frames:
        return None
    return PoseRow(int(frames), int(minutes), _utc(first), _utc(last))


def _utc(moment: datetime) -> datetime:
    """clickhouse-connect hands DateTime64(…, 'UTC') back without its zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
