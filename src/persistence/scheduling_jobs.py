"""The scheduling worker's queues, read and written on the owner pool (no tenant: the worker
serves every organization).

Video tasks are claimed with a lease in a short transaction that commits before the provider
is called, so a slow provider holds no lock and a worker that dies mid-call gives its claim
back when the lease runs out. Reminders are turned into mail in one transaction: the mail
is queued and the reminder marked sent together, or neither.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from carebase.persistence.db import Querier

# The statuses whose appointment keeps a video room.
ROOM_STATUSES = frozenset({"booked", "upcoming", "confirmed", "in_progress"})


@dataclass(frozen=True, slots=True)
class VideoTaskRow:
    id: int
    organization_id: UUID
    appointment_id: UUID
    action: str
    room_name: str
    attempts: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    status: str
    video: bool
    starts_at: dt.datetime
    ends_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DueReminderRow:
    organization_id: UUID
    appointment_id: UUID
    starts_at: dt.datetime
    ends_at: dt.datetime
    time_zone: str
    title: str
    patient_user_id: UUID | None
    patient_email: str | None
    patient_given_name: str
    specialist_name: str
    organization_name: str


CLAIM_VIDEO_TASKS = """
UPDATE scheduling.video_tasks t
   SET lease_until = now() + make_interval(secs => %(lease_s)s), attempts = t.attempts + 1
 WHERE t.id IN (SELECT id FROM scheduling.video_tasks
                 WHERE done_at IS NULL AND next_attempt_at <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY id
                 LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED)
RETURNING t.id, t.organization_id, t.appointment_id, t.action, t.room_name, t.attempts
"""
SELECT_SESSION = """
SELECT status, video, starts_at, ends_at FROM scheduling.appointments
 WHERE organization_id = %s AND id = %s
"""
FINISH_TASK = """
UPDATE scheduling.video_tasks SET done_at = now(), lease_until = NULL, last_error = %s
 WHERE id = %s
"""
RETRY_TASK = """
UPDATE scheduling.video_tasks
   SET next_attempt_at = now() + make_interval(secs => %s), lease_until = NULL, last_error = %s
 WHERE id = %s
"""
# A room is ready only for an appointment that is still active and still wants video; one
# cancelled while the room was being made gets its delete task, which runs after this one.
# `video` is part of the appointment as clients see it, so its version (the ETag) moves.
ROOM_READY = """
UPDATE scheduling.appointments
   SET video_status = 'ready', video_room = %(room)s, video_url = %(url)s,
       video_expires_at = %(expires_at)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND video
   AND status IN ('booked', 'upcoming', 'confirmed', 'in_progress')
"""
ROOM_FAILED = """
UPDATE scheduling.appointments
   SET video_status = 'failed', version = version + 1, updated_at = now()
 WHERE organization_id = %s AND id = %s AND video_status = 'pending'
"""
# After a cancellation: what clients see does not change (no room is shown once it is not
# ready), so the version stays.
ROOM_GONE = """
UPDATE scheduling.appointments SET video_room = NULL, video_url = NULL, video_expires_at = NULL
 WHERE organization_id = %s AND id = %s AND video_status <> 'pending'
"""
# The reminder, its appointment and its patient, locked so that two workers never both send.
CLAIM_DUE_REMINDERS = """
SELECT r.organization_id, r.appointment_id, a.starts_at, a.ends_at, a.time_zone, a.title,
       p.user_id AS patient_user_id, p.email AS patient_email,
       p.given_name AS patient_given_name, s.display_name AS specialist_name,
       o.name AS organization_name
  FROM scheduling.reminders r
  JOIN scheduling.appointments a
    ON a.organization_id = r.organization_id AND a.id = r.appointment_id
  JOIN patients.patients p ON p.organization_id = a.organization_id AND p.id = a.patient_id
  JOIN specialists.specialists s
    ON s.organization_id = a.organization_id AND s.id = a.specialist_id
  JOIN platform.organizations o ON o.id = a.organization_id
 WHERE r.sent_at IS NULL AND r.due_at <= now()
 ORDER BY r.due_at
 LIMIT %s
   FOR UPDATE OF r SKIP LOCKED
"""
# Holds nobody booked in time: their time was already free to others (bookings release them
# on the spot); this removes them from calendars.
DELETE_EXPIRED_HOLDS = """
DELETE FROM scheduling.appointments
 WHERE status = 'held' AND hold_expires_at <= now() - make_interval(secs => %s)
"""
MARK_REMINDER_SENT = """
UPDATE scheduling.reminders SET sent_at = now() WHERE organization_id = %s AND appointment_id = %s
"""


async def claim_video_tasks(q: Querier, *, limit: int, lease_s: float) -> list[VideoTaskRow]:
    found = await q.fetch_all(
        CLAIM_VIDEO_TASKS, {"limit": limit, "lease_s": lease_s}, row=VideoTaskRow
    )
    return sorted(found, key=lambda task: task.id)


async def session(q: Querier, organization_id: UUID, appointment_id: UUID) -> SessionRow | None:
    return await q.fetch_one(SELECT_SESSION, (organization_id, appointment_id), row=SessionRow)


async def finish_task(q: Querier, task_id: int, *, error: str | None = None) -> None:
    await q.execute(FINISH_TASK, (error, task_id))


async def retry_task(q: Querier, task_id: int, *, delay_s: float, error: str) -> None:
    await q.execute(RETRY_TASK, (delay_s, error[:500], task_id))


async def room_ready(
    q: Querier,
    organization_id: UUID,
    appointment_id: UUID,
    *,
    room: str,
    url: str,
    expires_at: dt.datetime,
) -> int:
    return await q.execute(
        ROOM_READY,
        {
            "org": organization_id,
            "id": appointment_id,
            "room": room,
            "url": url,
            "expires_at": expires_at,
        },
    )


async def room_failed(q: Querier, organization_id: UUID, appointment_id: UUID) -> None:
    await q.execute(ROOM_FAILED, (organization_id, appointment_id))


async def room_gone(q: Querier, organization_id: UUID, appointment_id: UUID) -> None:
    await q.execute(ROOM_GONE, (organization_id, appointment_id))


async def claim_due_reminders(q: Querier, *, limit: int) -> list[DueReminderRow]:
    return await q.fetch_all(CLAIM_DUE_REMINDERS, (limit,), row=DueReminderRow)


async def mark_reminder_sent(q: Querier, organization_id: UUID, appointment_id: UUID) -> None:
    await q.execute(MARK_REMINDER_SENT, (organization_id, appointment_id))


async def delete_expired_holds(q: Querier, *, grace_s: float) -> int:
    return await q.execute(DELETE_EXPIRED_HOLDS, (grace_s,))
