"""Scheduling demo and benchmark data: working hours, templates and appointments.

`carebase dev` gives each demo clinic's specialist weekday hours in the clinic's zone, three
templates and two weeks of appointments around today in every status (the demo patient has
some of their own); the worker then makes the video rooms. `make bench` adds many
appointments per benchmark clinic with COPY. Rows are written on the owner connection with
the same shapes the API writes: buffered `blocked` ranges, uids, the history's first event.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from carebase.services.appointments import new_uid, room_name

Conn = psycopg.Connection[tuple[Any, ...]]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
WEEKLY = [
    {"weekday": day, "start": start, "end": end}
    for day in WEEKDAYS
    for start, end in (("08:00", "12:00"), ("13:00", "17:00"))
]


@dataclass(frozen=True, slots=True)
class Template:
    slug: str
    title: str
    minutes: int
    after: int
    notice: int
    video: bool
    confirm: bool


TEMPLATES = (
    Template("initial-assessment", "Initial assessment", 60, 15, 1440, False, False),
    Template("follow-up", "Follow-up session", 30, 0, 120, False, False),
    Template("tele-rehab", "Tele-rehabilitation session", 45, 15, 60, True, True),
)
# Past days end in these states, in turn; future days in these (a few held, awaiting booking).
PAST = ("done", "done", "done", "no_show", "cancelled", "done", "entered_in_error")
FUTURE = ("upcoming", "confirmed", "booked", "upcoming", "cancelled", "upcoming", "held")
ACTIVE = frozenset({"held", "booked", "upcoming", "confirmed", "in_progress"})
COPY_APPOINTMENTS = """
COPY scheduling.appointments (organization_id, id, uid, specialist_id, patient_id, template_id,
                              title, status, starts_at, ends_at, buffer_after_minutes, blocked,
                              time_zone, requires_confirmation, hold_expires_at, video,
                              video_status, cancel_reason)
FROM STDIN
"""


def seed_schedule(
    conn: Conn,
    organization_id: uuid.UUID,
    *,
    zone: str,
    specialist_id: uuid.UUID,
    patient_ids: Sequence[uuid.UUID],
    own_patient_id: uuid.UUID | None,
    today: dt.date | None = None,
) -> bool:
    """Hours, templates and two weeks of appointments for one clinic; once per clinic."""
    if conn.execute(
        "SELECT 1 FROM scheduling.appointment_templates WHERE organization_id = %s LIMIT 1",
        (organization_id,),
    ).fetchone():
        return False
    conn.execute(
        "UPDATE platform.organizations SET time_zone = %s WHERE id = %s", (zone, organization_id)
    )
    conn.execute(
        "INSERT INTO scheduling.schedules (organization_id, specialist_id, time_zone, weekly)"
        " VALUES (%s, %s, %s, %s)",
        (organization_id, specialist_id, zone, json.dumps(WEEKLY)),
    )
    day = today or dt.datetime.now(ZoneInfo(zone)).date()
    overrides = {  # a training day off in two weeks, and a Saturday morning clinic
        day + dt.timedelta(days=14 - day.weekday() + 2): [],
        day + dt.timedelta(days=5 - day.weekday() + 7): [{"start": "09:00", "end": "12:00"}],
    }
    for on_date, intervals in overrides.items():
        conn.execute(
            "INSERT INTO scheduling.date_overrides (organization_id, specialist_id, on_date,"
            " intervals) VALUES (%s, %s, %s, %s)",
            (organization_id, specialist_id, on_date, json.dumps(intervals)),
        )
    templates = {}
    for t in TEMPLATES:
        row = conn.execute(
            "INSERT INTO scheduling.appointment_templates (organization_id, slug, title,"
            " duration_minutes, buffer_after_minutes, min_notice_minutes, video,"
            " requires_confirmation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (organization_id, t.slug, t.title, t.minutes, t.after, t.notice, t.video, t.confirm),
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING always yields the row
        templates[t.slug] = row[0]
    rng = random.Random(str(organization_id))  # noqa: S311 - deterministic demo data
    clinic = _Clinic(organization_id, specialist_id, zone, templates, patient_ids)
    rows = list(_two_weeks(clinic, day, rng))
    if own_patient_id is not None:  # the demo patient's own: one past, two ahead
        mine = [i for i, r in enumerate(rows) if r["status"] in ("done", "upcoming", "booked")]
        for index in (mine[0], mine[-1], mine[-4]):
            rows[index]["patient_id"] = own_patient_id
    _write(conn, organization_id, rows, lead_minutes=1440)
    return True


@dataclass(frozen=True, slots=True)
class _Clinic:
    organization_id: uuid.UUID
    specialist_id: uuid.UUID
    zone: str
    templates: dict[str, object]
    patient_ids: Sequence[uuid.UUID]


def _two_weeks(clinic: _Clinic, today: dt.date, rng: random.Random) -> Iterator[dict[str, Any]]:
    """A week back and a week ahead, weekdays, back to back inside the working hours."""
    zone = clinic.zone
    local = ZoneInfo(zone)
    now = dt.datetime.now(dt.UTC)
    turn = 0
    for offset in range(-7, 8):
        day = today + dt.timedelta(days=offset)
        if day.weekday() >= len(WEEKDAYS):
            continue
        for start_h, end_h in ((8, 12), (13, 17)):
            cursor = dt.datetime.combine(day, dt.time(start_h), tzinfo=local)
            closes = dt.datetime.combine(day, dt.time(end_h), tzinfo=local)
            while True:
                template = TEMPLATES[rng.randrange(len(TEMPLATES))]
                start = cursor.astimezone(dt.UTC)
                end = start + dt.timedelta(minutes=template.minutes)
                blocked_end = end + dt.timedelta(minutes=template.after)
                if blocked_end > closes:
                    break
                cursor = blocked_end.astimezone(local) + dt.timedelta(minutes=15)
                turn += 1
                if start <= now < end:
                    status = "in_progress"
                elif end <= now:
                    status = PAST[turn % len(PAST)]
                else:
                    status = FUTURE[turn % len(FUTURE)]
                    if status == "booked" and not template.confirm:
                        status = "upcoming"
                    if status == "held" and start > now + dt.timedelta(days=2):
                        status = "upcoming"
                yield {
                    "organization_id": clinic.organization_id,
                    "id": uuid.uuid4(),
                    "uid": new_uid(),
                    "specialist_id": clinic.specialist_id,
                    "patient_id": rng.choice(clinic.patient_ids),
                    "template_id": clinic.templates[template.slug],
                    "title": template.title,
                    "status": status,
                    "starts_at": start,
                    "ends_at": end,
                    "buffer_after_minutes": template.after,
                    "blocked": (start, blocked_end),
                    "time_zone": zone,
                    "requires_confirmation": template.confirm,
                    "hold_expires_at": now + dt.timedelta(minutes=10) if status == "held" else None,
                    "video": template.video,
                    "video_status": "pending" if template.video and status in ACTIVE else "none",
                    "cancel_reason": "The patient asked to cancel."
                    if status == "cancelled"
                    else None,
                }


def _write(
    conn: Conn, organization_id: uuid.UUID, rows: Sequence[dict[str, Any]], *, lead_minutes: int
) -> None:
    now = dt.datetime.now(dt.UTC)
    with conn.cursor().copy(COPY_APPOINTMENTS) as copy:
        for row in rows:
            copy.write_row(_copy_row(row))
    for row in rows:
        conn.execute(
            "INSERT INTO scheduling.appointment_events (organization_id, appointment_id, kind,"
            " to_status, new_starts_at, new_ends_at, occurred_at)"
            " VALUES (%s, %s, 'created', %s, %s, %s, %s)",
            (
                organization_id,
                row["id"],
                "held" if row["status"] == "held" else "upcoming",
                row["starts_at"],
                row["ends_at"],
                min(now, row["starts_at"] - dt.timedelta(days=3)),
            ),
        )
        if row["status"] not in ("held", "upcoming"):
            conn.execute(
                "INSERT INTO scheduling.appointment_events (organization_id, appointment_id,"
                " kind, from_status, to_status, reason, occurred_at)"
                " VALUES (%s, %s, %s, 'upcoming', %s, %s, %s)",
                (
                    organization_id,
                    row["id"],
                    "cancelled" if row["status"] == "cancelled" else "status_changed",
                    row["status"],
                    row["cancel_reason"],
                    min(now, row["ends_at"]),
                ),
            )
        if row["status"] in ACTIVE and row["status"] != "held":
            due = row["starts_at"] - dt.timedelta(minutes=lead_minutes)
            if due > now:
                conn.execute(
                    "INSERT INTO scheduling.reminders (organization_id, appointment_id, due_at)"
                    " VALUES (%s, %s, %s)",
                    (organization_id, row["id"], due),
                )
            if row["video"]:
                conn.execute(
                    "INSERT INTO scheduling.video_tasks (organization_id, appointment_id,"
                    " action, room_name) VALUES (%s, %s, 'create', %s)",
                    (organization_id, row["id"], room_name(row["uid"])),
                )


def _copy_row(row: dict[str, Any]) -> tuple[Any, ...]:
    lower, upper = row["blocked"]
    return (
        row["organization_id"],
        row["id"],
        row["uid"],
        row["specialist_id"],
        row["patient_id"],
        row["template_id"],
        row["title"],
        row["status"],
        row["starts_at"],
        row["ends_at"],
        row["buffer_after_minutes"],
        f"[{lower.isoformat()},{upper.isoformat()})",
        row["time_zone"],
        row["requires_confirmation"],
        row["hold_expires_at"],
        row["video"],
        row["video_status"],
        row["cancel_reason"],
    )


# --- benchmark ----------------------------------------------------------------------------------


def seed_benchmark_appointments(
    conn: Conn, organization_id: uuid.UUID, *, appointments: int, specialists: int = 20
) -> list[uuid.UUID]:
    """Tops the clinic up to `appointments` appointments over `specialists` specialists (made
    here, with every-hour schedules so a benchmark can book any time): 45 minutes each, back
    to back on weekdays from 08:00 to 17:45 UTC, from a year ago on. The specialist ids. A
    re-run adds only what is missing."""
    ids = _bench_specialists(conn, organization_id, specialists)
    have_row = conn.execute(
        "SELECT count(*) FROM scheduling.appointments WHERE organization_id = %s",
        (organization_id,),
    ).fetchone()
    have = int(have_row[0]) if have_row else 0
    missing = max(0, appointments - have)
    if not missing:
        return ids
    patients = [
        uuid.UUID(str(r[0]))
        for r in conn.execute(
            "SELECT id FROM patients.patients WHERE organization_id = %s LIMIT 2000",
            (organization_id,),
        ).fetchall()
    ]
    if not patients:
        raise RuntimeError("seed patients into the benchmark clinic first")
    rng = random.Random(f"{organization_id}-{have}")  # noqa: S311 - benchmark data
    now = dt.datetime.now(dt.UTC)
    with conn.cursor().copy(COPY_APPOINTMENTS) as copy:
        for index in range(have, have + missing):
            start = bench_slot(index // len(ids))
            end = start + BENCH_SLOT
            copy.write_row(
                _copy_row(
                    {
                        "organization_id": organization_id,
                        "id": uuid.uuid4(),
                        "uid": new_uid(),
                        "specialist_id": ids[index % len(ids)],
                        "patient_id": rng.choice(patients),
                        "template_id": None,
                        "title": "Physiotherapy session",
                        "status": "done" if end < now else "upcoming",
                        "starts_at": start,
                        "ends_at": end,
                        "buffer_after_minutes": 0,
                        "blocked": (start, end),
                        "time_zone": "UTC",
                        "requires_confirmation": False,
                        "hold_expires_at": None,
                        "video": False,
                        "video_status": "none",
                        "cancel_reason": None,
                    }
                )
            )
    conn.commit()
    return ids


BENCH_SLOT = dt.timedelta(minutes=45)
BENCH_DAY_SLOTS = 13  # 08:00 … 17:00 starts
BENCH_EPOCH = dt.datetime(2025, 12, 1, 8, tzinfo=dt.UTC)  # a Monday, a year before the data's now


def bench_slot(number: int) -> dt.datetime:
    """The `number`th weekday office slot from BENCH_EPOCH (13 a day, Monday to Friday)."""
    day, slot = divmod(number, BENCH_DAY_SLOTS)
    weeks, weekday = divmod(day, 5)
    return BENCH_EPOCH + dt.timedelta(weeks=weeks, days=weekday) + BENCH_SLOT * slot


def _bench_specialists(conn: Conn, organization_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    found = conn.execute(
        "SELECT id FROM specialists.specialists WHERE organization_id = %s"
        " AND display_name LIKE 'Bench specialist %%' ORDER BY display_name",
        (organization_id,),
    ).fetchall()
    ids = [uuid.UUID(str(r[0])) for r in found]
    every_hour = json.dumps(
        [
            {"weekday": d, "start": "00:00", "end": "24:00"}
            for d in (*WEEKDAYS, "saturday", "sunday")
        ]
    )
    for number in range(len(ids) + 1, count + 1):
        user = conn.execute(
            "INSERT INTO identity.users (email, display_name) VALUES (%s, %s) RETURNING id",
            (f"bench-specialist-{uuid.uuid4().hex[:10]}@example.com", f"Bench {number}"),
        ).fetchone()
        assert user is not None  # noqa: S101 - RETURNING always yields the row
        conn.execute(
            "INSERT INTO identity.memberships (organization_id, user_id, role)"
            " VALUES (%s, %s, 'specialist')",
            (organization_id, user[0]),
        )
        row = conn.execute(
            "INSERT INTO specialists.specialists (organization_id, user_id, display_name)"
            " VALUES (%s, %s, %s) RETURNING id",
            (organization_id, user[0], f"Bench specialist {number:03d}"),
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING always yields the row
        conn.execute(
            "INSERT INTO scheduling.schedules (organization_id, specialist_id, time_zone, weekly)"
            " VALUES (%s, %s, 'UTC', %s)",
            (organization_id, row[0], every_hour),
        )
        ids.append(uuid.UUID(str(row[0])))
    return ids
