"""Attachments' rows, and the queue of blob objects to delete (the blob store's outbox)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

from psycopg import sql

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

COLUMNS = """organization_id, id, owner_type, patient_id, document_id, form_id, link_id,
       filename, media_type, size_bytes, sha256, storage_key, status, uploaded_by, created_at,
       completed_at"""


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    organization_id: UUID
    id: UUID
    owner_type: str
    patient_id: UUID
    document_id: UUID | None
    form_id: UUID | None
    link_id: str | None
    filename: str
    media_type: str | None
    size_bytes: int
    sha256: str
    storage_key: str
    status: str
    uploaded_by: UUID | None
    created_at: dt.datetime
    completed_at: dt.datetime | None

    @property
    def owner_id(self) -> UUID:
        return self.document_id or self.form_id or self.patient_id


@dataclass(frozen=True, slots=True)
class NewAttachment:
    id: UUID
    owner_type: str
    patient_id: UUID
    document_id: UUID | None
    form_id: UUID | None
    link_id: str | None
    filename: str
    media_type: str | None
    size_bytes: int
    sha256: str
    storage_key: str
    uploaded_by: UUID | None


@dataclass(frozen=True, slots=True)
class AnswerFileRow:
    id: UUID
    link_id: str


@dataclass(frozen=True, slots=True)
class BlobDeletionRow:
    id: int
    storage_key: str
    attempts: int


SELECT_ATTACHMENT = f"""
SELECT {COLUMNS} FROM attachments.attachments WHERE organization_id = %s AND id = %s
"""  # noqa: S608 - constant columns
LOCK_ATTACHMENT = f"""
SELECT {COLUMNS} FROM attachments.attachments WHERE organization_id = %s AND id = %s FOR UPDATE
"""  # noqa: S608 - constant columns
INSERT_ATTACHMENT = f"""
INSERT INTO attachments.attachments (organization_id, id, owner_type, patient_id, document_id,
       form_id, link_id, filename, media_type, size_bytes, sha256, storage_key, status,
       uploaded_by, completed_at)
VALUES (%(org)s, %(id)s, %(owner_type)s, %(patient_id)s, %(document_id)s, %(form_id)s,
        %(link_id)s, %(filename)s, %(media_type)s, %(size_bytes)s, %(sha256)s, %(storage_key)s,
        CASE WHEN %(media_type)s::text IS NULL THEN 'pending' ELSE 'available' END,
        %(uploaded_by)s, CASE WHEN %(media_type)s::text IS NULL THEN NULL ELSE now() END)
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
COMPLETE = f"""
UPDATE attachments.attachments
   SET status = 'available', media_type = %(media_type)s, completed_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s AND status = 'pending'
RETURNING {COLUMNS}
"""  # noqa: S608 - constant columns
DELETE_ATTACHMENT = "DELETE FROM attachments.attachments WHERE organization_id = %s AND id = %s"
WHERE_LISTED = sql.SQL("""
 WHERE organization_id = %(org)s
   AND (%(patient_id)s::uuid IS NULL OR patient_id = %(patient_id)s)
   AND (%(owner_type)s::text IS NULL OR owner_type = %(owner_type)s)
   AND (%(owner_id)s::uuid IS NULL
        OR coalesce(document_id, form_id, patient_id) = %(owner_id)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
""")
COUNT_ATTACHMENTS = sql.SQL("SELECT count(*) FROM attachments.attachments {where}").format(
    where=WHERE_LISTED
)
LIST_ATTACHMENTS = sql.SQL(
    "SELECT {columns} FROM attachments.attachments {where}"
    " ORDER BY created_at DESC, id LIMIT %(limit)s OFFSET %(offset)s"
).format(columns=sql.SQL(COLUMNS), where=WHERE_LISTED)
FORM_ATTACHMENTS = """
SELECT id, link_id FROM attachments.attachments
 WHERE organization_id = %s AND form_id = %s AND status = 'available'
"""

# --- the worker's queue (owner pool: it serves every organization) --------------------------
CLAIM_DELETIONS = """
UPDATE attachments.blob_deletions d
   SET lease_until = now() + make_interval(secs => %(lease_s)s), attempts = d.attempts + 1
 WHERE d.id IN (SELECT id FROM attachments.blob_deletions
                 WHERE next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.storage_key, d.attempts
"""
DELETION_DONE = "DELETE FROM attachments.blob_deletions WHERE id = %s"
DELETION_FAILED = """
UPDATE attachments.blob_deletions
   SET lease_until = NULL, last_error = %s, next_attempt_at = now() + make_interval(secs => %s)
 WHERE id = %s
"""
# Uploads announced but never completed: their rows go, and with them (trigger) their objects.
DROP_STALE_PENDING = """
DELETE FROM attachments.attachments
 WHERE status = 'pending' AND created_at < now() - make_interval(secs => %s)
"""


async def attachment(
    q: Querier, organization_id: UUID, attachment_id: UUID
) -> AttachmentRow | None:
    return await q.fetch_one(SELECT_ATTACHMENT, (organization_id, attachment_id), row=AttachmentRow)


async def lock(q: Querier, organization_id: UUID, attachment_id: UUID) -> AttachmentRow | None:
    return await q.fetch_one(LOCK_ATTACHMENT, (organization_id, attachment_id), row=AttachmentRow)


async def insert(q: Querier, organization_id: UUID, new: NewAttachment) -> AttachmentRow:
    params = {
        "org": organization_id,
        "id": new.id,
        "owner_type": new.owner_type,
        "patient_id": new.patient_id,
        "document_id": new.document_id,
        "form_id": new.form_id,
        "link_id": new.link_id,
        "filename": new.filename,
        "media_type": new.media_type,
        "size_bytes": new.size_bytes,
        "sha256": new.sha256,
        "storage_key": new.storage_key,
        "uploaded_by": new.uploaded_by,
    }
    return one(await q.fetch_one(INSERT_ATTACHMENT, params, row=AttachmentRow))


async def complete(
    q: Querier, organization_id: UUID, attachment_id: UUID, media_type: str
) -> AttachmentRow | None:
    params = {"org": organization_id, "id": attachment_id, "media_type": media_type}
    return await q.fetch_one(COMPLETE, params, row=AttachmentRow)


async def delete(q: Querier, organization_id: UUID, attachment_id: UUID) -> None:
    await q.execute(DELETE_ATTACHMENT, (organization_id, attachment_id))


async def attachments(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    patient_id: UUID | None,
    owner_type: str | None,
    owner_id: UUID | None,
    status: str | None,
) -> tuple[list[AttachmentRow], int]:
    params = {
        "org": organization_id,
        "patient_id": patient_id,
        "owner_type": owner_type,
        "owner_id": owner_id,
        "status": status,
    }
    return await fetch_page(q, COUNT_ATTACHMENTS, LIST_ATTACHMENTS, params, page, row=AttachmentRow)


async def of_form(q: Querier, organization_id: UUID, form_id: UUID) -> dict[UUID, str]:
    """The form's complete attachments: id → the item (`link_id`) each answers."""
    rows = await q.fetch_all(FORM_ATTACHMENTS, (organization_id, form_id), row=AnswerFileRow)
    return {row.id: row.link_id for row in rows}


async def claim_deletions(q: Querier, *, limit: int, lease_s: float) -> list[BlobDeletionRow]:
    return await q.fetch_all(
        CLAIM_DELETIONS, {"limit": limit, "lease_s": lease_s}, row=BlobDeletionRow
    )


async def deletion_done(q: Querier, deletion_id: int) -> None:
    await q.execute(DELETION_DONE, (deletion_id,))


async def deletion_failed(q: Querier, deletion_id: int, error: str, retry_s: float) -> None:
    await q.execute(DELETION_FAILED, (error[:500], retry_s, deletion_id))


async def drop_stale_pending(q: Querier, older_than_s: float) -> int:
    return await q.execute(DROP_STALE_PENDING, (older_than_s,))
