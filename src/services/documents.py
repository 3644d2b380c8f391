"""Reports and prescriptions written after a session: drafts, then final (hashed, locked).

One service per kind over one table. A document belongs to an appointment and that
appointment's patient (a mismatch is 422). Its body is sealed at rest as one JSON document
under the row's identity. Finalizing stores a SHA-256 of the canonical content (RFC 8785) and a
trigger locks the row; a correction is a new draft that amends the final one, and an admin can
withdraw one as entered in error. Every read of a final document's body is audited.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from carebase.errors import (
    FieldError,
    FormLocked,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from carebase.integrations.pdf import PdfRenderer
from carebase.pages import Page, PageRequest
from carebase.persistence import documents as repo
from carebase.persistence.db import Database, Querier
from carebase.principal import Principal, organization_of
from carebase.security.encryption import Sealer
from carebase.services import printing
from carebase.services.audit import record
from carebase.services.custom_fields import open_sealed
from carebase.services.form_schema import canonical_sha256
from carebase.services.forms import Seals
from carebase.services.visits import visit_of

KINDS = ("report", "prescription")


@dataclass(frozen=True, slots=True)
class DocumentView:
    row: repo.DocumentRow
    body: dict[str, Any]


def body_aad(organization_id: UUID, document_id: UUID) -> bytes:
    return f"documents.documents|{organization_id}|{document_id}|body".encode()


def seal_body(
    sealer: Seals, organization_id: UUID, document_id: UUID, body: Mapping[str, Any]
) -> bytes:
    """The body as stored: one sealed JSON document under the row's identity."""
    document = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
    return sealer.seal(document, body_aad(organization_id, document_id))


@dataclass(frozen=True, slots=True)
class Identity:
    """What finalizing fixes besides the body: which document, whom it concerns, by whom."""

    id: UUID
    organization_id: UUID
    kind: str
    appointment_id: UUID
    patient_id: UUID
    author_user_id: UUID | None
    title: str

    @classmethod
    def of(cls, row: repo.DocumentRow) -> Identity:
        return cls(
            row.id,
            row.organization_id,
            row.kind,
            row.appointment_id,
            row.patient_id,
            row.author_user_id,
            row.title,
        )


def content_sha256(identity: Identity, body: Mapping[str, Any]) -> str:
    return canonical_sha256(
        {
            "id": str(identity.id),
            "organization_id": str(identity.organization_id),
            "kind": identity.kind,
            "appointment_id": str(identity.appointment_id),
            "patient_id": str(identity.patient_id),
            "author_user_id": None
            if identity.author_user_id is None
            else str(identity.author_user_id),
            "title": identity.title,
            "body": dict(body),
        }
    )


class DocumentService:
    def __init__(self, *, db: Database, sealer: Sealer, kind: str, pdf: PdfRenderer) -> None:
        if kind not in KINDS:
            raise ValueError(kind)
        self._db = db
        self._sealer = sealer
        self._pdf = pdf
        self.kind = kind
        self._missing = f"No such {kind}."
        self._changed = f"The {kind} changed since it was read; read it again."

    async def create(self, principal: Principal, given: Mapping[str, Any]) -> DocumentView:
        organization_id = organization_of(principal, self._missing)
        appointment_id = UUID(str(given["appointment_id"]))
        patient_id = UUID(str(given["patient_id"]))
        body = _plain(given["body"])
        document_id = uuid4()
        async with self._db.transaction(principal) as q:
            await _check_visit(q, organization_id, appointment_id, patient_id)
            row = await repo.insert(
                q,
                organization_id,
                repo.NewDocument(
                    id=document_id,
                    kind=self.kind,
                    appointment_id=appointment_id,
                    patient_id=patient_id,
                    title=str(given["title"]).strip(),
                    body_sealed=seal_body(self._sealer, organization_id, document_id, body),
                    author_user_id=principal.user_id,
                ),
            )
            await self._record(q, principal, "created", document_id, given.keys())
        return DocumentView(row, body)

    async def get(self, principal: Principal, document_id: UUID) -> DocumentView:
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            row = await repo.document(q, organization_id, document_id, self.kind)
            if row is None:
                raise NotFound(self._missing)
            if row.status != "draft":
                await self._record(q, principal, "read", document_id)
        return DocumentView(row, self._body(row))

    async def pdf(self, principal: Principal, document_id: UUID) -> tuple[repo.DocumentRow, bytes]:
        """The document as a PDF; reading a final one is audited like reading its body."""
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            row = await repo.document(q, organization_id, document_id, self.kind)
            if row is None:
                raise NotFound(self._missing)
            context = await repo.print_context(
                q,
                organization_id,
                patient_id=row.patient_id,
                author_user_id=row.author_user_id,
                appointment_id=row.appointment_id,
            )
            if context is None:
                raise NotFound(self._missing)
            if row.status != "draft":
                await self._record(q, principal, "read", document_id, ["pdf"])
        printable = printing.document(row, self._body(row), context)
        return row, await self._pdf.render(printable)

    async def list_documents(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        patient_id: UUID | None,
        appointment_id: UUID | None,
        status: str | None,
    ) -> Page[repo.SummaryRow]:
        organization_id = organization_of(principal, self._missing)
        rows, total = await repo.documents(
            self._db.reader(principal),
            organization_id,
            self.kind,
            page,
            patient_id=patient_id,
            appointment_id=appointment_id,
            status=status,
        )
        return Page(rows, total, page)

    async def update(
        self,
        principal: Principal,
        document_id: UUID,
        changes: Mapping[str, Any],
        *,
        version: int | None,
    ) -> DocumentView:
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, organization_id, document_id)
            if current.status != "draft":
                raise FormLocked(f"The {self.kind} is {current.status}: amend it to correct it.")
            body = _plain(changes["body"]) if "body" in changes else self._body(current)
            row = await repo.update_draft(
                q,
                organization_id,
                document_id,
                title=str(changes.get("title", current.title)).strip(),
                body_sealed=seal_body(self._sealer, organization_id, document_id, body),
                version=version,
            )
            if row is None:
                raise PreconditionFailed(self._changed)
            await self._record(q, principal, "updated", document_id, changes.keys())
        return DocumentView(row, body)

    async def delete(self, principal: Principal, document_id: UUID, *, version: int | None) -> None:
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, organization_id, document_id)
            if current.status != "draft":
                raise FormLocked(f"A {current.status} {self.kind} is kept.")
            if current.amends_id is not None:
                raise FormLocked(f"A correction of a final {self.kind} is kept; finalize it.")
            if not await repo.delete_draft(q, organization_id, document_id, version=version):
                raise PreconditionFailed(self._changed)
            await self._record(q, principal, "deleted", document_id)

    async def finalize(
        self, principal: Principal, document_id: UUID, *, version: int | None
    ) -> DocumentView:
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, organization_id, document_id)
            if current.status != "draft":
                raise FormLocked(f"The {self.kind} is {current.status} already.")
            body = self._body(current)
            row = await repo.finalize(
                q,
                organization_id,
                document_id,
                by=principal.user_id,
                sha256=content_sha256(Identity.of(current), body),
                version=version,
            )
            if row is None:
                raise PreconditionFailed(self._changed)
            await self._record(q, principal, "finalized", document_id, ["status"])
        return DocumentView(row, body)

    async def amend(self, principal: Principal, document_id: UUID, reason: str) -> DocumentView:
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, organization_id, document_id)
            if current.status != "final":
                raise FormLocked(f"Only a final {self.kind} is amended.")
            if current.amended_by_id is not None:
                raise FormLocked(f"The {self.kind} was amended already; amend the correction.")
            body = self._body(current)
            correction = uuid4()
            row = await repo.insert(
                q,
                organization_id,
                repo.NewDocument(
                    id=correction,
                    kind=self.kind,
                    appointment_id=current.appointment_id,
                    patient_id=current.patient_id,
                    title=current.title,
                    body_sealed=seal_body(self._sealer, organization_id, correction, body),
                    author_user_id=principal.user_id,
                    amends_id=document_id,
                    amend_reason=reason.strip(),
                ),
            )
            await repo.mark_amended(q, organization_id, document_id, correction)
            await self._record(q, principal, "amended", document_id, ["amended_by_id"])
        return DocumentView(row, body)

    async def enter_in_error(
        self, principal: Principal, document_id: UUID, reason: str, *, version: int | None
    ) -> DocumentView:
        organization_id = organization_of(principal, self._missing)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, organization_id, document_id)
            if current.status != "final":
                raise FormLocked(
                    f"Only a final {self.kind} is withdrawn; a draft is deleted instead."
                )
            row = await repo.withdraw(
                q, organization_id, document_id, reason=reason.strip(), version=version
            )
            if row is None:
                raise PreconditionFailed(self._changed)
            await self._record(q, principal, "entered_in_error", document_id, ["status"])
        return DocumentView(row, self._body(row))

    # --- storage ------------------------------------------------------------------------------

    async def _locked(
        self, q: Querier, organization_id: UUID, document_id: UUID
    ) -> repo.DocumentRow:
        found = await repo.lock(q, organization_id, document_id, self.kind)
        if found is None:
            raise NotFound(self._missing)
        return found

    async def _record(
        self,
        q: Querier,
        principal: Principal,
        verb: str,
        document_id: UUID,
        changed: Any = (),
    ) -> None:
        await record(
            q,
            principal,
            action=f"{self.kind}.{verb}",
            entity_type=self.kind,
            entity_id=document_id,
            changed_fields=changed,
        )

    def _body(self, row: repo.DocumentRow) -> dict[str, Any]:
        opened = open_sealed(self._sealer, row.body_sealed, body_aad(row.organization_id, row.id))
        return dict(json.loads(opened))


def _plain(body: Any) -> dict[str, Any]:
    """The body as JSON data (the contract checked its shape)."""
    return dict(json.loads(json.dumps(body, default=str)))


async def _check_visit(
    q: Querier, organization_id: UUID, appointment_id: UUID, patient_id: UUID
) -> None:
    found = await visit_of(q, organization_id, appointment_id, patient_id)
    if found.status == "held":
        raise ValidationFailed(
            [FieldError("/body/appointment_id", "The time is only held; book it first.", "held")]
        )
