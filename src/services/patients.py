"""Patient records: identifiers and notes sealed at rest, a patient limited to themself.

Sealed columns use the row's identity as associated data (`patients.patients|org|id|col`),
so a ciphertext moved to another row or column does not open. Lookups by national id or
phone use a keyed blind index of the normalised value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from carebase.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from carebase.pages import Page, PageRequest
from carebase.persistence import appointments, documents, forms, identity, organizations
from carebase.persistence import custom_fields as cf
from carebase.persistence import patients as repo
from carebase.persistence.db import Database, Querier, one, search_term
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.security.tokens import TokenService
from carebase.services.audit import record
from carebase.services.custom_fields import (
    ProfileView,
    changed_keys,
    check_values,
    open_sealed,
    read_values,
)
from carebase.services.identity import INVITATION_TTL_S, Links, normalise_email, queue_action_mail

NO_PATIENT = "No such patient."
IDENTIFIERS = ("birth_date", "national_id", "phone", "address", "notes")
PLAIN = ("given_name", "family_name", "email", "status")

INVITATION_MAIL = (
    "Your patient account at {organization}",
    "Hello {name},\n\n{organization} has opened a Carebase account for you: forms, documents "
    "and appointments in one place. Choose a password here:\n\n{{link}}\n\n"
    "The link works once, for 7 days.\n",
)
ADDED_MAIL = (
    "{organization} added you as a patient",
    "Hello {name},\n\n{organization} added you as a patient on Carebase. Sign in as usual and "
    "pick it from your organizations.\n",
)


@dataclass(frozen=True, slots=True)
class PatientView:
    """A patient with its sealed fields opened."""

    id: UUID
    user_id: UUID | None
    given_name: str
    family_name: str
    email: str | None
    status: str
    birth_date: dt.date | None
    national_id: str | None
    phone: str | None
    address: str | None
    notes: str | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Impersonation:
    access_token: str
    expires_in: int
    user_id: UUID
    impersonator_id: UUID


def normalise_national_id(value: str) -> str:
    return re.sub(r"[\s.\-/]", "", value).upper()


def normalise_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return ("+" if value.strip().startswith("+") else "") + digits


def aad(organization_id: UUID, patient_id: UUID, column: str) -> bytes:
    return aad_prefix(organization_id, patient_id) + column.encode()


def aad_prefix(organization_id: UUID, patient_id: UUID) -> bytes:
    """What every sealed column of one row shares in its associated data."""
    return f"{repo.TABLE}|{organization_id}|{patient_id}|".encode()


class PatientService:
    def __init__(
        self,
        *,
        db: Database,
        sealer: Sealer,
        tokens: TokenService,
        links: Links,
        impersonation_ttl_s: int,
    ) -> None:
        self._db = db
        self._sealer = sealer
        self._tokens = tokens
        self._links = links
        self._impersonation_ttl_s = impersonation_ttl_s

    # --- records ------------------------------------------------------------------------------

    async def create(self, principal: Principal, values: Mapping[str, Any]) -> PatientView:
        organization_id = organization_of(principal, NO_PATIENT)
        patient_id = uuid4()
        fields = self._fields(organization_id, patient_id, {"status": "active", **values}, None)
        async with self._db.transaction(principal) as q:
            row = await repo.insert_patient(q, organization_id, patient_id, fields, user_id=None)
            await record(
                q,
                principal,
                action="patient.created",
                entity_type="patient",
                entity_id=patient_id,
                changed_fields=values.keys(),
            )
        return self._view(row)

    async def onboard(self, principal: Principal, values: Mapping[str, Any]) -> PatientView:
        organization_id = organization_of(principal, NO_PATIENT)
        email = normalise_email(values["email"])
        patient_id = uuid4()
        given = {"status": "active", **values, "email": email}
        fields = self._fields(organization_id, patient_id, given, None)
        name = f"{fields.given_name} {fields.family_name}"
        async with self._db.transaction(principal) as q:
            user_id, created = await repo.enroll_account(q, email=email, display_name=name)
            row = await repo.insert_patient(q, organization_id, patient_id, fields, user_id=user_id)
            organization = one(await organizations.current_organization_name(q))
            await self._invite(q, user_id, email, name, organization, created=created)
            await record(
                q,
                principal,
                action="patient.onboarded",
                entity_type="patient",
                entity_id=patient_id,
                changed_fields=values.keys(),
            )
        return self._view(row)

    async def get(self, principal: Principal, patient_id: UUID) -> PatientView:
        q = self._db.reader(principal)
        row = await repo.record(q, organization_of(principal, NO_PATIENT), patient_id)
        if row is None:
            raise NotFound(NO_PATIENT)
        return self._view(row)

    async def list_patients(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        status: str | None,
        search: str | None,
        national_id: str | None,
        phone: str | None,
        sort: str,
    ) -> Page[repo.PatientSummaryRow]:
        where = repo.PatientFilter(
            status=status,
            search=search_term(search),
            national_id_index=self._index("national_id", national_id),
            phone_index=self._index("phone", phone),
            sort=sort,
        )
        q = self._db.reader(principal)
        rows, total = await repo.patients(q, organization_of(principal, NO_PATIENT), page, where)
        return Page(rows, total, page)

    async def update(
        self,
        principal: Principal,
        patient_id: UUID,
        changes: Mapping[str, Any],
        *,
        version: int | None,
    ) -> PatientView:
        organization_id = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal) as q:
            current = await repo.patient(q, organization_id, patient_id)
            if current is None:
                raise NotFound(NO_PATIENT)
            if principal.role == "patient" and "status" in changes:
                raise Forbidden("A patient cannot change the status of their record.")
            before = self._view(current)
            changed = [
                name
                for name, value in changes.items()
                if getattr(before, name) != _typed(name, value)
            ]
            fields = self._fields(organization_id, patient_id, changes, current)
            row = await repo.update_patient(q, organization_id, patient_id, fields, version=version)
            if row is None:
                raise PreconditionFailed("The patient changed since it was read; read it again.")
            await record(
                q,
                principal,
                action="patient.updated",
                entity_type="patient",
                entity_id=patient_id,
                changed_fields=changed,
            )
        return self._view(row)

    async def delete(self, principal: Principal, patient_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal) as q:
            if await repo.patient(q, organization_id, patient_id) is None:
                raise NotFound(NO_PATIENT)
            active = await appointments.active_of_patient(q, organization_id, patient_id)
            if active:
                raise Conflict(
                    f"The patient has {active} appointment(s) that still hold a specialist's"
                    " time; cancel them first."
                )
            signed = await forms.signed_of_patient(q, organization_id, patient_id)
            kept = await documents.kept_of_patient(q, organization_id, patient_id)
            if signed or kept:
                raise Conflict(
                    f"The patient has {signed} signed form(s) and {kept} final report(s) or"
                    " prescription(s): they are kept as clinical records."
                )
            if not await repo.delete_patient(q, organization_id, patient_id, version=version):
                raise PreconditionFailed("The patient changed since it was read; read it again.")
            await record(
                q, principal, action="patient.deleted", entity_type="patient", entity_id=patient_id
            )

    # --- profile and prefill --------------------------------------------------------------------

    async def profile(self, principal: Principal, patient_id: UUID) -> ProfileView:
        organization_id = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.patient(q, organization_id, patient_id)
            if row is None:
                raise NotFound(NO_PATIENT)
            fields = await cf.entity_fields(q, organization_id, "patient")
        return self._profile(row, fields)

    async def update_profile(
        self,
        principal: Principal,
        patient_id: UUID,
        values: Mapping[str, Any],
        *,
        version: int | None,
    ) -> ProfileView:
        organization_id = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal) as q:
            current = await repo.patient(q, organization_id, patient_id)
            if current is None:
                raise NotFound(NO_PATIENT)
            fields = await cf.entity_fields(q, organization_id, "patient")
            stored = check_values(
                fields, values, sealer=self._sealer, aad=aad(organization_id, patient_id, "custom")
            )
            row = await repo.update_custom(
                q,
                organization_id,
                patient_id,
                values=stored.plain,
                sealed=stored.sealed,
                version=version,
            )
            if row is None:
                raise PreconditionFailed("The patient changed since it was read; read it again.")
            await cf.mark_in_use(q, organization_id, stored.used)
            before, _ = self._custom(current, fields)
            changed = changed_keys(before, values)
            await record(
                q,
                principal,
                action="patient.profile_updated",
                entity_type="patient",
                entity_id=patient_id,
                changed_fields=changed,
            )
        return self._profile(row, fields)

    async def prefill(self, principal: Principal, patient_id: UUID) -> dict[str, Any]:
        organization_id = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.patient(q, organization_id, patient_id)
            if row is None:
                raise NotFound(NO_PATIENT)
            fields = await cf.entity_fields(q, organization_id, "patient")
        view = self._view(row)
        values: dict[str, Any] = {}
        for name in ("given_name", "family_name", "email", "birth_date", "phone", "address"):
            value = getattr(view, name)
            if value is not None:
                values[f"patient.{name}"] = value.isoformat() if name == "birth_date" else value
        custom, _ = self._custom(row, [f for f in fields if f.archived_at is None])
        values.update({f"custom.{key}": value for key, value in custom.items()})
        return values

    # --- impersonation ----------------------------------------------------------------------

    async def impersonate(self, principal: Principal, patient_id: UUID) -> Impersonation:
        if principal.impersonator_id is not None or principal.user_id is None:
            raise Forbidden("Only a signed-in admin, acting as themself, can impersonate.")
        organization_id = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal) as q:
            row = await repo.patient(q, organization_id, patient_id)
            if row is None:
                raise NotFound(NO_PATIENT)
            if row.user_id is None:
                raise Conflict("The patient has no account to act as; onboard them first.")
            await record(
                q,
                principal,
                action="patient.impersonated",
                entity_type="patient",
                entity_id=patient_id,
            )
        token = self._tokens.issue(
            subject=str(row.user_id),
            organization_id=str(organization_id),
            role="patient",
            impersonator=str(principal.user_id),
            ttl_s=self._impersonation_ttl_s,
        )
        return Impersonation(token, self._impersonation_ttl_s, row.user_id, principal.user_id)

    # --- sealing ------------------------------------------------------------------------------

    def _fields(
        self,
        organization_id: UUID,
        patient_id: UUID,
        given: Mapping[str, Any],
        current: repo.PatientRow | None,
    ) -> repo.PatientFields:
        """The row's columns after applying `given`; untouched sealed columns stay as they are."""

        def plain(name: str) -> Any:
            if name in given:
                return given[name]
            return getattr(current, name) if current else None

        def sealed(name: str) -> bytes | None:
            if name not in given:
                return getattr(current, f"{name}_sealed") if current else None
            value = given[name]
            if value is None:
                return None
            text = value.isoformat() if isinstance(value, dt.date) else str(value)
            return self._sealer.seal(text.encode(), aad(organization_id, patient_id, name))

        def index(name: str) -> bytes | None:
            if name not in given:
                return getattr(current, f"{name}_index") if current else None
            return self._index(name, given[name])

        birth = _typed("birth_date", given.get("birth_date"))
        if isinstance(birth, dt.date) and birth > dt.date.today():
            raise ValidationFailed(
                [FieldError("/body/birth_date", "A birth date is not in the future.", "maximum")]
            )
        email = plain("email")
        return repo.PatientFields(
            given_name=str(plain("given_name")).strip(),
            family_name=str(plain("family_name")).strip(),
            email=normalise_email(email) if email else None,
            status=str(plain("status")),
            birth_date_sealed=sealed("birth_date"),
            national_id_sealed=sealed("national_id"),
            national_id_index=index("national_id"),
            phone_sealed=sealed("phone"),
            phone_index=index("phone"),
            address_sealed=sealed("address"),
            notes_sealed=sealed("notes"),
        )

    def _index(self, name: str, value: str | None) -> bytes | None:
        if value is None:
            return None
        normal = normalise_national_id(value) if name == "national_id" else normalise_phone(value)
        return self._sealer.blind_index(f"patient.{name}", normal)

    def _view(self, row: repo.PatientRow | repo.PatientRecordRow) -> PatientView:
        prefix = aad_prefix(row.organization_id, row.id)

        def opened(name: str) -> str | None:
            sealed = getattr(row, f"{name}_sealed")
            if sealed is None:
                return None
            return open_sealed(self._sealer, sealed, prefix + name.encode()).decode()

        birth = opened("birth_date")
        return PatientView(
            id=row.id,
            user_id=row.user_id,
            given_name=row.given_name,
            family_name=row.family_name,
            email=row.email,
            status=row.status,
            birth_date=dt.date.fromisoformat(birth) if birth else None,
            national_id=opened("national_id"),
            phone=opened("phone"),
            address=opened("address"),
            notes=opened("notes"),
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def _custom(
        self, row: repo.PatientRow, fields: list[cf.FieldRow]
    ) -> tuple[dict[str, Any], list[tuple[UUID, str, int]]]:
        return read_values(
            fields,
            row.custom_values,
            row.custom_sealed,
            sealer=self._sealer,
            aad=aad(row.organization_id, row.id, "custom"),
        )

    def _profile(self, row: repo.PatientRow, fields: list[cf.FieldRow]) -> ProfileView:
        values, used = self._custom(row, fields)
        return ProfileView(row.id, values, used, row.version)

    async def _invite(
        self, q: Querier, user_id: UUID, email: str, name: str, organization: str, *, created: bool
    ) -> None:
        if created:
            subject, body = INVITATION_MAIL
            await queue_action_mail(
                q,
                user_id=user_id,
                email=email,
                purpose="invitation",
                ttl_s=INVITATION_TTL_S,
                subject=subject.format(organization=organization),
                body=body.format(organization=organization, name=name),
                link_path="/accept-invitation",
                links=self._links,
            )
            return
        subject, body = ADDED_MAIL
        await identity.enqueue_mail(
            q,
            user_id=user_id,
            recipient=email,
            subject=subject.format(organization=organization),
            body=body.format(organization=organization, name=name),
        )


def _typed(name: str, value: Any) -> Any:
    if name == "birth_date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value
