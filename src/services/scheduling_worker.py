"""What scheduling leaves for later: video rooms to create or delete, reminders to send, and
holds that expired unbooked to remove.

Requests never call the video provider: a booking writes a task in its own transaction, and
this worker carries it out — so a booking succeeds while the provider is down, and the
appointment's `video.status` tells the client when its room is `ready` (or `failed` after the
retries). Provider errors and 429 are retried with exponential backoff (or the provider's
`Retry-After`); a refusal fails the task at once. A due reminder becomes one mail in the
mail outbox, in the same transaction that marks it sent, so it goes out once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import structlog

from carebase.integrations.video import VideoProvider, VideoRefused, VideoUnavailable
from carebase.persistence import identity
from carebase.persistence import scheduling_jobs as jobs
from carebase.persistence.db import Database
from carebase.persistence.work_queue import Rounds

_log = structlog.get_logger("carebase.scheduling.worker")

BATCH = 20
LEASE_S = 120.0
MAX_ATTEMPTS = 8
HOLD_GRACE_S = 60.0  # a client that books right at the deadline gets its 409, not a 404
ROOM_OPENS = dt.timedelta(minutes=15)
ROOM_CLOSES = dt.timedelta(minutes=30)
REMINDER_SUBJECT = "Your appointment at {organization}"
REMINDER_BODY = (
    "Hello {name},\n\n"
    "this is a reminder of your appointment with {specialist} at {organization} on "
    "{day} at {time} ({zone}).\n\n"
    "If you cannot come, please cancel or reschedule it in good time.\n"
)


def backoff_s(attempts: int, retry_after_s: float | None = None) -> float:
    """5 s, 10 s, 20 s … at most 15 minutes; never sooner than the provider asked."""
    delay = float(min(5 * 2 ** max(attempts - 1, 0), 900))
    return max(delay, retry_after_s or 0.0)


class SchedulingWorker:
    def __init__(
        self,
        db: Database,
        video: VideoProvider,
        *,
        interval_s: float = 1.0,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._video = video
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.rounds = Rounds("scheduling_worker", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self.run_once)

    async def run_once(self) -> tuple[int, int]:
        """Work off what is due now: (video tasks tried, reminders sent); and drop the holds
        that expired."""
        async with self._db.admin_transaction() as q:
            dropped = await jobs.delete_expired_holds(q, grace_s=HOLD_GRACE_S)
        if dropped:
            _log.info("expired_holds_deleted", count=dropped)
        tasks = 0
        while not self.rounds.stopping and (batch := await self.video_batch()):
            tasks += batch
        reminders = 0
        while not self.rounds.stopping and (batch := await self.reminder_batch()):
            reminders += batch
        return tasks, reminders

    # --- video rooms --------------------------------------------------------------------------

    async def video_batch(self) -> int:
        async with self._db.admin_transaction() as q:
            claimed = await jobs.claim_video_tasks(q, limit=BATCH, lease_s=LEASE_S)
        for task in claimed:
            await self._carry_out(task)
        return len(claimed)

    async def _carry_out(self, task: jobs.VideoTaskRow) -> None:
        try:
            if task.action == "create":
                await self._create(task)
            else:
                await self._video.delete_room(task.room_name)
                async with self._db.admin_transaction() as q:
                    await jobs.room_gone(q, task.organization_id, task.appointment_id)
                    await jobs.finish_task(q, task.id)
        except VideoUnavailable as exc:
            await self._retry(task, str(exc), exc.retry_after_s)
        except VideoRefused as exc:
            await self._give_up(task, str(exc))
        except Exception as exc:  # a bug or an outage must not stop the other tasks
            _log.exception("video_task_crashed", task_id=task.id)
            await self._retry(task, f"{type(exc).__name__}: {exc}", None)

    async def _create(self, task: jobs.VideoTaskRow) -> None:
        async with self._db.admin_transaction() as q:
            found = await jobs.session(q, task.organization_id, task.appointment_id)
        if found is None or not found.video or found.status not in jobs.ROOM_STATUSES:
            async with self._db.admin_transaction() as q:
                await jobs.finish_task(q, task.id, error="no longer needs a room")
            return
        room = await self._video.create_room(
            task.room_name,
            not_before=found.starts_at - ROOM_OPENS,
            expires_at=found.ends_at + ROOM_CLOSES,
        )
        async with self._db.admin_transaction() as q:
            await jobs.room_ready(
                q,
                task.organization_id,
                task.appointment_id,
                room=room.name,
                url=room.url,
                expires_at=room.expires_at,
            )
            await jobs.finish_task(q, task.id)
        _log.info("video_room_ready", appointment_id=str(task.appointment_id), room=room.name)

    async def _retry(
        self, task: jobs.VideoTaskRow, error: str, retry_after_s: float | None
    ) -> None:
        if task.attempts >= MAX_ATTEMPTS:
            await self._give_up(task, error)
            return
        delay = backoff_s(task.attempts, retry_after_s)
        async with self._db.admin_transaction() as q:
            await jobs.retry_task(q, task.id, delay_s=delay, error=error)
        _log.warning(
            "video_task_retry", task_id=task.id, action=task.action, retry_in_s=delay, error=error
        )

    async def _give_up(self, task: jobs.VideoTaskRow, error: str) -> None:
        async with self._db.admin_transaction() as q:
            if task.action == "create":
                await jobs.room_failed(q, task.organization_id, task.appointment_id)
            await jobs.finish_task(q, task.id, error=error[:500])
        _log.error("video_task_failed", task_id=task.id, action=task.action, error=error)

    # --- reminders ----------------------------------------------------------------------------

    async def reminder_batch(self) -> int:
        now = self._now()
        async with self._db.admin_transaction() as q:
            due = await jobs.claim_due_reminders(q, limit=BATCH)
            for reminder in due:
                # A reminder the worker reaches only after the start (it was down) is dropped.
                if reminder.patient_email and reminder.starts_at > now:
                    await identity.enqueue_mail(
                        q,
                        user_id=reminder.patient_user_id,
                        recipient=reminder.patient_email,
                        subject=REMINDER_SUBJECT.format(organization=reminder.organization_name),
                        body=reminder_body(reminder),
                    )
                await jobs.mark_reminder_sent(q, reminder.organization_id, reminder.appointment_id)
        return len(due)


def reminder_body(reminder: jobs.DueReminderRow) -> str:
    """The time in the appointment's own zone; no title, no clinical detail."""
    local = reminder.starts_at.astimezone(ZoneInfo(reminder.time_zone))
    return REMINDER_BODY.format(
        name=reminder.patient_given_name,
        specialist=reminder.specialist_name,
        organization=reminder.organization_name,
        day=local.strftime("%A %d %B %Y"),
        time=local.strftime("%H:%M"),
        zone=reminder.time_zone,
    )
