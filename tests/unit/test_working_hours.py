"""Working hours become instants through the zone database, daylight-saving changes included."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from carebase.services import working_hours as wh

UTC = dt.UTC
BUCHAREST = ZoneInfo("Europe/Bucharest")


def hours(weekly: dict[int, list[tuple[str, str]]], **overrides: list[tuple[str, str]]) -> wh.Hours:
    return wh.Hours(
        BUCHAREST,
        {day: [(wh.minutes(a), wh.minutes(b)) for a, b in spans] for day, spans in weekly.items()},
        {
            dt.date.fromisoformat(day.removeprefix("d").replace("_", "-")): [
                (wh.minutes(a), wh.minutes(b)) for a, b in spans
            ]
            for day, spans in overrides.items()
        },
    )


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


EVERY_DAY_MORNING = {day: [("09:00", "12:00")] for day in range(7)}


@pytest.mark.parametrize(
    ("day", "first_start_utc"),
    [
        ("2026-03-28", "2026-03-28T07:00"),  # Saturday, EET (UTC+2)
        ("2026-03-29", "2026-03-29T06:00"),  # the change: EEST (UTC+3) from 03:00 local
        ("2026-03-30", "2026-03-30T06:00"),
        ("2026-10-24", "2026-10-24T06:00"),  # Saturday, still EEST
        ("2026-10-25", "2026-10-25T07:00"),  # the change back: EET from 04:00 local
        ("2026-10-26", "2026-10-26T07:00"),
    ],
)
def test_weekly_hours_keep_their_local_time_across_dst(day: str, first_start_utc: str) -> None:
    since = utc(f"{day}T00:00") - dt.timedelta(hours=3)
    found = wh.windows(hours(EVERY_DAY_MORNING), since, since + dt.timedelta(hours=24))
    assert found[0] == (utc(first_start_utc), utc(first_start_utc) + dt.timedelta(hours=3))


def test_a_night_interval_is_short_in_spring_and_long_in_autumn() -> None:
    night = hours({6: [("02:00", "05:00")]})  # Sundays
    spring = wh.windows(night, utc("2026-03-28T12:00"), utc("2026-03-29T12:00"))
    autumn = wh.windows(night, utc("2026-10-24T12:00"), utc("2026-10-25T12:00"))
    assert spring == [(utc("2026-03-29T00:00"), utc("2026-03-29T02:00"))]
    assert autumn == [(utc("2026-10-24T23:00"), utc("2026-10-25T03:00"))]


def test_slots_across_the_spring_change_start_at_the_right_utc_instants() -> None:
    rules = wh.Rules(
        duration=dt.timedelta(hours=1),
        before=dt.timedelta(0),
        after=dt.timedelta(0),
        earliest=utc("2026-01-01T00:00"),
        latest=utc("2027-01-01T00:00"),
    )
    found = wh.slots(
        hours(EVERY_DAY_MORNING), rules, utc("2026-03-28T00:00"), utc("2026-03-30T00:00"), busy=[]
    )
    assert [start for start, _ in found] == [
        utc("2026-03-28T07:00"),
        utc("2026-03-28T08:00"),
        utc("2026-03-28T09:00"),
        utc("2026-03-29T06:00"),
        utc("2026-03-29T07:00"),
        utc("2026-03-29T08:00"),
    ]


def test_overrides_replace_a_date_and_an_empty_one_is_a_day_off() -> None:
    week = hours(EVERY_DAY_MORNING, d2026_12_24=[], d2026_12_27=[("14:00", "16:00")])
    found = wh.windows(week, utc("2026-12-23T22:00"), utc("2026-12-27T22:00"))
    assert found == [
        (utc("2026-12-25T07:00"), utc("2026-12-25T10:00")),
        (utc("2026-12-26T07:00"), utc("2026-12-26T10:00")),
        (utc("2026-12-27T12:00"), utc("2026-12-27T14:00")),
    ]


def test_fits_needs_working_time_all_along_and_joins_touching_days() -> None:
    week = hours({0: [("20:00", "24:00")], 1: [("00:00", "02:00")]})  # Mon night into Tue
    assert wh.fits(week, utc("2026-12-07T21:00"), utc("2026-12-07T23:30"))  # 23:00–01:30 local
    assert not wh.fits(week, utc("2026-12-07T23:30"), utc("2026-12-08T00:30"))  # to 02:30
    assert not wh.fits(week, utc("2026-12-07T17:00"), utc("2026-12-07T18:30"))  # 19:00 local


def test_busy_time_and_buffers_remove_slots() -> None:
    rules = wh.Rules(
        duration=dt.timedelta(hours=1),
        before=dt.timedelta(minutes=15),
        after=dt.timedelta(minutes=15),
        earliest=utc("2026-01-01T00:00"),
        latest=utc("2027-01-01T00:00"),
    )
    busy = [(utc("2026-12-07T08:00"), utc("2026-12-07T09:00"))]  # 10:00–11:00 local
    found = wh.slots(
        hours(EVERY_DAY_MORNING), rules, utc("2026-12-07T00:00"), utc("2026-12-08T00:00"), busy
    )
    assert found == []  # 9:00 touches with its after-buffer, 11:00 with its before-buffer


def test_interval_errors_name_each_broken_interval() -> None:
    found = wh.interval_errors(
        [
            ("/w/0", (wh.minutes("09:00"), wh.minutes("12:00"))),
            ("/w/1", (wh.minutes("11:00"), wh.minutes("13:00"))),
            ("/w/2", (wh.minutes("15:00"), wh.minutes("14:00"))),
            ("/w/3", (wh.minutes("24:00"), wh.minutes("24:00"))),
        ]
    )
    assert sorted((e.pointer, e.code) for e in found) == [
        ("/w/1", "overlap"),
        ("/w/2/end", "range"),
        ("/w/3/start", "range"),
    ]


@pytest.mark.parametrize(("name", "known"), [("Europe/Bucharest", True), ("Mars/Base", False)])
def test_zone_names_come_from_the_zone_database(name: str, known: bool) -> None:
    assert (wh.zone(name) is not None) is known


def test_a_zone_the_database_no_longer_knows_falls_back_to_utc() -> None:
    assert wh.zone_or_utc("Europe/Zagreb").key == "Europe/Zagreb"
    assert wh.zone_or_utc("Mars/Olympus_Mons").key == "UTC"
    assert wh.zone_or_utc("../etc/passwd").key == "UTC"
