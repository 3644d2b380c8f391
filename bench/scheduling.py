"""Scheduling for `make bench`: a clinic with BENCH_APPOINTMENTS appointments (default 100k)
over 20 specialists, the wrk scripts that read a specialist-week of its calendar and book
new appointments, and the calendar's plan at about a million appointments over 100 clinics.

The booking script sends a fresh `Idempotency-Key` with every request and a random 45-minute
start from 2030 on (free of the seeded data; a collision is a 409, reported as non-2xx).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from carebase.operations import devstack
from carebase.operations.seed_scheduling import (
    BENCH_DAY_SLOTS,
    bench_slot,
    seed_benchmark_appointments,
)
from carebase.persistence import calendar
from carebase.persistence.db import begin_as
from carebase.principal import Principal

APPOINTMENTS = int(os.environ.get("BENCH_APPOINTMENTS", "100000"))
PLAN_APPOINTMENTS = int(os.environ.get("BENCH_PLAN_APPOINTMENTS", "1000000"))
PLAN_CLINICS = 100
SPECIALISTS = 20
BOOKING_EPOCH = dt.datetime(2030, 1, 7, tzinfo=dt.UTC)


def prepare(
    stack: devstack.EmbeddedStack, clinic: uuid.UUID, bench_dir: Path
) -> dict[str, dict[str, object]]:
    """Seed the clinic's appointments; write calendar-week.lua and book.lua; one sample
    request of each (method, path, body) for the preflight."""
    started = time.monotonic()
    with psycopg.connect(stack.database_admin_url) as conn:
        specialists = seed_benchmark_appointments(
            conn, clinic, appointments=APPOINTMENTS, specialists=SPECIALISTS
        )
        conn.execute("ANALYZE scheduling.appointments")
        patients = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM patients.patients WHERE organization_id = %s LIMIT 500", (clinic,)
            )
        ]
    print(f"bench: {APPOINTMENTS:,} appointments ready ({time.monotonic() - started:.0f} s)")
    weeks = APPOINTMENTS // SPECIALISTS // (BENCH_DAY_SLOTS * 5)
    quoted = ",".join(f'"{s}"' for s in specialists)
    (bench_dir / "calendar-week.lua").write_text(
        f"specialists = {{{quoted}}}\n"
        f"epoch = {int(bench_slot(0).timestamp()) - 8 * 3600}\n"
        f"weeks = {max(weeks - 1, 1)}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        "  local from = epoch + math.random(0, weeks - 1) * 7 * 86400\n"
        '  local path = string.format("/v1/calendar?from=%s&to=%s&specialist_id=%s",\n'
        '    os.date("!%Y-%m-%dT%H:%M:%SZ", from), os.date("!%Y-%m-%dT%H:%M:%SZ", from + 7 * 86400),\n'
        "    specialists[math.random(#specialists)])\n"
        "  return wrk.format(nil, path)\n"
        "end\n"
    )
    quoted_patients = ",".join(f'"{p}"' for p in patients)
    (bench_dir / "book.lua").write_text(
        f"specialists = {{{quoted}}}\n"
        f"patients = {{{quoted_patients}}}\n"
        f"epoch = {int(BOOKING_EPOCH.timestamp())}\n"
        "counter = 0\n"
        "setup = function(thread) thread:set('id', math.random(1, 1000000)) end\n"
        "init = function() math.randomseed(os.time() + (id or 0)) end\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        "  local start = epoch + math.random(0, 400000) * 2700\n"
        '  local body = string.format(\'{"specialist_id": "%s", "patient_id": "%s", \'\n'
        '    .. \'"title": "Bench session", "starts_at": "%s", "duration_minutes": 45}\',\n'
        "    specialists[math.random(#specialists)], patients[math.random(#patients)],\n"
        '    os.date("!%Y-%m-%dT%H:%M:%SZ", start))\n'
        "  local headers = {}\n"
        "  for k, v in pairs(wrk.headers) do headers[k] = v end\n"
        '  headers["Content-Type"] = "application/json"\n'
        '  headers["Idempotency-Key"] = string.format("bench-%d-%d-%d", id or 0, counter,\n'
        "    math.random(1, 1000000000))\n"
        '  return wrk.format("POST", "/v1/appointments", headers, body)\n'
        "end\n"
    )
    week = bench_slot(0) - dt.timedelta(hours=8)
    return {
        "calendar": {
            "method": "GET",
            "path": (
                f"/v1/calendar?from={week:%Y-%m-%dT%H:%M:%SZ}"
                f"&to={week + dt.timedelta(days=7):%Y-%m-%dT%H:%M:%SZ}"
                f"&specialist_id={specialists[0]}"
            ),
        },
        "book": {
            "method": "POST",
            "path": "/v1/appointments",
            "body": {
                "specialist_id": str(specialists[0]),
                "patient_id": patients[0],
                "title": "Bench preflight",
                "starts_at": (BOOKING_EPOCH - dt.timedelta(days=7)).isoformat(),
                "duration_minutes": 45,
            },
        },
    }


def calendar_plan(stack: devstack.EmbeddedStack, clinic: uuid.UUID) -> dict[str, object]:
    """Grow the database to about PLAN_APPOINTMENTS appointments over PLAN_CLINICS clinics and
    EXPLAIN ANALYZE the calendar's statements for a week of `clinic`, as its staff under RLS."""
    started = time.monotonic()
    with psycopg.connect(stack.database_admin_url) as conn:
        others = _plan_clinics(conn, PLAN_CLINICS - 1)
        share = max(0, (PLAN_APPOINTMENTS - APPOINTMENTS) // len(others))
        for number, org in enumerate(others, 1):
            seed_benchmark_appointments(conn, org, appointments=share, specialists=SPECIALISTS)
            if sys.stderr.isatty():
                sys.stderr.write(f"\r  plan clinics {number}/{len(others)}")
        conn.execute("ANALYZE scheduling.appointments")
        total_row = conn.execute("SELECT count(*) FROM scheduling.appointments").fetchone()
        specialist_row = conn.execute(
            "SELECT id FROM specialists.specialists WHERE organization_id = %s"
            " AND display_name LIKE 'Bench specialist %%' ORDER BY display_name LIMIT 1",
            (clinic,),
        ).fetchone()
        staff_row = conn.execute(
            "SELECT user_id FROM identity.memberships WHERE organization_id = %s"
            " AND role = 'staff' LIMIT 1",
            (clinic,),
        ).fetchone()
    if total_row is None or specialist_row is None or staff_row is None:
        raise RuntimeError("the benchmark clinic has no specialist or staff member")
    total = int(total_row[0])
    print(f"\nbench: {total:,} appointments for the plan ({time.monotonic() - started:.0f} s)")
    since = bench_slot(5 * BENCH_DAY_SLOTS * 10) - dt.timedelta(hours=8)  # week 10 of the data
    principal = Principal(
        user_id=uuid.UUID(str(staff_row[0])), organization_id=clinic, role="staff"
    )
    plans = {}
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for name, specialists in (
            ("one specialist, one week", [specialist_row[0]]),
            ("the whole clinic, one week", None),
        ):
            filters = [calendar.BY_SPECIALIST] if specialists else []
            statement = calendar.SELECT_CALENDAR.format(filters=sql.Composed(filters))
            conn.execute(begin_as(principal, read_only=True))
            try:
                rows = conn.execute(
                    sql.SQL("EXPLAIN (ANALYZE, BUFFERS, SUMMARY) ") + statement,
                    {
                        "org": clinic,
                        "earliest": since - calendar.LONGEST,
                        "from": since,
                        "to": since + dt.timedelta(days=7),
                        "specialist": specialists[0] if specialists else None,
                        "specialists": specialists,
                        "statuses": None,
                        "limit": 501,
                    },
                ).fetchall()
            finally:
                conn.execute("ROLLBACK")
            plans[name] = "\n".join(str(r[0]) for r in rows)
    return {"appointments": total, "clinics": PLAN_CLINICS, "plans": plans}


def _plan_clinics(conn: psycopg.Connection[tuple[object, ...]], count: int) -> list[uuid.UUID]:
    """`count` more clinics with 50 plain patients each (the plan needs rows, not records)."""
    found = []
    for number in range(1, count + 1):
        row = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, %s)"
            " ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (f"bench-plan-{number:03d}", f"Plan Clinic {number:03d}"),
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING always yields the row
        org = uuid.UUID(str(row[0]))
        conn.execute(
            "INSERT INTO patients.patients (organization_id, given_name, family_name)"
            " SELECT %s, 'Plan', 'Patient ' || g FROM generate_series(1, 50) g"
            " WHERE NOT EXISTS (SELECT 1 FROM patients.patients WHERE organization_id = %s)",
            (org, org),
        )
        found.append(org)
    conn.commit()
    return found


def plan_markdown(recorded: dict[str, object]) -> str:
    plans = recorded.get("plans") or {}
    assert isinstance(plans, dict)  # noqa: S101 - written by calendar_plan
    parts = [
        f"## The calendar's plan at {int(str(recorded['appointments'])):,} appointments "
        f"({recorded['clinics']} clinics)\n\n"
        "`EXPLAIN (ANALYZE, BUFFERS)` of the statement `GET /v1/calendar` runs, for a week of the "
        "benchmark clinic, as its staff member under row-level security (bench/scheduling.py). "
        "Both are index range scans in the order shown — no sort, no sequential scan.\n"
    ]
    for name, text in plans.items():
        parts.append(f"### {name}\n\n```\n{text}\n```\n")
    return "\n".join(parts)


def load_plan(path: Path) -> dict[str, object] | None:
    return json.loads(path.read_text()) if path.exists() else None
