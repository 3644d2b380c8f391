"""The calendar (what overlaps a range, in order) and specialists' iCalendar subscriptions.

A feed's URL carries a token that is its only credential: 32 random bytes, shown once, stored
as its SHA-256. Calendar apps fetch it without logging in, so the feed is read on the owner
pool for the organization the token names, and carries only the title and time of each
appointment unless its specialist chose to add patient names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from icalendar import Calendar, Event

from carebase.errors import FieldError, Forbidden, NotFound, ValidationFailed
from carebase.persistence import calendar as repo
from carebase.persistence import specialists
from carebase.persistence.appointments import AppointmentRow
from carebase.persistence.db import Database, Querier
from carebase.principal import Principal, organization_of
from carebase.services.audit import record

NO_SPECIALIST = "No such specialist."
NO_FEED = "No such calendar feed."
MAX_RANGE = dt.timedelta(days=62)
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
FEED_PAST = dt.timedelta(days=30)
FEED_AHEAD = dt.timedelta(days=180)
# A calendar app polls the feed; it may keep a copy this long.
FEED_CACHE = "private, max-age=300"
ICS_STATUS = {"booked": "TENTATIVE", "cancelled": "CANCELLED"}


@dataclass(frozen=True, slots=True)
class CalendarView:
    since: dt.datetime
    until: dt.datetime
    truncated: bool
    appointments: list[AppointmentRow]


@dataclass(frozen=True, slots=True)
class NewFeed:
    feed: repo.FeedRow
    url: str


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class CalendarService:
    def __init__(
        self,
        *,
        db: Database,
        public_base_url: str,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._base = public_base_url.rstrip("/")
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    async def calendar(
        self,
        principal: Principal,
        *,
        since: dt.datetime,
        until: dt.datetime,
        specialist_ids: Sequence[UUID] | None,
        statuses: Sequence[str] | None,
        limit: int,
        source: str,
    ) -> CalendarView:
        """Appointments overlapping `[since, until)`; `source` is `query` or `body`, where the
        pointers of a bad range point."""
        organization_id = organization_of(principal, NO_SPECIALIST)
        outside = [  # year 1 minus a zone's offset overflows Python's datetime
            FieldError(f"/{source}/{name}", "Between the years 1900 and 9999.", "range")
            for name, moment in (("from", since), ("to", until))
            if not EARLIEST <= moment <= LATEST
        ]
        if outside:
            raise ValidationFailed(outside)
        if until <= since:
            raise ValidationFailed([FieldError(f"/{source}/to", "Must be after `from`.", "range")])
        if until - since > MAX_RANGE:
            raise ValidationFailed(
                [FieldError(f"/{source}/to", "At most 62 days after `from`.", "range")]
            )
        found = await repo.calendar(
            self._db.reader(principal),
            organization_id,
            since=since,
            until=until,
            specialist_ids=list(specialist_ids) if specialist_ids else None,
            statuses=list(statuses) if statuses else None,
            limit=limit + 1,
        )
        return CalendarView(since, until, len(found) > limit, found[:limit])

    # --- feeds --------------------------------------------------------------------------------

    async def create_feed(
        self, principal: Principal, specialist_id: UUID, *, include_patient_names: bool
    ) -> NewFeed:
        organization_id = organization_of(principal, NO_SPECIALIST)
        token = secrets.token_urlsafe(32)
        async with self._db.transaction(principal) as q:
            await self._own_specialist(q, principal, organization_id, specialist_id)
            feed = await repo.insert_feed(
                q,
                organization_id,
                specialist_id,
                token_hash=token_digest(token),
                include_patient_names=include_patient_names,
                created_by=principal.user_id,
            )
            await record(
                q,
                principal,
                action="calendar_feed.created",
                entity_type="calendar_feed",
                entity_id=feed.id,
                changed_fields=["specialist_id", "include_patient_names"],
            )
        return NewFeed(feed, f"{self._base}/v1/calendar.ics?token={token}")

    async def feeds(self, principal: Principal, specialist_id: UUID) -> list[repo.FeedRow]:
        organization_id = organization_of(principal, NO_SPECIALIST)
        q = self._db.reader(principal)
        await self._own_specialist(q, principal, organization_id, specialist_id)
        return await repo.feeds(q, organization_id, specialist_id)

    async def revoke_feed(self, principal: Principal, specialist_id: UUID, feed_id: UUID) -> None:
        """Revoked feeds stay listed with `revoked_at`; revoking one again changes nothing."""
        organization_id = organization_of(principal, NO_FEED)
        async with self._db.transaction(principal) as q:
            await self._own_specialist(q, principal, organization_id, specialist_id)
            if not await repo.revoke_feed(q, organization_id, specialist_id, feed_id):
                listed = await repo.feeds(q, organization_id, specialist_id)
                if not any(feed.id == feed_id for feed in listed):
                    raise NotFound(NO_FEED)
                return
            await record(
                q,
                principal,
                action="calendar_feed.revoked",
                entity_type="calendar_feed",
                entity_id=feed_id,
            )

    async def ics(self, token: str) -> bytes:
        """The feed the token names, as iCalendar; NotFound for an unknown or revoked one."""
        now = self._now()
        async with self._db.admin_transaction() as q:
            feed = await repo.feed_by_token_as_owner(q, token_digest(token))
            if feed is None:
                raise NotFound(NO_FEED)
            events = await repo.feed_events_as_owner(
                q, feed, since=now - FEED_PAST, until=now + FEED_AHEAD
            )
        return render_ics(feed, events, stamp=now)

    @staticmethod
    async def _own_specialist(
        q: Querier, principal: Principal, organization_id: UUID, specialist_id: UUID
    ) -> None:
        """The specialist exists; a specialist acts only on their own feeds."""
        found = await specialists.specialist(q, organization_id, specialist_id)
        if found is None:
            raise NotFound(NO_SPECIALIST)
        if principal.role == "specialist" and found.user_id != principal.user_id:
            raise Forbidden("A specialist manages only their own calendar feeds.")


def render_ics(
    feed: repo.FeedOwnerRow, events: Sequence[repo.FeedEventRow], *, stamp: dt.datetime
) -> bytes:
    """RFC 5545: one VEVENT per appointment, its uid stable across reschedules (SEQUENCE is
    the appointment's version, so calendar apps take the newest)."""
    calendar = Calendar()
    calendar.add("prodid", "-//Carebase//Calendar//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", feed.organization_name)
    calendar.add("refresh-interval", dt.timedelta(minutes=15), parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", "PT15M")
    for row in events:
        event = Event()
        event.add("uid", f"{row.uid}@carebase")
        event.add("dtstamp", stamp)
        event.add("dtstart", row.starts_at)
        event.add("dtend", row.ends_at)
        event.add("last-modified", row.updated_at)
        event.add("sequence", row.version)
        summary = f"{row.title} — {row.patient_name}" if feed.include_patient_names else row.title
        event.add("summary", summary)
        event.add("status", ICS_STATUS.get(row.status, "CONFIRMED"))
        event.add("transp", "TRANSPARENT" if row.status == "cancelled" else "OPAQUE")
        calendar.add_component(event)
    return bytes(calendar.to_ical())
