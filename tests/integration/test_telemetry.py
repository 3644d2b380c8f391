"""The telemetry service against real engines: its own PostgreSQL database, the embedded
ClickHouse engine (chdb), Redis, and core's JWKS served by core in the same process."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from conftest import SERVICE_TOKEN, forward_to_telemetry
from structlog.testing import capture_logs
from support import Person

from carebase.apps.telemetry import TelemetryApp
from carebase.config import PROJECT_ROOT
from carebase.operations import devstack
from carebase.persistence.clickhouse import ClickHouse
from carebase.services.telemetry.privacy import PrivacyGate, actor_hash

CLIENT_IP = "203.0.113.77"  # the telemetry client fixture's address
CANARY_IP = "198.51.100.23"
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def _now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def _track(n: int = 1, **overrides: Any) -> dict[str, Any]:
    return {
        "batch": [
            {
                "message_id": uuid.uuid4().hex,
                "event": "Exercise Started",
                "timestamp": _now(),
                "properties": {"exercise": "knee-extension", "set": index},
                "context": {"page": {"path": "/exercises/knee"}, "locale": "hr-HR"},
                **overrides,
            }
            for index in range(n)
        ]
    }


def _rows(store: ClickHouse, table: str, organization_id: uuid.UUID) -> list[dict[str, Any]]:
    result = store.client.query(
        f"SELECT * FROM telemetry.{table} FINAL WHERE organization_id = {{org:UUID}}",  # noqa: S608 - a test's own table name
        parameters={"org": organization_id},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


@pytest.fixture
def member(
    new_org: Callable[..., uuid.UUID], person: Callable[..., Person]
) -> Callable[[str], Person]:
    """A member of a fresh organization in `role`, with core's access token."""

    def make(role: str = "patient") -> Person:
        return person(new_org(), role)

    return make


async def test_readiness_checks_every_store(telemetry: httpx.AsyncClient) -> None:
    answer = await telemetry.get("/health/ready")
    assert answer.status_code == 200, answer.text
    names = {check["name"] for check in answer.json()["checks"]}
    assert names == {
        "database",
        "database_admin",
        "redis",
        "migrations",
        "clickhouse",
        "clickhouse_migrations",
    }


async def test_serves_its_own_bundle_byte_for_byte(telemetry: httpx.AsyncClient) -> None:
    answer = await telemetry.get("/openapi.yaml")
    assert answer.status_code == 200
    assert answer.content == (PROJECT_ROOT / "generated/openapi/telemetry.yaml").read_bytes()
    assert (await telemetry.get("/v1/patients")).status_code == 404  # core's paths are not here


async def test_track_batch_is_stored_with_privacy_applied(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    member: Callable[[str], Person],
    capfd: pytest.CaptureFixture[str],
) -> None:
    someone = member("patient")
    batch = _track(3, context={"ip": CANARY_IP, "locale": "hr-HR"})
    answer = await telemetry.post("/v1/analytics/batch", json=batch, headers=someone.auth)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 3, "rejected": []}
    await telemetry_app.buffer.flush()

    rows = _rows(clickhouse_store, "analytics_events", someone.organization_id)
    assert len(rows) == 3
    key_state = await telemetry_app.privacy.state(someone.organization_id)
    assert {row["actor_hash"] for row in rows} == {actor_hash(key_state.key, someone.user_id)}
    assert {row["ip_prefix"] for row in rows} == {"203.0.113.0"}
    assert {row["actor_role"] for row in rows} == {"patient"}
    assert sorted(row["message_id"] for row in rows) == sorted(
        e["message_id"] for e in batch["batch"]
    )
    # The canaries: the raw addresses and the person's id are in no column and no log line.
    stored = repr(rows)
    for canary in (CANARY_IP, CLIENT_IP, str(someone.user_id), someone.user_id.hex):
        assert canary not in stored
    logged = capfd.readouterr()
    for canary in (CANARY_IP, CLIENT_IP, str(someone.user_id)):
        assert canary not in logged.out + logged.err


async def test_a_message_sent_again_is_accepted_and_stored_once(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    member: Callable[[str], Person],
) -> None:
    someone = member("staff")
    batch = _track(2)
    for _ in range(2):
        answer = await telemetry.post("/v1/analytics/batch", json=batch, headers=someone.auth)
        assert answer.json() == {"accepted": 2, "rejected": []}
    await telemetry_app.buffer.flush()
    raw = clickhouse_store.client.query(
        "SELECT count() FROM telemetry.analytics_events WHERE organization_id = {org:UUID}",
        parameters={"org": someone.organization_id},
    )
    assert raw.result_rows[0][0] == 2  # not merged away later: never written twice


async def test_global_privacy_control_drops_with_the_same_answer(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    member: Callable[[str], Person],
) -> None:
    someone = member("patient")
    answer = await telemetry.post(
        "/v1/analytics/batch", json=_track(4), headers={**someone.auth, "Sec-GPC": "1"}
    )
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 4, "rejected": []}
    await telemetry_app.buffer.flush()
    assert _rows(clickhouse_store, "analytics_events", someone.organization_id) == []


async def test_withdrawn_consent_drops_events_at_once(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    member: Callable[[str], Person],
) -> None:
    someone = member("patient")
    withdraw = {"purpose": "analytics", "granted": False, "notice_version": "2026-11"}
    recorded = await telemetry.post("/v1/consents", json=withdraw, headers=someone.auth)
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["subject_id"] == str(someone.user_id)
    answer = await telemetry.post("/v1/analytics/batch", json=_track(2), headers=someone.auth)
    assert answer.json() == {"accepted": 2, "rejected": []}  # the same answer as a stored one
    await telemetry_app.buffer.flush()
    assert _rows(clickhouse_store, "analytics_events", someone.organization_id) == []

    grant = {**withdraw, "granted": True, "notice_version": "2026-12"}
    assert (await telemetry.post("/v1/consents", json=grant, headers=someone.auth)).is_success
    await telemetry.post("/v1/analytics/batch", json=_track(1), headers=someone.auth)
    await telemetry_app.buffer.flush()
    assert len(_rows(clickhouse_store, "analytics_events", someone.organization_id)) == 1


async def test_another_process_sees_a_withdrawal_within_its_refresh(
    telemetry_app: TelemetryApp,
    stack: devstack.EmbeddedStack,
    member: Callable[[str], Person],
) -> None:
    """A withdrawal recorded by another process: this one trusts what it read for at most
    `refresh_s` (≤ 60 s), then drops the person's events."""
    someone = member("patient")
    now = [1000.0]
    gate = PrivacyGate(telemetry_app.database, refresh_s=60.0, clock=lambda: now[0])
    state = await gate.state(someone.organization_id)
    assert state.excludes(someone.user_id, "analytics", None) is None
    with psycopg.connect(stack.telemetry_database_admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO privacy.consents (organization_id, subject_id, purpose, granted,"
            " notice_version) VALUES (%s, %s, 'analytics', false, 'v1')",
            (someone.organization_id, someone.user_id),
        )
    now[0] += 59.0
    assert (await gate.state(someone.organization_id)).excludes(
        someone.user_id, "analytics", None
    ) is None
    now[0] += 1.0
    assert (await gate.state(someone.organization_id)).excludes(
        someone.user_id, "analytics", None
    ) == "consent_withdrawn"


async def test_organization_opt_out_and_erasure_tombstones_drop_events(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    stack: devstack.EmbeddedStack,
    *,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
) -> None:
    opted_out, erased_org = new_org(), new_org()
    opted, erased, kept = (
        person(opted_out, "staff"),
        person(erased_org, "patient"),
        person(erased_org, "staff"),
    )
    key = (await telemetry_app.privacy.state(erased_org)).key
    with psycopg.connect(stack.telemetry_database_admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO privacy.organization_settings (organization_id, analytics_opt_out)"
            " VALUES (%s, true)",
            (opted_out,),
        )
        conn.execute(
            "INSERT INTO privacy.erasure_tombstones (organization_id, actor_hash) VALUES (%s, %s)",
            (erased_org, actor_hash(key, erased.user_id)),
        )
    telemetry_app.privacy.forget(opted_out)
    telemetry_app.privacy.forget(erased_org)
    for who in (opted, erased, kept):
        answer = await telemetry.post("/v1/analytics/batch", json=_track(2), headers=who.auth)
        assert answer.json() == {"accepted": 2, "rejected": []}
    await telemetry_app.buffer.flush()
    assert _rows(clickhouse_store, "analytics_events", opted_out) == []
    rows = _rows(clickhouse_store, "analytics_events", erased_org)
    assert {row["actor_hash"] for row in rows} == {actor_hash(key, kept.user_id)}
    assert telemetry_app.privacy.dropped.by_reason["organization_opt_out"] >= 2
    assert telemetry_app.privacy.dropped.by_reason["erased"] >= 2


async def test_implausible_timestamps_are_rejected_by_index(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    member: Callable[[str], Person],
) -> None:
    someone = member("staff")
    batch = _track(3)
    batch["batch"][0]["timestamp"] = _now(timedelta(days=2))
    batch["batch"][2]["timestamp"] = _now(-timedelta(days=800))
    answer = await telemetry.post("/v1/analytics/batch", json=batch, headers=someone.auth)
    assert answer.status_code == 202
    assert answer.json() == {
        "accepted": 1,
        "rejected": [
            {"index": 0, "reason": "timestamp_out_of_range"},
            {"index": 2, "reason": "timestamp_out_of_range"},
        ],
    }
    await telemetry_app.buffer.flush()
    assert len(_rows(clickhouse_store, "analytics_events", someone.organization_id)) == 1


async def test_batch_and_event_bounds(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    member: Callable[[str], Person],
) -> None:
    someone = member("staff")
    big = _track(2)
    big["batch"][1]["properties"] = {"blob": "x" * 33_000}
    answer = await telemetry.post("/v1/analytics/batch", json=big, headers=someone.auth)
    assert answer.status_code == 422
    assert [e["pointer"] for e in answer.json()["errors"]] == ["/body/batch/1"]

    many = await telemetry.post("/v1/analytics/batch", json=_track(501), headers=someone.auth)
    assert many.status_code == 422
    assert many.json()["errors"][0]["pointer"] == "/body/batch"

    huge = _track(20, properties={"blob": "y" * 26_000})
    too_large = await telemetry.post("/v1/analytics/batch", json=huge, headers=someone.auth)
    assert too_large.status_code == 413

    wide = _track(1, properties={"big": 2**70, "small": -(2**65)})  # JSON allows them
    answer = await telemetry.post("/v1/analytics/batch", json=wide, headers=someone.auth)
    assert answer.status_code == 202, answer.text
    await telemetry_app.buffer.flush()
    (stored,) = _rows(clickhouse_store, "analytics_events", someone.organization_id)
    assert str(2**70) in stored["properties"]  # the integer, digit for digit

    extra = _track(1, user_id="someone-else")
    refused = await telemetry.post("/v1/analytics/batch", json=extra, headers=someone.auth)
    assert refused.status_code == 422  # the actor comes from the token, never the body


async def test_ingest_needs_core_tokens_and_the_right_caller(
    telemetry: httpx.AsyncClient, app: Any, member: Callable[[str], Person]
) -> None:
    assert (await telemetry.post("/v1/analytics/batch", json=_track())).status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}
    assert (
        await telemetry.post("/v1/analytics/batch", json=_track(), headers=forged)
    ).status_code == 401
    someone = member("admin")
    # A person may not call the relay's ingest; the relay's credential is no person.
    events = {"events": [_audit_event(someone.organization_id)]}
    assert (
        await telemetry.post("/v1/audit/events", json=events, headers=someone.auth)
    ).status_code == 403
    assert (
        await telemetry.post("/v1/analytics/batch", json=_track(), headers=SERVICE)
    ).status_code == 403
    wrong = {"Authorization": "Bearer " + "x" * len(SERVICE_TOKEN)}
    assert (await telemetry.post("/v1/audit/events", json=events, headers=wrong)).status_code == 401
    # A token core issued for no organization acts in none: nothing to send analytics for.
    lone = app.dependencies.tokens.issue(subject=str(uuid.uuid4()), organization_id=None, role=None)
    answer = await telemetry.post(
        "/v1/analytics/batch", json=_track(), headers={"Authorization": f"Bearer {lone}"}
    )
    assert answer.status_code == 403


def _audit_event(organization_id: uuid.UUID | None, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "organization_id": str(organization_id) if organization_id else None,
        "actor_user_id": str(uuid.uuid4()),
        "actor_api_key_id": None,
        "impersonator_id": None,
        "action": "patient.updated",
        "entity_type": "patient",
        "entity_id": str(uuid.uuid4()),
        "changed_fields": ["phone"],
        "request_id": "req-1",
        **overrides,
    }


async def test_the_same_audit_batch_twice_is_stored_once(
    telemetry: httpx.AsyncClient,
    clickhouse_store: ClickHouse,
    stack: devstack.EmbeddedStack,
    new_org: Callable[..., uuid.UUID],
) -> None:
    org = new_org()
    events = [_audit_event(org) for _ in range(5)]
    actor = events[0]["actor_user_id"]
    for _ in range(2):
        answer = await telemetry.post("/v1/audit/events", json={"events": events}, headers=SERVICE)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": 5, "rejected": []}
    with psycopg.connect(stack.telemetry_database_admin_url) as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT actor_hash), bool_or(actor_hash = %s)"
            " FROM events.audit_events WHERE organization_id = %s",
            (actor, org),
        ).fetchone()
    assert stored == (5, 5, False)
    # Answered only once ClickHouse holds them too: no flush needed to see them.
    raw = clickhouse_store.client.query(
        "SELECT count() FROM telemetry.audit_events WHERE organization_id = {org:UUID}",
        parameters={"org": org},
    )
    assert raw.result_rows[0][0] == 5


async def test_core_relay_delivers_its_events_to_telemetry(
    app: Any,
    telemetry_app: TelemetryApp,
    clinic: Callable[..., Any],
    client: httpx.AsyncClient,
    stack: devstack.EmbeddedStack,
) -> None:
    """Core's TelemetryForwarder, pointed at the telemetry ingest: a change made in core is
    stored in telemetry, by event id, with its actor hashed."""
    place = clinic()
    changed = await client.patch(
        f"/v1/patients/{place.patient_id}",
        json={"notes": "Week 2."},
        headers={**place.staff.auth, "If-Match": "*"},
    )
    assert changed.status_code == 200, changed.text
    await forward_to_telemetry(app, telemetry_app)
    with psycopg.connect(stack.telemetry_database_admin_url) as conn:
        found = conn.execute(
            "SELECT action, actor_type, actor_hash FROM events.audit_events"
            " WHERE organization_id = %s AND entity_id = %s",
            (place.org, place.patient_id),
        ).fetchall()
    assert ("patient.updated", "user") in {(action, kind) for action, kind, _ in found}
    assert all(h and str(place.staff.user_id) not in h for _, _, h in found)


async def test_an_event_telemetry_refuses_is_dropped_alone_and_its_batch_goes_through(
    *,
    app: Any,
    telemetry_app: TelemetryApp,
    clinic: Callable[..., Any],
    client: httpx.AsyncClient,
    stack: devstack.EmbeddedStack,
    admin_conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    """An outbox event telemetry's contract refuses (422) would be refused forever: the batch
    is split until it stands alone, it is logged and dropped, and the events that shared its
    batch arrive instead of waiting behind it."""
    place = clinic()
    for week in range(3):
        changed = await client.patch(
            f"/v1/patients/{place.patient_id}",
            json={"notes": f"Week {week}."},
            headers={**place.staff.auth, "If-Match": "*"},
        )
        assert changed.status_code == 200, changed.text
    broken = admin_conn.execute(
        "INSERT INTO audit.outbox (organization_id, topic, payload)"
        " VALUES (%s, 'audit.event', '{\"not\": \"an audit event\"}') RETURNING id",
        (place.org,),
    ).fetchone()
    assert broken is not None
    with capture_logs() as logs:
        await forward_to_telemetry(app, telemetry_app)
    refused = [entry for entry in logs if entry["event"] == "telemetry_event_refused"]
    assert len(refused) == 1
    left = admin_conn.execute(
        "SELECT count(*) FROM audit.outbox WHERE forwarded_at IS NULL AND organization_id = %s",
        (place.org,),
    ).fetchone()
    assert left == (0,)
    with psycopg.connect(stack.telemetry_database_admin_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM events.audit_events"
            " WHERE organization_id = %s AND entity_id = %s AND action = 'patient.updated'",
            (place.org, place.patient_id),
        ).fetchone()
    assert found == (3,)


async def test_consents_stay_inside_their_organization_and_person(
    telemetry: httpx.AsyncClient, new_org: Callable[..., uuid.UUID], person: Callable[..., Person]
) -> None:
    org, other_org = new_org(), new_org()
    alice, bob, admin = person(org, "patient"), person(org, "staff"), person(org, "admin")
    outsider = person(other_org, "admin")
    record = {"purpose": "pose_tracking", "granted": True, "notice_version": "v3"}
    assert (await telemetry.post("/v1/consents", json=record, headers=alice.auth)).is_success

    def subjects(answer: httpx.Response) -> set[str]:
        assert answer.status_code == 200, answer.text
        return {row["subject_id"] for row in answer.json()["data"]}

    assert subjects(await telemetry.get("/v1/consents", headers=alice.auth)) == {str(alice.user_id)}
    assert subjects(await telemetry.get("/v1/consents", headers=bob.auth)) == set()
    assert subjects(await telemetry.get("/v1/consents", headers=admin.auth)) == {str(alice.user_id)}
    narrowed = await telemetry.get(
        "/v1/consents", params={"subject_id": str(alice.user_id)}, headers=outsider.auth
    )
    assert subjects(narrowed) == set()  # another organization's admin sees none of it


async def test_admins_opt_their_organization_out_of_analytics(
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org, other = new_org(), new_org()
    admin, staff, neighbour = person(org, "admin"), person(org, "staff"), person(other, "staff")
    shown = await telemetry.get("/v1/privacy/organization", headers=admin.auth)
    assert shown.json() == {"analytics_opt_out": False, "updated_at": None}
    opt_out = {"analytics_opt_out": True}
    assert (
        await telemetry.put("/v1/privacy/organization", json=opt_out, headers=staff.auth)
    ).status_code == 403
    changed = await telemetry.put("/v1/privacy/organization", json=opt_out, headers=admin.auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["analytics_opt_out"] is True
    for who in (staff, neighbour):
        answer = await telemetry.post("/v1/analytics/batch", json=_track(2), headers=who.auth)
        assert answer.json() == {"accepted": 2, "rejected": []}
    await telemetry_app.buffer.flush()
    assert _rows(clickhouse_store, "analytics_events", org) == []  # at once in this process
    assert len(_rows(clickhouse_store, "analytics_events", other)) == 2  # the neighbour's stay
