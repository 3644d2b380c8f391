"""Working hours as instants, and the slots they offer: the one availability function that both
listing slots and booking use.

Hours are wall-clock intervals in an IANA zone — weekly by weekday, or replaced on a date by
an override (no interval: a day off). They become instants through the zone database, so
09:00 in Europe/Bucharest is 07:00 UTC in winter and 06:00 UTC in summer, and the change
happens on the right night. A wall-clock time that does not exist (the hour skipped in
spring) takes the offset before the change; one that happens twice (autumn) the first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carebase.errors import FieldError

UTC = dt.UTC
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MIDNIGHT = 24 * 60

Minutes = tuple[int, int]
"""A wall-clock interval as minutes since midnight, [start, end); 24:00 is 1440."""
Span = tuple[dt.datetime, dt.datetime]
"""An interval of instants, [start, end)."""


@dataclass(frozen=True, slots=True)
class Hours:
    """A specialist's hours: weekly (by Python weekday, Monday = 0) and date overrides."""

    zone: ZoneInfo
    weekly: Mapping[int, Sequence[Minutes]]
    overrides: Mapping[dt.date, Sequence[Minutes]]


def zone(name: str) -> ZoneInfo | None:
    """The zone the database knows by this name, or None."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_or_utc(name: str) -> ZoneInfo:
    """An organization's zone, or UTC when the zone database no longer knows its name (the
    name was checked when saved; a zone can still disappear from tzdata)."""
    return zone(name) or ZoneInfo("UTC")


def minutes(text: str) -> int:
    """`09:30` → 570; `24:00` → 1440."""
    hours, mins = text.split(":")
    return int(hours) * 60 + int(mins)


def clock(value: int) -> str:
    return f"{value // 60:02d}:{value % 60:02d}"


def interval_errors(intervals: Iterable[tuple[str, Minutes]]) -> list[FieldError]:
    """Every interval that ends before it starts, starts at 24:00, or overlaps another of the
    same day; `intervals` pairs each with the pointer of its object."""
    found: list[FieldError] = []
    ordered = []
    for pointer, (start, end) in intervals:
        if start >= MIDNIGHT:
            found.append(
                FieldError(f"{pointer}/start", "A day's hours start before 24:00.", "range")
            )
        elif end <= start:
            found.append(FieldError(f"{pointer}/end", "Must be after the start.", "range"))
        else:
            ordered.append((start, end, pointer))
    ordered.sort()
    for (_, previous_end, _), (start, _, pointer) in pairwise(ordered):
        if start < previous_end:
            found.append(
                FieldError(pointer, "Overlaps another interval of the same day.", "overlap")
            )
    return found


def windows(
    hours: Hours, since: dt.datetime, until: dt.datetime, *, clip: bool = True
) -> list[Span]:
    """The working intervals overlapping [since, until), as UTC instants, in order; clipped to
    the range unless `clip` is False (slots keep each interval's own start)."""
    first = since.astimezone(hours.zone).date() - dt.timedelta(days=1)
    last = until.astimezone(hours.zone).date() + dt.timedelta(days=1)
    found: list[Span] = []
    day = first
    while day <= last:
        intervals = hours.overrides.get(day)
        if intervals is None:
            intervals = hours.weekly.get(day.weekday(), ())
        for start, end in intervals:
            begins, ends = _instant(hours.zone, day, start), _instant(hours.zone, day, end)
            if ends <= since or begins >= until:
                continue
            found.append((max(begins, since), min(ends, until)) if clip else (begins, ends))
        day += dt.timedelta(days=1)
    found.sort()
    return found


def _instant(zone: ZoneInfo, day: dt.date, minute: int) -> dt.datetime:
    if minute >= MIDNIGHT:
        day, minute = day + dt.timedelta(days=1), minute - MIDNIGHT
    local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=zone)
    return local.astimezone(UTC)


def fits(hours: Hours, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether [start, end) lies inside working time: one interval, or several that touch
    (Monday until 24:00 and Tuesday from 00:00 are one stretch)."""
    merged: list[list[dt.datetime]] = []
    for begins, ends in windows(hours, start, end, clip=False):
        if merged and begins <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], ends)
        else:
            merged.append([begins, ends])
    return any(begins <= start and end <= ends for begins, ends in merged)


@dataclass(frozen=True, slots=True)
class Rules:
    """What a booking must respect besides working hours."""

    duration: dt.timedelta
    before: dt.timedelta
    after: dt.timedelta
    earliest: dt.datetime
    """Now plus the minimum notice."""
    latest: dt.datetime
    """Now plus the maximum advance."""


def blocked(start: dt.datetime, rules: Rules) -> Span:
    """The time an appointment starting at `start` keeps the specialist from others."""
    return start - rules.before, start + rules.duration + rules.after


def slots(
    hours: Hours,
    rules: Rules,
    since: dt.datetime,
    until: dt.datetime,
    busy: Sequence[Span],
) -> list[Span]:
    """Starts in [since, until), a duration apart from the start of each working interval, whose
    appointment fits the interval and whose blocked time touches no busy span."""
    found: list[Span] = []
    for begins, ends in windows(hours, since, until + rules.duration, clip=False):
        start = begins
        while start + rules.duration <= ends:
            if since <= start < until and rules.earliest <= start <= rules.latest:
                lower, upper = blocked(start, rules)
                if not any(lower < b_end and b_start < upper for b_start, b_end in busy):
                    found.append((start, start + rules.duration))
            start += rules.duration
    return found
