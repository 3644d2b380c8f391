"""Data-subject requests: the API's reads and changes (admins, under row-level security) and
the worker's claims and progress (owner pool)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one


@dataclass(frozen=True, slots=True)
class RequestRow:
    organization_id: UUID
    id: UUID
    kind: str
    patient_id: UUID | None
    user_id: UUID | None
    reason: str
    status: str
    received_at: datetime
    due_at: datetime
    approved_at: datetime | None
    rejected_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[dict[str, Any]]
    export_key: str | None
    export_size: int | None
    export_expires_at: datetime | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Subject:
    patient_id: UUID
    user_id: UUID | None
    email: str | None


_COLUMNS = """organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts"""

INSERT = """
INSERT INTO gdpr.requests (organization_id, kind, patient_id, user_id, reason, received_by)
VALUES (%(org)s, %(kind)s, %(patient)s, %(user)s, %(reason)s, %(by)s)
    ON CONFLICT DO NOTHING
RETURNING organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts
"""
SELECT = """
SELECT organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts
  FROM gdpr.requests WHERE organization_id = %s AND id = %s
"""
OPEN = """
SELECT organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts
  FROM gdpr.requests
 WHERE organization_id = %(org)s AND kind = %(kind)s
   AND coalesce(patient_id, user_id) = coalesce(%(patient)s, %(user)s)
   AND status IN ('received', 'approved', 'running')
"""
COUNT = """
SELECT count(*) FROM gdpr.requests
 WHERE organization_id = %(org)s AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(kind)s::text IS NULL OR kind = %(kind)s)
"""
LIST = """
SELECT organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts
  FROM gdpr.requests
 WHERE organization_id = %(org)s AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(kind)s::text IS NULL OR kind = %(kind)s)
 ORDER BY received_at DESC, id LIMIT %(limit)s OFFSET %(offset)s
"""
APPROVE = """
UPDATE gdpr.requests SET status = 'approved', approved_at = now(), approved_by = %s
 WHERE organization_id = %s AND id = %s AND status = 'received'
RETURNING organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts
"""
REJECT = """
UPDATE gdpr.requests SET status = 'rejected', rejected_reason = %s
 WHERE organization_id = %s AND id = %s AND status = 'received'
RETURNING organization_id, id, kind, patient_id, user_id, reason, status, received_at, due_at,
       approved_at, rejected_reason, started_at, finished_at, steps, export_key, export_size,
       export_expires_at, attempts
"""
SUBJECT_BY_PATIENT = """
SELECT p.id AS patient_id, p.user_id, coalesce(p.email, u.email) AS email
  FROM patients.patients p LEFT JOIN identity.users u ON u.id = p.user_id
 WHERE p.organization_id = %s AND p.id = %s
"""
SUBJECT_BY_USER = """
SELECT p.id AS patient_id, p.user_id, coalesce(p.email, u.email) AS email
  FROM patients.patients p JOIN identity.users u ON u.id = p.user_id
 WHERE p.organization_id = %s AND p.user_id = %s
"""
# The worker's: one due request at a time, leased; a lease that ran out is taken over.
CLAIM = """
UPDATE gdpr.requests r
   SET status = 'running', started_at = coalesce(started_at, now()),
       claimed_until = now() + make_interval(secs => %s), attempts = attempts + 1
  FROM (SELECT organization_id, id FROM gdpr.requests
         WHERE status IN ('approved', 'running')
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY received_at LIMIT 1 FOR UPDATE SKIP LOCKED) due
 WHERE r.organization_id = due.organization_id AND r.id = due.id
RETURNING r.organization_id, r.id, r.kind, r.patient_id, r.user_id, r.reason, r.status,
       r.received_at, r.due_at, r.approved_at, r.rejected_reason, r.started_at, r.finished_at,
       r.steps, r.export_key, r.export_size, r.export_expires_at, r.attempts
"""
SAVE_STEPS = """
UPDATE gdpr.requests SET steps = %s, claimed_until = now() + make_interval(secs => %s)
 WHERE organization_id = %s AND id = %s
"""
FINISH = """
UPDATE gdpr.requests
   SET status = %(status)s, finished_at = now(), claimed_until = NULL, steps = %(steps)s
 WHERE organization_id = %(org)s AND id = %(id)s
"""
SET_EXPORT = """
UPDATE gdpr.requests SET export_key = %s, export_size = %s, export_expires_at = %s
 WHERE organization_id = %s AND id = %s
"""
RELEASE = """
UPDATE gdpr.requests SET claimed_until = now() + make_interval(secs => %s), steps = %s
 WHERE organization_id = %s AND id = %s
"""
OLD_EXPORTS = """
SELECT organization_id, id, export_key FROM gdpr.requests
 WHERE export_key IS NOT NULL AND export_expires_at < now() LIMIT 100
"""
FORGET_EXPORT = """
UPDATE gdpr.requests SET export_key = NULL, export_size = NULL
 WHERE organization_id = %s AND id = %s
"""
SESSIONS = """
SELECT id FROM scheduling.appointments WHERE organization_id = %s AND patient_id = %s
"""
ATTACHMENT_KEYS = """
SELECT a.storage_key FROM attachments.attachments a
 WHERE a.organization_id = %(org)s AND a.patient_id = %(patient)s
   AND NOT EXISTS (SELECT 1 FROM documents.documents d
                    WHERE d.organization_id = a.organization_id AND d.id = a.document_id
                      AND d.status <> 'draft')
"""
ALL_ATTACHMENTS = """
SELECT a.id, a.storage_key, a.filename, a.status FROM attachments.attachments a
 WHERE a.organization_id = %s AND a.patient_id = %s ORDER BY a.created_at, a.id
"""


async def insert(
    q: Querier,
    org: UUID,
    *,
    kind: str,
    subject: Subject,
    reason: str,
    by: UUID | None,
) -> RequestRow | None:
    """None when an open request of the kind exists for the subject."""
    params = {
        "org": org,
        "kind": kind,
        "patient": subject.patient_id,
        "user": subject.user_id,
        "reason": reason,
        "by": by,
    }
    return await q.fetch_one(INSERT, params, row=RequestRow)


async def open_request(q: Querier, org: UUID, kind: str, subject: Subject) -> RequestRow | None:
    params = {"org": org, "kind": kind, "patient": subject.patient_id, "user": subject.user_id}
    return await q.fetch_one(OPEN, params, row=RequestRow)


async def request(q: Querier, org: UUID, request_id: UUID) -> RequestRow | None:
    return await q.fetch_one(SELECT, (org, request_id), row=RequestRow)


async def requests(
    q: Querier, org: UUID, page: PageRequest, *, status: str | None, kind: str | None
) -> tuple[list[RequestRow], int]:
    params = {"org": org, "status": status, "kind": kind}
    return await fetch_page(q, COUNT, LIST, params, page, row=RequestRow)


async def approve(q: Querier, org: UUID, request_id: UUID, by: UUID | None) -> RequestRow | None:
    return await q.fetch_one(APPROVE, (by, org, request_id), row=RequestRow)


async def reject(q: Querier, org: UUID, request_id: UUID, reason: str) -> RequestRow | None:
    return await q.fetch_one(REJECT, (reason, org, request_id), row=RequestRow)


async def subject_by_patient(q: Querier, org: UUID, patient_id: UUID) -> Subject | None:
    return await q.fetch_one(SUBJECT_BY_PATIENT, (org, patient_id), row=Subject)


async def subject_by_user(q: Querier, org: UUID, user_id: UUID) -> Subject | None:
    return await q.fetch_one(SUBJECT_BY_USER, (org, user_id), row=Subject)


async def claim(q: Querier, *, lease_s: float) -> RequestRow | None:
    return await q.fetch_one(CLAIM, (lease_s,), row=RequestRow)


async def save_steps(
    q: Querier, row: RequestRow, steps: list[dict[str, Any]], *, lease_s: float
) -> None:
    await q.execute(SAVE_STEPS, (Jsonb(steps), lease_s, row.organization_id, row.id))


async def release(
    q: Querier, row: RequestRow, steps: list[dict[str, Any]], *, retry_s: float
) -> None:
    await q.execute(RELEASE, (retry_s, Jsonb(steps), row.organization_id, row.id))


async def finish(q: Querier, row: RequestRow, *, status: str, steps: list[dict[str, Any]]) -> None:
    params = {"status": status, "steps": Jsonb(steps), "org": row.organization_id, "id": row.id}
    await q.execute(FINISH, params)


async def set_export(q: Querier, row: RequestRow, key: str, size: int, expires: datetime) -> None:
    await q.execute(SET_EXPORT, (key, size, expires, row.organization_id, row.id))


@dataclass(frozen=True, slots=True)
class OldExport:
    organization_id: UUID
    id: UUID
    export_key: str


async def old_exports(q: Querier) -> list[OldExport]:
    return await q.fetch_all(OLD_EXPORTS, row=OldExport)


async def forget_export(q: Querier, org: UUID, request_id: UUID) -> None:
    await q.execute(FORGET_EXPORT, (org, request_id))


@dataclass(frozen=True, slots=True)
class _Id:
    id: UUID


async def sessions(q: Querier, org: UUID, patient_id: UUID) -> list[UUID]:
    return [r.id for r in await q.fetch_all(SESSIONS, (org, patient_id), row=_Id)]


@dataclass(frozen=True, slots=True)
class _Key:
    storage_key: str


async def erasable_attachment_keys(q: Querier, org: UUID, patient_id: UUID) -> list[str]:
    rows = await q.fetch_all(ATTACHMENT_KEYS, {"org": org, "patient": patient_id}, row=_Key)
    return [r.storage_key for r in rows]


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    id: UUID
    storage_key: str
    filename: str
    status: str


async def attachments(q: Querier, org: UUID, patient_id: UUID) -> list[AttachmentFile]:
    return await q.fetch_all(ALL_ATTACHMENTS, (org, patient_id), row=AttachmentFile)


async def json_rows(q: Querier, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a data-map `rows` statement (one JSON object each)."""
    found = await q.fetch_all(query, params, row=_Json)
    return [r.row for r in found]


async def count(q: Querier, query: str, params: dict[str, Any]) -> int:
    return int(one(await q.fetch_one(query, params, row=_Count)).count)


@dataclass(frozen=True, slots=True)
class _Json:
    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Count:
    count: int
