"""The statements CSV export streams from. Each selects the organization and the row's id
first (the associated data of sealed values), then `{columns}` — the export service's own
column expressions — and binds every filter: `%(org)s`, `%(segment)s` (a segment's
patients), `%(since)s` and `%(until)s` (instants; the days were turned into them in the
organization's zone)."""

from __future__ import annotations

from uuid import UUID

from psycopg import sql

from carebase.persistence.db import Querier

PATIENTS = sql.SQL("""
SELECT p.organization_id, p.id, {columns}
  FROM patients.patients p
 WHERE p.organization_id = %(org)s
   AND (%(segment)s::uuid IS NULL OR EXISTS (
        SELECT 1 FROM segments.members m
         WHERE m.organization_id = %(org)s AND m.segment_id = %(segment)s
           AND m.patient_id = p.id))
   AND (%(since)s::timestamptz IS NULL OR p.created_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR p.created_at < %(until)s)
 ORDER BY lower(p.family_name), lower(p.given_name), p.id
""")
APPOINTMENTS = sql.SQL("""
SELECT a.organization_id, a.id, {columns}
  FROM scheduling.appointments a
  JOIN patients.patients p ON p.organization_id = a.organization_id AND p.id = a.patient_id
  JOIN specialists.specialists s
    ON s.organization_id = a.organization_id AND s.id = a.specialist_id
  LEFT JOIN specialists.specialties sp
    ON sp.organization_id = a.organization_id AND sp.id = a.specialty_id
 WHERE a.organization_id = %(org)s
   AND (%(segment)s::uuid IS NULL OR EXISTS (
        SELECT 1 FROM segments.members m
         WHERE m.organization_id = %(org)s AND m.segment_id = %(segment)s
           AND m.patient_id = a.patient_id))
   AND (%(since)s::timestamptz IS NULL OR a.starts_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR a.starts_at < %(until)s)
 ORDER BY a.starts_at, a.id
""")
FORMS = sql.SQL("""
SELECT f.organization_id, f.id, {columns}
  FROM forms.forms f
  JOIN forms.templates t ON t.organization_id = f.organization_id AND t.id = f.template_id
  JOIN patients.patients p ON p.organization_id = f.organization_id AND p.id = f.patient_id
 WHERE f.organization_id = %(org)s
   AND (%(segment)s::uuid IS NULL OR EXISTS (
        SELECT 1 FROM segments.members m
         WHERE m.organization_id = %(org)s AND m.segment_id = %(segment)s
           AND m.patient_id = f.patient_id))
   AND (%(since)s::timestamptz IS NULL OR f.created_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR f.created_at < %(until)s)
 ORDER BY f.created_at, f.id
""")
STATEMENTS = {"patients": PATIENTS, "appointments": APPOINTMENTS, "forms": FORMS}
# One export at a time per organization: held by the export's own transaction, so it ends
# with it (also when the process dies).
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('carebase.export:' || %s, 0))"
TIME_ZONE = "SELECT time_zone FROM platform.organizations WHERE id = %s"
SEGMENT_EXISTS = "SELECT true FROM segments.segments WHERE organization_id = %s AND id = %s"


async def segment_exists(q: Querier, org: UUID, segment_id: UUID) -> bool:
    return bool(await q.fetch_value(SEGMENT_EXISTS, (org, segment_id)))
