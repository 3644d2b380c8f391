"""Data-subject requests over every store, against the real engines: a canary patient with
data in core's and telemetry's PostgreSQL, ClickHouse and the blob store; erased (and scanned
for the canary everywhere), exported (everything of theirs, nothing of anyone else),
anonymized, restricted; a worker killed midway resumes; the data map covers every table."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import struct
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import SERVICE_TOKEN, forward_to_telemetry
from support import Clinic

from carebase.apps.core import CoreApp
from carebase.apps.telemetry import TelemetryApp
from carebase.integrations.telemetry import TelemetrySubjects
from carebase.operations.devstack import EmbeddedStack
from carebase.persistence.clickhouse import ClickHouse
from carebase.services import data_map
from carebase.services.appointments import new_uid
from carebase.services.gdpr import GdprWorker, region_of

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]
FRAME_VALUES = [0.5, 0.25, -0.1, 0.9] * 33
SKIP_TABLES = {"schema_migrations"}


@dataclass
class Env:
    """Both services, their clients and stores, and the GDPR worker."""

    app: CoreApp
    telemetry_app: TelemetryApp
    client: httpx.AsyncClient
    telemetry: httpx.AsyncClient
    admin_conn: Conn
    worker: GdprWorker

    async def canary(self, c: Clinic, token: str) -> str:
        return await canary_patient(
            c, token, client=self.client, telemetry=self.telemetry,
            admin_conn=self.admin_conn, app=self.app, telemetry_app=self.telemetry_app,
        )  # fmt: skip


@pytest.fixture
def env(
    app: CoreApp,
    telemetry_app: TelemetryApp,
    client: httpx.AsyncClient,
    telemetry: httpx.AsyncClient,
    admin_conn: Conn,
) -> Env:
    return Env(app, telemetry_app, client, telemetry, admin_conn, _worker(app, telemetry_app))


def _worker(app: CoreApp, telemetry_app: TelemetryApp) -> GdprWorker:
    """The GDPR worker, reaching telemetry's endpoints in process with the service credential."""
    subjects = TelemetrySubjects(
        base_url="http://telemetry.test",
        token=SERVICE_TOKEN,
        transport=httpx.ASGITransport(app=telemetry_app),
    )
    return GdprWorker(
        app.dependencies.database,
        sealer=app.dependencies.sealer,
        blobs=app.blobs,
        telemetry=subjects,
    )


async def request(
    client: httpx.AsyncClient, who: Clinic, kind: str, patient_id: str, **extra: Any
) -> dict[str, Any]:
    made = await client.post(
        "/v1/gdpr/requests",
        headers=who.admin.auth,
        json={"kind": kind, "patient_id": patient_id, "reason": "Asked in writing.", **extra},
    )
    assert made.status_code == 202, made.text
    approved = await client.post(
        f"/v1/gdpr/requests/{made.json()['id']}/approve", headers=who.admin.auth
    )
    assert approved.status_code == 202, approved.text
    return dict(approved.json())


async def fetched(client: httpx.AsyncClient, who: Clinic, request_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/gdpr/requests/{request_id}", headers=who.admin.auth)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def track(telemetry: httpx.AsyncClient, c: Clinic, event: str, token: str) -> httpx.Response:
    """One analytics event sent as the clinic's patient, carrying `token`."""
    return await telemetry.post(
        "/v1/analytics/batch",
        headers=c.patient.auth,
        json={"batch": [{"message_id": f"m-{uuid.uuid4()}", "event": event,
                         "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                         "properties": {"note": token}}]},
    )  # fmt: skip


async def canary_patient(
    c: Clinic,
    token: str,
    *,
    client: httpx.AsyncClient,
    telemetry: httpx.AsyncClient,
    admin_conn: Conn,
    app: CoreApp,
    telemetry_app: TelemetryApp,
) -> str:
    """The clinic's patient, given data carrying `token` in every store; their appointment."""
    patch = await client.patch(
        f"/v1/patients/{c.patient_id}",
        headers={**c.admin.auth, "If-Match": "*"},
        json={"given_name": f"Ana{token}", "family_name": f"Pop{token}",
              "email": f"{token}@example.com", "phone": "+385 91 555 0101",
              "national_id": f"ID{token[-8:]}", "address": f"Ilica {token}, 10000 Zagreb, Croatia",
              "birth_date": "1984-05-06", "notes": "Knee, left."},
    )  # fmt: skip
    assert patch.status_code == 200, patch.text
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    row = admin_conn.execute(
        "INSERT INTO scheduling.appointments (organization_id, uid, specialist_id, patient_id,"
        " title, status, starts_at, ends_at, blocked, time_zone, cancel_reason)"
        " VALUES (%s, %s, %s, %s, 'Rehab', 'in_progress', %s, %s, tstzrange(%s, %s), 'UTC', %s)"
        " RETURNING id",
        (c.org, new_uid(), c.specialist_id, c.patient_id, start,
         start + dt.timedelta(minutes=45), start, start + dt.timedelta(minutes=45),
         f"moved for {token}"),
    ).fetchone()  # fmt: skip
    assert row is not None
    appointment = str(row[0])
    admin_conn.execute(
        "INSERT INTO identity.email_outbox (user_id, recipient, subject, body)"
        " VALUES (%s, %s, 'Your visit', %s)",
        (c.patient.user_id, f"{token}@example.com", f"Hello Ana{token}"),
    )
    report = await client.post(
        "/v1/reports",
        headers=c.specialist.auth,
        json={"appointment_id": appointment, "patient_id": c.patient_id, "title": "Draft",
              "body": {"summary": f"Seen {token}."}},
    )  # fmt: skip
    assert report.status_code == 201, report.text
    pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%" + token.encode() + b"\n%%EOF\n"
    uploaded = await client.post(
        "/v1/attachments",
        headers=c.staff.auth,
        data={"owner_type": "patient", "owner_id": c.patient_id},
        files={"file": (f"{token}.pdf", pdf + b"x" * 2000, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    segment = await client.post(
        "/v1/segments", headers=c.admin.auth, json={"name": "Pilot", "kind": "static"}
    )
    await client.post(
        f"/v1/segments/{segment.json()['id']}/members",
        headers=c.admin.auth,
        json={"patient_ids": [c.patient_id]},
    )
    # Telemetry: analytics, consent, media and pose, as the patient.
    batch = await track(telemetry, c, "Exercise Started", token)
    assert batch.status_code == 202, batch.text
    consent = await telemetry.post(
        "/v1/consents",
        headers=c.patient.auth,
        json={"purpose": "media_quality", "granted": True, "notice_version": token[:60]},
    )
    assert consent.status_code == 201, consent.text
    now = dt.datetime.now(dt.UTC)
    media = await telemetry.post(
        f"/v1/media/sessions/{appointment}/events",
        headers=c.patient.auth,
        json={"events": [{"type": "start", "at": (now - dt.timedelta(seconds=30)).isoformat()},
                         {"type": "end", "at": now.isoformat()}]},
    )  # fmt: skip
    assert media.status_code == 202, media.text
    minted = await client.post(
        f"/v1/appointments/{appointment}/telemetry-session", headers=c.patient.auth
    )
    assert minted.status_code == 200, minted.text
    frames = b"".join(struct.pack("<II132f", n, n * 33, *FRAME_VALUES) for n in range(20))
    posed = await telemetry.post(
        f"/v1/pose/sessions/{appointment}/frames",
        content=frames,
        headers={"Authorization": f"Bearer {minted.json()['token']}",
                 "Content-Type": "application/octet-stream", "X-Batch-Seq": "0"},
    )  # fmt: skip
    assert posed.status_code == 202, posed.text
    await forward_to_telemetry(app, telemetry_app)  # core's audit events, actors hashed
    await telemetry_app.buffer.flush()
    return appointment


def files_holding(root: Path, token: str) -> list[Path]:
    """The blob store's files whose bytes hold `token` (a test's small store, read whole)."""
    return [p for p in root.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]


def core_tables(conn: Conn) -> list[str]:
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')"
        " AND n.nspname NOT LIKE 'pg_%%' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows if r[0].split(".")[1] not in SKIP_TABLES]


def postgres_hits(url: str, token: str) -> dict[str, int]:
    """Every table of the database, each row as text, searched for `token`."""
    hits: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        for table in core_tables(conn):
            found = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {} t WHERE t::text ILIKE %s").format(
                    psycopg.sql.Identifier(*table.split("."))
                ),
                (f"%{token}%",),
            ).fetchone()
            if found and found[0]:
                hits[table] = found[0]
    return hits


def clickhouse_hits(
    store: ClickHouse, token: str, hashed: str, sessions: list[str]
) -> dict[str, int]:
    hits: dict[str, int] = {}
    for (table,) in store.client.query(
        "SELECT name FROM system.tables WHERE database = 'telemetry'"
        " AND engine NOT LIKE '%View' AND name != 'schema_migrations'"
    ).result_rows:
        columns = [
            name
            for name, kind in store.client.query(
                "SELECT name, type FROM system.columns WHERE database = 'telemetry'"
                " AND table = {t:String}",
                parameters={"t": table},
            ).result_rows
            if "AggregateFunction" not in kind  # states hold no row of anyone
        ]
        listed = ", ".join(f"`{name}`" for name in columns)
        everything = f"SELECT {listed} FROM telemetry.{table}"  # noqa: S608 - system.tables
        for row in store.client.query(everything).result_rows:
            text = " ".join(str(v) for v in row)
            named = dict(zip(columns, row, strict=True))
            own = hashed and named.get("actor_hash") == hashed and table != "audit_events"
            if token in text or own or str(named.get("session_id")) in sessions:
                hits[table] = hits.get(table, 0) + 1
    return hits


async def test_an_erased_subject_is_found_nowhere_and_a_second_erase_is_a_no_op(
    env: Env, clinic: Callable[..., Clinic], stack: EmbeddedStack, clickhouse_store: ClickHouse
) -> None:
    app, client, telemetry, admin_conn, worker = (
        env.app,
        env.client,
        env.telemetry,
        env.admin_conn,
        env.worker,
    )
    telemetry_app = env.telemetry_app
    c = clinic()
    token = f"canary{uuid.uuid4().hex[:12]}"
    appointment = await env.canary(c, token)
    hashed_row = clickhouse_store.client.query(
        "SELECT any(actor_hash) FROM telemetry.analytics_events"
        " WHERE position(properties, {t:String}) > 0", parameters={"t": token},
    ).result_rows  # fmt: skip
    hashed = hashed_row[0][0]
    assert hashed
    before = postgres_hits(stack.database_admin_url, token)
    assert {"patients.patients", "identity.email_outbox", "attachments.attachments"} <= set(before)
    assert clickhouse_hits(clickhouse_store, token, hashed, [appointment])
    blob_root = Path(app.blobs.root)  # type: ignore[attr-defined]
    assert files_holding(blob_root, token)

    erased = await request(client, c, "erase", c.patient_id)
    assert await worker.run_once() >= 1
    done = await fetched(client, c, erased["id"])
    assert done["status"] == "completed", done["steps"]
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["telemetry"]["rows"] > 0
    assert steps["verify"] == {"name": "verify", "status": "done", "rows": 0, "detail": None}

    assert postgres_hits(stack.database_admin_url, token) == {}
    assert postgres_hits(stack.telemetry_database_admin_url, token) == {}
    assert clickhouse_hits(clickhouse_store, token, hashed, [appointment]) == {}
    assert not files_holding(blob_root, token)
    # The trail stays: core's, and telemetry's with the actor as a hash.
    kept = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE organization_id = %s AND entity_id = %s",
        (c.org, c.patient_id),
    ).fetchone()
    assert kept is not None
    assert kept[0] > 0
    trail = clickhouse_store.client.query(
        "SELECT count() FROM telemetry.audit_events WHERE organization_id = {o:UUID}",
        parameters={"o": c.org},
    ).result_rows
    assert trail[0][0] > 0
    # The tombstone: the subject's events are dropped at ingest from now on.
    again = await track(telemetry, c, "Late", token)
    assert again.status_code == 202
    await telemetry_app.buffer.flush()
    assert clickhouse_hits(clickhouse_store, token, hashed, [appointment]) == {}
    login = await client.post(
        "/v1/auth/login", json={"email": c.patient.email, "password": c.patient.password}
    )
    assert login.status_code == 401

    second = await request(client, c, "erase", c.patient_id)
    await worker.run_once()
    repeat = await fetched(client, c, second["id"])
    assert repeat["status"] == "completed"
    assert all(s["rows"] in (0, None) for s in repeat["steps"]), repeat["steps"]


async def test_the_export_holds_everything_of_the_subject_and_nothing_of_anyone_else(
    env: Env, clinic: Callable[..., Clinic]
) -> None:
    client, admin_conn, worker = env.client, env.admin_conn, env.worker
    c = clinic()
    token = f"canary{uuid.uuid4().hex[:12]}"
    await env.canary(c, token)
    other = admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name)"
        " VALUES (%s, 'Someone', 'Else') RETURNING id",
        (c.org,),
    ).fetchone()
    assert other is not None
    shortcut = await client.get(f"/v1/gdpr/users/{c.patient.user_id}/export", headers=c.admin.auth)
    assert shortcut.status_code == 202, shortcut.text
    assert shortcut.json()["status"] == "approved"
    await worker.run_once()
    link = await client.get(
        f"/v1/gdpr/requests/{shortcut.json()['id']}/export", headers=c.admin.auth
    )
    assert link.status_code == 200, (await fetched(client, c, shortcut.json()["id"]))["steps"]
    url = link.json()["url"].replace("http://localhost:9000", "")
    download = await client.get(url)
    assert download.status_code == 200, download.text
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    manifest = json.loads(archive.read("manifest.json"))
    listed = {(m["store"], m["table"]) for m in manifest["files"]}
    for table in data_map.DATA_MAP:
        if table.exported:
            assert (table.store if table.store != "blobs" else "blobs", table.table) in listed, (
                table.table
            )
    patient = json.loads(archive.read("core/patients.patients.json"))[0]
    columns = {r[0] for r in admin_conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'patients' AND table_name = 'patients'").fetchall()}  # fmt: skip
    sealed = {name for name in columns if name.endswith(("_sealed", "_index"))}
    assert columns - sealed <= set(patient)  # every plain column…
    assert patient["phone"] == "+385 91 555 0101"  # …and the sealed ones, opened
    assert patient["national_id"] == f"ID{token[-8:]}"
    text = b"".join(archive.read(name) for name in archive.namelist())
    assert token.encode() in text
    assert b"Someone" not in text
    assert str(other[0]).encode() not in text
    for entry in manifest["files"]:
        if "sha256" in entry:
            assert hashlib.sha256(archive.read(entry["file"])).hexdigest() == entry["sha256"]
    assert any(name.startswith("blobs/attachments/") for name in archive.namelist())
    assert any(
        name.startswith("clickhouse/telemetry.analytics_events") for name in archive.namelist()
    )


async def test_a_worker_killed_midway_is_resumed_by_the_next(
    env: Env, clinic: Callable[..., Clinic]
) -> None:
    client, admin_conn, worker = env.client, env.admin_conn, env.worker
    c = clinic()
    token = f"canary{uuid.uuid4().hex[:12]}"
    await env.canary(c, token)
    erased = await request(client, c, "erase", c.patient_id)
    assert await worker.carry_out_one(stop_after=3)  # then the process dies
    midway = await fetched(client, c, erased["id"])
    assert midway["status"] == "running"
    assert [s["name"] for s in midway["steps"]] == ["telemetry", "blobs", "core.patients.patients"]
    assert await worker.run_once() == 0  # its lease still holds
    admin_conn.execute(
        "UPDATE gdpr.requests SET claimed_until = now() - interval '1 second' WHERE id = %s",
        (erased["id"],),
    )
    assert await worker.run_once() == 1
    finished = await fetched(client, c, erased["id"])
    assert finished["status"] == "completed", finished["steps"]
    runs = admin_conn.execute(
        "SELECT detail->>'step', count(*) FROM audit.events WHERE entity_id = %s"
        " AND action = 'gdpr_request.step_done' GROUP BY 1",
        (erased["id"],),
    ).fetchall()
    assert all(count == 1 for _, count in runs), runs  # every step ran once


async def test_anonymize_keeps_clinical_facts_and_restrict_hides_the_record(
    env: Env, clinic: Callable[..., Clinic]
) -> None:
    client, admin_conn, worker = env.client, env.admin_conn, env.worker
    c = clinic()
    token = f"canary{uuid.uuid4().hex[:12]}"
    await env.canary(c, token)
    made = await client.post(f"/v1/gdpr/users/{c.patient.user_id}/anonymize", headers=c.admin.auth)
    assert made.status_code == 202, made.text
    await worker.run_once()
    assert (await fetched(client, c, made.json()["id"]))["status"] == "completed"
    row = admin_conn.execute(
        "SELECT given_name, email, birth_year, region, notes_sealed IS NOT NULL, user_id"
        " FROM patients.patients WHERE id = %s",
        (c.patient_id,),
    ).fetchone()
    assert row == ("Anonymous", None, 1984, "Croatia", True, None)
    login = await client.post(
        "/v1/auth/login", json={"email": c.patient.email, "password": c.patient.password}
    )
    assert login.status_code == 401

    d = clinic()
    restricted = await request(client, d, "restrict", d.patient_id)
    await worker.run_once()
    assert (await fetched(client, d, restricted["id"]))["status"] == "completed"
    assert (
        await client.get(f"/v1/patients/{d.patient_id}", headers=d.staff.auth)
    ).status_code == 404
    assert (
        await client.get(f"/v1/patients/{d.patient_id}", headers=d.admin.auth)
    ).status_code == 200
    everyone = await client.post(
        "/v1/segments",
        headers=d.admin.auth,
        json={"name": "All", "kind": "dynamic", "rules": {"combinator": "and", "rules": []}},
    )
    assert everyone.json()["member_count"] == 0  # the restricted patient is left out


async def test_requests_are_checked_and_another_tenants_subject_is_404(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c, other = clinic(), clinic()
    foreign = await client.post(
        "/v1/gdpr/requests",
        headers=c.admin.auth,
        json={"kind": "erase", "patient_id": other.patient_id, "reason": "Asked."},
    )
    assert foreign.status_code == 404
    neither = await client.post(
        "/v1/gdpr/requests", headers=c.admin.auth, json={"kind": "erase", "reason": "Asked."}
    )
    assert neither.status_code == 422
    first = await client.post(
        "/v1/gdpr/requests",
        headers=c.admin.auth,
        json={"kind": "export", "patient_id": c.patient_id, "reason": "Asked."},
    )
    assert first.status_code == 202
    assert first.json()["due_at"] > first.json()["received_at"]
    twice = await client.post(
        "/v1/gdpr/requests",
        headers=c.admin.auth,
        json={"kind": "export", "user_id": str(c.patient.user_id), "reason": "Again."},
    )
    assert twice.status_code == 409
    staff = await client.get("/v1/gdpr/requests", headers=c.staff.auth)
    assert staff.status_code == 403
    rejected = await client.post(
        f"/v1/gdpr/requests/{first.json()['id']}/reject",
        headers=c.admin.auth,
        json={"reason": "Identity not verified."},
    )
    assert rejected.json()["status"] == "rejected"
    late = await client.post(
        f"/v1/gdpr/requests/{first.json()['id']}/approve", headers=c.admin.auth
    )
    assert late.status_code == 409
    not_export = await client.get(
        f"/v1/gdpr/requests/{first.json()['id']}/export", headers=c.admin.auth
    )
    assert not_export.status_code == 409


def test_region_is_the_last_part_of_an_address() -> None:
    assert region_of("Ilica 1, 10000 Zagreb, Croatia") == "Croatia"
    assert region_of("Somewhere without commas") is None
    assert region_of(None) is None


async def test_the_data_map_names_every_table_of_every_store(
    stack: EmbeddedStack, clickhouse_store: ClickHouse, client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
) -> None:  # fmt: skip
    with psycopg.connect(stack.database_admin_url) as conn:
        core = set(core_tables(conn))
    with psycopg.connect(stack.telemetry_database_admin_url) as conn:
        telemetry = set(core_tables(conn))
    clickhouse = {
        f"telemetry.{name}"
        for (name,) in clickhouse_store.client.query(
            "SELECT name FROM system.tables WHERE database = 'telemetry'"
            " AND engine NOT LIKE '%View' AND name != 'schema_migrations'"
        ).result_rows
    }
    assert core == {t.table for t in data_map.tables("core")}
    assert telemetry == {t.table for t in data_map.tables("telemetry")}
    assert clickhouse == {t.table for t in data_map.tables("clickhouse")}
    for table in data_map.DATA_MAP:
        assert table.erase in ("delete", "anonymize", "retain", "ttl", "none")
        if table.erase == "retain":
            assert table.basis, table.table
    c = clinic()
    served = await client.get("/v1/gdpr/data-map", headers=c.admin.auth)
    assert len(served.json()["data"]) == len(data_map.DATA_MAP)
