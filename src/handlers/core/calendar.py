"""Handlers for openapi/core/calendar.yaml."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from carebase.generated.models import core as api
from carebase.handlers.core.appointments import appointment_json
from carebase.persistence.calendar import FeedRow
from carebase.principal import Principal
from carebase.services.calendar import FEED_CACHE, CalendarService, CalendarView
from carebase.web.results import NO_STORE, Reply, created, no_content, ok

ICS = "text/calendar; charset=utf-8"


class CalendarHandlers:
    def __init__(self, *, calendar: CalendarService) -> None:
        self._calendar = calendar

    async def get_calendar(
        self,
        principal: Principal,
        *,
        from_: dt.datetime,
        to: dt.datetime,
        specialist_id: UUID | None,
        status: list[str] | None,
        limit: int,
    ) -> Reply:
        view = await self._calendar.calendar(
            principal,
            since=from_,
            until=to,
            specialist_ids=[specialist_id] if specialist_id else None,
            statuses=status,
            limit=limit,
            source="query",
        )
        return ok(_calendar(view))

    async def query_calendar(self, principal: Principal, *, body: api.CalendarQuery) -> Reply:
        view = await self._calendar.calendar(
            principal,
            since=body.from_,
            until=body.to,
            specialist_ids=body.specialist_ids,
            statuses=[str(s) for s in body.statuses] if body.statuses else None,
            limit=body.limit,
            source="body",
        )
        return ok(_calendar(view))

    async def get_calendar_feed(self, *, token: str) -> Reply:
        document = await self._calendar.ics(token)
        return Reply(document, headers={"Cache-Control": FEED_CACHE}, media_type=ICS)

    async def list_calendar_feeds(self, principal: Principal, *, specialist_id: UUID) -> Reply:
        found = await self._calendar.feeds(principal, specialist_id)
        return ok(api.CalendarFeedList.model_construct(data=[_feed(row) for row in found]))

    async def create_calendar_feed(
        self, principal: Principal, *, specialist_id: UUID, body: api.CalendarFeedCreate
    ) -> Reply:
        made = await self._calendar.create_feed(
            principal, specialist_id, include_patient_names=bool(body.include_patient_names)
        )
        feed = made.feed
        return created(
            api.CalendarFeedWithUrl.model_construct(
                id=feed.id,
                specialist_id=feed.specialist_id,
                include_patient_names=feed.include_patient_names,
                created_at=feed.created_at,
                revoked_at=feed.revoked_at,
                url=made.url,
            ),
            location=f"/v1/specialists/{specialist_id}/calendar-feeds/{feed.id}",
            headers=NO_STORE,
        )

    async def revoke_calendar_feed(
        self, principal: Principal, *, specialist_id: UUID, feed_id: UUID
    ) -> Reply:
        await self._calendar.revoke_feed(principal, specialist_id, feed_id)
        return no_content()


def _calendar(view: CalendarView) -> api.Calendar:
    return api.Calendar.model_construct(
        from_=view.since,
        to=view.until,
        truncated=view.truncated,
        data=[appointment_json(row) for row in view.appointments],
    )


def _feed(row: FeedRow) -> api.CalendarFeed:
    return api.CalendarFeed.model_construct(
        id=row.id,
        specialist_id=row.specialist_id,
        include_patient_names=row.include_patient_names,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
