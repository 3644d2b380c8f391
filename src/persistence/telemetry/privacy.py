"""Telemetry's privacy state: per-organization hash keys, opt-outs, consent, tombstones."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one

ENSURE_KEY = """
INSERT INTO privacy.organization_keys (organization_id, hash_key) VALUES (%s, %s)
ON CONFLICT (organization_id) DO NOTHING
"""
KEY = "SELECT hash_key FROM privacy.organization_keys WHERE organization_id = %s"
OPT_OUT = """
SELECT analytics_opt_out FROM privacy.organization_settings WHERE organization_id = %s
"""
# The latest record per subject and purpose, where it withdraws.
WITHDRAWN = """
SELECT subject_id, purpose FROM (
    SELECT DISTINCT ON (subject_id, purpose) subject_id, purpose, granted
      FROM privacy.consents
     WHERE organization_id = %s
     ORDER BY subject_id, purpose, recorded_at DESC, id DESC) latest
 WHERE NOT granted
"""
TOMBSTONES = "SELECT actor_hash FROM privacy.erasure_tombstones WHERE organization_id = %s"
ADD_TOMBSTONE = """
INSERT INTO privacy.erasure_tombstones (organization_id, actor_hash, reason) VALUES (%s, %s, %s)
ON CONFLICT (organization_id, actor_hash)
DO UPDATE SET reason = 'erase' WHERE EXCLUDED.reason = 'erase'
"""
SET_OPT_OUT = """
INSERT INTO privacy.organization_settings (organization_id, analytics_opt_out) VALUES (%s, %s)
ON CONFLICT (organization_id)
DO UPDATE SET analytics_opt_out = EXCLUDED.analytics_opt_out, updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class Withdrawal:
    subject_id: UUID
    purpose: str


async def hash_key(q: Querier, organization_id: UUID) -> bytes:
    """The organization's hash key, made on first use (owner pool)."""
    await q.execute(ENSURE_KEY, (organization_id, secrets.token_bytes(32)))
    return bytes(one(await q.fetch_value(KEY, (organization_id,))))


async def analytics_opt_out(q: Querier, organization_id: UUID) -> bool:
    return bool(await q.fetch_value(OPT_OUT, (organization_id,)))


async def withdrawals(q: Querier, organization_id: UUID) -> list[Withdrawal]:
    return await q.fetch_all(WITHDRAWN, (organization_id,), row=Withdrawal)


async def tombstones(q: Querier, organization_id: UUID) -> set[str]:
    rows = await q.fetch_all(TOMBSTONES, (organization_id,), row=_Hash)
    return {row.actor_hash for row in rows}


async def add_tombstone(
    q: Querier, organization_id: UUID, actor_hash: str, *, reason: str = "erase"
) -> None:
    """Drop the actor's events at ingest from now on: erased, or restricted (an erasure
    overrides a restriction, never the other way)."""
    await q.execute(ADD_TOMBSTONE, (organization_id, actor_hash, reason))


async def set_analytics_opt_out(q: Querier, organization_id: UUID, opt_out: bool) -> None:
    await q.execute(SET_OPT_OUT, (organization_id, opt_out))


@dataclass(frozen=True, slots=True)
class _Hash:
    actor_hash: str


# --- consent records (app pool, under row-level security) -----------------------------------


@dataclass(frozen=True, slots=True)
class ConsentRow:
    id: UUID
    subject_id: UUID
    purpose: str
    granted: bool
    notice_version: str
    recorded_at: datetime


INSERT_CONSENT = """
INSERT INTO privacy.consents (organization_id, subject_id, purpose, granted, notice_version)
VALUES (%s, %s, %s, %s, %s)
RETURNING id, subject_id, purpose, granted, notice_version, recorded_at
"""
COUNT_CONSENTS = """
SELECT count(*) FROM privacy.consents
 WHERE organization_id = %(org)s
   AND (%(subject)s::uuid IS NULL OR subject_id = %(subject)s)
   AND (%(purpose)s::text IS NULL OR purpose = %(purpose)s)
"""
LIST_CONSENTS = """
SELECT id, subject_id, purpose, granted, notice_version, recorded_at
  FROM privacy.consents
 WHERE organization_id = %(org)s
   AND (%(subject)s::uuid IS NULL OR subject_id = %(subject)s)
   AND (%(purpose)s::text IS NULL OR purpose = %(purpose)s)
 ORDER BY recorded_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""


async def insert_consent(
    q: Querier,
    organization_id: UUID,
    subject_id: UUID,
    *,
    purpose: str,
    granted: bool,
    notice_version: str,
) -> ConsentRow:
    params = (organization_id, subject_id, purpose, granted, notice_version)
    return one(await q.fetch_one(INSERT_CONSENT, params, row=ConsentRow))


async def consents(
    q: Querier,
    organization_id: UUID,
    page: PageRequest,
    *,
    subject_id: UUID | None,
    purpose: str | None,
) -> tuple[list[ConsentRow], int]:
    params = {"org": organization_id, "subject": subject_id, "purpose": purpose}
    return await fetch_page(q, COUNT_CONSENTS, LIST_CONSENTS, params, page, row=ConsentRow)


# --- the organization's settings, by its admins (app pool, under row-level security) --------


@dataclass(frozen=True, slots=True)
class SettingsRow:
    analytics_opt_out: bool
    updated_at: datetime | None


SETTINGS = """
SELECT analytics_opt_out, updated_at FROM privacy.organization_settings
 WHERE organization_id = %s
"""
PUT_SETTINGS = """
INSERT INTO privacy.organization_settings (organization_id, analytics_opt_out, updated_by)
VALUES (%s, %s, %s)
ON CONFLICT (organization_id) DO UPDATE
   SET analytics_opt_out = EXCLUDED.analytics_opt_out, updated_by = EXCLUDED.updated_by,
       updated_at = now()
RETURNING analytics_opt_out, updated_at
"""


async def settings(q: Querier, organization_id: UUID) -> SettingsRow:
    found = await q.fetch_one(SETTINGS, (organization_id,), row=SettingsRow)
    return found or SettingsRow(analytics_opt_out=False, updated_at=None)


async def put_settings(
    q: Querier, organization_id: UUID, *, analytics_opt_out: bool, by: UUID | None
) -> SettingsRow:
    params = (organization_id, analytics_opt_out, by)
    return one(await q.fetch_one(PUT_SETTINGS, params, row=SettingsRow))
