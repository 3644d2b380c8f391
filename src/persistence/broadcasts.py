"""Broadcasts: templates, recipient lists and their imports, opt-outs, campaigns and their
messages. The API's statements run in the organization's transaction (row-level security);
the worker's (import, expansion, sending, receipts, unsubscribe links) on the owner
connection, each filtered by the organization it names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

CHANNELS = ("email", "sms", "whatsapp")


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: UUID
    name: str
    channel: str
    subject: str | None
    body: str
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RecipientRow:
    id: UUID
    list_name: str
    patient_id: UUID | None
    given_name: str
    family_name: str
    email: str | None
    phone_sealed: bytes | None
    import_id: UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImportRow:
    id: UUID
    list_name: str
    filename: str
    media_type: str
    status: str
    total_rows: int | None
    rows_done: int
    created: int
    matched: int
    invalid: int
    duplicate: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ImportLine:
    line: int
    outcome: str
    reason: str | None
    recipient_id: UUID | None


@dataclass(frozen=True, slots=True)
class CampaignRow:
    id: UUID
    name: str
    template_id: UUID
    channel: str
    segment_ids: list[UUID]
    recipient_lists: list[str]
    status: str
    scheduled_at: datetime | None
    started_at: datetime | None
    expanded_at: datetime | None
    finished_at: datetime | None
    failure_reason: str | None
    audience: int | None
    excluded_opted_out: int
    excluded_restricted: int
    excluded_no_address: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: UUID
    campaign_id: UUID
    channel: str
    patient_id: UUID | None
    recipient_id: UUID | None
    status: str
    attempts: int
    provider: str | None
    provider_message_id: str | None
    error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StatusCount:
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class OptOut:
    channel: str
    source: str
    created_at: datetime


# --- templates ----------------------------------------------------------------------------------

_TEMPLATE = "id, name, channel, subject, body, version, created_at, updated_at"
INSERT_TEMPLATE = f"""
INSERT INTO broadcasts.templates (organization_id, id, name, channel, subject, body)
VALUES (%(org)s, %(id)s, %(name)s, %(channel)s, %(subject)s, %(body)s)
RETURNING {_TEMPLATE}
"""  # noqa: S608 — a constant column list
SELECT_TEMPLATE = f"""
SELECT {_TEMPLATE} FROM broadcasts.templates WHERE organization_id = %s AND id = %s
"""  # noqa: S608 — a constant column list
LOCK_TEMPLATE = SELECT_TEMPLATE + " FOR UPDATE"
COUNT_TEMPLATES = """
SELECT count(*) FROM broadcasts.templates
 WHERE organization_id = %(org)s AND (%(channel)s::text IS NULL OR channel = %(channel)s)
"""
LIST_TEMPLATES = f"""
SELECT {_TEMPLATE} FROM broadcasts.templates
 WHERE organization_id = %(org)s AND (%(channel)s::text IS NULL OR channel = %(channel)s)
 ORDER BY lower(name), id LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608 — a constant column list
UPDATE_TEMPLATE = f"""
UPDATE broadcasts.templates
   SET name = %(name)s, subject = %(subject)s, body = %(body)s, version = version + 1,
       updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
RETURNING {_TEMPLATE}
"""  # noqa: S608 — a constant column list
DELETE_TEMPLATE = "DELETE FROM broadcasts.templates WHERE organization_id = %s AND id = %s"
TEMPLATE_IN_USE = """
SELECT EXISTS (SELECT 1 FROM broadcasts.campaigns WHERE organization_id = %s AND template_id = %s)
"""


async def insert_template(q: Querier, org: UUID, template_id: UUID, **values: Any) -> TemplateRow:
    params = {"org": org, "id": template_id, **values}
    return one(await q.fetch_one(INSERT_TEMPLATE, params, row=TemplateRow))


async def template(
    q: Querier, org: UUID, template_id: UUID, *, lock: bool = False
) -> TemplateRow | None:
    query = LOCK_TEMPLATE if lock else SELECT_TEMPLATE
    return await q.fetch_one(query, (org, template_id), row=TemplateRow)


async def templates(
    q: Querier, org: UUID, page: PageRequest, *, channel: str | None
) -> tuple[list[TemplateRow], int]:
    params = {"org": org, "channel": channel}
    return await fetch_page(q, COUNT_TEMPLATES, LIST_TEMPLATES, params, page, row=TemplateRow)


async def update_template(q: Querier, org: UUID, template_id: UUID, **values: Any) -> TemplateRow:
    params = {"org": org, "id": template_id, **values}
    return one(await q.fetch_one(UPDATE_TEMPLATE, params, row=TemplateRow))


async def template_in_use(q: Querier, org: UUID, template_id: UUID) -> bool:
    return bool(await q.fetch_value(TEMPLATE_IN_USE, (org, template_id)))


async def delete_template(q: Querier, org: UUID, template_id: UUID) -> int:
    return await q.execute(DELETE_TEMPLATE, (org, template_id))


# --- recipients and imports ---------------------------------------------------------------------

_RECIPIENT = (
    "id, list_name, patient_id, given_name, family_name, email, phone_sealed, import_id, created_at"
)
INSERT_RECIPIENT = f"""
INSERT INTO broadcasts.recipients (organization_id, id, list_name, patient_id, given_name,
                                   family_name, email, phone_sealed, phone_index, import_id)
VALUES (%(org)s, %(id)s, %(list)s, %(patient)s, %(given)s, %(family)s, %(email)s,
        %(phone_sealed)s, %(phone_index)s, %(import)s)
    ON CONFLICT DO NOTHING
RETURNING {_RECIPIENT}
"""  # noqa: S608 — a constant column list
COUNT_RECIPIENTS = """
SELECT count(*) FROM broadcasts.recipients
 WHERE organization_id = %(org)s AND (%(list)s::text IS NULL OR list_name = %(list)s)
"""
LIST_RECIPIENTS = f"""
SELECT {_RECIPIENT} FROM broadcasts.recipients
 WHERE organization_id = %(org)s AND (%(list)s::text IS NULL OR list_name = %(list)s)
 ORDER BY list_name, created_at, id LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608 — a constant column list
# An import's chunk at once; a row that repeats an address already in the list is left out
# (ON CONFLICT), and so reported a duplicate.
INSERT_RECIPIENTS = """
INSERT INTO broadcasts.recipients (organization_id, id, list_name, patient_id, given_name,
                                   family_name, email, phone_sealed, phone_index, import_id)
SELECT %(org)s, id, %(list)s, patient, given, family, email, phone_sealed, phone_index,
       %(import)s
  FROM unnest(%(ids)s::uuid[], %(patients)s::uuid[], %(givens)s::text[], %(families)s::text[],
              %(emails)s::text[], %(phones_sealed)s::bytea[], %(phone_indexes)s::bytea[])
       AS t(id, patient, given, family, email, phone_sealed, phone_index)
    ON CONFLICT DO NOTHING
RETURNING id
"""
DELETE_RECIPIENT = "DELETE FROM broadcasts.recipients WHERE organization_id = %s AND id = %s"
# A patient found by an address: the e-mail as stored (lower case), or the phone's blind index.
MATCH_PATIENTS = """
SELECT p.id, p.email, p.phone_index FROM patients.patients p
 WHERE p.organization_id = %(org)s
   AND (p.email = ANY(%(emails)s::text[]) OR p.phone_index = ANY(%(phones)s::bytea[]))
"""
PATIENT_EXISTS = "SELECT true FROM patients.patients WHERE organization_id = %s AND id = %s"

_IMPORT = (
    "id, list_name, filename, media_type, status, total_rows, rows_done, created, matched,"
    " invalid, duplicate, error, created_at, finished_at"
)
INSERT_IMPORT = f"""
INSERT INTO broadcasts.imports (organization_id, id, list_name, filename, media_type, sha256,
                                blob_key, created_by)
VALUES (%(org)s, %(id)s, %(list)s, %(filename)s, %(media_type)s, %(sha256)s, %(blob_key)s,
        %(by)s)
    ON CONFLICT (organization_id, list_name, sha256) DO NOTHING
RETURNING {_IMPORT}
"""  # noqa: S608 — a constant column list
SELECT_IMPORT = f"""
SELECT {_IMPORT} FROM broadcasts.imports WHERE organization_id = %s AND id = %s
"""  # noqa: S608 — a constant column list
SAME_FILE = f"""
SELECT {_IMPORT} FROM broadcasts.imports
 WHERE organization_id = %s AND list_name = %s AND sha256 = %s
"""  # noqa: S608 — a constant column list
COUNT_IMPORTS = "SELECT count(*) FROM broadcasts.imports WHERE organization_id = %(org)s"
LIST_IMPORTS = f"""
SELECT {_IMPORT} FROM broadcasts.imports WHERE organization_id = %(org)s
 ORDER BY created_at DESC, id LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608 — a constant column list
COUNT_IMPORT_LINES = """
SELECT count(*) FROM broadcasts.import_rows
 WHERE organization_id = %(org)s AND import_id = %(id)s
   AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
"""
LIST_IMPORT_LINES = """
SELECT line, outcome, reason, recipient_id FROM broadcasts.import_rows
 WHERE organization_id = %(org)s AND import_id = %(id)s
   AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
 ORDER BY line LIMIT %(limit)s OFFSET %(offset)s
"""


@dataclass(frozen=True, slots=True)
class DueImport:
    organization_id: UUID
    id: UUID
    list_name: str
    media_type: str
    blob_key: str | None
    rows_done: int
    attempts: int
    created_by: UUID | None


# The worker's: an import not finished and not held by a live claim; its lease renewed with
# each chunk it commits.
CLAIM_IMPORT = """
UPDATE broadcasts.imports i
   SET status = 'running', claimed_until = now() + make_interval(secs => %(lease)s),
       attempts = attempts + 1
  FROM (SELECT organization_id, id FROM broadcasts.imports
         WHERE status IN ('queued', 'running')
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) due
 WHERE i.organization_id = due.organization_id AND i.id = due.id
RETURNING i.organization_id, i.id, i.list_name, i.media_type, i.blob_key, i.rows_done,
          i.attempts, i.created_by
"""
IMPORT_LINES = """
INSERT INTO broadcasts.import_rows (organization_id, import_id, line, outcome, reason,
                                    recipient_id)
SELECT %(org)s, %(id)s, line, outcome, reason, recipient
  FROM unnest(%(lines)s::integer[], %(outcomes)s::text[], %(reasons)s::text[],
              %(recipients)s::uuid[]) AS t(line, outcome, reason, recipient)
    ON CONFLICT DO NOTHING
"""
IMPORT_PROGRESS = """
UPDATE broadcasts.imports
   SET rows_done = %(done)s, total_rows = %(total)s, created = created + %(created)s,
       matched = matched + %(matched)s,
       invalid = invalid + %(invalid)s, duplicate = duplicate + %(duplicate)s,
       claimed_until = now() + make_interval(secs => %(lease)s)
 WHERE organization_id = %(org)s AND id = %(id)s
"""
FINISH_IMPORT = """
UPDATE broadcasts.imports
   SET status = %(status)s, total_rows = %(total)s, error = %(error)s, finished_at = now(),
       claimed_until = NULL, blob_key = NULL
 WHERE organization_id = %(org)s AND id = %(id)s
"""


async def insert_recipient(
    q: Querier, org: UUID, recipient_id: UUID, **values: Any
) -> RecipientRow | None:
    params = {"org": org, "id": recipient_id, **values}
    return await q.fetch_one(INSERT_RECIPIENT, params, row=RecipientRow)


@dataclass(frozen=True, slots=True)
class NewRecipient:
    id: UUID
    patient_id: UUID | None
    given_name: str
    family_name: str
    email: str | None
    phone_sealed: bytes | None
    phone_index: bytes | None


@dataclass(frozen=True, slots=True)
class _Id:
    id: UUID


async def insert_recipients(
    q: Querier, org: UUID, list_name: str, import_id: UUID, rows: Sequence[NewRecipient]
) -> set[UUID]:
    """The ids inserted (the others repeated an address of the list)."""
    params = {
        "org": org,
        "list": list_name,
        "import": import_id,
        "ids": [r.id for r in rows],
        "patients": [r.patient_id for r in rows],
        "givens": [r.given_name for r in rows],
        "families": [r.family_name for r in rows],
        "emails": [r.email for r in rows],
        "phones_sealed": [r.phone_sealed for r in rows],
        "phone_indexes": [r.phone_index for r in rows],
    }
    return {r.id for r in await q.fetch_all(INSERT_RECIPIENTS, params, row=_Id)}


@dataclass(frozen=True, slots=True)
class SealedRecipient:
    organization_id: UUID
    id: UUID
    phone_sealed: bytes | None


SEALED_BATCH = """
SELECT organization_id, id, phone_sealed FROM broadcasts.recipients
 WHERE (organization_id, id) > (%s, %s) AND phone_sealed IS NOT NULL
 ORDER BY organization_id, id LIMIT %s
"""
RESEAL = """
UPDATE broadcasts.recipients SET phone_sealed = %s WHERE organization_id = %s AND id = %s
"""


async def sealed_batch(q: Querier, after: tuple[UUID, UUID], limit: int) -> list[SealedRecipient]:
    """Recipients with a sealed phone, in key order after `after` (`carebase keys`)."""
    return await q.fetch_all(SEALED_BATCH, (*after, limit), row=SealedRecipient)


async def reseal(q: Querier, row: SealedRecipient, phone_sealed: bytes) -> None:
    await q.execute(RESEAL, (phone_sealed, row.organization_id, row.id))


async def recipients(
    q: Querier, org: UUID, page: PageRequest, *, list_name: str | None
) -> tuple[list[RecipientRow], int]:
    params = {"org": org, "list": list_name}
    return await fetch_page(q, COUNT_RECIPIENTS, LIST_RECIPIENTS, params, page, row=RecipientRow)


async def delete_recipient(q: Querier, org: UUID, recipient_id: UUID) -> int:
    return await q.execute(DELETE_RECIPIENT, (org, recipient_id))


@dataclass(frozen=True, slots=True)
class PatientAddress:
    id: UUID
    email: str | None
    phone_index: bytes | None


async def match_patients(
    q: Querier, org: UUID, emails: Sequence[str], phones: Sequence[bytes]
) -> list[PatientAddress]:
    params = {"org": org, "emails": list(emails), "phones": list(phones)}
    return await q.fetch_all(MATCH_PATIENTS, params, row=PatientAddress)


async def patient_exists(q: Querier, org: UUID, patient_id: UUID) -> bool:
    return bool(await q.fetch_value(PATIENT_EXISTS, (org, patient_id)))


async def insert_import(q: Querier, org: UUID, import_id: UUID, **values: Any) -> ImportRow | None:
    params = {"org": org, "id": import_id, **values}
    return await q.fetch_one(INSERT_IMPORT, params, row=ImportRow)


async def same_file(q: Querier, org: UUID, list_name: str, sha256: bytes) -> ImportRow | None:
    return await q.fetch_one(SAME_FILE, (org, list_name, sha256), row=ImportRow)


async def import_(q: Querier, org: UUID, import_id: UUID) -> ImportRow | None:
    return await q.fetch_one(SELECT_IMPORT, (org, import_id), row=ImportRow)


async def imports(q: Querier, org: UUID, page: PageRequest) -> tuple[list[ImportRow], int]:
    return await fetch_page(q, COUNT_IMPORTS, LIST_IMPORTS, {"org": org}, page, row=ImportRow)


async def import_lines(
    q: Querier, org: UUID, import_id: UUID, page: PageRequest, *, outcome: str | None
) -> tuple[list[ImportLine], int]:
    params = {"org": org, "id": import_id, "outcome": outcome}
    return await fetch_page(q, COUNT_IMPORT_LINES, LIST_IMPORT_LINES, params, page, row=ImportLine)


async def claim_import(q: Querier, *, lease_s: float) -> DueImport | None:
    return await q.fetch_one(CLAIM_IMPORT, {"lease": lease_s}, row=DueImport)


async def record_lines(q: Querier, org: UUID, import_id: UUID, lines: Sequence[ImportLine]) -> None:
    await q.execute(
        IMPORT_LINES,
        {
            "org": org,
            "id": import_id,
            "lines": [x.line for x in lines],
            "outcomes": [x.outcome for x in lines],
            "reasons": [x.reason for x in lines],
            "recipients": [x.recipient_id for x in lines],
        },
    )


async def import_progress(
    q: Querier,
    org: UUID,
    import_id: UUID,
    *,
    done: int,
    total: int,
    counts: dict[str, int],
    lease_s: float,
) -> None:
    params = {"org": org, "id": import_id, "done": done, "total": total, "lease": lease_s}
    params.update(counts)
    await q.execute(IMPORT_PROGRESS, params)


async def finish_import(
    q: Querier, org: UUID, import_id: UUID, *, status: str, total: int | None, error: str | None
) -> None:
    params = {"org": org, "id": import_id, "status": status, "total": total, "error": error}
    await q.execute(FINISH_IMPORT, params)


# --- a template's preview ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clinic:
    name: str
    time_zone: str


@dataclass(frozen=True, slots=True)
class Person:
    """Who a template is rendered for: names, and the next appointment when a patient."""

    given_name: str
    family_name: str
    next_at: datetime | None


CLINIC = "SELECT name, time_zone FROM platform.organizations WHERE id = %s"
PATIENT_PERSON = """
SELECT p.given_name, p.family_name,
       (SELECT min(a.starts_at) FROM scheduling.appointments a
         WHERE a.organization_id = p.organization_id AND a.patient_id = p.id
           AND a.starts_at > now() AND a.status IN ('booked', 'upcoming', 'confirmed')) AS next_at
  FROM patients.patients p WHERE p.organization_id = %s AND p.id = %s
"""
RECIPIENT_PERSON = """
SELECT coalesce(p.given_name, r.given_name) AS given_name,
       coalesce(p.family_name, r.family_name) AS family_name, NULL::timestamptz AS next_at
  FROM broadcasts.recipients r
  LEFT JOIN patients.patients p ON p.organization_id = r.organization_id AND p.id = r.patient_id
 WHERE r.organization_id = %s AND r.id = %s
"""


async def clinic(q: Querier, org: UUID) -> Clinic:
    return await q.fetch_one(CLINIC, (org,), row=Clinic) or Clinic("", "UTC")


async def patient_person(q: Querier, org: UUID, patient_id: UUID) -> Person | None:
    return await q.fetch_one(PATIENT_PERSON, (org, patient_id), row=Person)


async def recipient_person(q: Querier, org: UUID, recipient_id: UUID) -> Person | None:
    return await q.fetch_one(RECIPIENT_PERSON, (org, recipient_id), row=Person)


# --- opt-outs -----------------------------------------------------------------------------------

PATIENT_OPT_OUTS = """
SELECT channel, source, created_at FROM broadcasts.opt_outs
 WHERE organization_id = %s AND patient_id = %s ORDER BY channel
"""
OPT_OUT_PATIENT = """
INSERT INTO broadcasts.opt_outs (organization_id, channel, patient_id, source)
VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
OPT_IN_PATIENT = """
DELETE FROM broadcasts.opt_outs WHERE organization_id = %s AND channel = %s AND patient_id = %s
"""


async def patient_opt_outs(q: Querier, org: UUID, patient_id: UUID) -> list[OptOut]:
    return await q.fetch_all(PATIENT_OPT_OUTS, (org, patient_id), row=OptOut)


async def opt_out_patient(
    q: Querier, org: UUID, patient_id: UUID, channel: str, source: str
) -> int:
    return await q.execute(OPT_OUT_PATIENT, (org, channel, patient_id, source))


async def opt_in_patient(q: Querier, org: UUID, patient_id: UUID, channel: str) -> int:
    return await q.execute(OPT_IN_PATIENT, (org, channel, patient_id))


# --- campaigns ----------------------------------------------------------------------------------

_CAMPAIGN = (
    "id, name, template_id, channel, segment_ids, recipient_lists, status, scheduled_at,"
    " started_at, expanded_at, finished_at, failure_reason, audience, excluded_opted_out,"
    " excluded_restricted, excluded_no_address, version, created_at, updated_at"
)
INSERT_CAMPAIGN = f"""
INSERT INTO broadcasts.campaigns (organization_id, id, name, template_id, channel, segment_ids,
                                  recipient_lists, created_by)
VALUES (%(org)s, %(id)s, %(name)s, %(template)s, %(channel)s, %(segments)s, %(lists)s, %(by)s)
RETURNING {_CAMPAIGN}
"""  # noqa: S608 — a constant column list
SELECT_CAMPAIGN = f"""
SELECT {_CAMPAIGN} FROM broadcasts.campaigns WHERE organization_id = %s AND id = %s
"""  # noqa: S608 — a constant column list
LOCK_CAMPAIGN = SELECT_CAMPAIGN + " FOR UPDATE"
COUNT_CAMPAIGNS = """
SELECT count(*) FROM broadcasts.campaigns
 WHERE organization_id = %(org)s AND (%(status)s::text IS NULL OR status = %(status)s)
"""
LIST_CAMPAIGNS = f"""
SELECT {_CAMPAIGN} FROM broadcasts.campaigns
 WHERE organization_id = %(org)s AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY created_at DESC, id LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608 — a constant column list
UPDATE_CAMPAIGN = f"""
UPDATE broadcasts.campaigns
   SET name = %(name)s, template_id = %(template)s, channel = %(channel)s,
       segment_ids = %(segments)s, recipient_lists = %(lists)s, version = version + 1,
       updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
RETURNING {_CAMPAIGN}
"""  # noqa: S608 — a constant column list
# draft → scheduled, draft|scheduled → sending (the template copied), → cancelled.
MOVE_CAMPAIGN = """
UPDATE broadcasts.campaigns c
   SET status = %(status)s, scheduled_at = %(at)s, version = c.version + 1, updated_at = now(),
       started_at = CASE WHEN %(status)s = 'sending' THEN now() ELSE c.started_at END,
       finished_at = CASE WHEN %(status)s = 'cancelled' THEN now() ELSE c.finished_at END,
       subject = CASE WHEN %(status)s = 'sending' THEN t.subject ELSE c.subject END,
       body = CASE WHEN %(status)s = 'sending' THEN t.body ELSE c.body END
  FROM broadcasts.templates t
 WHERE c.organization_id = %(org)s AND c.id = %(id)s
   AND t.organization_id = c.organization_id AND t.id = c.template_id
RETURNING c.id, c.name, c.template_id, c.channel, c.segment_ids, c.recipient_lists, c.status,
          c.scheduled_at, c.started_at, c.expanded_at, c.finished_at, c.failure_reason,
          c.audience, c.excluded_opted_out, c.excluded_restricted, c.excluded_no_address,
          c.version, c.created_at, c.updated_at
"""
DELETE_CAMPAIGN = "DELETE FROM broadcasts.campaigns WHERE organization_id = %s AND id = %s"
CANCEL_MESSAGES = """
UPDATE broadcasts.messages SET status = 'cancelled', updated_at = now()
 WHERE organization_id = %s AND campaign_id = %s AND status = 'queued'
"""
EXISTING_SEGMENTS = """
SELECT id FROM segments.segments WHERE organization_id = %s AND id = ANY(%s::uuid[])
"""
CAMPAIGN_STATS = """
SELECT status, count(*)::integer AS count FROM broadcasts.messages
 WHERE organization_id = %s AND campaign_id = %s GROUP BY status
"""


async def insert_campaign(q: Querier, org: UUID, campaign_id: UUID, **values: Any) -> CampaignRow:
    params = {"org": org, "id": campaign_id, **values}
    return one(await q.fetch_one(INSERT_CAMPAIGN, params, row=CampaignRow))


async def campaign(
    q: Querier, org: UUID, campaign_id: UUID, *, lock: bool = False
) -> CampaignRow | None:
    query = LOCK_CAMPAIGN if lock else SELECT_CAMPAIGN
    return await q.fetch_one(query, (org, campaign_id), row=CampaignRow)


async def campaigns(
    q: Querier, org: UUID, page: PageRequest, *, status: str | None
) -> tuple[list[CampaignRow], int]:
    params = {"org": org, "status": status}
    return await fetch_page(q, COUNT_CAMPAIGNS, LIST_CAMPAIGNS, params, page, row=CampaignRow)


async def update_campaign(q: Querier, org: UUID, campaign_id: UUID, **values: Any) -> CampaignRow:
    params = {"org": org, "id": campaign_id, **values}
    return one(await q.fetch_one(UPDATE_CAMPAIGN, params, row=CampaignRow))


async def move_campaign(
    q: Querier, org: UUID, campaign_id: UUID, status: str, *, at: datetime | None
) -> CampaignRow:
    params = {"org": org, "id": campaign_id, "status": status, "at": at}
    return one(await q.fetch_one(MOVE_CAMPAIGN, params, row=CampaignRow))


async def cancel_messages(q: Querier, org: UUID, campaign_id: UUID) -> int:
    return await q.execute(CANCEL_MESSAGES, (org, campaign_id))


async def delete_campaign(q: Querier, org: UUID, campaign_id: UUID) -> int:
    return await q.execute(DELETE_CAMPAIGN, (org, campaign_id))


async def existing_segments(q: Querier, org: UUID, ids: Sequence[UUID]) -> set[UUID]:
    return {r.id for r in await q.fetch_all(EXISTING_SEGMENTS, (org, list(ids)), row=_Id)}


async def campaign_stats(q: Querier, org: UUID, campaign_id: UUID) -> list[StatusCount]:
    return await q.fetch_all(CAMPAIGN_STATS, (org, campaign_id), row=StatusCount)


# --- messages -----------------------------------------------------------------------------------

_MESSAGE = (
    "id, campaign_id, channel, patient_id, recipient_id, status, attempts, provider,"
    " provider_message_id, error, created_at, sent_at, delivered_at, updated_at"
)
COUNT_MESSAGES = """
SELECT count(*) FROM broadcasts.messages
 WHERE organization_id = %(org)s AND (%(campaign)s::uuid IS NULL OR campaign_id = %(campaign)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
"""
LIST_MESSAGES = f"""
SELECT {_MESSAGE} FROM broadcasts.messages
 WHERE organization_id = %(org)s AND (%(campaign)s::uuid IS NULL OR campaign_id = %(campaign)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY created_at, id LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608 — a constant column list


async def messages(
    q: Querier, org: UUID, page: PageRequest, *, campaign_id: UUID | None, status: str | None
) -> tuple[list[MessageRow], int]:
    params = {"org": org, "campaign": campaign_id, "status": status}
    return await fetch_page(q, COUNT_MESSAGES, LIST_MESSAGES, params, page, row=MessageRow)
