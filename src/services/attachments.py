"""Files attached to a patient, a report or prescription, or a form's `attachment` item.

Two ways in: a multipart upload through the API (≤ 20 MB), or a signed URL the client PUTs
the bytes to (S3's own, or the filesystem store's) followed by `complete`, which reads the
stored object back and checks the size and SHA-256 the client declared. Either way the type
is sniffed from the bytes against the allow-list (`file_types`); the file name is kept as
metadata only. Downloads are signed URLs too, each one audited. Deleting a row queues its
object's removal in the same transaction (a trigger writes the blob store's outbox), and the
worker here carries it out, so a failed delete at the store is retried, never forgotten.

Attaching follows the owner's lock: nothing is added to or removed from a final document or
a signed form; a form file must answer one of the form's `attachment` items.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import structlog

from carebase.errors import (
    FieldError,
    FormLocked,
    NotFound,
    UnsupportedMediaType,
    UploadIncomplete,
    ValidationFailed,
)
from carebase.integrations.blobs import BlobStore, SignedUrl, blob_key
from carebase.pages import Page, PageRequest
from carebase.persistence import attachments as repo
from carebase.persistence import documents, forms, patients
from carebase.persistence.db import Database, Querier
from carebase.persistence.work_queue import Rounds
from carebase.principal import Principal, organization_of
from carebase.services import file_types
from carebase.services.audit import record
from carebase.services.scheduling_worker import backoff_s

MAX_BYTES = 20 * 1024 * 1024
NO_ATTACHMENT = "No such attachment."
EDITABLE_FORMS = frozenset({"draft", "in_progress"})
OWNER_TYPES = ("patient", "report", "prescription", "form")

_log = structlog.get_logger("carebase.attachments")


@dataclass(frozen=True, slots=True)
class Owner:
    """What a file hangs off, as the request names it."""

    type: str
    id: UUID
    link_id: str | None = None

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> Owner:
        link = given.get("link_id")
        return cls(str(given["owner_type"]), UUID(str(given["owner_id"])), link or None)


@dataclass(frozen=True, slots=True)
class _Bytes:
    """A file as the row records it: stored (sniffed type, hash of the bytes) or announced
    (no type yet, the hash the client declared)."""

    id: UUID
    filename: str
    media_type: str | None
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Upload:
    """A pending attachment and the URL its bytes go to."""

    row: repo.AttachmentRow
    url: SignedUrl


def _invalid(pointer: str, message: str, code: str) -> ValidationFailed:
    return ValidationFailed([FieldError(pointer, message, code)])


class AttachmentService:
    def __init__(self, *, db: Database, blobs: BlobStore, url_ttl_s: int) -> None:
        self._db = db
        self._blobs = blobs
        self._ttl_s = url_ttl_s

    # --- in -------------------------------------------------------------------------------

    async def upload(
        self, principal: Principal, owner: Owner, filename: str, data: bytes
    ) -> repo.AttachmentRow:
        """A file sent through the API: sniffed, stored, then recorded (or removed again)."""
        organization_id = organization_of(principal, NO_ATTACHMENT)
        name = _filename(filename, "/body/file")
        if not data:
            raise _invalid("/body/file", "The file is empty.", "empty")
        media_type = _sniffed(data)
        attachment_id = uuid4()
        key = blob_key(organization_id, attachment_id)
        async with self._db.transaction(principal) as q:
            # The owner is checked before the bytes are stored: a refused upload never
            # reaches the store. It is checked again (and locked) with the insert.
            await _owner(q, organization_id, owner)
        await self._blobs.put(key, data, media_type)
        try:
            async with self._db.transaction(principal) as q:
                row = await self._insert(
                    q,
                    principal,
                    owner,
                    _Bytes(
                        attachment_id,
                        name,
                        media_type,
                        len(data),
                        hashlib.sha256(data).hexdigest(),
                    ),
                )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._blobs.delete(key)  # no row, so no object either
            raise
        return row

    async def start_upload(self, principal: Principal, given: Mapping[str, Any]) -> Upload:
        """A pending attachment and a signed URL to PUT its bytes to; `complete` checks them."""
        owner = Owner.of(given)
        name = _filename(str(given["filename"]), "/body/filename")
        attachment_id = uuid4()
        declared = _Bytes(
            attachment_id, name, None, int(given["size_bytes"]), str(given["sha256"]).lower()
        )
        async with self._db.transaction(principal) as q:
            row = await self._insert(q, principal, owner, declared)
        key = row.storage_key
        return Upload(row, self._blobs.upload_url(key, ttl_s=self._ttl_s))

    async def complete(self, principal: Principal, attachment_id: UUID) -> repo.AttachmentRow:
        """The uploaded object checked against what was declared, sniffed, and made available.
        A mismatch or a refused type removes the object, so the client uploads again."""
        organization_id = organization_of(principal, NO_ATTACHMENT)
        async with self._db.transaction(principal) as q:
            current = await repo.attachment(q, organization_id, attachment_id)
        if current is None:
            raise NotFound(NO_ATTACHMENT)
        if current.status != "pending":
            return current  # completing twice is harmless: the answer is the same
        data = await self._blobs.get(current.storage_key, max_bytes=MAX_BYTES)
        if data is None:
            raise UploadIncomplete(
                "No upload of at most 20 MB arrived at the URL; PUT the file, then complete."
            )
        problems = []
        if len(data) != current.size_bytes:
            problems.append(
                FieldError("/size_bytes", f"The upload has {len(data)} bytes.", "mismatch")
            )
        elif hashlib.sha256(data).hexdigest() != current.sha256:
            problems.append(FieldError("/sha256", "The upload's SHA-256 differs.", "mismatch"))
        media_type = file_types.sniff(data)
        if problems or media_type is None:
            await self._blobs.delete(current.storage_key)
            if problems:
                raise ValidationFailed(problems, "The upload is not the file declared.")
            raise _refused_type()
        async with self._db.transaction(principal) as q:
            await _owner(q, organization_id, _owner_of(current))
            row = await repo.complete(q, organization_id, attachment_id, media_type)
            if row is None:  # completed (or deleted) by a concurrent call meanwhile
                found = await repo.attachment(q, organization_id, attachment_id)
                if found is None:
                    raise NotFound(NO_ATTACHMENT)
                return found
            await self._record(q, principal, "completed", attachment_id, ["status"])
        return row

    # --- out ------------------------------------------------------------------------------

    async def get(self, principal: Principal, attachment_id: UUID) -> repo.AttachmentRow:
        organization_id = organization_of(principal, NO_ATTACHMENT)
        found = await repo.attachment(self._db.reader(principal), organization_id, attachment_id)
        if found is None:
            raise NotFound(NO_ATTACHMENT)
        return found

    async def list_attachments(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        patient_id: UUID | None,
        owner_type: str | None,
        owner_id: UUID | None,
        status: str | None,
    ) -> Page[repo.AttachmentRow]:
        organization_id = organization_of(principal, NO_ATTACHMENT)
        rows, total = await repo.attachments(
            self._db.reader(principal),
            organization_id,
            page,
            patient_id=patient_id,
            owner_type=owner_type,
            owner_id=owner_id,
            status=status,
        )
        return Page(rows, total, page)

    async def download(
        self, principal: Principal, attachment_id: UUID
    ) -> tuple[repo.AttachmentRow, SignedUrl]:
        """A short-lived URL to the bytes; handing one out is audited as the read."""
        organization_id = organization_of(principal, NO_ATTACHMENT)
        async with self._db.transaction(principal) as q:
            row = await repo.attachment(q, organization_id, attachment_id)
            if row is None:
                raise NotFound(NO_ATTACHMENT)
            if row.status != "available" or row.media_type is None:
                raise UploadIncomplete("The file has not been uploaded and completed yet.")
            await self._record(q, principal, "downloaded", attachment_id)
        url = self._blobs.download_url(
            row.storage_key,
            filename=_download_name(row.filename, row.media_type),
            media_type=row.media_type,
            ttl_s=self._ttl_s,
        )
        return row, url

    async def delete(self, principal: Principal, attachment_id: UUID) -> None:
        """The row goes now; its object goes with the queue the deletion wrote."""
        organization_id = organization_of(principal, NO_ATTACHMENT)
        async with self._db.transaction(principal) as q:
            current = await repo.lock(q, organization_id, attachment_id)
            if current is None:
                raise NotFound(NO_ATTACHMENT)
            await _owner(q, organization_id, _owner_of(current), for_delete=True)
            await repo.delete(q, organization_id, attachment_id)
            await self._record(q, principal, "deleted", attachment_id)

    async def _insert(
        self, q: Querier, principal: Principal, owner: Owner, file: _Bytes
    ) -> repo.AttachmentRow:
        """The row of a stored file (`media_type` known) or of an announced one (None)."""
        organization_id = organization_of(principal, NO_ATTACHMENT)
        patient_id, document_id, form_id = await _owner(q, organization_id, owner)
        row = await repo.insert(
            q,
            organization_id,
            repo.NewAttachment(
                id=file.id,
                owner_type=owner.type,
                patient_id=patient_id,
                document_id=document_id,
                form_id=form_id,
                link_id=owner.link_id,
                filename=file.filename,
                media_type=file.media_type,
                size_bytes=file.size_bytes,
                sha256=file.sha256,
                storage_key=blob_key(organization_id, file.id),
                uploaded_by=principal.user_id,
            ),
        )
        verb = "created" if file.media_type else "upload_started"
        await self._record(q, principal, verb, file.id, ["file"])
        return row

    async def _record(
        self, q: Querier, principal: Principal, verb: str, attachment_id: UUID, changed: Any = ()
    ) -> None:
        await record(
            q,
            principal,
            action=f"attachment.{verb}",
            entity_type="attachment",
            entity_id=attachment_id,
            changed_fields=changed,
        )


def _owner_of(row: repo.AttachmentRow) -> Owner:
    return Owner(row.owner_type, row.owner_id, row.link_id)


async def _owner(
    q: Querier, organization_id: UUID, owner: Owner, *, for_delete: bool = False
) -> tuple[UUID, UUID | None, UUID | None]:
    """(patient, document, form) of an owner the caller may attach to now; 422 when it is
    not there (or not theirs), 409 when it is locked."""
    verb = "removed from" if for_delete else "added to"
    if (owner.type == "form") != (owner.link_id is not None):
        raise _invalid(
            "/body/link_id",
            "A form's file names the item it answers; no other file names one.",
            "form_item" if owner.type == "form" else "not_a_form",
        )
    if owner.type == "patient":
        found = await patients.patient(q, organization_id, owner.id)
        if found is None:
            raise _invalid("/body/owner_id", "No such patient.", "not_found")
        return owner.id, None, None
    if owner.type in ("report", "prescription"):
        document = await documents.lock(q, organization_id, owner.id, owner.type)
        if document is None:
            raise _invalid("/body/owner_id", f"No such {owner.type}.", "not_found")
        if document.status != "draft":
            raise FormLocked(f"Files are not {verb} a {document.status} {owner.type}.")
        return document.patient_id, document.id, None
    form = await forms.lock_form(q, organization_id, owner.id)
    if form is None:
        raise _invalid("/body/owner_id", "No such form.", "not_found")
    if form.status not in EDITABLE_FORMS:
        raise FormLocked(f"Files are not {verb} a {form.status} form.")
    if not for_delete:
        pinned = await forms.version_of(q, organization_id, form.template_id, form.template_version)
        items = {item["link_id"]: item for item in (pinned.items if pinned else [])}
        item = items.get(owner.link_id or "")
        if item is None or item.get("type") != "attachment":
            raise _invalid(
                "/body/link_id", "Name one of the form's attachment items.", "not_attachment"
            )
    return form.patient_id, None, form.id


def _filename(given: str, pointer: str) -> str:
    """The client's file name, as metadata: no path, no control characters."""
    name = given.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(c for c in name if c.isprintable())[:255]
    if not name or name in (".", ".."):
        raise _invalid(pointer, "Give the file a name.", "required")
    return name


def _download_name(filename: str, media_type: str) -> str:
    """The stored name, with the extension of what the file is (never what it claimed)."""
    extension = file_types.EXTENSIONS[media_type]
    _, dot, suffix = filename.rpartition(".")
    if dot and suffix.lower() in (extension, "jpeg" if extension == "jpg" else extension):
        return filename
    return f"{filename}.{extension}"


def _sniffed(data: bytes) -> str:
    media_type = file_types.sniff(data)
    if media_type is None:
        raise _refused_type()
    return media_type


def _refused_type() -> UnsupportedMediaType:
    return UnsupportedMediaType(
        "The file is not one of the accepted types: PDF, PNG, JPEG, HEIC, DICOM or plain text."
    )


class BlobReaper:
    """Works off the blob store's outbox: deletes queued objects, retried with backoff; and
    drops uploads announced but never completed."""

    BATCH = 50
    LEASE_S = 120.0
    STALE_PENDING_S = 24 * 3600.0

    def __init__(self, db: Database, blobs: BlobStore, *, interval_s: float = 5.0) -> None:
        self._db = db
        self._blobs = blobs
        self.rounds = Rounds("blob_reaper", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self.run_once)

    async def run_once(self) -> int:
        """Delete what is due; the number of objects deleted."""
        async with self._db.admin_transaction() as q:
            await repo.drop_stale_pending(q, self.STALE_PENDING_S)
        async with self._db.admin_transaction() as q:
            claimed = await repo.claim_deletions(q, limit=self.BATCH, lease_s=self.LEASE_S)
        deleted = 0
        for item in claimed:
            try:
                await self._blobs.delete(item.storage_key)
            except Exception as exc:
                async with self._db.admin_transaction() as q:
                    await repo.deletion_failed(
                        q, item.id, f"{type(exc).__name__}: {exc}", backoff_s(item.attempts)
                    )
                continue
            async with self._db.admin_transaction() as q:
                await repo.deletion_done(q, item.id)
            deleted += 1
        return deleted
