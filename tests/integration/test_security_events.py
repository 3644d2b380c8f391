"""Security events: core records refusals worth an operator's eye, its relay forwards them to
telemetry, and an organization's admins read theirs there (actors hashed, addresses cut)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from conftest import SERVICE_TOKEN, forward_to_telemetry
from support import PASSWORD, Person

from carebase.apps.core import CoreApp
from carebase.apps.telemetry import TelemetryApp
from carebase.operations import devstack


def _outbox(conn: psycopg.Connection[Any], kind: str, **where: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT payload FROM audit.outbox WHERE topic = 'security.event'"
        " AND payload->>'kind' = %s ORDER BY id",
        (kind,),
    ).fetchall()
    found = [row[0] for row in rows]
    return [p for p in found if all(str(p.get(k)) == v for k, v in where.items())]


async def test_refusals_become_security_events_an_admin_reads_in_telemetry(
    app: CoreApp,
    telemetry_app: TelemetryApp,
    anon: httpx.AsyncClient,
    telemetry: httpx.AsyncClient,
    admin_conn: psycopg.Connection[tuple[object, ...]],
    *,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org = new_org()
    staff, admin = person(org, "staff"), person(org, "admin")
    outsider = person(new_org(), "admin")
    # A permission denial (twice: recorded once a minute per caller and operation) and a
    # failed sign-in.
    for _ in range(2):
        denied = await anon.get("/v1/audit-log", headers=staff.auth)
        assert denied.status_code == 403
    failed = await anon.post(
        "/v1/auth/login", json={"email": staff.email, "password": PASSWORD + "-wrong"}
    )
    assert failed.status_code == 401
    await app.security.flush()

    denials = _outbox(admin_conn, "permission_denied", actor_user_id=str(staff.user_id))
    assert len(denials) == 1
    assert denials[0]["detail"] == {"operation": "listAuditEvents", "role": "staff"}
    logins = _outbox(admin_conn, "login_failed", actor_user_id=str(staff.user_id))
    assert [p["detail"] for p in logins] == [{"reason": "wrong_password"}]
    assert PASSWORD not in str(logins)
    assert staff.email not in str(logins)

    await forward_to_telemetry(app, telemetry_app)
    seen = await telemetry.get("/v1/security/events", headers=admin.auth)
    assert seen.status_code == 200, seen.text
    events = seen.json()["data"]
    assert [e["kind"] for e in events] == ["permission_denied"]  # sign-ins have no organization
    (event,) = events
    assert event["detail"] == {"operation": "listAuditEvents", "role": "staff"}
    assert event["actor"]
    assert str(staff.user_id) not in event["actor"]
    client_ip = denials[0]["ip"]
    assert event["ip_prefix"] == client_ip.rsplit(".", 1)[0] + ".0"
    narrowed = await telemetry.get(
        "/v1/security/events", params={"kind": "rate_limited"}, headers=admin.auth
    )
    assert narrowed.json()["data"] == []
    assert (await telemetry.get("/v1/security/events", headers=staff.auth)).status_code == 403
    other = await telemetry.get("/v1/security/events", headers=outsider.auth)
    assert other.json()["data"] == []


async def test_security_ingest_is_idempotent_and_for_the_relay_only(
    telemetry: httpx.AsyncClient,
    stack: devstack.EmbeddedStack,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    org = new_org()
    admin = person(org, "admin")
    event = {
        "event_id": str(uuid.uuid4()),
        "kind": "webhook_target_blocked",
        "occurred_at": "2026-11-30T09:00:00+00:00",
        "organization_id": str(org),
        "ip": "2001:db8:1234:5678::9",
        "detail": {"at": "delivery", "reason": "a private address"},
    }
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    for _ in range(2):
        answer = await telemetry.post(
            "/v1/security/events", json={"events": [event]}, headers=service
        )
        assert answer.json() == {"accepted": 1, "rejected": []}
    refused = await telemetry.post(
        "/v1/security/events", json={"events": [event]}, headers=admin.auth
    )
    assert refused.status_code == 403
    with psycopg.connect(stack.telemetry_database_admin_url) as conn:
        stored = conn.execute(
            "SELECT count(*), min(ip_prefix) FROM events.security_events"
            " WHERE organization_id = %s",
            (org,),
        ).fetchone()
    assert stored == (1, "2001:db8:1234::")


async def test_security_events_never_reach_webhooks(
    app: CoreApp,
    admin_conn: psycopg.Connection[tuple[object, ...]],
    new_org: Callable[..., uuid.UUID],
) -> None:
    """An endpoint subscribed to every event gets audit events, not security events."""
    org = new_org()
    admin_conn.execute(
        "INSERT INTO webhooks.endpoints (organization_id, url, secret_sealed, event_types)"
        " VALUES (%s, 'https://receiver.carebase.test/all', '\\x00', '{}')",
        (org,),
    )
    app.security.record("permission_denied", organization_id=org, detail={"operation": "x"})
    await app.security.flush()
    while await app.events.dispatcher.dispatch_once() > 0:
        pass
    deliveries = admin_conn.execute(
        "SELECT count(*) FROM webhooks.deliveries WHERE organization_id = %s", (org,)
    ).fetchone()
    assert deliveries == (0,)
