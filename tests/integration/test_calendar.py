"""The calendar and its iCalendar subscriptions, against the real database."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from icalendar import Calendar
from support import Clinic, Person, book, day_at, rfc3339

from carebase.persistence import calendar as repo


def starts(answer: httpx.Response) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(a["starts_at"]) for a in answer.json()["data"]]


async def test_the_calendar_shows_what_overlaps_the_range_in_order(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], person: Callable[..., Person]
) -> None:
    c = clinic()
    for hour in (15, 9, 12):
        assert (await book(client, c, day_at(2, hour))).status_code == 201
    cancelled = (await book(client, c, day_at(2, 18))).json()
    await client.post(
        f"/v1/appointments/{cancelled['id']}/cancel", headers=c.staff.auth, json={"reason": "x"}
    )
    other = clinic()
    assert (await book(client, other, day_at(2, 10))).status_code == 201

    # 12:30–15:00: the 12:00 appointment overlaps it, 15:00 starts at its end (half-open).
    window = {"from": rfc3339(day_at(2, 12, 30)), "to": rfc3339(day_at(2, 15))}
    answer = await client.get("/v1/calendar", headers=c.staff.auth, params=window)
    assert answer.status_code == 200, answer.text
    assert starts(answer) == [day_at(2, 12)]
    assert answer.json()["truncated"] is False

    day = {"from": rfc3339(day_at(2, 0)), "to": rfc3339(day_at(3, 0))}
    everything = await client.get("/v1/calendar", headers=c.specialist.auth, params=day)
    assert starts(everything) == [day_at(2, h) for h in (9, 12, 15, 18)]
    active = await client.get(
        "/v1/calendar",
        headers=c.staff.auth,
        params=[*day.items(), ("status", "upcoming"), ("status", "confirmed")],
    )
    assert starts(active) == [day_at(2, h) for h in (9, 12, 15)]
    first_two = await client.get("/v1/calendar", headers=c.staff.auth, params={**day, "limit": 2})
    assert starts(first_two) == [day_at(2, 9), day_at(2, 12)]
    assert first_two.json()["truncated"] is True

    colleague = person(c.org, "specialist")
    found = await client.get(
        "/v1/calendar",
        headers=colleague.auth,
        params={**day, "specialist_id": c.specialist_id},
    )
    assert len(found.json()["data"]) == 4
    nobody = await client.get(
        "/v1/calendar", headers=c.staff.auth, params={**day, "specialist_id": str(uuid.uuid4())}
    )
    assert nobody.json()["data"] == []

    posted = await client.post(
        "/v1/calendar",
        headers=c.staff.auth,
        json={**day, "specialist_ids": [c.specialist_id], "statuses": ["cancelled"]},
    )
    assert posted.status_code == 200
    assert starts(posted) == [day_at(2, 18)]


async def test_a_patient_calendar_holds_only_their_own_appointments(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: psycopg.Connection[Any]
) -> None:
    c = clinic()
    found = admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name)"
        " VALUES (%s, 'Ion', 'Popa') RETURNING id",
        (c.org,),
    ).fetchone()
    assert found is not None
    await book(client, c, day_at(2, 9))
    await book(client, c, day_at(2, 11), patient_id=str(found[0]))
    day = {"from": rfc3339(day_at(2, 0)), "to": rfc3339(day_at(3, 0))}
    mine = await client.get("/v1/calendar", headers=c.patient.auth, params=day)
    assert starts(mine) == [day_at(2, 9)]


async def test_ranges_are_checked_with_pointers(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    since = day_at(2, 0)
    for until, pointer in ((since, "/query/to"), (since + dt.timedelta(days=63), "/query/to")):
        refused = await client.get(
            "/v1/calendar",
            headers=c.staff.auth,
            params={"from": rfc3339(since), "to": rfc3339(until)},
        )
        assert refused.status_code == 422
        assert [e["pointer"] for e in refused.json()["errors"]] == [pointer]
    posted = await client.post(
        "/v1/calendar",
        headers=c.staff.auth,
        json={"from": rfc3339(since), "to": rfc3339(since - dt.timedelta(hours=1))},
    )
    assert [e["pointer"] for e in posted.json()["errors"]] == ["/body/to"]
    no_offset = await client.get(
        "/v1/calendar", headers=c.staff.auth, params={"from": "2026-12-07T00:00:00", "to": "x"}
    )
    assert no_offset.status_code == 422
    assert {e["pointer"] for e in no_offset.json()["errors"]} == {"/query/from", "/query/to"}
    # Schemathesis found year 1 with a negative offset overflowing Python's datetime (a 500).
    ancient = await client.get(
        "/v1/calendar",
        headers=c.staff.auth,
        params={"from": "0001-01-01T00:07:00Z", "to": "0001-01-01T00:03:00-01:00"},
    )
    assert ancient.status_code == 422
    assert [e["pointer"] for e in ancient.json()["errors"]] == ["/query/from", "/query/to"]


def test_the_calendar_query_is_an_index_range_scan(
    admin_conn: psycopg.Connection[Any],
) -> None:
    """The statement the calendar runs can be served by the (organization[, specialist], start)
    indexes: its bounds are plain comparisons on `starts_at`. (At 1M rows the planner picks
    them by itself: docs/benchmarks.md shows that plan.)"""
    with admin_conn.transaction():
        admin_conn.execute("SET LOCAL enable_seqscan = off")
        for specialists, index in (
            (None, "appointments_calendar_idx"),
            ([uuid.uuid4()], "appointments_specialist_calendar_idx"),
        ):
            filters = [repo.BY_SPECIALIST] if specialists else []
            statement = repo.SELECT_CALENDAR.format(filters=psycopg.sql.Composed(filters))
            since = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
            params = {
                "org": uuid.uuid4(),
                "earliest": since - repo.LONGEST,
                "from": since,
                "to": since + dt.timedelta(days=7),
                "specialist": specialists[0] if specialists else None,
                "specialists": specialists,
                "statuses": None,
                "limit": 501,
            }
            plan = admin_conn.execute(psycopg.sql.SQL("EXPLAIN ") + statement, params).fetchall()
            text = "\n".join(str(row[0]) for row in plan)
            assert f"Index Scan using {index}" in text, text
            assert "Sort" not in text, text


# --- feeds ----------------------------------------------------------------------------------


async def test_a_feed_serves_icalendar_by_token_until_revoked(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = (await book(client, c, day_at(2, 9))).json()
    moved = await client.post(
        f"/v1/appointments/{made['id']}/reschedule",
        headers={**c.staff.auth, "If-Match": "*"},
        json={"starts_at": rfc3339(day_at(2, 10)), "reason": "Later."},
    )
    assert moved.status_code == 200
    dropped = (await book(client, c, day_at(2, 14))).json()
    await client.post(
        f"/v1/appointments/{dropped['id']}/cancel", headers=c.staff.auth, json={"reason": "x"}
    )
    path = f"/v1/specialists/{c.specialist_id}/calendar-feeds"
    feed = await client.post(path, headers=c.specialist.auth, json={})
    assert feed.status_code == 201, feed.text
    assert feed.headers["cache-control"] == "no-store"
    url = feed.json()["url"]
    assert url.startswith("http://localhost:9000/v1/calendar.ics?token=")
    token = url.split("token=")[1]

    ics = await anon.get("/v1/calendar.ics", params={"token": token})
    assert ics.status_code == 200, ics.text
    assert ics.headers["content-type"].startswith("text/calendar")
    calendar = Calendar.from_ical(ics.content)
    events = {str(e["uid"]): e for e in calendar.walk("VEVENT")}
    assert set(events) == {f"{made['uid']}@carebase", f"{dropped['uid']}@carebase"}
    moved_event = events[f"{made['uid']}@carebase"]
    assert moved_event.decoded("dtstart") == day_at(2, 10)
    assert int(moved_event["sequence"]) == 2
    assert str(moved_event["summary"]) == "Knee rehabilitation"
    assert str(events[f"{dropped['uid']}@carebase"]["status"]) == "CANCELLED"
    assert b"Ana" not in ics.content

    listed = await client.get(path, headers=c.admin.auth)
    assert [f["id"] for f in listed.json()["data"]] == [feed.json()["id"]]
    assert "url" not in listed.json()["data"][0]

    named = await client.post(path, headers=c.admin.auth, json={"include_patient_names": True})
    named_ics = await anon.get(
        "/v1/calendar.ics", params={"token": named.json()["url"].split("token=")[1]}
    )
    assert "Knee rehabilitation — Ana Pop" in named_ics.content.decode()

    revoked = await client.delete(f"{path}/{feed.json()['id']}", headers=c.specialist.auth)
    assert revoked.status_code == 204
    again = await client.delete(f"{path}/{feed.json()['id']}", headers=c.specialist.auth)
    assert again.status_code == 204
    gone = await anon.get("/v1/calendar.ics", params={"token": token})
    assert gone.status_code == 404
    unknown = await anon.get("/v1/calendar.ics", params={"token": "x" * 43})
    assert unknown.status_code == 404
    missing = await client.delete(f"{path}/{uuid.uuid4()}", headers=c.admin.auth)
    assert missing.status_code == 404


async def test_feeds_belong_to_their_specialist(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], person: Callable[..., Person]
) -> None:
    c = clinic()
    colleague = person(c.org, "specialist")
    path = f"/v1/specialists/{c.specialist_id}/calendar-feeds"
    assert (await client.post(path, headers=colleague.auth, json={})).status_code == 403
    assert (await client.get(path, headers=colleague.auth)).status_code == 403
    assert (await client.post(path, headers=c.staff.auth, json={})).status_code == 403
    assert (await client.post(path, headers=c.patient.auth, json={})).status_code == 403
    elsewhere = clinic()
    foreign = f"/v1/specialists/{elsewhere.specialist_id}/calendar-feeds"
    assert (await client.post(foreign, headers=c.admin.auth, json={})).status_code == 404
