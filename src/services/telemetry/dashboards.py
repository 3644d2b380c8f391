"""Dashboards: per-day figures, staff activity and one session's quality, for one
organization — the caller's, bound by `ClickHouse.scoped` in every query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from carebase.errors import FieldError, NotFound, ValidationFailed
from carebase.pages import Page, PageRequest
from carebase.persistence.clickhouse import ClickHouse
from carebase.persistence.db import Database
from carebase.persistence.telemetry import dashboards as repo
from carebase.persistence.telemetry import media
from carebase.principal import Principal, organization_of

MAX_DAYS = 366
EARLIEST, LATEST = date(2000, 1, 1), date(2149, 6, 6)  # ClickHouse's Date ends in 2149
DEFAULT_DAYS = 30
NO_SESSION = "Telemetry knows no such session in this organization."


@dataclass(frozen=True, slots=True)
class SessionView:
    session_id: UUID
    media: media.SessionRow | None
    pose: repo.PoseRow | None


def span(first: date | None, last: date | None) -> tuple[date, date]:
    """The days asked for: by default the last 30 up to today (UTC); at most 366."""
    last = last or datetime.now(UTC).date()
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    for name, day in (("from", first), ("to", last)):
        if not EARLIEST <= day <= LATEST:
            raise ValidationFailed(
                [FieldError(f"/query/{name}", "Days from 2000-01-01 to 2149-06-06.", "range")]
            )
    if first > last:
        raise ValidationFailed([FieldError("/query/from", "`from` is after `to`.", "range")])
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationFailed(
            [FieldError("/query/from", f"At most {MAX_DAYS} days at a time.", "range")]
        )
    return first, last


class DashboardService:
    def __init__(self, *, db: Database, store: ClickHouse) -> None:
        self._db = db
        self._store = store

    async def organization(
        self, principal: Principal, first: date | None, last: date | None
    ) -> tuple[date, date, list[repo.Day]]:
        organization_id = organization_of(principal, "No organization to show.")
        first, last = span(first, last)
        return first, last, await repo.days(self._store, organization_id, first, last)

    async def staff(
        self, principal: Principal, first: date | None, last: date | None, page: PageRequest
    ) -> Page[repo.StaffRow]:
        organization_id = organization_of(principal, "No organization to show.")
        first, last = span(first, last)
        rows, total = await repo.staff(
            self._store,
            organization_id,
            first,
            last,
            limit=page.page_size,
            offset=page.offset,
        )
        return Page(rows, total, page)

    async def session(self, principal: Principal, session_id: UUID) -> SessionView:
        organization_id = organization_of(principal, NO_SESSION)
        async with self._db.transaction(principal, read_only=True) as q:
            state = await media.session(q, organization_id, session_id)
        pose = await repo.session_pose(self._store, organization_id, session_id)
        if state is None and pose is None:
            raise NotFound(NO_SESSION)
        return SessionView(session_id, state, pose)
