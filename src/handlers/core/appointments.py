"""Handlers for openapi/core/appointments.yaml."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from carebase.generated.models import core as api
from carebase.pages import PageRequest
from carebase.persistence.appointments import AppointmentRow, EventRow, Filter
from carebase.principal import Principal
from carebase.services import appointment_states as states
from carebase.services.appointments import AppointmentService
from carebase.web.results import NO_STORE, Reply, created, no_content, ok, resource

BASE = "/v1/appointments"


Transition = Callable[..., Awaitable[Reply]]


def _transition(target: str) -> Transition:
    """A handler for one state operation: `target` is the state it moves to ("book" turns a
    hold into the booking its confirmation rule asks for). The body and its reason are
    optional; `If-Match`, when given, must name the current version."""

    async def handler(
        self: AppointmentHandlers,
        principal: Principal,
        *,
        appointment_id: UUID,
        if_match: int | None,
        body: dict[str, Any] | None,
    ) -> Reply:
        reason = body.get("reason") if body else None  # the contract checked its shape
        return await _move(
            self._appointments, principal, appointment_id, target, reason=reason, if_match=if_match
        )

    return handler


async def _move(
    appointments: AppointmentService,
    principal: Principal,
    appointment_id: UUID,
    target: str,
    *,
    reason: str | None,
    if_match: int | None,
) -> Reply:
    row = await appointments.transition(
        principal, appointment_id, target, reason=reason, version=if_match
    )
    return _one(row)


class AppointmentHandlers:
    def __init__(self, *, appointments: AppointmentService) -> None:
        self._appointments = appointments

    async def list_appointments(
        self,
        principal: Principal,
        *,
        page: int,
        page_size: int,
        patient_id: UUID | None,
        specialist_id: UUID | None,
        status: str | None,
        from_: dt.datetime | None,
        to: dt.datetime | None,
        sort: str,
    ) -> Reply:
        found = await self._appointments.list_appointments(
            principal,
            PageRequest(page, page_size),
            Filter(
                patient_id=patient_id,
                specialist_id=specialist_id,
                status=status,
                since=from_,
                until=to,
                sort=sort,
            ),
        )
        return ok(
            api.AppointmentPage.model_construct(
                data=[appointment_json(row) for row in found.items], meta=found.meta
            )
        )

    async def create_appointment(
        self, principal: Principal, *, body: api.AppointmentCreate
    ) -> Reply:
        row = await self._appointments.create(principal, body.model_dump())
        return _created(row)

    async def create_appointment_from_template(
        self, principal: Principal, *, body: api.AppointmentFromTemplate
    ) -> Reply:
        row = await self._appointments.create_from_template(principal, body.model_dump())
        return _created(row)

    async def get_appointment_by_uid(self, principal: Principal, *, appointment_uid: str) -> Reply:
        return _one(await self._appointments.by_uid(principal, appointment_uid))

    async def get_appointment(self, principal: Principal, *, appointment_id: UUID) -> Reply:
        return _one(await self._appointments.get(principal, appointment_id))

    async def update_appointment(
        self,
        principal: Principal,
        *,
        appointment_id: UUID,
        if_match: int | None,
        body: api.AppointmentUpdate,
    ) -> Reply:
        row = await self._appointments.retitle(
            principal, appointment_id, body.title, version=if_match
        )
        return _one(row)

    async def delete_appointment(
        self, principal: Principal, *, appointment_id: UUID, if_match: int | None
    ) -> Reply:
        await self._appointments.release_hold(principal, appointment_id, version=if_match)
        return no_content()

    async def reschedule_appointment(
        self,
        principal: Principal,
        *,
        appointment_id: UUID,
        if_match: int | None,
        body: api.Reschedule,
    ) -> Reply:
        row = await self._appointments.reschedule(
            principal, appointment_id, body.starts_at, reason=body.reason, version=if_match
        )
        return _one(row)

    async def cancel_appointment(
        self,
        principal: Principal,
        *,
        appointment_id: UUID,
        if_match: int | None,
        body: api.Cancellation,
    ) -> Reply:
        return await _move(
            self._appointments,
            principal,
            appointment_id,
            "cancelled",
            reason=body.reason,
            if_match=if_match,
        )

    # held → booked/upcoming, and the moves after it: one handler each, the same shape.
    book_appointment = _transition("book")
    accept_appointment = _transition("upcoming")
    confirm_appointment = _transition("confirmed")
    start_appointment = _transition("in_progress")
    complete_appointment = _transition("done")
    mark_appointment_no_show = _transition("no_show")
    mark_appointment_entered_in_error = _transition("entered_in_error")

    async def attach_appointment_forms(
        self,
        principal: Principal,
        *,
        appointment_id: UUID,
        if_match: int | None,
        body: api.FormAttachment,
    ) -> Reply:
        row = await self._appointments.attach_forms(
            principal, appointment_id, list(body.form_template_ids), version=if_match
        )
        return _one(row)

    async def list_appointment_events(self, principal: Principal, *, appointment_id: UUID) -> Reply:
        found = await self._appointments.events(principal, appointment_id)
        return ok(api.AppointmentEventList.model_construct(data=[_event(e) for e in found]))

    async def create_video_token(self, principal: Principal, *, appointment_id: UUID) -> Reply:
        granted = await self._appointments.video_token(principal, appointment_id)
        token = api.VideoToken.model_construct(
            token=granted.token,
            room_url=granted.room_url,
            expires_at=granted.expires_at,
            is_owner=granted.is_owner,
        )
        return ok(token, headers=NO_STORE)

    async def create_telemetry_session(
        self, principal: Principal, *, appointment_id: UUID
    ) -> Reply:
        grant = await self._appointments.telemetry_session(principal, appointment_id)
        session = api.TelemetrySession.model_construct(
            token=grant.token, session_id=grant.session_id, expires_at=grant.expires_at
        )
        return ok(session, headers=NO_STORE)


def _created(row: AppointmentRow) -> Reply:
    return created(appointment_json(row), location=f"{BASE}/{row.id}", version=row.version)


def _one(row: AppointmentRow) -> Reply:
    return resource(appointment_json(row), version=row.version)


def appointment_json(row: AppointmentRow) -> dict[str, Any]:
    """An `Appointment` as JSON-ready data: times in the appointment's own zone (RFC 3339 with
    its offset), the room's URL only once it is ready. A plain dict rather than a pydantic
    model: a calendar renders hundreds of these, and building models was a third of its CPU
    (the contract still checks the shape in tests, VALIDATE_RESPONSES)."""
    zone = ZoneInfo(row.time_zone)
    ready = row.video_status == "ready"
    return {
        "id": row.id,
        "uid": row.uid,
        "specialist_id": row.specialist_id,
        "patient_id": row.patient_id,
        "template_id": row.template_id,
        "specialty_id": row.specialty_id,
        "title": row.title,
        "status": row.status,
        "starts_at": row.starts_at.astimezone(zone),
        "ends_at": row.ends_at.astimezone(zone),
        "buffer_before_minutes": row.buffer_before_minutes,
        "buffer_after_minutes": row.buffer_after_minutes,
        "time_zone": row.time_zone,
        "requires_confirmation": row.requires_confirmation,
        "hold_expires_at": row.hold_expires_at,
        "video": {
            "enabled": row.video,
            "status": row.video_status,
            "room_url": row.video_url if ready else None,
            "expires_at": row.video_expires_at if ready else None,
        },
        "form_template_ids": row.form_template_ids,
        "cancel_reason": row.cancel_reason,
        "allowed_transitions": states.allowed(
            row.status, requires_confirmation=row.requires_confirmation
        ),
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _event(row: EventRow) -> api.AppointmentEvent:
    return api.AppointmentEvent.model_construct(
        id=row.id,
        occurred_at=row.occurred_at,
        kind=row.kind,
        actor_user_id=row.actor_user_id,
        actor_api_key_id=row.actor_api_key_id,
        from_status=row.from_status,
        to_status=row.to_status,
        old_starts_at=row.old_starts_at,
        old_ends_at=row.old_ends_at,
        new_starts_at=row.new_starts_at,
        new_ends_at=row.new_ends_at,
        reason=row.reason,
    )
