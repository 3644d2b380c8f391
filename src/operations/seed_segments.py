"""Segments demo data: each demo clinic gets a dynamic segment, evaluated with the same
compiler and statement the API uses, and a static one with a few patients in it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from carebase.persistence import segments as repo
from carebase.services import segment_rules as rules

Conn = psycopg.Connection[tuple[Any, ...]]

FOLLOW_UP = {
    "combinator": "and",
    "rules": [
        {"field": "status", "operator": "=", "value": "active"},
        {"field": "visit_count", "operator": ">=", "value": 1},
        {
            "combinator": "or",
            "rules": [
                {"field": "next_appointment", "operator": "null"},
                {"field": "last_visit", "operator": "withinLastDays", "value": 14},
            ],
        },
    ],
}


def seed_segments(conn: Conn, organization_id: uuid.UUID, *, patient_ids: list[uuid.UUID]) -> None:
    """Once per clinic (a clinic with segments is left as it is)."""
    found = conn.execute(
        "SELECT 1 FROM segments.segments WHERE organization_id = %s LIMIT 1", (organization_id,)
    ).fetchone()
    if found is not None:
        return
    dynamic, static = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO segments.segments (organization_id, id, name, description, kind, rules)"
        " VALUES (%s, %s, 'Follow-up',"
        " 'Active patients seen lately, or seen and with nothing booked.', 'dynamic', %s),"
        " (%s, %s, 'Newsletter pilot', 'Patients who agreed to try the newsletter.', 'static',"
        " NULL)",
        (organization_id, dynamic, Jsonb(FOLLOW_UP), organization_id, static),
    )
    now = dt.datetime.now(dt.UTC)
    zone = conn.execute(
        "SELECT time_zone FROM platform.organizations WHERE id = %s", (organization_id,)
    ).fetchone()
    compiled = rules.compile_tree(FOLLOW_UP, rules.Registry.of(rules.BUILT_IN), today=now.date())
    statement = sql.SQL(repo.EVALUATE).format(matching=rules.matching_patients(compiled))
    params = {
        **compiled.params,
        "org": organization_id,
        "segment": dynamic,
        "tz": zone[0] if zone else "UTC",
        "now": now,
    }
    evaluated = conn.execute(statement, params).fetchone()
    members = evaluated[2] if evaluated else 0
    conn.execute(
        "UPDATE segments.segments SET member_count = %s, evaluated_at = now()"
        " WHERE organization_id = %s AND id = %s",
        (members, organization_id, dynamic),
    )
    pilot = patient_ids[:5]
    conn.execute(
        "INSERT INTO segments.members (organization_id, segment_id, patient_id, source)"
        " SELECT %s, %s, unnest(%s::uuid[]), 'manual'",
        (organization_id, static, pilot),
    )
    conn.execute(
        "UPDATE segments.segments SET member_count = %s WHERE organization_id = %s AND id = %s",
        (len(pilot), organization_id, static),
    )
