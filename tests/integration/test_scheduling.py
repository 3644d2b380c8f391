"""Scheduling against the real database: availability, templates, and booking that cannot
double-book whatever the race — the exclusion constraint has the last word."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from support import Clinic, Person, book, day_at, rfc3339, template

from carebase.apps.core import CoreApp
from carebase.principal import Principal

# --- availability ---------------------------------------------------------------------------


async def test_working_hours_round_trip_with_etags_and_checks(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: psycopg.Connection[Any]
) -> None:
    c = clinic()
    admin_conn.execute("DELETE FROM scheduling.schedules WHERE organization_id = %s", (c.org,))
    admin_conn.execute(
        "UPDATE platform.organizations SET time_zone = 'Europe/Bucharest' WHERE id = %s", (c.org,)
    )
    path = f"/v1/specialists/{c.specialist_id}/availability"
    unset = await client.get(path, headers=c.staff.auth)
    assert unset.status_code == 200
    assert unset.json() == {
        "specialist_id": c.specialist_id,
        "time_zone": "Europe/Bucharest",
        "weekly": [],
        "overrides": [],
        "version": 0,
    }
    assert unset.headers["etag"] == '"0"'
    hours = {
        "time_zone": "Europe/Bucharest",
        "weekly": [
            {"weekday": "monday", "start": "14:00", "end": "18:00"},
            {"weekday": "monday", "start": "09:00", "end": "13:00"},
        ],
        "overrides": [{"date": "2026-12-24", "intervals": []}],
    }
    assert (await client.put(path, headers=c.specialist.auth, json=hours)).status_code == 428
    stored = await client.put(path, headers={**c.specialist.auth, "If-Match": '"0"'}, json=hours)
    assert stored.status_code == 200, stored.text
    assert stored.headers["etag"] == '"1"'
    assert [w["start"] for w in stored.json()["weekly"]] == ["09:00", "14:00"]
    stale = await client.put(path, headers={**c.specialist.auth, "If-Match": '"0"'}, json=hours)
    assert stale.status_code == 412
    again = await client.get(path, headers={**c.patient.auth, "If-None-Match": '"1"'})
    assert again.status_code == 304

    broken = {
        "time_zone": "Mars/Olympus_Mons",
        "weekly": [
            {"weekday": "monday", "start": "09:00", "end": "13:00"},
            {"weekday": "monday", "start": "12:00", "end": "15:00"},
            {"weekday": "friday", "start": "17:00", "end": "09:00"},
        ],
        "overrides": [
            {"date": "2026-12-24", "intervals": []},
            {"date": "2026-12-24", "intervals": [{"start": "10:00", "end": "10:00"}]},
        ],
    }
    refused = await client.put(path, headers={**c.admin.auth, "If-Match": "*"}, json=broken)
    assert refused.status_code == 422
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
        ("/body/overrides/1/date", "duplicate"),
        ("/body/overrides/1/intervals/0/end", "range"),
        ("/body/time_zone", "format"),
        ("/body/weekly/1", "overlap"),
        ("/body/weekly/2/end", "range"),
    ]
    assert (await client.get(path, headers=c.staff.auth)).json()["version"] == 1


async def test_a_specialist_sets_only_their_own_hours(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], person: Callable[..., Person]
) -> None:
    c = clinic()
    colleague = person(c.org, "specialist")
    path = f"/v1/specialists/{c.specialist_id}/availability"
    hours = {"time_zone": "UTC", "weekly": []}
    denied = await client.put(path, headers={**colleague.auth, "If-Match": "*"}, json=hours)
    assert denied.status_code == 403
    patient = await client.put(path, headers={**c.patient.auth, "If-Match": "*"}, json=hours)
    assert patient.status_code == 403


async def test_slots_follow_hours_buffers_bookings_and_notice(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    weekly = [
        {"weekday": day, "start": "09:00", "end": "12:00"}
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    ]
    c = clinic(weekly=weekly)
    hour = await template(client, c, duration_minutes=60, buffer_after_minutes=30)
    since = day_at(3, 0)
    query = {
        "template_id": hour["id"],
        "specialist_id": c.specialist_id,
        "from": rfc3339(since),
        "to": rfc3339(since + dt.timedelta(days=1)),
    }
    listed = await client.get("/v1/availability/slots", headers=c.patient.auth, params=query)
    assert listed.status_code == 200, listed.text
    starts = [dt.datetime.fromisoformat(s["starts_at"]) for s in listed.json()["data"]]
    assert starts == [day_at(3, h) for h in (9, 10, 11)]

    # A booking at 10:00 takes that slot, and 9:00 too: its 30-minute after-buffer would reach
    # into the booking. 11:00 stays free.
    assert (await book(client, c, day_at(3, 10))).status_code == 201
    listed = await client.get("/v1/availability/slots", headers=c.patient.auth, params=query)
    assert [dt.datetime.fromisoformat(s["starts_at"]) for s in listed.json()["data"]] == [
        day_at(3, 11)
    ]

    too_long = {**query, "to": rfc3339(since + dt.timedelta(days=40))}
    refused = await client.get("/v1/availability/slots", headers=c.patient.auth, params=too_long)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "/query/to"


# --- templates ------------------------------------------------------------------------------


async def test_templates_crud_slug_rules_and_frozen_appointments(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await template(client, c, slug="first-visit", buffer_after_minutes=15, video=True)
    assert made["version"] == 1
    assert made["max_advance_days"] == 90
    duplicate = await client.post(
        "/v1/appointment-templates",
        headers=c.admin.auth,
        json={"slug": "first-visit", "title": "Again", "duration_minutes": 30},
    )
    assert duplicate.status_code == 409
    bad_slug = await client.post(
        "/v1/appointment-templates",
        headers=c.admin.auth,
        json={"slug": "First Visit", "title": "X", "duration_minutes": 3},
    )
    assert bad_slug.status_code == 422
    assert {e["pointer"] for e in bad_slug.json()["errors"]} == {
        "/body/slug",
        "/body/duration_minutes",
    }
    by_slug = await client.get("/v1/appointment-templates/slug/first-visit", headers=c.patient.auth)
    assert by_slug.status_code == 200
    assert by_slug.json()["id"] == made["id"]

    booked = await client.post(
        "/v1/appointments/from-template",
        headers=c.staff.auth,
        json={
            "template_id": made["id"],
            "specialist_id": c.specialist_id,
            "patient_id": c.patient_id,
            "starts_at": rfc3339(day_at(2, 9)),
        },
    )
    assert booked.status_code == 201, booked.text
    appointment = booked.json()
    assert appointment["title"] == "Assessment"
    assert appointment["buffer_after_minutes"] == 15
    assert appointment["video"] == {
        "enabled": True,
        "status": "pending",
        "room_url": None,
        "expires_at": None,
    }

    path = f"/v1/appointment-templates/{made['id']}"
    edited = await client.patch(
        path,
        headers={**c.admin.auth, "If-Match": '"1"'},
        json={"title": "Assessment (long)", "duration_minutes": 90},
    )
    assert edited.status_code == 200
    assert edited.json()["version"] == 2
    again = await client.get(f"/v1/appointments/{appointment['id']}", headers=c.staff.auth)
    assert again.json()["title"] == "Assessment"
    assert again.json()["ends_at"] == appointment["ends_at"]

    staff_edit = await client.patch(
        path, headers={**c.patient.auth, "If-Match": "*"}, json={"title": "Mine"}
    )
    assert staff_edit.status_code == 403
    listed = await client.get(
        "/v1/appointment-templates", headers=c.staff.auth, params={"q": "assess"}
    )
    assert [t["id"] for t in listed.json()["data"]] == [made["id"]]
    deleted = await client.delete(path, headers={**c.admin.auth, "If-Match": '"2"'})
    assert deleted.status_code == 204
    kept = await client.get(f"/v1/appointments/{appointment['id']}", headers=c.staff.auth)
    assert kept.json()["template_id"] is None


# --- booking --------------------------------------------------------------------------------


async def test_a_booking_has_a_public_uid_an_etag_a_location_and_a_history(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await book(client, c, day_at(2, 10))
    assert made.status_code == 201, made.text
    body = made.json()
    assert made.headers["location"] == f"/v1/appointments/{body['id']}"
    assert made.headers["etag"] == '"1"'
    assert len(body["uid"]) == 26
    assert body["status"] == "upcoming"
    assert body["allowed_transitions"] == [
        "confirmed",
        "in_progress",
        "cancelled",
        "no_show",
        "entered_in_error",
    ]
    assert dt.datetime.fromisoformat(body["starts_at"]) == day_at(2, 10)
    by_uid = await client.get(f"/v1/appointments/uid/{body['uid']}", headers=c.patient.auth)
    assert by_uid.json()["id"] == body["id"]
    events = await client.get(f"/v1/appointments/{body['id']}/events", headers=c.staff.auth)
    assert [(e["kind"], e["to_status"]) for e in events.json()["data"]] == [("created", "upcoming")]
    assert events.json()["data"][0]["actor_user_id"] == str(c.staff.user_id)


async def test_bad_times_are_422_with_pointers(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    weekly = [{"weekday": "monday", "start": "09:00", "end": "10:00"}]
    c = clinic(weekly=weekly)
    past = await book(client, c, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert past.status_code == 422
    assert [(e["pointer"], e["code"]) for e in past.json()["errors"]] == [
        ("/body/starts_at", "past")
    ]
    next_monday = day_at(7 - dt.datetime.now(dt.UTC).weekday() + 7, 9)
    outside = await book(client, c, next_monday + dt.timedelta(minutes=30))
    assert outside.status_code == 422
    assert outside.json()["errors"][0]["pointer"] == "/body/starts_at"
    inside = await book(client, c, next_monday)
    assert inside.status_code == 201, inside.text

    strict = await template(client, c, min_notice_minutes=60 * 24 * 30, max_advance_days=60)
    too_soon, too_late = next_monday + dt.timedelta(days=7), next_monday + dt.timedelta(days=70)
    for start, code in ((too_soon, "min_notice"), (too_late, "max_advance")):
        refused = await client.post(
            "/v1/appointments/from-template",
            headers=c.staff.auth,
            json={
                "template_id": strict["id"],
                "specialist_id": c.specialist_id,
                "patient_id": c.patient_id,
                "starts_at": rfc3339(start),
            },
        )
        assert refused.status_code == 422
        assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
            ("/body/starts_at", code)
        ]

    unknown = await book(
        client, c, next_monday + dt.timedelta(days=7), patient_id=str(uuid.uuid4())
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "/body/patient_id"


async def test_twenty_parallel_bookings_of_one_slot_give_exactly_one_appointment(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: psycopg.Connection[Any]
) -> None:
    c = clinic()
    for trial in range(20):
        start = day_at(2, 0) + dt.timedelta(hours=trial)
        answers = await asyncio.gather(*(book(client, c, start) for _ in range(20)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] + [409] * 19, (trial, codes)
        conflict = next(a for a in answers if a.status_code == 409).json()
        assert conflict["type"].endswith("/appointment-conflict")
        assert "Key (" not in conflict["detail"]
        assert "conflicting" not in conflict["detail"]
    count = admin_conn.execute(
        "SELECT count(*) FROM scheduling.appointments WHERE organization_id = %s", (c.org,)
    ).fetchone()
    assert count == (20,)


async def test_the_constraint_alone_refuses_an_overlap(
    app: CoreApp, client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    """Without the service's lock or checks: a raw INSERT that overlaps fails in the database."""
    c = clinic()
    made = (await book(client, c, day_at(2, 10))).json()
    principal = Principal(user_id=c.staff.user_id, organization_id=c.org, role="staff")
    with pytest.raises(psycopg.errors.ExclusionViolation):
        async with app.dependencies.database.transaction(principal) as q:
            await q.execute(
                "INSERT INTO scheduling.appointments (organization_id, uid, specialist_id,"
                " patient_id, title, status, starts_at, ends_at, blocked, time_zone)"
                " SELECT organization_id, %s, specialist_id, patient_id, title, 'upcoming',"
                " starts_at + interval '30 minutes', ends_at + interval '30 minutes',"
                " tstzrange(starts_at + interval '30 minutes', ends_at + interval '30 minutes'),"
                " time_zone FROM scheduling.appointments WHERE id = %s",
                ("a" * 26, made["id"]),
            )


async def test_adjacent_slots_fit_buffers_block_and_tenants_do_not_collide(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c, other = clinic(), clinic()
    assert (await book(client, c, day_at(2, 10))).status_code == 201
    assert (await book(client, c, day_at(2, 11))).status_code == 201
    assert (await book(client, c, day_at(2, 9))).status_code == 201
    assert (await book(client, other, day_at(2, 10))).status_code == 201

    buffered = await book(client, c, day_at(3, 10), buffer_after_minutes=30)
    assert buffered.status_code == 201
    inside_buffer = await book(client, c, day_at(3, 11, 15))
    assert inside_buffer.status_code == 409
    assert inside_buffer.json()["type"].endswith("/appointment-conflict")
    own_before_buffer = await book(client, c, day_at(3, 12), buffer_before_minutes=30)
    assert own_before_buffer.status_code == 201
    reaching_back = await book(client, c, day_at(3, 14), buffer_before_minutes=60, minutes=30)
    assert reaching_back.status_code == 201
    assert (await book(client, c, day_at(3, 13, 30), minutes=15)).status_code == 409


async def test_idempotent_booking_replays_the_first_answer(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {
        "specialist_id": c.specialist_id,
        "patient_id": c.patient_id,
        "title": "Follow-up",
        "starts_at": rfc3339(day_at(2, 15)),
        "duration_minutes": 30,
    }
    first = await client.post("/v1/appointments", headers={**c.staff.auth, **key}, json=body)
    again = await client.post("/v1/appointments", headers={**c.staff.auth, **key}, json=body)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_reschedule_keeps_the_uid_and_rechecks_everything(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = (await book(client, c, day_at(2, 10))).json()
    taken = (await book(client, c, day_at(2, 14))).json()
    path = f"/v1/appointments/{made['id']}/reschedule"
    move = {"starts_at": rfc3339(day_at(2, 16)), "reason": "The patient asked."}
    assert (await client.post(path, headers=c.staff.auth, json=move)).status_code == 428
    stale = await client.post(path, headers={**c.staff.auth, "If-Match": '"7"'}, json=move)
    assert stale.status_code == 412
    into_taken = {"starts_at": rfc3339(day_at(2, 14, 30)), "reason": "x"}
    clash = await client.post(path, headers={**c.staff.auth, "If-Match": '"1"'}, json=into_taken)
    assert clash.status_code == 409
    past = {"starts_at": rfc3339(day_at(-1, 10)), "reason": "x"}
    assert (
        await client.post(path, headers={**c.staff.auth, "If-Match": '"1"'}, json=past)
    ).status_code == 422
    moved = await client.post(path, headers={**c.staff.auth, "If-Match": '"1"'}, json=move)
    assert moved.status_code == 200, moved.text
    assert moved.json()["uid"] == made["uid"]
    assert dt.datetime.fromisoformat(moved.json()["starts_at"]) == day_at(2, 16)
    assert moved.headers["etag"] == '"2"'
    # The old time is free again.
    assert (await book(client, c, day_at(2, 10))).status_code == 201

    cancel = f"/v1/appointments/{taken['id']}/cancel"
    done = await client.post(cancel, headers=c.staff.auth, json={"reason": "Unwell."})
    assert done.status_code == 200
    assert done.json()["status"] == "cancelled"
    assert done.json()["cancel_reason"] == "Unwell."
    twice = await client.post(cancel, headers=c.staff.auth, json={"reason": "Unwell."})
    assert twice.status_code == 409
    assert twice.json()["type"].endswith("/already-cancelled")
    no_reason = await client.post(cancel, headers=c.staff.auth, json={})
    assert no_reason.status_code == 422
    # Its slot is free: someone else takes it, so un-cancelling into it is refused…
    assert (await book(client, c, day_at(2, 14))).status_code == 201
    back = f"/v1/appointments/{taken['id']}/reschedule"
    same = {"starts_at": rfc3339(day_at(2, 14)), "reason": "Feels better."}
    refused = await client.post(back, headers={**c.staff.auth, "If-Match": "*"}, json=same)
    assert refused.status_code == 409
    # …and into a free time it is booked again, with the same uid.
    free = {"starts_at": rfc3339(day_at(2, 20)), "reason": "Feels better."}
    revived = await client.post(back, headers={**c.staff.auth, "If-Match": "*"}, json=free)
    assert revived.status_code == 200
    assert revived.json()["status"] == "upcoming"
    assert revived.json()["uid"] == taken["uid"]
    history = await client.get(f"/v1/appointments/{taken['id']}/events", headers=c.staff.auth)
    assert [(e["kind"], e["from_status"], e["to_status"]) for e in history.json()["data"]] == [
        ("created", None, "upcoming"),
        ("cancelled", "upcoming", "cancelled"),
        ("rescheduled", "cancelled", "upcoming"),
    ]
    last = history.json()["data"][-1]
    assert last["reason"] == "Feels better."
    assert dt.datetime.fromisoformat(last["old_starts_at"]) == day_at(2, 14)
    assert dt.datetime.fromisoformat(last["new_starts_at"]) == day_at(2, 20)


async def test_states_move_only_through_their_operations(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: psycopg.Connection[Any]
) -> None:
    c = clinic()
    made = (await book(client, c, day_at(2, 10), requires_confirmation=True)).json()
    assert made["status"] == "booked"
    base = f"/v1/appointments/{made['id']}"
    illegal = await client.post(f"{base}/complete", headers=c.specialist.auth)
    assert illegal.status_code == 409
    assert illegal.json()["allowed_transitions"] == [
        "upcoming",
        "cancelled",
        "no_show",
        "entered_in_error",
    ]
    early = await client.post(f"{base}/no-show", headers=c.specialist.auth)
    assert early.status_code == 409
    assert "no_show" not in early.json()["allowed_transitions"]
    patient_accepts = await client.post(f"{base}/accept", headers=c.patient.auth)
    assert patient_accepts.status_code == 403
    accepted = await client.post(f"{base}/accept", headers={**c.staff.auth, "If-Match": '"1"'})
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "upcoming"
    stale = await client.post(f"{base}/confirm", headers={**c.patient.auth, "If-Match": '"1"'})
    assert stale.status_code == 412
    confirmed = await client.post(
        f"{base}/confirm", headers=c.patient.auth, json={"reason": "See you then."}
    )
    assert confirmed.json()["status"] == "confirmed"
    assert (await client.post(f"{base}/start", headers=c.specialist.auth)).json()[
        "status"
    ] == "in_progress"
    started_cancel = await client.post(f"{base}/cancel", headers=c.staff.auth, json={"reason": "x"})
    assert started_cancel.status_code == 409
    done = await client.post(f"{base}/complete", headers=c.specialist.auth)
    assert done.json()["status"] == "done"
    assert done.json()["allowed_transitions"] == ["entered_in_error"]
    assert (await client.post(f"{base}/entered-in-error", headers=c.staff.auth)).status_code == 403
    erased = await client.post(
        f"{base}/entered-in-error", headers=c.admin.auth, json={"reason": "Wrong patient."}
    )
    assert erased.json()["status"] == "entered_in_error"
    assert erased.json()["allowed_transitions"] == []

    # A no-show comes only after the start.
    other = (await book(client, c, day_at(3, 10))).json()
    admin_conn.execute(
        "UPDATE scheduling.appointments SET starts_at = now() - interval '5 minutes',"
        " ends_at = now() + interval '55 minutes',"
        " blocked = tstzrange(now() - interval '5 minutes', now() + interval '55 minutes')"
        " WHERE id = %s",
        (other["id"],),
    )
    late = await client.post(f"/v1/appointments/{other['id']}/no-show", headers=c.staff.auth)
    assert late.status_code == 200
    assert late.json()["status"] == "no_show"


async def test_holds_expire_and_give_their_time_back(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: psycopg.Connection[Any]
) -> None:
    c = clinic()
    held = await book(client, c, day_at(2, 10), who=c.patient, hold=True)
    assert held.status_code == 201, held.text
    assert held.json()["status"] == "held"
    assert held.json()["hold_expires_at"] is not None
    assert (await book(client, c, day_at(2, 10))).status_code == 409
    booked = await client.post(f"/v1/appointments/{held.json()['id']}/book", headers=c.patient.auth)
    assert booked.status_code == 200
    assert booked.json()["status"] == "upcoming"
    assert booked.json()["hold_expires_at"] is None
    gone = await client.delete(
        f"/v1/appointments/{held.json()['id']}", headers={**c.staff.auth, "If-Match": "*"}
    )
    assert gone.status_code == 409

    second = (await book(client, c, day_at(2, 12), hold=True)).json()
    released = await client.delete(
        f"/v1/appointments/{second['id']}", headers={**c.staff.auth, "If-Match": '"1"'}
    )
    assert released.status_code == 204

    third = (await book(client, c, day_at(2, 14), hold=True)).json()
    admin_conn.execute(
        "UPDATE scheduling.appointments SET hold_expires_at = now() - interval '1 second'"
        " WHERE id = %s",
        (third["id"],),
    )
    expired = await client.post(f"/v1/appointments/{third['id']}/book", headers=c.staff.auth)
    assert expired.status_code == 409
    taken_over = await book(client, c, day_at(2, 14))
    assert taken_over.status_code == 201
    missing = await client.get(f"/v1/appointments/{third['id']}", headers=c.staff.auth)
    assert missing.status_code == 404


async def test_a_patient_sees_and_books_only_their_own_appointments(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    person: Callable[..., Person],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    stranger = person(c.org, "patient")
    found = admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name, user_id)"
        " VALUES (%s, 'Ion', 'Popa', %s) RETURNING id",
        (c.org, stranger.user_id),
    ).fetchone()
    assert found is not None
    strangers = str(found[0])
    mine = await book(client, c, day_at(2, 10), who=c.patient)
    assert mine.status_code == 201, mine.text
    theirs = await book(client, c, day_at(2, 12), patient_id=strangers)
    assert theirs.status_code == 201
    for_someone_else = await book(client, c, day_at(2, 14), who=c.patient, patient_id=strangers)
    assert for_someone_else.status_code == 422
    assert for_someone_else.json()["errors"][0]["pointer"] == "/body/patient_id"

    listed = await client.get("/v1/appointments", headers=c.patient.auth)
    assert [a["id"] for a in listed.json()["data"]] == [mine.json()["id"]]
    foreign = await client.get(f"/v1/appointments/{theirs.json()['id']}", headers=c.patient.auth)
    assert foreign.status_code == 404
    by_uid = await client.get(
        f"/v1/appointments/uid/{theirs.json()['uid']}", headers=c.patient.auth
    )
    assert by_uid.status_code == 404
    cancel = await client.post(
        f"/v1/appointments/{theirs.json()['id']}/cancel",
        headers=c.patient.auth,
        json={"reason": "Not mine."},
    )
    assert cancel.status_code == 404
    everyone = await client.get("/v1/appointments", headers=c.specialist.auth)
    assert everyone.json()["meta"]["total"] == 2


async def test_row_level_security_alone_hides_other_patients_appointments(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    person: Callable[..., Person],
    admin_conn: psycopg.Connection[Any],
) -> None:
    """Raw SQL under the patient's role: the policy itself filters, not only the code."""
    c = clinic()
    stranger = person(c.org, "patient")
    found = admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name, user_id)"
        " VALUES (%s, 'Ion', 'Popa', %s) RETURNING id",
        (c.org, stranger.user_id),
    ).fetchone()
    assert found is not None
    mine = (await book(client, c, day_at(2, 10))).json()
    (await book(client, c, day_at(2, 12), patient_id=str(found[0]))).json()
    principal = Principal(user_id=c.patient.user_id, organization_id=c.org, role="patient")
    async with app.dependencies.database.transaction(principal) as q:
        seen = await q.fetch_value("SELECT array_agg(id::text) FROM scheduling.appointments")
        events = await q.fetch_value("SELECT count(*) FROM scheduling.appointment_events")
        changed = await q.execute("UPDATE scheduling.appointments SET title = 'Mine now'")
        deleted = await q.execute("DELETE FROM scheduling.appointments WHERE status <> 'held'")
    assert seen == [mine["id"]]
    assert events == 1
    assert changed == 1
    assert deleted == 1
    stranger_view = Principal(user_id=stranger.user_id, organization_id=c.org, role="patient")
    async with app.dependencies.database.transaction(stranger_view) as q:
        theirs = await q.fetch_value("SELECT count(*) FROM scheduling.appointments")
    assert theirs == 1


async def test_attaching_forms_is_refused_until_forms_exist(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = (await book(client, c, day_at(2, 10))).json()
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    refused = await client.post(
        f"/v1/appointments/{made['id']}/attach-forms",
        headers=c.staff.auth,
        json={"form_template_ids": ids},
    )
    assert refused.status_code == 422
    assert [e["pointer"] for e in refused.json()["errors"]] == [
        "/body/form_template_ids/0",
        "/body/form_template_ids/1",
    ]
    after = await client.get(f"/v1/appointments/{made['id']}", headers=c.staff.auth)
    assert after.json()["version"] == 1
    assert after.json()["form_template_ids"] == []


async def test_a_start_outside_the_years_1900_to_9999_is_refused(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    """Schemathesis found year 1 with a positive offset overflowing Python's datetime in UTC."""
    c = clinic()
    body = {
        "specialist_id": c.specialist_id,
        "patient_id": c.patient_id,
        "title": "Knee rehabilitation",
        "starts_at": "0001-01-01T01:01:00+01:03",
        "duration_minutes": 60,
    }
    refused = await client.post("/v1/appointments", headers=c.staff.auth, json=body)
    assert refused.status_code == 422, refused.text
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/body/starts_at"]
