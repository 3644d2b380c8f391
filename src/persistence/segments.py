"""Segments and their members; the registry's lookups; one statement that evaluates a
dynamic segment (the condition comes from `services.segment_rules`, composed with
`psycopg.sql`, every value bound)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one


@dataclass(frozen=True, slots=True)
class SegmentRow:
    id: UUID
    name: str
    description: str
    kind: str
    rules: dict[str, Any] | None
    member_count: int
    evaluated_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MemberRow:
    patient_id: UUID
    given_name: str
    family_name: str
    source: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class Evaluation:
    added: int
    removed: int
    member_count: int


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True, slots=True)
class CustomFieldRow:
    id: UUID
    key: str
    label: str
    type: str
    options: list[str] | None


@dataclass(frozen=True, slots=True)
class DueSegment:
    organization_id: UUID
    id: UUID


INSERT_SEGMENT = """
INSERT INTO segments.segments (organization_id, id, name, description, kind, rules)
VALUES (%(org)s, %(id)s, %(name)s, %(description)s, %(kind)s, %(rules)s)
RETURNING id, name, description, kind, rules, member_count, evaluated_at, version, created_at,
          updated_at
"""
SELECT_SEGMENT = """
SELECT id, name, description, kind, rules, member_count, evaluated_at, version, created_at,
       updated_at
  FROM segments.segments WHERE organization_id = %s AND id = %s
"""
LOCK_SEGMENT = SELECT_SEGMENT + " FOR UPDATE"
# The worker's: only when still due, and not while another evaluation holds it.
LOCK_DUE_SEGMENT = """
SELECT id, name, description, kind, rules, member_count, evaluated_at, version, created_at,
       updated_at
  FROM segments.segments
 WHERE organization_id = %s AND id = %s AND kind = 'dynamic'
   AND (evaluated_at IS NULL OR evaluated_at < now() - make_interval(secs => %s))
   FOR UPDATE SKIP LOCKED
"""
COUNT_SEGMENTS = """
SELECT count(*) FROM segments.segments
 WHERE organization_id = %(org)s AND (%(kind)s::text IS NULL OR kind = %(kind)s)
"""
LIST_SEGMENTS = """
SELECT id, name, description, kind, rules, member_count, evaluated_at, version, created_at,
       updated_at
  FROM segments.segments
 WHERE organization_id = %(org)s AND (%(kind)s::text IS NULL OR kind = %(kind)s)
 ORDER BY lower(name), id LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_PATIENT_SEGMENTS = """
SELECT count(*) FROM segments.members
 WHERE organization_id = %(org)s AND patient_id = %(patient)s
"""
LIST_PATIENT_SEGMENTS = """
SELECT s.id, s.name, s.description, s.kind, s.rules, s.member_count, s.evaluated_at, s.version,
       s.created_at, s.updated_at
  FROM segments.members m
  JOIN segments.segments s ON s.organization_id = m.organization_id AND s.id = m.segment_id
 WHERE m.organization_id = %(org)s AND m.patient_id = %(patient)s
 ORDER BY lower(s.name), s.id LIMIT %(limit)s OFFSET %(offset)s
"""
UPDATE_SEGMENT = """
UPDATE segments.segments
   SET name = %(name)s, description = %(description)s, rules = %(rules)s,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
RETURNING id, name, description, kind, rules, member_count, evaluated_at, version, created_at,
          updated_at
"""
# Evaluating or changing membership changes what the resource shows: a new version (ETag).
RECOUNT = """
UPDATE segments.segments
   SET member_count = %(count)s,
       evaluated_at = CASE WHEN kind = 'dynamic' THEN now() ELSE NULL END,
       version = version + %(bump)s, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
RETURNING id, name, description, kind, rules, member_count, evaluated_at, version, created_at,
          updated_at
"""
DELETE_SEGMENT = """
DELETE FROM segments.segments
 WHERE organization_id = %s AND id = %s AND (%s::integer IS NULL OR version = %s)
"""
COUNT_MEMBERS = """
SELECT count(*) FROM segments.members WHERE organization_id = %(org)s AND segment_id = %(id)s
"""
LIST_MEMBERS = """
SELECT m.patient_id, p.given_name, p.family_name, m.source, m.added_at
  FROM segments.members m
  JOIN patients.patients p ON p.organization_id = m.organization_id AND p.id = m.patient_id
 WHERE m.organization_id = %(org)s AND m.segment_id = %(id)s
 ORDER BY lower(p.family_name), lower(p.given_name), p.id LIMIT %(limit)s OFFSET %(offset)s
"""
EXISTING_PATIENTS = """
SELECT id FROM patients.patients
 WHERE organization_id = %s AND id = ANY(%s::uuid[]) AND restricted_at IS NULL
"""
ADD_MEMBERS = """
INSERT INTO segments.members (organization_id, segment_id, patient_id, source)
SELECT %s, %s, unnest(%s::uuid[]), %s
    ON CONFLICT DO NOTHING
"""
IMPORT_MEMBERS = """
INSERT INTO segments.members (organization_id, segment_id, patient_id, source)
SELECT organization_id, %(id)s, patient_id, 'import'
  FROM segments.members WHERE organization_id = %(org)s AND segment_id = %(source)s
    ON CONFLICT DO NOTHING
"""
REMOVE_MEMBERS = """
DELETE FROM segments.members
 WHERE organization_id = %s AND segment_id = %s AND patient_id = ANY(%s::uuid[])
"""
# One statement: the rules' matches; members no longer matched leave; new matches join.
EVALUATE = """
WITH matched AS ({matching}),
gone AS (
    DELETE FROM segments.members m
     WHERE m.organization_id = %(org)s AND m.segment_id = %(segment)s
       AND NOT EXISTS (SELECT 1 FROM matched WHERE matched.id = m.patient_id)
    RETURNING 1),
joined AS (
    INSERT INTO segments.members (organization_id, segment_id, patient_id, source)
    SELECT %(org)s, %(segment)s, matched.id, 'rule' FROM matched
        ON CONFLICT DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM joined) AS added, (SELECT count(*) FROM gone) AS removed,
       (SELECT count(*) FROM matched) AS member_count
"""
SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"
TIME_ZONE = "SELECT time_zone FROM platform.organizations WHERE id = %s"
PATIENT_EXISTS = "SELECT true FROM patients.patients WHERE organization_id = %s AND id = %s"
CUSTOM_FIELDS = """
SELECT f.id, f.key, d.label, d.type, d.options
  FROM custom_fields.fields f
  JOIN custom_fields.definitions d
    ON d.organization_id = f.organization_id AND d.field_id = f.id
   AND d.definition = f.current_definition
 WHERE f.organization_id = %s AND f.entity_type = 'patient' AND f.archived_at IS NULL
   AND NOT d.sensitive
 ORDER BY f.key
"""
SPECIALTIES = """
SELECT id::text AS value, name AS label FROM specialists.specialties
 WHERE organization_id = %s ORDER BY lower(name), id LIMIT 1000
"""
FORM_TEMPLATES = """
SELECT id::text AS value, title AS label FROM forms.templates
 WHERE organization_id = %s ORDER BY lower(title), id LIMIT 1000
"""
DUE_SEGMENTS = """
SELECT organization_id, id FROM segments.segments
 WHERE kind = 'dynamic'
   AND (evaluated_at IS NULL OR evaluated_at < now() - make_interval(secs => %s))
 ORDER BY evaluated_at NULLS FIRST LIMIT %s
"""


def _params(org: UUID, segment_id: UUID, name: str, description: str, rules: Any) -> dict[str, Any]:
    return {
        "org": org,
        "id": segment_id,
        "name": name,
        "description": description,
        "rules": Jsonb(rules) if rules is not None else None,
    }


async def insert_segment(
    q: Querier, org: UUID, segment_id: UUID, *, name: str, description: str, kind: str, rules: Any
) -> SegmentRow:
    params = {**_params(org, segment_id, name, description, rules), "kind": kind}
    return one(await q.fetch_one(INSERT_SEGMENT, params, row=SegmentRow))


async def segment(
    q: Querier, org: UUID, segment_id: UUID, *, lock: bool = False
) -> SegmentRow | None:
    query = LOCK_SEGMENT if lock else SELECT_SEGMENT
    return await q.fetch_one(query, (org, segment_id), row=SegmentRow)


async def lock_due(q: Querier, org: UUID, segment_id: UUID, *, age_s: float) -> SegmentRow | None:
    return await q.fetch_one(LOCK_DUE_SEGMENT, (org, segment_id, age_s), row=SegmentRow)


async def segments(
    q: Querier, org: UUID, page: PageRequest, *, kind: str | None
) -> tuple[list[SegmentRow], int]:
    params = {"org": org, "kind": kind}
    return await fetch_page(q, COUNT_SEGMENTS, LIST_SEGMENTS, params, page, row=SegmentRow)


async def patient_segments(
    q: Querier, org: UUID, patient_id: UUID, page: PageRequest
) -> tuple[list[SegmentRow], int]:
    params = {"org": org, "patient": patient_id}
    return await fetch_page(
        q, COUNT_PATIENT_SEGMENTS, LIST_PATIENT_SEGMENTS, params, page, row=SegmentRow
    )


async def update_segment(
    q: Querier, org: UUID, segment_id: UUID, *, name: str, description: str, rules: Any
) -> SegmentRow:
    params = _params(org, segment_id, name, description, rules)
    return one(await q.fetch_one(UPDATE_SEGMENT, params, row=SegmentRow))


async def recount(
    q: Querier, org: UUID, segment_id: UUID, count: int, *, bump: bool = True
) -> SegmentRow:
    params = {"org": org, "id": segment_id, "count": count, "bump": 1 if bump else 0}
    return one(await q.fetch_one(RECOUNT, params, row=SegmentRow))


async def delete_segment(q: Querier, org: UUID, segment_id: UUID, version: int | None) -> int:
    return await q.execute(DELETE_SEGMENT, (org, segment_id, version, version))


async def members(
    q: Querier, org: UUID, segment_id: UUID, page: PageRequest
) -> tuple[list[MemberRow], int]:
    params = {"org": org, "id": segment_id}
    return await fetch_page(q, COUNT_MEMBERS, LIST_MEMBERS, params, page, row=MemberRow)


async def member_count(q: Querier, org: UUID, segment_id: UUID) -> int:
    return int(await q.fetch_value(COUNT_MEMBERS, {"org": org, "id": segment_id}))


async def existing_patients(q: Querier, org: UUID, ids: Sequence[UUID]) -> set[UUID]:
    rows = await q.fetch_all(EXISTING_PATIENTS, (org, list(ids)), row=_Id)
    return {r.id for r in rows}


@dataclass(frozen=True, slots=True)
class _Id:
    id: UUID


async def add_members(
    q: Querier, org: UUID, segment_id: UUID, ids: Sequence[UUID], *, source: str
) -> int:
    return await q.execute(ADD_MEMBERS, (org, segment_id, list(ids), source))


async def import_members(q: Querier, org: UUID, segment_id: UUID, source_id: UUID) -> int:
    return await q.execute(IMPORT_MEMBERS, {"org": org, "id": segment_id, "source": source_id})


async def remove_members(q: Querier, org: UUID, segment_id: UUID, ids: Sequence[UUID]) -> int:
    return await q.execute(REMOVE_MEMBERS, (org, segment_id, list(ids)))


async def evaluate(
    q: Querier,
    org: UUID,
    segment_id: UUID,
    matching: sql.Composable,
    params: Mapping[str, Any],
    *,
    timeout_ms: int,
) -> Evaluation:
    """Replace the membership with what `matching` selects, as one statement under
    `timeout_ms` (for this transaction only)."""
    await q.fetch_value(SET_TIMEOUT, (f"{timeout_ms}ms",))
    statement = sql.SQL(EVALUATE).format(matching=matching)
    return one(
        await q.fetch_one(statement, {**params, "org": org, "segment": segment_id}, row=Evaluation)
    )


async def time_zone(q: Querier, org: UUID) -> str:
    return str(await q.fetch_value(TIME_ZONE, (org,)) or "UTC")


async def patient_exists(q: Querier, org: UUID, patient_id: UUID) -> bool:
    return bool(await q.fetch_value(PATIENT_EXISTS, (org, patient_id)))


async def custom_fields(q: Querier, org: UUID) -> list[CustomFieldRow]:
    return await q.fetch_all(CUSTOM_FIELDS, (org,), row=CustomFieldRow)


async def specialties(q: Querier, org: UUID) -> list[Option]:
    return await q.fetch_all(SPECIALTIES, (org,), row=Option)


async def form_templates(q: Querier, org: UUID) -> list[Option]:
    return await q.fetch_all(FORM_TEMPLATES, (org,), row=Option)


async def due(q: Querier, *, age_s: float, limit: int) -> list[DueSegment]:
    return await q.fetch_all(DUE_SEGMENTS, (age_s, limit), row=DueSegment)
