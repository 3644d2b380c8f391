"""The calendar (appointments overlapping a range) and its iCalendar feeds.

An appointment overlaps `[from, to)` when it starts before `to` and ends after `from`. It
lasts at most 8 hours, so `starts_at >= from - 8h AND starts_at < to` bounds the scan on the
`(organization_id[, specialist_id], starts_at)` indexes and `ends_at > from` keeps the
overlapping ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from psycopg import sql

from carebase.persistence.appointments import COLUMNS, AppointmentRow
from carebase.persistence.db import Querier, one

LONGEST = dt.timedelta(minutes=480)

# Filters are composed in only when given, so the planner sees `specialist_id = ANY(…)` as an
# index condition on (organization_id, specialist_id, starts_at) rather than a catch-all OR.
SELECT_CALENDAR = sql.SQL(
    "SELECT " + COLUMNS + " FROM scheduling.appointments"  # noqa: S608 - constant columns
    " WHERE organization_id = %(org)s"
    " AND starts_at >= %(earliest)s AND starts_at < %(to)s AND ends_at > %(from)s{filters}"
    " ORDER BY starts_at, id LIMIT %(limit)s"
)
BY_SPECIALIST = sql.SQL(" AND specialist_id = %(specialist)s")
BY_SPECIALISTS = sql.SQL(" AND specialist_id = ANY(%(specialists)s)")
BY_STATUSES = sql.SQL(" AND status = ANY(%(statuses)s)")


@dataclass(frozen=True, slots=True)
class FeedRow:
    id: UUID
    specialist_id: UUID
    include_patient_names: bool
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class FeedOwnerRow:
    organization_id: UUID
    specialist_id: UUID
    include_patient_names: bool
    organization_name: str


@dataclass(frozen=True, slots=True)
class FeedEventRow:
    uid: str
    title: str
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    updated_at: dt.datetime
    version: int
    patient_name: str


FEED_COLUMNS = "id, specialist_id, include_patient_names, created_at, revoked_at"
INSERT_FEED = f"""
INSERT INTO scheduling.calendar_feeds
       (organization_id, specialist_id, token_hash, include_patient_names, created_by)
VALUES (%s, %s, %s, %s, %s)
RETURNING {FEED_COLUMNS}
"""  # noqa: S608 - constant columns
SELECT_FEEDS = f"""
SELECT {FEED_COLUMNS} FROM scheduling.calendar_feeds
 WHERE organization_id = %s AND specialist_id = %s
 ORDER BY created_at DESC, id LIMIT 200
"""  # noqa: S608 - constant columns
REVOKE_FEED = """
UPDATE scheduling.calendar_feeds SET revoked_at = now()
 WHERE organization_id = %s AND specialist_id = %s AND id = %s AND revoked_at IS NULL
"""
# Owner pool: the token is the credential, there is no tenant before it is found.
SELECT_FEED_BY_DIGEST = """
SELECT f.organization_id, f.specialist_id, f.include_patient_names,
       o.name AS organization_name
  FROM scheduling.calendar_feeds f
  JOIN platform.organizations o ON o.id = f.organization_id
 WHERE f.token_hash = %s AND f.revoked_at IS NULL
"""
FEED_EVENTS = """
SELECT a.uid, a.title, a.status, a.starts_at, a.ends_at, a.updated_at, a.version,
       p.given_name || ' ' || p.family_name AS patient_name
  FROM scheduling.appointments a
  JOIN patients.patients p ON p.organization_id = a.organization_id AND p.id = a.patient_id
 WHERE a.organization_id = %(org)s AND a.specialist_id = %(specialist)s
   AND a.starts_at >= %(since)s AND a.starts_at < %(until)s
   AND a.status NOT IN ('held', 'entered_in_error')
 ORDER BY a.starts_at, a.id LIMIT 5000
"""


async def calendar(
    q: Querier,
    organization_id: UUID,
    *,
    since: dt.datetime,
    until: dt.datetime,
    specialist_ids: list[UUID] | None,
    statuses: list[str] | None,
    limit: int,
) -> list[AppointmentRow]:
    # One specialist is an equality, so the index gives the rows in order; several need a sort.
    filters = []
    if specialist_ids:
        filters.append(BY_SPECIALIST if len(specialist_ids) == 1 else BY_SPECIALISTS)
    if statuses:
        filters.append(BY_STATUSES)
    return await q.fetch_all(
        SELECT_CALENDAR.format(filters=sql.Composed(filters)),
        {
            "org": organization_id,
            "earliest": since - LONGEST,
            "from": since,
            "to": until,
            "specialist": specialist_ids[0] if specialist_ids else None,
            "specialists": specialist_ids,
            "statuses": statuses,
            "limit": limit,
        },
        row=AppointmentRow,
    )


async def insert_feed(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    *,
    token_hash: bytes,
    include_patient_names: bool,
    created_by: UUID | None,
) -> FeedRow:
    return one(
        await q.fetch_one(
            INSERT_FEED,
            (organization_id, specialist_id, token_hash, include_patient_names, created_by),
            row=FeedRow,
        )
    )


async def feeds(q: Querier, organization_id: UUID, specialist_id: UUID) -> list[FeedRow]:
    return await q.fetch_all(SELECT_FEEDS, (organization_id, specialist_id), row=FeedRow)


async def revoke_feed(q: Querier, organization_id: UUID, specialist_id: UUID, feed_id: UUID) -> int:
    return await q.execute(REVOKE_FEED, (organization_id, specialist_id, feed_id))


async def feed_by_token_as_owner(q: Querier, token_hash: bytes) -> FeedOwnerRow | None:
    return await q.fetch_one(SELECT_FEED_BY_DIGEST, (token_hash,), row=FeedOwnerRow)


async def feed_events_as_owner(
    q: Querier, feed: FeedOwnerRow, *, since: dt.datetime, until: dt.datetime
) -> list[FeedEventRow]:
    return await q.fetch_all(
        FEED_EVENTS,
        {
            "org": feed.organization_id,
            "specialist": feed.specialist_id,
            "since": since,
            "until": until,
        },
        row=FeedEventRow,
    )
