"""Video-session quality and the dashboards, against the embedded ClickHouse engine: the
figures a dashboard shows equal a recomputation from the raw rows."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from conftest import SERVICE_TOKEN
from support import Person

from carebase.apps.telemetry import TelemetryApp
from carebase.operations import devstack
from carebase.persistence.clickhouse import ClickHouse
from carebase.principal import Principal
from carebase.services.telemetry.media import MediaSummaries
from carebase.services.telemetry.pose import PoseIngest

SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def _at(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def _sweep(app: TelemetryApp, store: ClickHouse, **options: float) -> MediaSummaries:
    """A sweep that does not wait the few seconds a real one gives other processes."""
    return MediaSummaries(app.database, store, app.buffer, settle_s=0.0, **options)


async def _session(
    telemetry: httpx.AsyncClient, who: Person, kbps: list[int], *, stalls: int = 1, end: bool = True
) -> str:
    session = str(uuid.uuid4())
    samples = [
        {"at": _at(60 - i), "kbps_down": value, "kbps_up": 800, "rtt_ms": 40, "loss_pct": 0.1}
        for i, value in enumerate(kbps)
    ]
    events: list[dict[str, Any]] = [{"type": "start", "at": _at(70)}]
    events.append({"type": "heartbeat", "at": _at(30), "samples": samples})
    events += [{"type": "stall", "at": _at(20), "stall_ms": 1500}] * stalls
    if end:
        events.append({"type": "end", "at": _at(5)})
    answer = await telemetry.post(
        f"/v1/media/sessions/{session}/events", json={"events": events}, headers=who.auth
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": len(events), "rejected": []}
    return session


async def test_a_session_is_summarized_after_its_end(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org = new_org()
    patient, admin = person(org, "patient"), person(org, "admin")
    session = await _session(telemetry, patient, [1000 + 100 * i for i in range(9)], stalls=2)
    assert await _sweep(telemetry_app, clickhouse_store).run_once() >= 1
    view = await telemetry.get(f"/v1/dashboards/sessions/{session}", headers=admin.auth)
    assert view.status_code == 200, view.text
    media = view.json()["media"]
    assert (media["status"], media["p50_kbps"], media["p95_kbps"]) == ("ended", 1400, 1800)
    assert (media["stalls"], media["samples"]) == (2, 9)
    assert view.json()["pose"] is None
    # Another clinic's admin: no such session for them.
    outsider = person(new_org(), "admin")
    assert (
        await telemetry.get(f"/v1/dashboards/sessions/{session}", headers=outsider.auth)
    ).status_code == 404
    # A patient reads no dashboards.
    assert (
        await telemetry.get(f"/v1/dashboards/sessions/{session}", headers=patient.auth)
    ).status_code == 403


async def test_a_quiet_session_times_out_after_five_minutes(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    stack: devstack.EmbeddedStack,
    *,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org = new_org()
    patient, admin = person(org, "patient"), person(org, "admin")
    session = await _session(telemetry, patient, [900, 950, 1000], stalls=0, end=False)
    sweep = _sweep(telemetry_app, clickhouse_store)
    await sweep.run_once()
    view = await telemetry.get(f"/v1/dashboards/sessions/{session}", headers=admin.auth)
    assert view.json()["media"]["status"] == "open"  # heard from just now: still open
    with psycopg.connect(stack.telemetry_database_admin_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE events.media_sessions SET last_seen_at = now() - interval '301 seconds'"
            " WHERE session_id = %s",
            (session,),
        )
    await sweep.run_once()
    media = (await telemetry.get(f"/v1/dashboards/sessions/{session}", headers=admin.auth)).json()[
        "media"
    ]
    assert (media["status"], media["p50_kbps"], media["samples"]) == ("timed_out", 950, 3)


def _pose_frames(n: int, *, first_ms: int) -> bytes:
    return b"".join(
        struct.pack("<II132f", i, first_ms + i * 1000, *([0.5, 0.5, 0.0, 1.0] * 33))
        for i in range(n)
    )


async def test_organization_figures_equal_a_recomputation_from_raw_rows(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    *,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org = new_org()
    patients = [person(org, "patient") for _ in range(3)]
    staff = person(org, "staff")
    now = datetime.now(UTC).isoformat()
    for index, who in enumerate([*patients, staff, patients[0]]):
        batch = {
            "batch": [
                {"message_id": uuid.uuid4().hex, "event": "Opened", "timestamp": now}
                for _ in range(index + 1)
            ]
        }
        answer = await telemetry.post("/v1/analytics/batch", json=batch, headers=who.auth)
        assert answer.status_code == 202
    # Pose: one session's frames over minutes 0, 1 and 2 (seconds 50–129) — three minutes.
    session = uuid.uuid4()
    principal = Principal(
        user_id=patients[1].user_id,
        organization_id=org,
        role="telemetry_session",
        session_id=session,
    )
    pose = PoseIngest(privacy=telemetry_app.privacy, buffer=telemetry_app.buffer)
    await pose.frames(
        principal, session, _pose_frames(80, first_ms=50_000), batch_seq=0, gzipped=False
    )
    await _session(telemetry, patients[2], [1200, 1300, 1500], stalls=1)
    await _session(telemetry, patients[0], [800, 900, 1000, 1100, 1200], stalls=0)
    await telemetry_app.buffer.flush()
    await _sweep(telemetry_app, clickhouse_store).run_once()

    today = datetime.now(UTC).date()
    answer = await telemetry.get(
        "/v1/dashboards/organization",
        params={"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()},
        headers=staff.auth,
    )
    assert answer.status_code == 200, answer.text
    yesterday, shown = answer.json()["days"]
    assert yesterday == {
        "day": (today - timedelta(days=1)).isoformat(),
        "events": 0,
        "active_patients": 0,
        "completed_sessions": 0,
        "pose_minutes": 0,
        "median_bitrate_kbps": None,
        "stalls": 0,
    }

    def value(query: str) -> Any:
        return clickhouse_store.client.query(query, parameters={"org": org}).result_rows[0][0]

    raw = {
        "events": value(
            "SELECT count() FROM telemetry.analytics_events WHERE organization_id = {org:UUID}"
        ),
        "active_patients": value(
            "SELECT uniqExact(actor_hash) FROM telemetry.analytics_events"
            " WHERE organization_id = {org:UUID} AND actor_role = 'patient'"
        ),
        "pose_minutes": value(
            "SELECT uniqExact(session_id, intDiv(t_ms, 60000)) FROM telemetry.pose_frames"
            " WHERE organization_id = {org:UUID}"
        ),
        "completed_sessions": value(
            "SELECT uniqExact(session_id) FROM telemetry.media_events"
            " WHERE organization_id = {org:UUID} AND type = 'end'"
        ),
        "stalls": value(
            "SELECT countIf(type = 'stall') FROM telemetry.media_events"
            " WHERE organization_id = {org:UUID}"
        ),
        "median_bitrate_kbps": value(
            "SELECT median(p50) FROM (SELECT quantileExact(0.5)(kbps_down) AS p50"
            " FROM telemetry.media_samples WHERE organization_id = {org:UUID} GROUP BY session_id)"
        ),
    }
    assert raw["events"] == 1 + 2 + 3 + 4 + 5
    assert raw["active_patients"] == 3
    assert raw["pose_minutes"] == 3
    assert shown == {"day": today.isoformat(), **raw}


async def test_staff_activity_for_admins(
    telemetry: httpx.AsyncClient,
    clickhouse_store: ClickHouse,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org = new_org()
    admin, staff = person(org, "admin"), person(org, "staff")
    busy, quiet = str(uuid.uuid4()), str(uuid.uuid4())
    patient_a, patient_b = str(uuid.uuid4()), str(uuid.uuid4())
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)

    def event(actor: str, minute: int, entity: str, kind: str = "patient") -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "occurred_at": (base + timedelta(minutes=minute, seconds=5)).isoformat(),
            "organization_id": str(org),
            "actor_user_id": actor,
            "action": f"{kind}.updated",
            "entity_type": kind,
            "entity_id": entity,
        }

    events = [
        event(busy, 0, patient_a),
        event(busy, 0, patient_b),
        event(busy, 3, patient_a),
        event(busy, 4, str(uuid.uuid4()), "appointment"),
        event(quiet, 1, patient_b),
    ]
    answer = await telemetry.post("/v1/audit/events", json={"events": events}, headers=SERVICE)
    assert answer.status_code == 202
    rows = await telemetry.get("/v1/dashboards/staff", headers=admin.auth)
    assert rows.status_code == 200, rows.text
    data = rows.json()["data"]
    assert [(r["actions"], r["active_minutes"], r["distinct_patients"]) for r in data] == [
        (4, 3, 2),
        (1, 1, 1),
    ]
    assert all(len(r["actor"]) == 32 and r["actor"] not in (busy, quiet) for r in data)
    assert (await telemetry.get("/v1/dashboards/staff", headers=staff.auth)).status_code == 403


async def test_date_ranges_are_checked(
    telemetry: httpx.AsyncClient, new_org: Callable[..., uuid.UUID], person: Callable[..., Person]
) -> None:
    admin = person(new_org(), "admin")
    backwards = await telemetry.get(
        "/v1/dashboards/organization",
        params={"from": "2026-11-30", "to": "2026-11-01"},
        headers=admin.auth,
    )
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["pointer"] == "/query/from"
    too_long = await telemetry.get(
        "/v1/dashboards/organization",
        params={"from": "2025-01-01", "to": "2026-11-30"},
        headers=admin.auth,
    )
    assert too_long.status_code == 422
    default = await telemetry.get("/v1/dashboards/organization", headers=admin.auth)
    assert len(default.json()["days"]) == 30
