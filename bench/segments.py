"""Segments and CSV export over one large clinic (issue 14).

The clinic (slug `bench-segments-<patients>`, made once and kept) has BENCH_SEGMENT_PATIENTS patients
(default 100,000), three appointments each over three specialties (two done, one upcoming or
cancelled) and a `goal` select custom field on two patients in three.

- **Segment evaluation**: one rule set of 5 rules (status, last visit more than 30 days ago,
  at least 2 appointments, a specialty seen, a custom field in a list), evaluated through
  `SegmentService` in the clinic's transaction under row-level security, as the API does. The
  first evaluation writes the membership; the next ones find nothing to change. Times are
  wall clock per evaluation.
- **CSV export**: `carebase serve core` (production settings) streams every patient (the
  default columns) to a client that reads as fast as it can; rows/s over the whole file, and
  the server's peak RSS (sampled every 20 ms) against its RSS before.

Run alone: `python bench/segments.py` (it prepares the stack that bench/run.py uses).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
import uuid
from typing import Any

import httpx
import psutil
import psycopg

from carebase.config import PROJECT_ROOT
from carebase.operations import devstack
from carebase.persistence.db import Database
from carebase.persistence.pools import make_pool
from carebase.principal import Principal
from carebase.security.tokens import TokenService
from carebase.services.segments import SegmentService

PATIENTS = int(os.environ.get("BENCH_SEGMENT_PATIENTS", "100000"))
EVALUATIONS = int(os.environ.get("BENCH_SEGMENT_ROUNDS", "5"))
RESULTS = PROJECT_ROOT / "docs" / "benchmarks-segments.json"
SLUG = f"bench-segments-{PATIENTS}"


def prepare(stack: devstack.EmbeddedStack) -> tuple[uuid.UUID, uuid.UUID, list[str], str]:
    """The clinic, made once: (organization, admin user, specialties, the goal field id)."""
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        found = conn.execute("SELECT id FROM platform.organizations WHERE slug = %s", (SLUG,))
        row = found.fetchone()
        if row is None:
            _make(conn)
            row = conn.execute(
                "SELECT id FROM platform.organizations WHERE slug = %s", (SLUG,)
            ).fetchone()
        assert row is not None  # noqa: S101 - made just above
        org = row[0]
        admin = conn.execute(
            "SELECT user_id FROM identity.memberships WHERE organization_id = %s"
            " AND role = 'admin'",
            (org,),
        ).fetchone()
        specialties = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM specialists.specialties WHERE organization_id = %s ORDER BY name",
                (org,),
            )
        ]
        field = conn.execute(
            "SELECT id FROM custom_fields.fields WHERE organization_id = %s AND key = 'goal'",
            (org,),
        ).fetchone()
        assert admin is not None  # noqa: S101
        assert field is not None  # noqa: S101
        return org, admin[0], specialties, str(field[0])


def _make(conn: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    with conn.transaction():
        org = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, 'Bench segments')"
            " RETURNING id",
            (SLUG,),
        ).fetchone()
        assert org is not None  # noqa: S101
        users = [
            conn.execute(
                "INSERT INTO identity.users (email) VALUES (%s) RETURNING id",
                (f"{role}-{uuid.uuid4().hex[:8]}@bench-segments.example.com",),
            ).fetchone()
            for role in ("admin", "specialist")
        ]
        for user, role in zip(users, ("admin", "specialist"), strict=True):
            assert user is not None  # noqa: S101
            conn.execute(
                "INSERT INTO identity.memberships (organization_id, user_id, role)"
                " VALUES (%s, %s, %s)",
                (org[0], user[0], role),
            )
        specialist = conn.execute(
            "INSERT INTO specialists.specialists (organization_id, user_id, display_name)"
            " VALUES (%s, %s, 'Dr Bench') RETURNING id",
            (org[0], users[1][0]),  # type: ignore[index]
        ).fetchone()
        assert specialist is not None  # noqa: S101
        for name in ("Kinesiology", "Physiotherapy", "Speech therapy"):
            conn.execute(
                "INSERT INTO specialists.specialties (organization_id, name) VALUES (%s, %s)",
                (org[0], name),
            )
        field = conn.execute(
            "INSERT INTO custom_fields.fields (organization_id, entity_type, key)"
            " VALUES (%s, 'patient', 'goal') RETURNING id",
            (org[0],),
        ).fetchone()
        assert field is not None  # noqa: S101
        conn.execute(
            "INSERT INTO custom_fields.definitions (organization_id, field_id, definition, label,"
            " type, options) VALUES (%s, %s, 1, 'Goal', 'select', '{walk,run,lift}')",
            (org[0], field[0]),
        )
        conn.execute(
            """
            INSERT INTO patients.patients (organization_id, given_name, family_name, email,
                                           status, custom_values, created_at)
            SELECT %(org)s, 'Patient', 'Number ' || n, 'p' || n || '@example.com',
                   CASE WHEN n %% 10 = 0 THEN 'archived' ELSE 'active' END,
                   CASE WHEN n %% 3 = 0 THEN '{}'::jsonb
                        ELSE jsonb_build_object(%(field)s::text, jsonb_build_object('d', 1,
                             'v', (ARRAY['walk', 'run', 'lift'])[1 + n %% 3])) END,
                   now() - make_interval(days => n %% 700)
              FROM generate_series(1, %(patients)s) AS n
            """,
            {"org": org[0], "field": str(field[0]), "patients": PATIENTS},
        )
        # Three appointments a patient, an hour apart for the one specialist: two done in the
        # past, the third upcoming or (one in four) cancelled.
        conn.execute(
            """
            INSERT INTO scheduling.appointments (organization_id, uid, specialist_id, patient_id,
                   specialty_id, title, status, starts_at, ends_at, blocked, time_zone)
            SELECT p.organization_id,
                   substr(translate(md5(random()::text || p.id::text || k), '0189', 'wxyz'),
                          1, 26),
                   %(specialist)s, p.id, s.ids[1 + (p.rn + k) %% 3], 'Visit',
                   CASE WHEN k < 2 THEN 'done' WHEN p.rn %% 4 = 0 THEN 'cancelled'
                        ELSE 'upcoming' END,
                   t.at, t.at + interval '30 minutes',
                   tstzrange(t.at, t.at + interval '30 minutes'), 'UTC'
              FROM (SELECT id, organization_id, row_number() OVER (ORDER BY id) AS rn
                      FROM patients.patients WHERE organization_id = %(org)s) p
             CROSS JOIN generate_series(0, 2) AS k
             CROSS JOIN (SELECT array_agg(id ORDER BY name) AS ids FROM specialists.specialties
                          WHERE organization_id = %(org)s) s
             CROSS JOIN LATERAL (SELECT date_trunc('hour', now())
                    + make_interval(hours => (CASE WHEN k < 2 THEN -1 ELSE 1 END)
                                             * (p.rn * 3 + k)::int) AS at) t
            """,
            {"org": org[0], "specialist": specialist[0]},
        )
    conn.execute("VACUUM (ANALYZE) patients.patients")
    conn.execute("VACUUM (ANALYZE) scheduling.appointments")
    print(f"bench segments: made {PATIENTS:,} patients in {time.monotonic() - started:.0f} s")


def rules(specialty: str) -> dict[str, Any]:
    return {
        "combinator": "and",
        "rules": [
            {"field": "status", "operator": "=", "value": "active"},
            {"field": "last_visit", "operator": "moreThanDaysAgo", "value": 30},
            {"field": "appointment_count", "operator": ">=", "value": 2},
            {"field": "specialty_seen", "operator": "anyOf", "value": [specialty]},
            {"field": "custom.goal", "operator": "in", "value": ["run", "lift"]},
        ],
    }


async def evaluations(
    stack: devstack.EmbeddedStack, org: uuid.UUID, admin: uuid.UUID, specialty: str
) -> dict[str, Any]:
    database = Database(
        make_pool(
            stack.database_url,
            name="bench-app",
            application_name="carebase-bench",
            min_size=1,
            max_size=2,
            statement_timeout_ms=120_000,
            connect_timeout_s=5,
        ),
        make_pool(
            stack.database_admin_url,
            name="bench-admin",
            application_name="carebase-bench",
            min_size=0,
            max_size=1,
            statement_timeout_ms=120_000,
            connect_timeout_s=5,
        ),
    )
    await database.open()
    service = SegmentService(db=database, timeout_ms=120_000)
    principal = Principal(admin, org, "admin")
    try:
        started = time.perf_counter()
        made = await service.create(
            principal, name=f"Bench {uuid.uuid4().hex[:6]}", description="", kind="dynamic",
            tree=rules(specialty),
        )  # fmt: skip
        first = time.perf_counter() - started
        again = []
        for _ in range(EVALUATIONS):
            started = time.perf_counter()
            result = await service.evaluate(principal, made.id)
            again.append(time.perf_counter() - started)
            assert result.added == result.removed == 0  # noqa: S101 - nothing changed between
        await service.delete(principal, made.id, version=None)
    finally:
        await database.close()
    return {
        "patients": PATIENTS,
        "rules": 5,
        "members": made.member_count,
        "first_s": round(first, 3),
        "again_median_s": round(statistics.median(again), 3),
        "again_max_s": round(max(again), 3),
    }


def export(stack: devstack.EmbeddedStack, org: uuid.UUID, admin: uuid.UUID) -> dict[str, Any]:
    import run  # noqa: PLC0415 (bench/run.py owns the server; it imports this module)

    server = run.start_server(stack, 1)
    process = psutil.Process(server.pid)
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    tokens = TokenService(run.keyring(), issuer=run.ISSUER, audience=run.AUDIENCE)
    token = tokens.issue(subject=str(admin), organization_id=str(org), role="admin", ttl_s=600)
    lines = size = 0
    try:
        sampler.start()
        started = time.perf_counter()
        first_byte = None
        with (
            httpx.Client(base_url=f"http://{run.HOST}:{run.PORT}", timeout=120) as http,
            http.stream(
                "POST",
                "/v1/export/csv",
                headers={"Authorization": f"Bearer {token}"},
                json={"entity": "patients"},
            ) as answer,
        ):
            answer.raise_for_status()
            for chunk in answer.iter_bytes():
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                lines += chunk.count(b"\r\n")
                size += len(chunk)
        seconds = time.perf_counter() - started
    finally:
        done.set()
        sampler.join()
        run.stop(server)
    return {
        "rows": lines - 1,
        "bytes": size,
        "seconds": round(seconds, 3),
        "rows_per_s": round((lines - 1) / seconds),
        "first_byte_ms": round((first_byte or 0) * 1000, 1),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
    }


def measure(stack: devstack.EmbeddedStack) -> dict[str, Any]:
    org, admin, specialties, _ = prepare(stack)
    result = {
        "evaluation": asyncio.run(evaluations(stack, org, admin, specialties[1])),
        "export": export(stack, org, admin),
    }
    print(f"bench segments: {json.dumps(result)}", flush=True)
    return result


def markdown(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    e, x = result["evaluation"], result["export"]
    growth = x["rss_peak_mib"] - x["rss_before_mib"]
    return f"""## Segments and CSV export (issue 14): one clinic of {e["patients"]:,} patients

bench/segments.py, on the stack above (each patient with three appointments, a select custom
field on two in three).

| what | measured |
|---|---:|
| evaluate a dynamic segment of {e["rules"]} rules, first time ({e["members"]:,} members written) | {e["first_s"]:.2f} s |
| evaluate it again (nothing changes), median / max of {EVALUATIONS} | {e["again_median_s"]:.2f} s / {e["again_max_s"]:.2f} s |
| CSV export of every patient ({x["rows"]:,} rows, {x["bytes"] / 2**20:.1f} MiB), rows/s | {x["rows_per_s"]:,} |
| … first byte after | {x["first_byte_ms"]:.0f} ms |
| … server RSS before → peak | {x["rss_before_mib"]:.0f} → {x["rss_peak_mib"]:.0f} MiB (+{growth:.0f}) |

The rules: status is active, last visit more than 30 days ago, at least 2 appointments, a
specialty seen, a custom select field in a list; one statement (the aggregates joined as a
hash join, the membership replaced in the same statement) under row-level security. The
export runs `carebase serve core` with production settings, one worker; the client reads as
fast as it can on the same two cores.
"""


def main() -> None:
    import run  # noqa: PLC0415 (bench/run.py owns the stack; it imports this module)

    stack = run.prepared_stack()
    try:
        result = measure(stack)
    finally:
        stack.stop()
    if os.environ.get("BENCH_WRITE", "1") != "0":
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
