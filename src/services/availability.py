"""When specialists work, and which times are still free.

Listing slots and booking read a specialist's hours through the same `hours_of` and judge them
with the same `working_hours` functions; the database's exclusion constraint still has the
last word on overlaps when a booking commits.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from carebase.errors import FieldError, Forbidden, NotFound, PreconditionFailed, ValidationFailed
from carebase.persistence import appointment_templates as templates
from carebase.persistence import availability as repo
from carebase.persistence import specialists
from carebase.persistence.db import Database, Querier
from carebase.principal import Principal, organization_of
from carebase.services import working_hours as wh
from carebase.services.audit import record

NO_SPECIALIST = "No such specialist."
MAX_SLOT_RANGE = dt.timedelta(days=31)
LONGEST_BUFFER = dt.timedelta(minutes=120)


@dataclass(frozen=True, slots=True)
class AvailabilityView:
    specialist_id: UUID
    time_zone: str
    weekly: list[dict[str, str]]
    overrides: list[dict[str, Any]]
    version: int


@dataclass(frozen=True, slots=True)
class SlotsView:
    time_zone: str
    slots: list[tuple[dt.datetime, dt.datetime]]


async def hours_of(
    q: Querier, organization_id: UUID, specialist_id: UUID, since: dt.date, until: dt.date
) -> wh.Hours | None:
    """The specialist's hours around [since, until]; None when they never set any."""
    schedule = await repo.schedule(q, organization_id, specialist_id)
    if schedule is None:
        return None
    zone = wh.zone(schedule.time_zone) or wh.zone("UTC")
    assert zone is not None  # noqa: S101 - UTC is always in the zone database
    weekly: dict[int, list[wh.Minutes]] = defaultdict(list)
    for entry in schedule.weekly:
        weekly[wh.WEEKDAYS.index(entry["weekday"])].append(_span(entry))
    found = await repo.overrides(
        q,
        organization_id,
        specialist_id,
        since=since - dt.timedelta(days=1),
        until=until + dt.timedelta(days=1),
    )
    overrides = {row.on_date: [_span(i) for i in row.intervals] for row in found}
    return wh.Hours(zone, weekly, overrides)


def _span(entry: Mapping[str, Any]) -> wh.Minutes:
    return wh.minutes(entry["start"]), wh.minutes(entry["end"])


class AvailabilityService:
    def __init__(self, *, db: Database, now: Any = None) -> None:
        self._db = db
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    async def get(self, principal: Principal, specialist_id: UUID) -> AvailabilityView:
        organization_id = organization_of(principal, NO_SPECIALIST)
        q = self._db.reader(principal)
        if await specialists.specialist(q, organization_id, specialist_id) is None:
            raise NotFound(NO_SPECIALIST)
        schedule = await repo.schedule(q, organization_id, specialist_id)
        if schedule is None:
            zone = await repo.organization_zone(q, organization_id)
            return AvailabilityView(specialist_id, zone, [], [], 0)
        found = await repo.overrides(q, organization_id, specialist_id)
        return _view(specialist_id, schedule, found)

    async def replace(
        self,
        principal: Principal,
        specialist_id: UUID,
        body: Mapping[str, Any],
        *,
        version: int | None,
    ) -> AvailabilityView:
        organization_id = organization_of(principal, NO_SPECIALIST)
        weekly = [dict(entry) for entry in body["weekly"]]
        overrides = _overrides(body.get("overrides") or [])
        _check(body["time_zone"], weekly, body.get("overrides") or [])
        async with self._db.transaction(principal) as q:
            specialist = await specialists.specialist(q, organization_id, specialist_id)
            if specialist is None:
                raise NotFound(NO_SPECIALIST)
            if principal.role == "specialist" and specialist.user_id != principal.user_id:
                raise Forbidden("A specialist sets only their own working hours.")
            current = await repo.schedule(q, organization_id, specialist_id)
            if current is None and version not in (None, 0):
                raise PreconditionFailed("The availability changed since it was read.")
            stored = await repo.replace(
                q,
                organization_id,
                specialist_id,
                time_zone=body["time_zone"],
                weekly=sorted(weekly, key=_weekly_order),
                overrides_by_date=overrides,
                version=None if current is None else version,
            )
            if stored is None:
                raise PreconditionFailed("The availability changed since it was read.")
            await record(
                q,
                principal,
                action="availability.updated",
                entity_type="availability",
                entity_id=specialist_id,
                changed_fields=[k for k in ("time_zone", "weekly", "overrides") if k in body],
            )
            found = await repo.overrides(q, organization_id, specialist_id)
        return _view(specialist_id, stored, found)

    async def slots(
        self,
        principal: Principal,
        *,
        template_id: UUID,
        specialist_id: UUID,
        since: dt.datetime,
        until: dt.datetime,
    ) -> SlotsView:
        organization_id = organization_of(principal, NO_SPECIALIST)
        if until <= since:
            raise ValidationFailed([FieldError("/query/to", "Must be after `from`.", "range")])
        if until - since > MAX_SLOT_RANGE:
            raise ValidationFailed(
                [FieldError("/query/to", "At most 31 days after `from`.", "range")]
            )
        q = self._db.reader(principal)
        template = await templates.template(q, organization_id, template_id)
        if template is None or not template.active:
            raise ValidationFailed(
                [FieldError("/query/template_id", "No such active template.", "not_found")]
            )
        if await specialists.specialist(q, organization_id, specialist_id) is None:
            raise ValidationFailed([FieldError("/query/specialist_id", NO_SPECIALIST, "not_found")])
        hours = await hours_of(q, organization_id, specialist_id, since.date(), until.date())
        if hours is None:
            zone = await repo.organization_zone(q, organization_id)
            return SlotsView(zone, [])
        duration = dt.timedelta(minutes=template.duration_minutes)
        busy = await repo.busy(
            q,
            organization_id,
            specialist_id,
            since - LONGEST_BUFFER,
            until + duration + LONGEST_BUFFER,
        )
        now = self._now()
        rules = wh.Rules(
            duration=duration,
            before=dt.timedelta(minutes=template.buffer_before_minutes),
            after=dt.timedelta(minutes=template.buffer_after_minutes),
            earliest=max(now, now + dt.timedelta(minutes=template.min_notice_minutes)),
            latest=now + dt.timedelta(days=template.max_advance_days),
        )
        found = wh.slots(hours, rules, since, until, busy)
        zone_name = hours.zone.key
        return SlotsView(
            zone_name,
            [(start.astimezone(hours.zone), end.astimezone(hours.zone)) for start, end in found],
        )


def _weekly_order(entry: Mapping[str, str]) -> tuple[int, str]:
    return wh.WEEKDAYS.index(entry["weekday"]), entry["start"]


def _overrides(given: Sequence[Mapping[str, Any]]) -> dict[dt.date, list[dict[str, Any]]]:
    found: dict[dt.date, list[dict[str, Any]]] = {}
    for entry in given:
        on_date = entry["date"]
        day = on_date if isinstance(on_date, dt.date) else dt.date.fromisoformat(str(on_date))
        found[day] = sorted((dict(i) for i in entry["intervals"]), key=lambda i: i["start"])
    return found


def _check(
    time_zone: str, weekly: Sequence[Mapping[str, str]], overrides: Sequence[Mapping[str, Any]]
) -> None:
    """Every rule the contract cannot state, each failure with its pointer."""
    found: list[FieldError] = []
    if wh.zone(time_zone) is None:
        found.append(
            FieldError("/body/time_zone", "Not a time zone the zone database knows.", "format")
        )
    by_day: dict[str, list[tuple[str, wh.Minutes]]] = defaultdict(list)
    for index, entry in enumerate(weekly):
        by_day[entry["weekday"]].append((f"/body/weekly/{index}", _span(entry)))
    for intervals in by_day.values():
        found += wh.interval_errors(intervals)
    seen: dict[str, int] = {}
    for index, override in enumerate(overrides):
        date = str(override["date"])
        if date in seen:
            found.append(
                FieldError(f"/body/overrides/{index}/date", "This date appears twice.", "duplicate")
            )
        seen[date] = index
        found += wh.interval_errors(
            (f"/body/overrides/{index}/intervals/{j}", _span(i))
            for j, i in enumerate(override["intervals"])
        )
    if found:
        raise ValidationFailed(sorted(found, key=lambda e: (e.pointer, e.code)))


def _view(
    specialist_id: UUID, schedule: repo.ScheduleRow, overrides: Sequence[repo.OverrideRow]
) -> AvailabilityView:
    return AvailabilityView(
        specialist_id=specialist_id,
        time_zone=schedule.time_zone,
        weekly=[dict(entry) for entry in schedule.weekly],
        overrides=[{"date": row.on_date, "intervals": list(row.intervals)} for row in overrides],
        version=schedule.version,
    )
