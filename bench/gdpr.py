"""Erasing one data subject (issue 14): seconds per store.

One organization; its patient has an account, three appointments, BENCH_GDPR_ROWS analytics
events (default 10,000) and as many pose frames in ClickHouse, among BENCH_GDPR_OTHERS events
of other people (default 200,000) that must stay. Core and telemetry run in this process (the
embedded ClickHouse engine in a directory of its own), the GDPR worker reaches telemetry's
endpoint through ASGI, and every check stays on: the tombstone first, ClickHouse rows removed
by mutation and waited for, every core table, and the verification (a second erasure that
counts). Seconds per step come from the steps' audit records.

Run alone: `python bench/gdpr.py` (it prepares the stack that bench/run.py uses).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import time
import uuid
from typing import Any

import httpx
import psycopg
from asgi_lifespan import LifespanManager

from carebase.apps import core, telemetry
from carebase.config import PROJECT_ROOT, load_settings
from carebase.integrations.telemetry import TelemetrySubjects
from carebase.operations import clickhouse_migrations, devstack
from carebase.persistence import clickhouse
from carebase.persistence.clickhouse import ClickHouse
from carebase.principal import Principal
from carebase.services.appointments import new_uid
from carebase.services.gdpr import GdprService, GdprWorker
from carebase.services.telemetry.privacy import actor_hash

ROWS = int(os.environ.get("BENCH_GDPR_ROWS", "10000"))
OTHERS = int(os.environ.get("BENCH_GDPR_OTHERS", "200000"))
RESULTS = PROJECT_ROOT / "docs" / "benchmarks-gdpr.json"
TOKEN = "bench-gdpr-service-credential-0123456789"  # noqa: S105 - a local bench value


def _settings(stack: devstack.EmbeddedStack, data_dir: Any) -> Any:
    return load_settings(
        {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": stack.database_url,
            "DATABASE_ADMIN_URL": stack.database_admin_url,
            "TELEMETRY_DATABASE_URL": stack.telemetry_database_url,
            "TELEMETRY_DATABASE_ADMIN_URL": stack.telemetry_database_admin_url,
            "REDIS_URL": stack.redis_url,
            "TELEMETRY_SERVICE_TOKEN": TOKEN,
            "RUN_WORKERS": "false",
            "LOG_LEVEL": "warning",
        }
    )


def _seed(stack: devstack.EmbeddedStack) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, list[str]]:
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, 'Bench GDPR') RETURNING id",
            (f"bench-gdpr-{uuid.uuid4().hex[:8]}",),
        ).fetchone()[0]  # type: ignore[index]
        users = {}
        for role in ("admin", "specialist", "patient"):
            user = conn.execute(
                "INSERT INTO identity.users (email) VALUES (%s) RETURNING id",
                (f"{role}-{uuid.uuid4().hex[:8]}@bench-gdpr.example.com",),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO identity.memberships (organization_id, user_id, role)"
                " VALUES (%s, %s, %s)",
                (org, user, role),
            )
            users[role] = user
        specialist = conn.execute(
            "INSERT INTO specialists.specialists (organization_id, user_id, display_name)"
            " VALUES (%s, %s, 'Dr Bench') RETURNING id",
            (org, users["specialist"]),
        ).fetchone()[0]  # type: ignore[index]
        patient = conn.execute(
            "INSERT INTO patients.patients (organization_id, given_name, family_name, email,"
            " user_id) VALUES (%s, 'Erin', 'Erase', 'erin@example.com', %s) RETURNING id",
            (org, users["patient"]),
        ).fetchone()[0]  # type: ignore[index]
        sessions = []
        for k in range(3):
            start = dt.datetime.now(dt.UTC) - dt.timedelta(days=k + 1)
            sessions.append(
                str(
                    conn.execute(
                        "INSERT INTO scheduling.appointments (organization_id, uid, specialist_id,"
                        " patient_id, title, status, starts_at, ends_at, blocked, time_zone)"
                        " VALUES (%s, %s, %s, %s, 'Rehab', 'done', %s, %s, tstzrange(%s, %s),"
                        " 'UTC') RETURNING id",
                        (
                            org,
                            new_uid(),
                            specialist,
                            patient,
                            start,
                            start + dt.timedelta(minutes=45),
                            start,
                            start + dt.timedelta(minutes=45),
                        ),
                    ).fetchone()[0]  # type: ignore[index]
                )
            )
    return org, users["admin"], users["patient"], sessions


def _fill(store: ClickHouse, org: uuid.UUID, hashed: str, sessions: list[str]) -> None:
    """The subject's analytics events and pose frames, among other people's events."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    columns = [
        "organization_id",
        "message_id",
        "event",
        "occurred_at",
        "received_at",
        "actor_hash",
        "actor_role",
        "properties",
        "context",
        "ip_prefix",
        "user_agent",
    ]
    client = store.client

    def events(count: int, who: str) -> list[list[Any]]:
        return [
            [org, f"m-{uuid.uuid4()}", "Exercise Started", now, now,
             who or f"other-{n % 5000}", "patient", "{}", "{}", "203.0.113.0", "bench"]
            for n in range(count)
        ]  # fmt: skip

    for start in range(0, OTHERS, 50_000):
        client.insert(
            "telemetry.analytics_events", events(min(50_000, OTHERS - start), ""), columns
        )
    client.insert("telemetry.analytics_events", events(ROWS, hashed), columns)
    frames = [
        [org, uuid.UUID(sessions[n % len(sessions)]), hashed, n, n * 33, [0.5] * 132, 0, now]
        for n in range(ROWS)
    ]
    client.insert(
        "telemetry.pose_frames",
        frames,
        ["organization_id", "session_id", "actor_hash", "frame_number", "t_ms", "landmarks",
         "batch_seq", "received_at"],
    )  # fmt: skip


async def _erase(stack: devstack.EmbeddedStack, data_dir: Any) -> dict[str, Any]:
    settings = _settings(stack, data_dir)
    store = ClickHouse(clickhouse.connect(None, data_dir))
    clickhouse_migrations.up(store.client, PROJECT_ROOT / "sql" / "clickhouse")
    core_app = core.create_app(settings)
    telemetry_app = telemetry.create_app(
        settings,
        overrides={"clickhouse": store, "jwks_transport": httpx.ASGITransport(app=core_app)},
    )
    org, admin, subject, sessions = _seed(stack)
    async with LifespanManager(core_app), LifespanManager(telemetry_app):
        async with telemetry_app.database.admin_transaction() as q:
            from carebase.persistence.telemetry import privacy  # noqa: PLC0415

            key = await privacy.hash_key(q, org)
        hashed = actor_hash(key, subject)
        _fill(store, org, hashed, sessions)
        worker = GdprWorker(
            core_app.dependencies.database,
            sealer=core_app.dependencies.sealer,
            blobs=core_app.blobs,
            telemetry=TelemetrySubjects(
                base_url="http://telemetry.bench",
                token=TOKEN,
                transport=httpx.ASGITransport(app=telemetry_app),
            ),
        )
        service = GdprService(db=core_app.dependencies.database, blobs=core_app.blobs)
        made = await service.create(
            Principal(admin, org, "admin"), kind="erase", patient_id=None, user_id=subject,
            reason="Bench.", approve=True,
        )  # fmt: skip
        started = time.perf_counter()
        await worker.run_once()
        total = time.perf_counter() - started
        kept = store.client.query(
            "SELECT count() FROM telemetry.analytics_events WHERE organization_id = {o:UUID}",
            parameters={"o": org},
        ).result_rows[0][0]
    store.close()
    with psycopg.connect(stack.database_admin_url) as conn:
        steps = conn.execute(
            "SELECT detail->>'step', occurred_at, detail->>'rows' FROM audit.events"
            " WHERE entity_id = %s AND action = 'gdpr_request.step_done' ORDER BY occurred_at",
            (made.id,),
        ).fetchall()
        begun = conn.execute(
            "SELECT started_at, status FROM gdpr.requests WHERE id = %s", (made.id,)
        ).fetchone()
    assert begun is not None  # noqa: S101
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    previous = begun[0]
    for name, at, count in steps:
        store_name = "core" if name.startswith("core.") else name
        seconds[store_name] = seconds.get(store_name, 0.0) + (at - previous).total_seconds()
        rows[store_name] = rows.get(store_name, 0) + int(count or 0)
        previous = at
    return {
        "subject_rows": ROWS * 2,
        "other_rows": OTHERS,
        "kept_rows": kept,
        "status": begun[1],
        "total_s": round(total, 2),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "rows": rows,
    }


def measure(stack: devstack.EmbeddedStack, data_dir: Any) -> dict[str, Any]:
    directory = data_dir / "gdpr-bench"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    result = asyncio.run(_erase(stack, directory))
    print(f"bench gdpr: {json.dumps(result)}", flush=True)
    return result


def markdown(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    s, r = result["seconds"], result["rows"]
    lines = "\n".join(
        f"| {name} | {r.get(name, 0):,} | {s[name]:.2f} s |"
        for name in ("telemetry", "blobs", "core", "verify")
        if name in s
    )
    return f"""## Erasing a data subject (issue 14)

bench/gdpr.py: one patient with {result["subject_rows"]:,} telemetry rows ({result["subject_rows"] // 2:,}
analytics events, as many pose frames) among {result["other_rows"]:,} events of other people,
erased by the GDPR worker in {result["total_s"]:.2f} s ({result["status"]}); core and telemetry in
one process, the embedded ClickHouse engine, every check on (tombstone, mutations waited for,
every core table, a verifying second erasure). {result["kept_rows"]:,} other events kept.

| store (step) | rows | seconds |
|---|---:|---:|
{lines}
"""


def main() -> None:
    import run  # noqa: PLC0415 (bench/run.py owns the stack; it imports this module)

    stack = run.prepared_stack()
    try:
        result = measure(stack, run.BENCH_DIR)
    finally:
        stack.stop()
    if os.environ.get("BENCH_WRITE", "1") != "0":
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
