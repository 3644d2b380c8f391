"""Form templates (a draft, frozen versions) and forms: filled, submitted, signed, amended.

A form pins the template version it was made from and is checked with it, never with the
latest. Answers to sensitive items are sealed as one JSON document under the row's identity
(`forms.forms|org|id|answers`). Signing stores two SHA-256 hashes over RFC 8785 canonical
JSON: the content (the form's identity, its version's schema hash and every answer), and
that hash with the signer, role, meaning and time. After signing, a trigger keeps the row
as it is, whoever asks; `verify` recomputes both hashes and records a security event when
the stored content no longer matches.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID, uuid4

from carebase.errors import (
    FieldError,
    Forbidden,
    FormLocked,
    NoDraft,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    pointer_token,
)
from carebase.integrations.pdf import PdfRenderer
from carebase.pages import Page, PageRequest
from carebase.persistence import attachments, documents, patients
from carebase.persistence import custom_fields as cf
from carebase.persistence import forms as repo
from carebase.persistence.db import Database, Querier, search_term
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer, UnsealError
from carebase.services import form_schema as schema
from carebase.services import printing
from carebase.services.audit import record
from carebase.services.custom_fields import open_sealed
from carebase.services.visits import visit_of

NO_TEMPLATE = "No such form template."
NO_VERSION = "No such version of the form template."
NO_FORM = "No such form."
TEMPLATE_CHANGED = "The form template changed since it was read; read it again."
FORM_CHANGED = "The form changed since it was read; read it again."
EDITABLE = frozenset({"draft", "in_progress"})
DEFAULT_SIGNERS = ["admin", "specialist"]


@dataclass(frozen=True, slots=True)
class FormView:
    """A form with its answers opened."""

    row: repo.FormRow
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verification:
    form_id: UUID
    valid: bool
    content_sha256: str
    computed_content_sha256: str | None
    signature_sha256: str
    computed_signature_sha256: str | None
    checked_at: dt.datetime


def answers_aad(organization_id: UUID, form_id: UUID) -> bytes:
    return f"forms.forms|{organization_id}|{form_id}|answers".encode()


class Seals(Protocol):
    """What seals a value: the API's `Sealer`, or a `DataKeyring` where demo data is written."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...


def seal_answers(
    sealer: Seals,
    organization_id: UUID,
    form_id: UUID,
    items: Sequence[Mapping[str, Any]],
    answers: Mapping[str, Any],
) -> tuple[dict[str, Any], bytes | None]:
    """Ordinary answers, and the sensitive ones sealed as one document (None if none): the
    stored form the API opens, whoever writes it."""
    sensitive = {item["link_id"] for item in items if item.get("sensitive")}
    plain = {k: v for k, v in answers.items() if k not in sensitive}
    hidden = {k: v for k, v in answers.items() if k in sensitive}
    if not hidden:
        return plain, None
    document = json.dumps(hidden, sort_keys=True, ensure_ascii=False).encode()
    return plain, sealer.seal(document, answers_aad(organization_id, form_id))


async def known_prefill(q: Querier, organization_id: UUID) -> frozenset[str]:
    fields = await cf.entity_fields(q, organization_id, "patient")
    return schema.prefill_keys(f.key for f in fields if f.archived_at is None)


class FormTemplateService:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    async def create(self, principal: Principal, body: Mapping[str, Any]) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        items = schema.normalised(body["items"])
        async with self._db.transaction(principal) as q:
            _raise_on(schema.check_items(items, await known_prefill(q, organization_id)))
            row = await repo.insert_template(
                q,
                organization_id,
                uuid4(),
                title=str(body["title"]).strip(),
                description=str(body.get("description") or ""),
                signer_roles=list(body.get("signer_roles") or DEFAULT_SIGNERS),
                items=items,
            )
            await record(
                q,
                principal,
                action="form_template.created",
                entity_type="form_template",
                entity_id=row.id,
                changed_fields=body.keys(),
            )
        return row

    async def get(self, principal: Principal, template_id: UUID) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        found = await repo.template(self._db.reader(principal), organization_id, template_id)
        if found is None:
            raise NotFound(NO_TEMPLATE)
        return found

    async def list_templates(
        self, principal: Principal, page: PageRequest, *, active: bool | None, search: str | None
    ) -> Page[repo.TemplateRow]:
        organization_id = organization_of(principal, NO_TEMPLATE)
        rows, total = await repo.templates(
            self._db.reader(principal),
            organization_id,
            page,
            active=active,
            search=search_term(search),
        )
        return Page(rows, total, page)

    async def update(
        self,
        principal: Principal,
        template_id: UUID,
        body: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.TemplateRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        items = schema.normalised(body["items"])
        async with self._db.transaction(principal) as q:
            current = await repo.lock_template(q, organization_id, template_id)
            if current is None:
                raise NotFound(NO_TEMPLATE)
            _raise_on(schema.check_items(items, await known_prefill(q, organization_id)))
            changed = await repo.update_template(
                q,
                organization_id,
                template_id,
                title=str(body["title"]).strip(),
                description=str(body.get("description", current.description)),
                signer_roles=list(body.get("signer_roles") or current.signer_roles),
                active=bool(body.get("active", current.active)),
                items=items,
                version=version,
            )
            if changed is None:
                raise PreconditionFailed(TEMPLATE_CHANGED)
            await record(
                q,
                principal,
                action="form_template.updated",
                entity_type="form_template",
                entity_id=template_id,
                changed_fields=[
                    name
                    for name, before, after in (
                        ("title", current.title, changed.title),
                        ("description", current.description, changed.description),
                        ("signer_roles", current.signer_roles, changed.signer_roles),
                        ("active", current.active, changed.active),
                        ("items", current.draft_items, changed.draft_items),
                    )
                    if before != after
                ],
            )
        return changed

    async def delete(self, principal: Principal, template_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal) as q:
            if await repo.lock_template(q, organization_id, template_id) is None:
                raise NotFound(NO_TEMPLATE)
            if await repo.template_in_use(q, organization_id, template_id):
                raise FormLocked("Forms were made from this template; retire it with `active`.")
            if not await repo.delete_template(q, organization_id, template_id, version=version):
                raise PreconditionFailed(TEMPLATE_CHANGED)
            await record(
                q,
                principal,
                action="form_template.deleted",
                entity_type="form_template",
                entity_id=template_id,
            )

    async def publish(
        self, principal: Principal, template_id: UUID, *, version: int | None
    ) -> repo.VersionRow:
        organization_id = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal) as q:
            current = await repo.lock_template(q, organization_id, template_id)
            if current is None:
                raise NotFound(NO_TEMPLATE)
            if version is not None and version != current.version:
                raise PreconditionFailed(TEMPLATE_CHANGED)
            if current.draft_items is None:
                raise NoDraft("The template has no draft: every change is published already.")
            items = current.draft_items
            # A custom field may have been archived since the draft was saved.
            _raise_on(schema.check_items(items, await known_prefill(q, organization_id)))
            published = await repo.insert_version(
                q,
                organization_id,
                current,
                number=current.latest_version + 1,
                items=items,
                schema_sha256=schema.schema_sha256(items),
                published_by=principal.user_id,
            )
            await record(
                q,
                principal,
                action="form_template.published",
                entity_type="form_template",
                entity_id=template_id,
                changed_fields=["latest_version"],
            )
        return published

    async def versions(
        self, principal: Principal, template_id: UUID
    ) -> list[repo.VersionSummaryRow]:
        organization_id = organization_of(principal, NO_TEMPLATE)
        async with self._db.transaction(principal, read_only=True) as q:
            if await repo.template(q, organization_id, template_id) is None:
                raise NotFound(NO_TEMPLATE)
            return await repo.versions(q, organization_id, template_id)

    async def version(
        self, principal: Principal, template_id: UUID, number: int
    ) -> repo.VersionRow:
        organization_id = organization_of(principal, NO_VERSION)
        found = await repo.version_of(
            self._db.reader(principal), organization_id, template_id, number
        )
        if found is None:
            raise NotFound(NO_VERSION)
        return found


Prefill = Callable[[Principal, UUID], Any]


class FormService:
    def __init__(self, *, db: Database, sealer: Sealer, prefill: Prefill, pdf: PdfRenderer) -> None:
        """`prefill(principal, patient_id)` answers `GET /v1/patients/{id}/prefill`'s values."""
        self._db = db
        self._sealer = sealer
        self._prefill = prefill
        self._pdf = pdf

    # --- making -------------------------------------------------------------------------------

    async def create(self, principal: Principal, body: Mapping[str, Any]) -> FormView:
        organization_id = organization_of(principal, NO_FORM)
        template_id, patient_id = UUID(str(body["template_id"])), UUID(str(body["patient_id"]))
        appointment_id = UUID(str(body["appointment_id"])) if body.get("appointment_id") else None
        given = dict(body.get("values") or {})
        pinned = await self._pinned(principal, organization_id, template_id, body)
        prefilled: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if body.get("prefill"):
            try:
                available = await self._prefill(principal, patient_id)
            except NotFound:
                raise ValidationFailed(
                    [FieldError("/body/patient_id", "No such patient.", "not_found")]
                ) from None
            for item in pinned.items:
                key = item.get("prefill")
                if key in available and schema.check_answer(item, available[key]) is None:
                    prefilled[item["link_id"]] = available[key]
                    sources[item["link_id"]] = str(key)
        _raise_on(schema.check_answers(pinned.items, given, at="/body/values"))
        # A new form has no files yet: upload them to it, then answer with their ids.
        _raise_on(_unknown_files(_file_answers(pinned.items, given), {}, at="/body/values"))
        answers = {**prefilled, **{k: v for k, v in given.items() if v is not None}}
        for link in given:
            sources.pop(link, None)
        form_id = uuid4()
        plain, sealed = seal_answers(self._sealer, organization_id, form_id, pinned.items, answers)
        async with self._db.transaction(principal) as q:
            await self._patient_in(q, organization_id, patient_id)
            if appointment_id is not None:
                await visit_of(q, organization_id, appointment_id, patient_id)
            row = await repo.insert_form(
                q,
                organization_id,
                repo.NewForm(
                    id=form_id,
                    template_id=template_id,
                    template_version=pinned.number,
                    patient_id=patient_id,
                    appointment_id=appointment_id,
                    status="in_progress" if answers else "draft",
                    answers=plain,
                    sealed_answers=sealed,
                    prefill_sources=sources,
                ),
            )
            if row is None:
                raise FormLocked("The appointment has a form from this template already.")
            await record(
                q,
                principal,
                action="form.created",
                entity_type="form",
                entity_id=form_id,
                changed_fields=["template_id", "patient_id", *answers],
            )
        return FormView(row, answers)

    async def _pinned(
        self,
        principal: Principal,
        organization_id: UUID,
        template_id: UUID,
        body: Mapping[str, Any],
    ) -> repo.VersionRow:
        q = self._db.reader(principal)
        template = await repo.template(q, organization_id, template_id)
        if template is None:
            raise ValidationFailed([FieldError("/body/template_id", NO_TEMPLATE, "not_found")])
        number = body.get("template_version") or template.latest_version
        found = (
            await repo.version_of(q, organization_id, template_id, int(number)) if number else None
        )
        if found is None:
            pointer = (
                "/body/template_version" if body.get("template_version") else "/body/template_id"
            )
            raise ValidationFailed(
                [FieldError(pointer, "The template has no such published version.", "not_found")]
            )
        return found

    async def _patient_in(self, q: Querier, organization_id: UUID, patient_id: UUID) -> None:
        # Row-level security shows a patient only themself: anyone else is "no such patient".
        if await patients.patient(q, organization_id, patient_id) is None:
            raise ValidationFailed(
                [FieldError("/body/patient_id", "No such patient.", "not_found")]
            )

    # --- reading ------------------------------------------------------------------------------

    async def get(self, principal: Principal, form_id: UUID) -> FormView:
        organization_id = organization_of(principal, NO_FORM)
        row = await repo.form(self._db.reader(principal), organization_id, form_id)
        if row is None:
            raise NotFound(NO_FORM)
        return FormView(row, self._answers(row))

    async def pdf(self, principal: Principal, form_id: UUID) -> tuple[repo.FormRow, bytes]:
        """The form as its pinned version lays it out, with the answers it keeps."""
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal, read_only=True) as q:
            row = await repo.form(q, organization_id, form_id)
            if row is None:
                raise NotFound(NO_FORM)
            pinned = await repo.version_of(
                q, organization_id, row.template_id, row.template_version
            )
            context = await documents.print_context(
                q,
                organization_id,
                patient_id=row.patient_id,
                author_user_id=None,
                appointment_id=row.appointment_id,
            )
        if pinned is None or context is None:
            raise NotFound(NO_FORM)
        printable = printing.form(row, pinned, self._answers(row), context)
        return row, await self._pdf.render(printable)

    async def list_forms(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        patient_id: UUID | None,
        appointment_id: UUID | None,
        template_id: UUID | None,
        status: str | None,
    ) -> Page[FormView]:
        organization_id = organization_of(principal, NO_FORM)
        rows, total = await repo.forms(
            self._db.reader(principal),
            organization_id,
            page,
            patient_id=patient_id,
            appointment_id=appointment_id,
            template_id=template_id,
            status=status,
        )
        return Page([FormView(row, self._answers(row)) for row in rows], total, page)

    # --- filling ------------------------------------------------------------------------------

    async def update(
        self,
        principal: Principal,
        form_id: UUID,
        values: Mapping[str, Any],
        *,
        version: int | None,
    ) -> FormView:
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal) as q:
            current, pinned = await self._locked(q, organization_id, form_id)
            if current.status not in EDITABLE:
                raise FormLocked(f"The form is {current.status}: its answers no longer change.")
            _raise_on(schema.check_answers(pinned.items, values, at="/body/values"))
            named = _file_answers(pinned.items, values)
            if named:
                files = await attachments.of_form(q, organization_id, form_id)
                _raise_on(_unknown_files(named, files, at="/body/values"))
            answers = self._answers(current)
            for link, value in values.items():
                if value is None:
                    answers.pop(link, None)
                else:
                    answers[link] = value
            row = await self._save(
                q,
                current,
                pinned,
                answers,
                status="in_progress",
                submitted_at=None,
                version=version,
            )
            await record(
                q,
                principal,
                action="form.updated",
                entity_type="form",
                entity_id=form_id,
                changed_fields=values.keys(),
            )
        return FormView(row, answers)

    async def submit(self, principal: Principal, form_id: UUID, *, version: int | None) -> FormView:
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal) as q:
            current, pinned = await self._locked(q, organization_id, form_id)
            if current.status not in EDITABLE:
                raise FormLocked(f"The form is {current.status} already.")
            kept, missing = schema.submitted(pinned.items, self._answers(current))
            _raise_on(missing, detail="Required items are not answered.")
            row = await self._save(
                q,
                current,
                pinned,
                kept,
                status="completed",
                submitted_at=dt.datetime.now(dt.UTC),
                version=version,
            )
            await record(
                q,
                principal,
                action="form.submitted",
                entity_type="form",
                entity_id=form_id,
                changed_fields=["status"],
            )
        return FormView(row, kept)

    async def sign(
        self, principal: Principal, form_id: UUID, meaning: str, *, version: int | None
    ) -> FormView:
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal) as q:
            current, pinned = await self._locked(q, organization_id, form_id)
            if current.status == "signed":
                raise FormLocked("The form is signed already; amend it to correct it.")
            if current.status != "completed":
                raise FormLocked("Only a completed form is signed; submit it first.")
            if principal.role not in pinned.signer_roles:
                raise Forbidden(
                    f"Forms from this template are signed by: {', '.join(pinned.signer_roles)}."
                )
            answers = self._answers(current)
            signed_at = dt.datetime.now(dt.UTC)
            content = content_sha256(Content.of(current, pinned), answers)
            signature = repo.Signature(
                signer_user_id=principal.user_id,
                signer_role=str(principal.role),
                meaning=meaning,
                signed_at=signed_at,
                content_sha256=content,
                signature_sha256=signature_sha256(
                    content, principal.user_id, str(principal.role), meaning, signed_at
                ),
            )
            if not await repo.sign(q, organization_id, form_id, signature, version=version):
                raise PreconditionFailed(FORM_CHANGED)
            row = await repo.form(q, organization_id, form_id)
            await record(
                q,
                principal,
                action="form.signed",
                entity_type="form",
                entity_id=form_id,
                changed_fields=["status", "signature"],
            )
        assert row is not None  # noqa: S101 - updated in this transaction
        return FormView(row, answers)

    async def amend(self, principal: Principal, form_id: UUID, reason: str) -> FormView:
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal) as q:
            current, pinned = await self._locked(q, organization_id, form_id)
            if current.status != "signed":
                raise FormLocked("Only a signed form is amended; change this one directly.")
            if current.amended_by_id is not None:
                raise FormLocked("The form was amended already; amend the newest correction.")
            answers = self._answers(current)
            correction = uuid4()
            plain, sealed = seal_answers(
                self._sealer, organization_id, correction, pinned.items, answers
            )
            row = await repo.insert_form(
                q,
                organization_id,
                repo.NewForm(
                    id=correction,
                    template_id=current.template_id,
                    template_version=current.template_version,
                    patient_id=current.patient_id,
                    appointment_id=current.appointment_id,
                    status="in_progress",
                    answers=plain,
                    sealed_answers=sealed,
                    prefill_sources=current.prefill_sources,
                    amends_id=form_id,
                    amend_reason=reason.strip(),
                ),
            )
            assert row is not None  # noqa: S101 - amendments are not unique per appointment
            await repo.mark_amended(q, organization_id, form_id, correction)
            await record(
                q,
                principal,
                action="form.amended",
                entity_type="form",
                entity_id=form_id,
                changed_fields=["amended_by_id"],
            )
        return FormView(row, answers)

    async def delete(self, principal: Principal, form_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal) as q:
            current = await repo.lock_form(q, organization_id, form_id)
            if current is None:
                raise NotFound(NO_FORM)
            if current.status == "signed":
                raise FormLocked("A signed form is kept; amend it to correct it.")
            if current.amends_id is not None:
                raise FormLocked("A correction of a signed form is kept; finish and sign it.")
            if not await repo.delete_form(q, organization_id, form_id, version=version):
                raise PreconditionFailed(FORM_CHANGED)
            await record(q, principal, action="form.deleted", entity_type="form", entity_id=form_id)

    async def verify(self, principal: Principal, form_id: UUID) -> Verification:
        organization_id = organization_of(principal, NO_FORM)
        async with self._db.transaction(principal) as q:
            row = await repo.form(q, organization_id, form_id)
            if row is None:
                raise NotFound(NO_FORM)
            if row.status != "signed" or row.content_sha256 is None or row.signature_sha256 is None:
                raise FormLocked("Only a signed form has a signature to verify.")
            pinned = await repo.version_of(
                q, organization_id, row.template_id, row.template_version
            )
            assert pinned is not None  # noqa: S101 - a foreign key keeps it
            content: str | None
            signature: str | None
            try:
                answers = self._opened(row)
            except UnsealError:
                content = signature = None
            else:
                content = content_sha256(Content.of(row, pinned), answers)
                signature = signature_sha256(
                    content,
                    row.signer_user_id,
                    str(row.signer_role),
                    str(row.signature_meaning),
                    row.signed_at or dt.datetime.min,
                )
            valid = content == row.content_sha256 and signature == row.signature_sha256
            if not valid:
                await record(
                    q,
                    principal,
                    action="security.form_signature_mismatch",
                    entity_type="form",
                    entity_id=form_id,
                )
        return Verification(
            form_id=form_id,
            valid=valid,
            content_sha256=row.content_sha256,
            computed_content_sha256=content,
            signature_sha256=row.signature_sha256,
            computed_signature_sha256=signature,
            checked_at=dt.datetime.now(dt.UTC),
        )

    # --- storage ------------------------------------------------------------------------------

    async def _locked(
        self, q: Querier, organization_id: UUID, form_id: UUID
    ) -> tuple[repo.FormRow, repo.VersionRow]:
        current = await repo.lock_form(q, organization_id, form_id)
        if current is None:
            raise NotFound(NO_FORM)
        pinned = await repo.version_of(
            q, organization_id, current.template_id, current.template_version
        )
        assert pinned is not None  # noqa: S101 - a foreign key keeps it
        return current, pinned

    async def _save(
        self,
        q: Querier,
        current: repo.FormRow,
        pinned: repo.VersionRow,
        answers: Mapping[str, Any],
        *,
        status: str,
        submitted_at: dt.datetime | None,
        version: int | None,
    ) -> repo.FormRow:
        plain, sealed = seal_answers(
            self._sealer, current.organization_id, current.id, pinned.items, answers
        )
        saved = await repo.update_answers(
            q,
            current.organization_id,
            current.id,
            answers=plain,
            sealed_answers=sealed,
            status=status,
            submitted_at=submitted_at,
            version=version,
        )
        if not saved:
            raise PreconditionFailed(FORM_CHANGED)
        row = await repo.form(q, current.organization_id, current.id)
        assert row is not None  # noqa: S101 - updated in this transaction
        return row

    def _opened(self, row: repo.FormRow) -> dict[str, Any]:
        """Every answer; raises UnsealError when the sealed ones do not open."""
        return _merged(row, self._sealer.open)

    def _answers(self, row: repo.FormRow) -> dict[str, Any]:
        """Every answer; sealed ones that do not open are a logged data-integrity problem."""
        return _merged(row, lambda sealed, aad: open_sealed(self._sealer, sealed, aad))


# --- appointments -------------------------------------------------------------------------------


async def attach_to_appointment(
    q: Querier,
    organization_id: UUID,
    *,
    appointment_id: UUID,
    patient_id: UUID,
    template_ids: Sequence[UUID],
) -> list[UUID]:
    """One draft form per published template for the appointment; templates already attached
    keep their form. Returns the templates that got a new form."""
    attached = []
    for template_id in template_ids:
        template = await repo.template(q, organization_id, template_id)
        if template is None or template.latest_version == 0:
            continue
        row = await repo.insert_form(
            q,
            organization_id,
            repo.NewForm(
                id=uuid4(),
                template_id=template_id,
                template_version=template.latest_version,
                patient_id=patient_id,
                appointment_id=appointment_id,
                status="draft",
                answers={},
                sealed_answers=None,
                prefill_sources={},
            ),
        )
        if row is not None:
            attached.append(template_id)
    return attached


@dataclass(frozen=True, slots=True)
class Content:
    """What a signature covers, besides the answers: which form, of which version, for whom."""

    form_id: UUID
    organization_id: UUID
    template_id: UUID
    template_version: int
    schema_sha256: str
    patient_id: UUID
    appointment_id: UUID | None

    @classmethod
    def of(cls, row: repo.FormRow, pinned: repo.VersionRow) -> Content:
        return cls(
            row.id,
            row.organization_id,
            row.template_id,
            row.template_version,
            pinned.schema_sha256,
            row.patient_id,
            row.appointment_id,
        )


def content_sha256(content: Content, answers: Mapping[str, Any]) -> str:
    return schema.canonical_sha256(
        {
            "form_id": str(content.form_id),
            "organization_id": str(content.organization_id),
            "template_id": str(content.template_id),
            "template_version": content.template_version,
            "schema_sha256": content.schema_sha256,
            "patient_id": str(content.patient_id),
            "appointment_id": None
            if content.appointment_id is None
            else str(content.appointment_id),
            "answers": dict(answers),
        }
    )


def signature_sha256(
    content: str, signer: UUID | None, role: str, meaning: str, signed_at: dt.datetime
) -> str:
    return schema.canonical_sha256(
        {
            "content_sha256": content,
            "signer_user_id": None if signer is None else str(signer),
            "signer_role": role,
            "meaning": meaning,
            "signed_at": signed_at.astimezone(dt.UTC).isoformat(),
        }
    )


def _merged(row: repo.FormRow, opener: Callable[[bytes, bytes], bytes]) -> dict[str, Any]:
    answers = dict(row.answers)
    if row.sealed_answers is not None:
        opened = opener(row.sealed_answers, answers_aad(row.organization_id, row.id))
        answers.update(json.loads(opened))
    return answers


def _file_answers(items: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> dict[str, UUID]:
    """The answers given to `attachment` items: link_id → the attachment id it names."""
    by_link = schema.by_link(items)
    return {
        link: UUID(str(value))
        for link, value in values.items()
        if value is not None and by_link[link]["type"] == "attachment"
    }


def _unknown_files(
    named: Mapping[str, UUID], files: Mapping[UUID, str], *, at: str
) -> list[FieldError]:
    """An `attachment` answer names a complete file uploaded to this form for that item."""
    return [
        FieldError(
            f"{at}/{pointer_token(link)}",
            "Upload the file to this form item first (POST /v1/attachments), then give its id.",
            "unknown_attachment",
        )
        for link, attachment_id in named.items()
        if files.get(attachment_id) != link
    ]


def _raise_on(errors: Sequence[FieldError], *, detail: str | None = None) -> None:
    if errors:
        raise ValidationFailed(errors, detail=detail)
