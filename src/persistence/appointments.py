"""Appointments, their event history, and the work their changes leave for the worker (video
rooms, reminders). A `version` of None means any version (`If-Match: *` or none given).

The exclusion constraint `appointments_no_double_booking` decides overlaps: its violation
(SQLSTATE 23P01) becomes `AppointmentConflict`, and its detail — which can describe another
tenant's or another patient's row — is never passed on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.range import Range

from carebase.errors import AppointmentConflict, FieldError, ValidationFailed
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

COLUMNS = """id, uid, specialist_id, patient_id, template_id, specialty_id, title, status,
       starts_at, ends_at, buffer_before_minutes, buffer_after_minutes, time_zone,
       requires_confirmation, hold_expires_at, video, video_status, video_url,
       video_expires_at, form_template_ids, cancel_reason, version, created_at, updated_at"""
CONFLICT = "The time overlaps another appointment of the specialist (buffers included)."


@dataclass(frozen=True, slots=True)
class AppointmentRow:
    id: UUID
    uid: str
    specialist_id: UUID
    patient_id: UUID
    template_id: UUID | None
    specialty_id: UUID | None
    title: str
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    buffer_before_minutes: int
    buffer_after_minutes: int
    time_zone: str
    requires_confirmation: bool
    hold_expires_at: dt.datetime | None
    video: bool
    video_status: str
    video_url: str | None
    video_expires_at: dt.datetime | None
    form_template_ids: list[UUID]
    cancel_reason: str | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class NewAppointment:
    id: UUID
    uid: str
    specialist_id: UUID
    patient_id: UUID
    template_id: UUID | None
    specialty_id: UUID | None
    title: str
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    buffer_before_minutes: int
    buffer_after_minutes: int
    time_zone: str
    requires_confirmation: bool
    hold_expires_at: dt.datetime | None
    video: bool
    form_template_ids: list[UUID]


@dataclass(frozen=True, slots=True)
class EventRow:
    id: UUID
    occurred_at: dt.datetime
    kind: str
    actor_user_id: UUID | None
    actor_api_key_id: UUID | None
    from_status: str | None
    to_status: str | None
    old_starts_at: dt.datetime | None
    old_ends_at: dt.datetime | None
    new_starts_at: dt.datetime | None
    new_ends_at: dt.datetime | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    kind: str
    actor_user_id: UUID | None
    actor_api_key_id: UUID | None
    from_status: str | None = None
    to_status: str | None = None
    old_starts_at: dt.datetime | None = None
    old_ends_at: dt.datetime | None = None
    new_starts_at: dt.datetime | None = None
    new_ends_at: dt.datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    patient_id: UUID | None = None
    specialist_id: UUID | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    sort: str = "starts_at"


SELECT_APPOINTMENT = f"""
SELECT {COLUMNS} FROM scheduling.appointments WHERE organization_id = %s AND id = %s
"""  # noqa: S608 - constant columns
SELECT_BY_UID = f"""
SELECT {COLUMNS} FROM scheduling.appointments WHERE organization_id = %s AND uid = %s
"""  # noqa: S608 - constant columns
INSERT_APPOINTMENT = f"""
INSERT INTO scheduling.appointments
       (organization_id, id, uid, specialist_id, patient_id, template_id, specialty_id, title,
        status, starts_at, ends_at, buffer_before_minutes, buffer_after_minutes, blocked,
        time_zone, requires_confirmation, hold_expires_at, video, video_status,
        form_template_ids)
VALUES (%(org)s, %(id)s, %(uid)s, %(specialist_id)s, %(patient_id)s, %(template_id)s,
        %(specialty_id)s, %(title)s, %(status)s, %(starts_at)s, %(ends_at)s,
        %(buffer_before_minutes)s, %(buffer_after_minutes)s, %(blocked)s, %(time_zone)s,
        %(requires_confirmation)s, %(hold_expires_at)s, %(video)s, %(video_status)s,
        %(form_template_ids)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
# Every change is one statement that checks the version it was read at.
UPDATE_STATUS = f"""
UPDATE scheduling.appointments
   SET status = %(status)s, hold_expires_at = NULL, cancel_reason = %(cancel_reason)s,
       video_status = %(video_status)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
UPDATE_TIME = f"""
UPDATE scheduling.appointments
   SET starts_at = %(starts_at)s, ends_at = %(ends_at)s, blocked = %(blocked)s,
       status = %(status)s, cancel_reason = %(cancel_reason)s,
       hold_expires_at = %(hold_expires_at)s, video_status = %(video_status)s,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
UPDATE_TITLE = f"""
UPDATE scheduling.appointments
   SET title = %(title)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
UPDATE_FORM_TEMPLATES = f"""
UPDATE scheduling.appointments
   SET form_template_ids = %(ids)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
DELETE_APPOINTMENT = """
DELETE FROM scheduling.appointments
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
"""
CLAIM_TIME = "SELECT scheduling.claim_time(%s, %s)"
WHERE_LISTED = sql.SQL("""
 WHERE organization_id = %(org)s
   AND (%(patient)s::uuid IS NULL OR patient_id = %(patient)s)
   AND (%(specialist)s::uuid IS NULL OR specialist_id = %(specialist)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(since)s::timestamptz IS NULL OR starts_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR starts_at < %(until)s)
""")
COUNT_APPOINTMENTS = sql.SQL("SELECT count(*) FROM scheduling.appointments {where}").format(
    where=WHERE_LISTED
)
LIST_APPOINTMENTS = sql.SQL(
    "SELECT {columns} FROM scheduling.appointments {where}"
    " ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s"
)
ORDERS = {"starts_at": "starts_at, id", "-starts_at": "starts_at DESC, id DESC"}

INSERT_EVENT = """
INSERT INTO scheduling.appointment_events
       (organization_id, appointment_id, kind, actor_user_id, actor_api_key_id, from_status,
        to_status, old_starts_at, old_ends_at, new_starts_at, new_ends_at, reason)
VALUES (%(org)s, %(appointment)s, %(kind)s, %(actor_user_id)s, %(actor_api_key_id)s,
        %(from_status)s, %(to_status)s, %(old_starts_at)s, %(old_ends_at)s, %(new_starts_at)s,
        %(new_ends_at)s, %(reason)s)
"""
SELECT_EVENTS = """
SELECT id, occurred_at, kind, actor_user_id, actor_api_key_id, from_status, to_status,
       old_starts_at, old_ends_at, new_starts_at, new_ends_at, reason
  FROM scheduling.appointment_events
 WHERE organization_id = %s AND appointment_id = %s
 ORDER BY occurred_at, id LIMIT 1000
"""
INSERT_VIDEO_TASK = """
INSERT INTO scheduling.video_tasks (organization_id, appointment_id, action, room_name)
VALUES (%s, %s, %s, %s)
"""
UPSERT_REMINDER = """
INSERT INTO scheduling.reminders (organization_id, appointment_id, due_at)
VALUES (%s, %s, %s)
ON CONFLICT (organization_id, appointment_id) DO UPDATE SET due_at = EXCLUDED.due_at, sent_at = NULL
"""
DELETE_REMINDER = """
DELETE FROM scheduling.reminders WHERE organization_id = %s AND appointment_id = %s
"""


def blocked_range(start: dt.datetime, end: dt.datetime) -> Range[dt.datetime]:
    return Range(start, end, "[)")


def _translated(exc: psycopg.errors.IntegrityError) -> Exception:
    if isinstance(exc, psycopg.errors.ExclusionViolation):
        return AppointmentConflict(CONFLICT)
    constraint = exc.diag.constraint_name or ""
    pointers = {
        "appointments_specialist_fkey": ("/body/specialist_id", "No such specialist."),
        "appointments_patient_fkey": ("/body/patient_id", "No such patient."),
        "appointments_specialty_fkey": ("/body/specialty_id", "No such specialty."),
        "appointments_template_fkey": ("/body/template_id", "No such template."),
    }
    if constraint in pointers:
        pointer, message = pointers[constraint]
        return ValidationFailed([FieldError(pointer, message, "not_found")])
    return exc


async def appointment(
    q: Querier, organization_id: UUID, appointment_id: UUID
) -> AppointmentRow | None:
    return await q.fetch_one(
        SELECT_APPOINTMENT, (organization_id, appointment_id), row=AppointmentRow
    )


async def by_uid(q: Querier, organization_id: UUID, uid: str) -> AppointmentRow | None:
    return await q.fetch_one(SELECT_BY_UID, (organization_id, uid), row=AppointmentRow)


async def appointments(
    q: Querier, organization_id: UUID, page: PageRequest, where: Filter
) -> tuple[list[AppointmentRow], int]:
    params = {
        "org": organization_id,
        "patient": where.patient_id,
        "specialist": where.specialist_id,
        "status": where.status,
        "since": where.since,
        "until": where.until,
    }
    listing = LIST_APPOINTMENTS.format(
        columns=sql.SQL(COLUMNS), where=WHERE_LISTED, order=sql.SQL(ORDERS[where.sort])
    )
    return await fetch_page(q, COUNT_APPOINTMENTS, listing, params, page, row=AppointmentRow)


async def claim_time(q: Querier, specialist_id: UUID, start: dt.datetime, end: dt.datetime) -> int:
    """Before a write that takes the specialist's time: wait for other such writes of the same
    specialist to finish (no deadlock between racing inserts), and release expired holds on
    [start, end). The number of holds released."""
    return int(await q.fetch_value(CLAIM_TIME, (specialist_id, blocked_range(start, end))))


async def insert(
    q: Querier,
    organization_id: UUID,
    new: NewAppointment,
    *,
    blocked: tuple[dt.datetime, dt.datetime],
) -> AppointmentRow:
    params: dict[str, Any] = {
        "org": organization_id,
        **{name: getattr(new, name) for name in NewAppointment.__dataclass_fields__},
        "blocked": blocked_range(*blocked),
        "video_status": "pending" if new.video and new.status != "held" else "none",
    }
    try:
        return one(await q.fetch_one(INSERT_APPOINTMENT, params, row=AppointmentRow))
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def set_status(
    q: Querier,
    organization_id: UUID,
    appointment_id: UUID,
    *,
    status: str,
    video_status: str,
    cancel_reason: str | None,
    version: int | None,
) -> AppointmentRow | None:
    params = {
        "org": organization_id,
        "id": appointment_id,
        "status": status,
        "video_status": video_status,
        "cancel_reason": cancel_reason,
        "version": version,
    }
    try:
        return await q.fetch_one(UPDATE_STATUS, params, row=AppointmentRow)
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def move(
    q: Querier,
    organization_id: UUID,
    appointment_id: UUID,
    *,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    blocked: tuple[dt.datetime, dt.datetime],
    status: str,
    hold_expires_at: dt.datetime | None,
    video_status: str,
    version: int | None,
) -> AppointmentRow | None:
    params = {
        "org": organization_id,
        "id": appointment_id,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "blocked": blocked_range(*blocked),
        "status": status,
        "cancel_reason": None,
        "hold_expires_at": hold_expires_at,
        "video_status": video_status,
        "version": version,
    }
    try:
        return await q.fetch_one(UPDATE_TIME, params, row=AppointmentRow)
    except psycopg.errors.IntegrityError as exc:
        raise _translated(exc) from None


async def retitle(
    q: Querier, organization_id: UUID, appointment_id: UUID, *, title: str, version: int | None
) -> AppointmentRow | None:
    params = {"org": organization_id, "id": appointment_id, "title": title, "version": version}
    return await q.fetch_one(UPDATE_TITLE, params, row=AppointmentRow)


async def set_form_templates(
    q: Querier,
    organization_id: UUID,
    appointment_id: UUID,
    ids: list[UUID],
    *,
    version: int | None,
) -> AppointmentRow | None:
    params = {"org": organization_id, "id": appointment_id, "ids": ids, "version": version}
    return await q.fetch_one(UPDATE_FORM_TEMPLATES, params, row=AppointmentRow)


async def delete(
    q: Querier, organization_id: UUID, appointment_id: UUID, *, version: int | None
) -> int:
    return await q.execute(
        DELETE_APPOINTMENT, {"org": organization_id, "id": appointment_id, "version": version}
    )


async def add_event(
    q: Querier, organization_id: UUID, appointment_id: UUID, event: NewEvent
) -> None:
    await q.execute(
        INSERT_EVENT,
        {
            "org": organization_id,
            "appointment": appointment_id,
            **{name: getattr(event, name) for name in NewEvent.__dataclass_fields__},
        },
    )


async def events(q: Querier, organization_id: UUID, appointment_id: UUID) -> list[EventRow]:
    return await q.fetch_all(SELECT_EVENTS, (organization_id, appointment_id), row=EventRow)


async def add_video_task(
    q: Querier, organization_id: UUID, appointment_id: UUID, *, action: str, room_name: str
) -> None:
    await q.execute(INSERT_VIDEO_TASK, (organization_id, appointment_id, action, room_name))


async def set_reminder(
    q: Querier, organization_id: UUID, appointment_id: UUID, due_at: dt.datetime
) -> None:
    await q.execute(UPSERT_REMINDER, (organization_id, appointment_id, due_at))


async def drop_reminder(q: Querier, organization_id: UUID, appointment_id: UUID) -> None:
    await q.execute(DELETE_REMINDER, (organization_id, appointment_id))


SELECT_REMINDER_LEAD = """
SELECT reminder_lead_minutes FROM platform.organizations WHERE id = %s
"""


async def reminder_lead(q: Querier, organization_id: UUID) -> int:
    """Minutes before the start that the organization's reminder mail goes out (0: none)."""
    found = await q.fetch_value(SELECT_REMINDER_LEAD, (organization_id,))
    return int(found) if found is not None else 0


COUNT_ACTIVE_OF_PATIENT = """
SELECT count(*) FROM scheduling.appointments
 WHERE organization_id = %s AND patient_id = %s
   AND status IN ('held', 'booked', 'upcoming', 'confirmed', 'in_progress')
"""


async def active_of_patient(q: Querier, organization_id: UUID, patient_id: UUID) -> int:
    """How many appointments of the patient still hold time."""
    return int(await q.fetch_value(COUNT_ACTIVE_OF_PATIENT, (organization_id, patient_id)))
