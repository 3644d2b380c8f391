"""A specialist's working hours (`scheduling.schedules`) and date overrides, and the time other
appointments already block."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from carebase.persistence.db import Querier


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    time_zone: str
    weekly: list[dict[str, Any]]
    version: int


@dataclass(frozen=True, slots=True)
class OverrideRow:
    on_date: dt.date
    intervals: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class BusyRow:
    blocked: Range[dt.datetime]


@dataclass(frozen=True, slots=True)
class ZoneRow:
    time_zone: str


SELECT_SCHEDULE = """
SELECT time_zone, weekly, version FROM scheduling.schedules
 WHERE organization_id = %s AND specialist_id = %s
"""
SELECT_OVERRIDES = """
SELECT on_date, intervals FROM scheduling.date_overrides
 WHERE organization_id = %s AND specialist_id = %s
   AND (%s::date IS NULL OR on_date >= %s::date) AND (%s::date IS NULL OR on_date <= %s::date)
 ORDER BY on_date
"""
SELECT_ORGANIZATION_ZONE = """
SELECT time_zone FROM platform.organizations WHERE id = %s
"""
# The version check is part of the statement: two writers with one ETag cannot both win.
UPSERT_SCHEDULE = """
INSERT INTO scheduling.schedules AS s (organization_id, specialist_id, time_zone, weekly)
VALUES (%(org)s, %(specialist)s, %(zone)s, %(weekly)s)
ON CONFLICT (organization_id, specialist_id) DO UPDATE
   SET time_zone = EXCLUDED.time_zone, weekly = EXCLUDED.weekly,
       version = s.version + 1, updated_at = now()
 WHERE %(version)s::integer IS NULL OR s.version = %(version)s
RETURNING time_zone, weekly, version
"""
DELETE_OVERRIDES = """
DELETE FROM scheduling.date_overrides WHERE organization_id = %s AND specialist_id = %s
"""
INSERT_OVERRIDE = """
INSERT INTO scheduling.date_overrides (organization_id, specialist_id, on_date, intervals)
VALUES (%s, %s, %s, %s)
"""
# What active appointments block of the specialist's time in a range (buffers included).
SELECT_BUSY = """
SELECT blocked FROM scheduling.appointments
 WHERE organization_id = %s AND specialist_id = %s
   AND status IN ('held', 'booked', 'upcoming', 'confirmed', 'in_progress')
   AND (status <> 'held' OR hold_expires_at > now())
   AND blocked && tstzrange(%s, %s)
"""


async def schedule(q: Querier, organization_id: UUID, specialist_id: UUID) -> ScheduleRow | None:
    return await q.fetch_one(SELECT_SCHEDULE, (organization_id, specialist_id), row=ScheduleRow)


async def overrides(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[OverrideRow]:
    return await q.fetch_all(
        SELECT_OVERRIDES,
        (organization_id, specialist_id, since, since, until, until),
        row=OverrideRow,
    )


async def organization_zone(q: Querier, organization_id: UUID) -> str:
    found = await q.fetch_one(SELECT_ORGANIZATION_ZONE, (organization_id,), row=ZoneRow)
    return found.time_zone if found else "UTC"


async def replace(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    *,
    time_zone: str,
    weekly: list[dict[str, Any]],
    overrides_by_date: dict[dt.date, list[dict[str, Any]]],
    version: int | None,
) -> ScheduleRow | None:
    """The stored schedule, or None when `version` is not the current one."""
    stored = await q.fetch_one(
        UPSERT_SCHEDULE,
        {
            "org": organization_id,
            "specialist": specialist_id,
            "zone": time_zone,
            "weekly": Jsonb(weekly),
            "version": version,
        },
        row=ScheduleRow,
    )
    if stored is None:
        return None
    await q.execute(DELETE_OVERRIDES, (organization_id, specialist_id))
    for on_date, intervals in sorted(overrides_by_date.items()):
        await q.execute(
            INSERT_OVERRIDE, (organization_id, specialist_id, on_date, Jsonb(intervals))
        )
    return stored


async def busy(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    since: dt.datetime,
    until: dt.datetime,
) -> list[tuple[dt.datetime, dt.datetime]]:
    rows = await q.fetch_all(
        SELECT_BUSY, (organization_id, specialist_id, since, until), row=BusyRow
    )
    return [
        (row.blocked.lower, row.blocked.upper)
        for row in rows
        if row.blocked.lower is not None and row.blocked.upper is not None
    ]
