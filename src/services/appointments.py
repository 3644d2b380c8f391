"""Appointments: booking that cannot double-book, their states and their history.

A booking is judged in this order: not in the past, the specialist and the patient exist
(for a patient: only themself), inside the specialist's working hours, the template's notice
and advance (422 each, with a pointer) — then, in the same transaction, expired holds on the
time are released and the row is inserted, where PostgreSQL's exclusion constraint decides
overlaps whatever the race (409 `appointment-conflict`). Every change appends to the event
history, writes an audit row, and leaves the worker what it must do: a video room to create or
delete, a reminder to send or forget.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID, uuid4

from carebase.errors import (
    Conflict,
    FieldError,
    Forbidden,
    IllegalTransition,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    VideoNotReady,
)
from carebase.integrations.video import VideoProvider
from carebase.pages import Page, PageRequest
from carebase.persistence import appointment_templates as templates
from carebase.persistence import appointments as repo
from carebase.persistence import forms, patients, specialists
from carebase.persistence.db import Database, Querier
from carebase.principal import Principal, organization_of
from carebase.security.tokens import TokenService
from carebase.services import appointment_states as states
from carebase.services import working_hours as wh
from carebase.services.audit import record
from carebase.services.availability import hours_of
from carebase.services.calendar import EARLIEST, LATEST
from carebase.services.forms import attach_to_appointment

NO_APPOINTMENT = "No such appointment."
CHANGED = "The appointment changed since it was read; read it again."
HOLD = dt.timedelta(minutes=10)
STARTS = "/body/starts_at"

# Operation → the state it moves to (book's depends on the confirmation rule).
ACTIONS = {
    "booked": "appointment.booked",
    "upcoming": "appointment.booked",
    "accept": "appointment.accepted",
    "confirmed": "appointment.confirmed",
    "in_progress": "appointment.started",
    "done": "appointment.completed",
    "no_show": "appointment.no_show",
    "entered_in_error": "appointment.entered_in_error",
    "cancelled": "appointment.cancelled",
}


def new_uid() -> str:
    """128 random bits in lower-case base32: 26 characters, never reused, safe in a URL."""
    return base64.b32encode(os.urandom(16)).decode().rstrip("=").lower()


def room_name(uid: str) -> str:
    return f"cb-{uid}"


@dataclass(frozen=True, slots=True)
class Booking:
    specialist_id: UUID
    patient_id: UUID
    starts_at: dt.datetime
    duration: dt.timedelta
    before: dt.timedelta
    after: dt.timedelta
    title: str
    specialty_id: UUID | None
    video: bool
    requires_confirmation: bool
    template_id: UUID | None
    form_template_ids: list[UUID]
    hold: bool
    notice: dt.timedelta | None = None
    advance: dt.timedelta | None = None


@dataclass(frozen=True, slots=True)
class VideoGrant:
    token: str
    room_url: str
    expires_at: dt.datetime
    is_owner: bool


@dataclass(frozen=True, slots=True)
class SessionGrant:
    token: str
    session_id: UUID
    expires_at: dt.datetime


SESSION_GRACE = dt.timedelta(minutes=5)
"""A telemetry session token outlives the appointment's end by this much…"""
SESSION_MAX = dt.timedelta(hours=2)
"""…and lives at most this long: a longer session asks again."""


class AppointmentService:
    def __init__(
        self,
        *,
        db: Database,
        video: VideoProvider,
        tokens: TokenService | None = None,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._video = video
        self._tokens = tokens
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    # --- booking ------------------------------------------------------------------------------

    async def create(self, principal: Principal, body: dict[str, object]) -> repo.AppointmentRow:
        booking = Booking(
            specialist_id=_uuid(body["specialist_id"]),
            patient_id=_uuid(body["patient_id"]),
            starts_at=_instant(body["starts_at"]),
            duration=dt.timedelta(minutes=int(str(body["duration_minutes"]))),
            before=dt.timedelta(minutes=int(str(body.get("buffer_before_minutes") or 0))),
            after=dt.timedelta(minutes=int(str(body.get("buffer_after_minutes") or 0))),
            title=str(body["title"]).strip(),
            specialty_id=_uuid(body["specialty_id"]) if body.get("specialty_id") else None,
            video=bool(body.get("video")),
            requires_confirmation=bool(body.get("requires_confirmation")),
            template_id=None,
            form_template_ids=[],
            hold=bool(body.get("hold")),
        )
        return await self._book(principal, booking)

    async def create_from_template(
        self, principal: Principal, body: dict[str, object]
    ) -> repo.AppointmentRow:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        template_id = _uuid(body["template_id"])
        template = await templates.template(
            self._db.reader(principal), organization_id, template_id
        )
        if template is None or not template.active:
            raise ValidationFailed(
                [FieldError("/body/template_id", "No such active template.", "not_found")]
            )
        booking = Booking(
            specialist_id=_uuid(body["specialist_id"]),
            patient_id=_uuid(body["patient_id"]),
            starts_at=_instant(body["starts_at"]),
            duration=dt.timedelta(minutes=template.duration_minutes),
            before=dt.timedelta(minutes=template.buffer_before_minutes),
            after=dt.timedelta(minutes=template.buffer_after_minutes),
            title=template.title,
            specialty_id=template.specialty_id,
            video=template.video,
            requires_confirmation=template.requires_confirmation,
            template_id=template.id,
            form_template_ids=list(template.form_template_ids),
            hold=bool(body.get("hold")),
            notice=dt.timedelta(minutes=template.min_notice_minutes),
            advance=dt.timedelta(days=template.max_advance_days),
        )
        return await self._book(principal, booking)

    async def _book(self, principal: Principal, booking: Booking) -> repo.AppointmentRow:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        now = self._now()
        start = booking.starts_at.astimezone(dt.UTC)
        end = start + booking.duration
        _not_past(start, now)
        status = "held" if booking.hold else states.booked_state(booking.requires_confirmation)
        async with self._db.transaction(principal) as q:
            zone = await _check_time(
                q, organization_id, booking.specialist_id, booking.patient_id, (start, end)
            )
            _check_rules(start, now, notice=booking.notice, advance=booking.advance)
            blocked = (start - booking.before, end + booking.after)
            await repo.claim_time(q, booking.specialist_id, *blocked)
            row = await repo.insert(
                q,
                organization_id,
                repo.NewAppointment(
                    id=uuid4(),
                    uid=new_uid(),
                    specialist_id=booking.specialist_id,
                    patient_id=booking.patient_id,
                    template_id=booking.template_id,
                    specialty_id=booking.specialty_id,
                    title=booking.title,
                    status=status,
                    starts_at=start,
                    ends_at=end,
                    buffer_before_minutes=_minutes(booking.before),
                    buffer_after_minutes=_minutes(booking.after),
                    time_zone=zone,
                    requires_confirmation=booking.requires_confirmation,
                    hold_expires_at=now + HOLD if booking.hold else None,
                    video=booking.video,
                    form_template_ids=booking.form_template_ids,
                ),
                blocked=blocked,
            )
            await repo.add_event(
                q,
                organization_id,
                row.id,
                _event(principal, "created", to_status=status, new=(start, end)),
            )
            if status != "held":
                await self._follow_up(q, organization_id, row, now)
            await record(
                q,
                principal,
                action="appointment.created",
                entity_type="appointment",
                entity_id=row.id,
                changed_fields=["specialist_id", "patient_id", "starts_at", "status"],
            )
        return row

    async def _follow_up(
        self,
        q: Querier,
        organization_id: UUID,
        row: repo.AppointmentRow,
        now: dt.datetime,
        *,
        forms: bool = True,
    ) -> None:
        """What a booked time needs: its video room, its reminder and (when it is first booked)
        its forms. A reschedule keeps the forms it has: one deleted on purpose stays deleted."""
        if forms and row.form_template_ids:
            await attach_to_appointment(
                q,
                organization_id,
                appointment_id=row.id,
                patient_id=row.patient_id,
                template_ids=row.form_template_ids,
            )
        if row.video:
            await repo.add_video_task(
                q, organization_id, row.id, action="create", room_name=room_name(row.uid)
            )
        lead = await repo.reminder_lead(q, organization_id)
        due = row.starts_at - dt.timedelta(minutes=lead)
        if lead > 0 and due > now:
            await repo.set_reminder(q, organization_id, row.id, due)
        else:
            await repo.drop_reminder(q, organization_id, row.id)

    async def _wind_down(self, q: Querier, organization_id: UUID, row: repo.AppointmentRow) -> None:
        """What a freed time no longer needs: its room and its reminder."""
        if row.video and row.video_status in ("pending", "ready"):
            await repo.add_video_task(
                q, organization_id, row.id, action="delete", room_name=room_name(row.uid)
            )
        await repo.drop_reminder(q, organization_id, row.id)

    # --- reading ------------------------------------------------------------------------------

    async def get(self, principal: Principal, appointment_id: UUID) -> repo.AppointmentRow:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        found = await repo.appointment(self._db.reader(principal), organization_id, appointment_id)
        if found is None:
            raise NotFound(NO_APPOINTMENT)
        return found

    async def by_uid(self, principal: Principal, uid: str) -> repo.AppointmentRow:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        found = await repo.by_uid(self._db.reader(principal), organization_id, uid)
        if found is None:
            raise NotFound(NO_APPOINTMENT)
        return found

    async def list_appointments(
        self, principal: Principal, page: PageRequest, where: repo.Filter
    ) -> Page[repo.AppointmentRow]:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        rows, total = await repo.appointments(
            self._db.reader(principal), organization_id, page, where
        )
        return Page(rows, total, page)

    async def events(self, principal: Principal, appointment_id: UUID) -> list[repo.EventRow]:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        q = self._db.reader(principal)
        if await repo.appointment(q, organization_id, appointment_id) is None:
            raise NotFound(NO_APPOINTMENT)
        return await repo.events(q, organization_id, appointment_id)

    # --- changing -----------------------------------------------------------------------------

    async def retitle(
        self, principal: Principal, appointment_id: UUID, title: str, *, version: int | None
    ) -> repo.AppointmentRow:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        async with self._db.transaction(principal) as q:
            await self._current(q, organization_id, appointment_id)
            changed = await repo.retitle(
                q, organization_id, appointment_id, title=title.strip(), version=version
            )
            if changed is None:
                raise PreconditionFailed(CHANGED)
            await repo.add_event(q, organization_id, appointment_id, _event(principal, "updated"))
            await record(
                q,
                principal,
                action="appointment.updated",
                entity_type="appointment",
                entity_id=appointment_id,
                changed_fields=["title"],
            )
        return changed

    async def release_hold(
        self, principal: Principal, appointment_id: UUID, *, version: int | None
    ) -> None:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        async with self._db.transaction(principal) as q:
            current = await self._current(q, organization_id, appointment_id)
            if current.status != "held":
                raise IllegalTransition(
                    "Only a hold is deleted; cancel a booked appointment instead.",
                    allowed=states.allowed(
                        current.status, requires_confirmation=current.requires_confirmation
                    ),
                )
            if not await repo.delete(q, organization_id, appointment_id, version=version):
                raise PreconditionFailed(CHANGED)
            await record(
                q,
                principal,
                action="appointment.deleted",
                entity_type="appointment",
                entity_id=appointment_id,
            )

    async def transition(
        self,
        principal: Principal,
        appointment_id: UUID,
        target: str,
        *,
        reason: str | None,
        version: int | None,
    ) -> repo.AppointmentRow:
        """Move to `target` (or, for "book", from a hold to a booking)."""
        organization_id = organization_of(principal, NO_APPOINTMENT)
        now = self._now()
        async with self._db.transaction(principal) as q:
            current = await self._current(q, organization_id, appointment_id)
            if target == "book":
                if (
                    current.status == "held"
                    and current.hold_expires_at is not None
                    and (current.hold_expires_at <= now)
                ):
                    raise Conflict("The hold expired; book the time again.")
                target = states.booked_state(current.requires_confirmation)
            states.check(
                current.status,
                target,
                requires_confirmation=current.requires_confirmation,
                starts_at=current.starts_at,
                now=now,
            )
            freed = target in ("cancelled", "no_show", "entered_in_error")
            video_status = "none" if freed and current.video else current.video_status
            if current.status == "held" and target not in ("cancelled", "entered_in_error"):
                video_status = "pending" if current.video else "none"
            changed = await repo.set_status(
                q,
                organization_id,
                appointment_id,
                status=target,
                video_status=video_status,
                cancel_reason=reason if target == "cancelled" else current.cancel_reason,
                version=version,
            )
            if changed is None:
                raise PreconditionFailed(CHANGED)
            kind = "cancelled" if target == "cancelled" else "status_changed"
            await repo.add_event(
                q,
                organization_id,
                appointment_id,
                _event(
                    principal, kind, from_status=current.status, to_status=target, reason=reason
                ),
            )
            if freed:
                await self._wind_down(q, organization_id, current)
            elif current.status == "held":
                await self._follow_up(q, organization_id, changed, now)
            action = ACTIONS[
                "accept" if current.status == "booked" and target == "upcoming" else target
            ]
            await record(
                q,
                principal,
                action=action,
                entity_type="appointment",
                entity_id=appointment_id,
                changed_fields=["status"],
            )
        return changed

    async def reschedule(
        self,
        principal: Principal,
        appointment_id: UUID,
        starts_at: dt.datetime,
        *,
        reason: str,
        version: int | None,
    ) -> repo.AppointmentRow:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        now = self._now()
        start = starts_at.astimezone(dt.UTC)
        async with self._db.transaction(principal) as q:
            current = await self._current(q, organization_id, appointment_id)
            _not_past(start, now)
            states.check_reschedule(
                current.status, requires_confirmation=current.requires_confirmation
            )
            end = start + (current.ends_at - current.starts_at)
            await _check_time(
                q, organization_id, current.specialist_id, current.patient_id, (start, end)
            )
            template = (
                await templates.template(q, organization_id, current.template_id)
                if current.template_id
                else None
            )
            if template is not None:
                _check_rules(
                    start,
                    now,
                    notice=dt.timedelta(minutes=template.min_notice_minutes),
                    advance=dt.timedelta(days=template.max_advance_days),
                )
            blocked = (
                start - dt.timedelta(minutes=current.buffer_before_minutes),
                end + dt.timedelta(minutes=current.buffer_after_minutes),
            )
            await repo.claim_time(q, current.specialist_id, *blocked)
            status = current.status
            if status == "cancelled":  # moved into a free time: booked again
                status = states.booked_state(current.requires_confirmation)
            # A moved session's room moves too: no join tokens until the worker has set its
            # new times (a token must not expire before the new start).
            video_status = "pending" if current.video and status != "held" else "none"
            changed = await repo.move(
                q,
                organization_id,
                appointment_id,
                starts_at=start,
                ends_at=end,
                blocked=blocked,
                status=status,
                hold_expires_at=now + HOLD if status == "held" else None,
                video_status=video_status,
                version=version,
            )
            if changed is None:
                raise PreconditionFailed(CHANGED)
            await repo.add_event(
                q,
                organization_id,
                appointment_id,
                _event(
                    principal,
                    "rescheduled",
                    from_status=current.status,
                    to_status=status,
                    old=(current.starts_at, current.ends_at),
                    new=(start, end),
                    reason=reason,
                ),
            )
            if status != "held":
                await self._follow_up(
                    q, organization_id, changed, now, forms=current.status == "held"
                )
            await record(
                q,
                principal,
                action="appointment.rescheduled",
                entity_type="appointment",
                entity_id=appointment_id,
                changed_fields=["starts_at", "ends_at"],
            )
        return changed

    async def attach_forms(
        self,
        principal: Principal,
        appointment_id: UUID,
        form_template_ids: list[UUID],
        *,
        version: int | None,
    ) -> repo.AppointmentRow:
        """One form per published template for the patient to fill; attaching a template
        again keeps the form it has."""
        organization_id = organization_of(principal, NO_APPOINTMENT)
        async with self._db.transaction(principal) as q:
            current = await self._current(q, organization_id, appointment_id)
            if current.status in ("cancelled", "entered_in_error"):
                raise Conflict(f"The appointment is {current.status}: it takes no forms.")
            existing = await forms.existing_among(q, organization_id, form_template_ids)
            published = await forms.published_among(q, organization_id, form_template_ids)
            problems = [
                FieldError(
                    f"/body/form_template_ids/{index}",
                    "No such form template."
                    if template_id not in existing
                    else "The form template has no published version.",
                    "not_found" if template_id not in existing else "unpublished",
                )
                for index, template_id in enumerate(form_template_ids)
                if template_id not in published
            ]
            if problems:
                raise ValidationFailed(problems)
            await attach_to_appointment(
                q,
                organization_id,
                appointment_id=appointment_id,
                patient_id=current.patient_id,
                template_ids=form_template_ids,
            )
            ids = list(dict.fromkeys([*current.form_template_ids, *form_template_ids]))
            changed = await repo.set_form_templates(
                q, organization_id, appointment_id, ids, version=version
            )
            if changed is None:
                raise PreconditionFailed(CHANGED)
            await repo.add_event(
                q, organization_id, appointment_id, _event(principal, "forms_attached")
            )
            await record(
                q,
                principal,
                action="appointment.forms_attached",
                entity_type="appointment",
                entity_id=appointment_id,
                changed_fields=["form_template_ids"],
            )
        return changed

    async def video_token(self, principal: Principal, appointment_id: UUID) -> VideoGrant:
        organization_id = organization_of(principal, NO_APPOINTMENT)
        q = self._db.reader(principal)
        current = await repo.appointment(q, organization_id, appointment_id)
        if current is None:
            raise NotFound(NO_APPOINTMENT)
        if not current.video:
            raise VideoNotReady("This appointment has no video session.")
        if current.status not in states.ACTIVE or current.status == "held":
            raise VideoNotReady(
                f"The appointment is {current.status.replace('_', ' ')}: it has no session."
            )
        now = self._now()
        if (
            current.video_status != "ready"
            or current.video_url is None
            or current.video_expires_at is None
        ):
            raise VideoNotReady("The video room is not ready yet; try again in a moment.")
        if current.video_expires_at <= now:
            raise VideoNotReady("The video room has closed.")
        specialist = await specialists.specialist(q, organization_id, current.specialist_id)
        patient = await patients.record(q, organization_id, current.patient_id)
        if specialist is not None and specialist.user_id == principal.user_id:
            name, is_owner = specialist.display_name, True
        elif (
            patient is not None
            and patient.user_id is not None
            and patient.user_id == principal.user_id
        ):
            name, is_owner = f"{patient.given_name} {patient.family_name}", False
        else:
            raise Forbidden("Only the appointment's specialist and patient join its video.")
        granted = await self._video.join_token(
            room_name(current.uid),
            user_id=str(principal.user_id),
            user_name=name,
            is_owner=is_owner,
            expires_at=current.video_expires_at,
        )
        return VideoGrant(granted.token, current.video_url, granted.expires_at, is_owner)

    async def telemetry_session(self, principal: Principal, appointment_id: UUID) -> SessionGrant:
        """A token for this session's pose frames, for its patient or specialist."""
        if self._tokens is None:
            raise RuntimeError("AppointmentService was built without a token service")
        organization_id = organization_of(principal, NO_APPOINTMENT)
        q = self._db.reader(principal)
        current = await repo.appointment(q, organization_id, appointment_id)
        if current is None:
            raise NotFound(NO_APPOINTMENT)
        if current.status not in states.ACTIVE or current.status == "held":
            raise Conflict(
                f"The appointment is {current.status.replace('_', ' ')}: it has no session."
            )
        now = self._now()
        ends = current.ends_at + SESSION_GRACE
        if ends <= now:
            raise Conflict("The appointment has ended: its session is closed.")
        specialist = await specialists.specialist(q, organization_id, current.specialist_id)
        patient = await patients.record(q, organization_id, current.patient_id)
        participants = {
            specialist.user_id if specialist is not None else None,
            patient.user_id if patient is not None else None,
        } - {None}
        if principal.user_id not in participants:
            raise Forbidden("Only the appointment's specialist and patient send its session data.")
        expires = min(ends, now + SESSION_MAX)
        token = self._tokens.issue_session(
            subject=str(principal.user_id),
            organization_id=str(organization_id),
            session_id=str(current.id),
            expires_at=int(expires.timestamp()),
        )
        return SessionGrant(token, current.id, expires.replace(microsecond=0))

    async def _current(
        self, q: Querier, organization_id: UUID, appointment_id: UUID
    ) -> repo.AppointmentRow:
        found = await repo.appointment(q, organization_id, appointment_id)
        if found is None:
            raise NotFound(NO_APPOINTMENT)
        return found


async def _check_time(
    q: Querier,
    organization_id: UUID,
    specialist_id: UUID,
    patient_id: UUID,
    span: tuple[dt.datetime, dt.datetime],
) -> str:
    """The specialist's zone, once the specialist, the patient and the hours allow it."""
    start, end = span
    if await specialists.specialist(q, organization_id, specialist_id) is None:
        raise ValidationFailed(
            [FieldError("/body/specialist_id", "No such specialist.", "not_found")]
        )
    # Row-level security shows a patient only their own record.
    if await patients.record(q, organization_id, patient_id) is None:
        raise ValidationFailed([FieldError("/body/patient_id", "No such patient.", "not_found")])
    hours = await hours_of(q, organization_id, specialist_id, start.date(), end.date())
    if hours is None or not wh.fits(hours, start, end):
        raise ValidationFailed(
            [FieldError(STARTS, "Outside the specialist's working hours.", "availability")]
        )
    return hours.zone.key


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _instant(value: object) -> dt.datetime:
    found = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    found = found if found.tzinfo else found.replace(tzinfo=dt.UTC)
    if not EARLIEST <= found <= LATEST:  # year 1 with an offset overflows in UTC (a 500)
        raise ValidationFailed([FieldError(STARTS, "Between the years 1900 and 9999.", "range")])
    return found


def _minutes(value: dt.timedelta) -> int:
    return int(value.total_seconds() // 60)


def _not_past(start: dt.datetime, now: dt.datetime) -> None:
    if start <= now:
        raise ValidationFailed([FieldError(STARTS, "Must be in the future.", "past")])


def _check_rules(
    start: dt.datetime,
    now: dt.datetime,
    *,
    notice: dt.timedelta | None,
    advance: dt.timedelta | None,
) -> None:
    if notice is not None and start < now + notice:
        minutes = _minutes(notice)
        raise ValidationFailed(
            [FieldError(STARTS, f"Book at least {minutes} minutes ahead.", "min_notice")]
        )
    if advance is not None and start > now + advance:
        raise ValidationFailed(
            [FieldError(STARTS, f"Book at most {advance.days} days ahead.", "max_advance")]
        )


def _event(
    principal: Principal,
    kind: str,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    old: tuple[dt.datetime, dt.datetime] | None = None,
    new: tuple[dt.datetime, dt.datetime] | None = None,
    reason: str | None = None,
) -> repo.NewEvent:
    return repo.NewEvent(
        kind=kind,
        actor_user_id=principal.user_id,
        actor_api_key_id=principal.api_key_id,
        from_status=from_status,
        to_status=to_status,
        old_starts_at=old[0] if old else None,
        old_ends_at=old[1] if old else None,
        new_starts_at=new[0] if new else None,
        new_ends_at=new[1] if new else None,
        reason=reason,
    )
