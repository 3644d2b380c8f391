"""What forms and documents hang off: an appointment of the organization and its patient."""

from __future__ import annotations

from uuid import UUID

from carebase.errors import FieldError, ValidationFailed
from carebase.persistence import appointments
from carebase.persistence.db import Querier


async def visit_of(
    q: Querier, organization_id: UUID, appointment_id: UUID, patient_id: UUID
) -> appointments.AppointmentRow:
    """The appointment named in a body, which must be the named patient's (422 otherwise)."""
    found = await appointments.appointment(q, organization_id, appointment_id)
    if found is None:
        raise ValidationFailed(
            [FieldError("/body/appointment_id", "No such appointment.", "not_found")]
        )
    if found.patient_id != patient_id:
        raise ValidationFailed(
            [FieldError("/body/patient_id", "The appointment is another patient's.", "mismatch")]
        )
    return found
