"""The scheduling worker: video rooms through Daily's REST API (an in-process fake of its
documented behaviour — a fake of the external service, not of our code) and reminder mail.

The suite turns the worker's background loop off; each test runs its rounds itself.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from support import Clinic, Inbox, book, day_at, rfc3339

from carebase.apps.core import CoreApp, create_app
from carebase.config import Settings
from carebase.integrations.video.daily import DailyVideo

API_KEY = "fake-daily-api-key-for-the-test-suite-0123456789abcdef"
DOMAIN = "carebase-test"


@dataclass
class DailyFake:
    """Daily's rooms API as documented: bearer auth, `{error, info}` bodies, 404 for a room
    that does not exist, 400 for a name that does, 429 when rate-limited."""

    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    failures: list[httpx.Response] = field(default_factory=list)
    down: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.calls.append((request.method, request.url.path))
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "authorization-header-error", "Bearer token is invalid")
        if self.failures:
            return self.failures.pop(0)
        path = request.url.path.removeprefix("/v1")
        if request.method == "GET" and path == "/":
            return httpx.Response(200, json={"domain_name": DOMAIN, "domain_id": "dom-123"})
        if request.method == "POST" and path == "/rooms":
            return self._create(json.loads(request.content))
        return self._room(request, path.removeprefix("/rooms/"))

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        name = body["name"]
        if name in self.rooms:
            return _error(400, "invalid-request-error", f"a room named {name} already exists")
        self.rooms[name] = {
            "name": name,
            "privacy": body.get("privacy", "public"),
            "url": f"https://{DOMAIN}.daily.co/{name}",
            "config": dict(body.get("properties", {})),
        }
        return httpx.Response(200, json=self.rooms[name])

    def _room(self, request: httpx.Request, name: str) -> httpx.Response:
        if name not in self.rooms:
            return _error(404, "not-found", f"room {name} was not found")
        if request.method == "POST":
            self.rooms[name]["config"].update(json.loads(request.content)["properties"])
            return httpx.Response(200, json=self.rooms[name])
        if request.method == "DELETE":
            del self.rooms[name]
            return httpx.Response(200, json={"deleted": True, "name": name})
        return _error(405, "invalid-request-error", "method not allowed")


def _error(status: int, error: str, info: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "info": info}, headers=headers)


@pytest.fixture(scope="module")
def daily() -> DailyFake:
    return DailyFake()


@pytest.fixture(scope="module")
async def video_app(settings: Settings, daily: DailyFake) -> AsyncIterator[CoreApp]:
    """The core service with `VIDEO_PROVIDER=daily`, its client talking to the fake."""
    provider = DailyVideo(
        api_key=API_KEY, api_url="https://api.daily.co/v1", transport=httpx.MockTransport(daily)
    )
    application = create_app(settings, overrides={"video": provider})
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="module")
async def video_client(video_app: CoreApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=video_app, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
        yield c


async def book_session(client: httpx.AsyncClient, c: Clinic, start: dt.datetime) -> dict[str, Any]:
    made = await book(client, c, start, video=True)
    assert made.status_code == 201, made.text
    return dict(made.json())


def make_due(admin_conn: psycopg.Connection[Any], appointment_id: str) -> None:
    admin_conn.execute(
        "UPDATE scheduling.video_tasks SET next_attempt_at = now()"
        " WHERE appointment_id = %s AND done_at IS NULL",
        (appointment_id,),
    )


def task_state(admin_conn: psycopg.Connection[Any], appointment_id: str) -> list[tuple[Any, ...]]:
    return admin_conn.execute(
        "SELECT action, attempts, done_at IS NOT NULL, last_error,"
        " next_attempt_at > now() + interval '1 second'"
        " FROM scheduling.video_tasks WHERE appointment_id = %s ORDER BY id",
        (appointment_id,),
    ).fetchall()


async def test_a_room_is_made_after_booking_even_when_daily_was_down(
    video_app: CoreApp,
    video_client: httpx.AsyncClient,
    daily: DailyFake,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    daily.down = True
    try:
        made = await book_session(video_client, c, day_at(2, 10))
        assert made["video"] == {
            "enabled": True,
            "status": "pending",
            "room_url": None,
            "expires_at": None,
        }
        await video_app.scheduling.run_once()
    finally:
        daily.down = False
    [(action, attempts, done, error, later)] = task_state(admin_conn, made["id"])
    assert (action, attempts, done, later) == ("create", 1, False, True)
    assert "unreachable" in error
    still = await video_client.get(f"/v1/appointments/{made['id']}", headers=c.staff.auth)
    assert still.json()["video"]["status"] == "pending"

    make_due(admin_conn, made["id"])
    await video_app.scheduling.run_once()
    ready = (await video_client.get(f"/v1/appointments/{made['id']}", headers=c.staff.auth)).json()
    room = daily.rooms[f"cb-{made['uid']}"]
    assert ready["video"]["status"] == "ready"
    assert ready["video"]["room_url"] == room["url"]
    ends = dt.datetime.fromisoformat(made["ends_at"])
    assert dt.datetime.fromisoformat(ready["video"]["expires_at"]) == ends + dt.timedelta(
        minutes=30
    )
    assert room["privacy"] == "private"
    assert room["config"] == {
        "nbf": int((day_at(2, 10) - dt.timedelta(minutes=15)).timestamp()),
        "exp": int((ends + dt.timedelta(minutes=30)).timestamp()),
        "eject_at_room_exp": True,
    }

    # Join tokens: this room only, the specialist owns it, none outlives the room.
    room_expires = dt.datetime.fromisoformat(ready["video"]["expires_at"])
    path = f"/v1/appointments/{made['id']}/video-token"
    for who, owner in ((c.patient, False), (c.specialist, True)):
        granted = await video_client.post(path, headers=who.auth)
        assert granted.status_code == 200, granted.text
        assert granted.headers["cache-control"] == "no-store"
        body = granted.json()
        assert body["is_owner"] is owner
        assert dt.datetime.fromisoformat(body["expires_at"]) <= room_expires
        claims = jwt.decode(body["token"], API_KEY, algorithms=["HS256"])
        assert claims["r"] == f"cb-{made['uid']}"
        assert claims["o"] is owner
        assert claims["d"] == "dom-123"
        assert claims["exp"] <= room_expires.timestamp()
    assert (await video_client.post(path, headers=c.staff.auth)).status_code == 403
    assert (await video_client.post(path, headers=c.admin.auth)).status_code == 403


async def test_a_cancelled_session_loses_its_room_and_a_gone_room_counts_as_deleted(
    video_app: CoreApp,
    video_client: httpx.AsyncClient,
    daily: DailyFake,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    first = await book_session(video_client, c, day_at(2, 10))
    second = await book_session(video_client, c, day_at(2, 12))
    await video_app.scheduling.run_once()
    assert {f"cb-{first['uid']}", f"cb-{second['uid']}"} <= set(daily.rooms)
    for made in (first, second):
        cancelled = await video_client.post(
            f"/v1/appointments/{made['id']}/cancel", headers=c.staff.auth, json={"reason": "x"}
        )
        assert cancelled.json()["video"]["status"] == "none"
    del daily.rooms[f"cb-{second['uid']}"]  # someone removed it in Daily's dashboard
    await video_app.scheduling.run_once()
    assert f"cb-{first['uid']}" not in daily.rooms
    for made in (first, second):
        assert [row[:3] for row in task_state(admin_conn, made["id"])] == [
            ("create", 1, True),
            ("delete", 1, True),
        ]
    token = await video_client.post(
        f"/v1/appointments/{first['id']}/video-token", headers=c.patient.auth
    )
    assert token.status_code == 409


async def test_rate_limits_are_retried_after_the_wait_daily_asks_for(
    video_app: CoreApp,
    video_client: httpx.AsyncClient,
    daily: DailyFake,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    made = await book_session(video_client, c, day_at(3, 9))
    daily.failures.append(
        _error(429, "rate-limit-error", "Too many requests", **{"Retry-After": "30"})
    )
    await video_app.scheduling.run_once()
    [(_, attempts, done, error, _)] = task_state(admin_conn, made["id"])
    assert (attempts, done) == (1, False)
    assert "429" in error
    waits = admin_conn.execute(
        "SELECT next_attempt_at - now() FROM scheduling.video_tasks WHERE appointment_id = %s",
        (made["id"],),
    ).fetchone()
    assert waits is not None
    assert dt.timedelta(seconds=25) < waits[0] <= dt.timedelta(seconds=30)
    make_due(admin_conn, made["id"])
    await video_app.scheduling.run_once()
    ready = await video_client.get(f"/v1/appointments/{made['id']}", headers=c.staff.auth)
    assert ready.json()["video"]["status"] == "ready"


async def test_a_refusal_or_too_many_failures_mark_the_video_failed(
    video_app: CoreApp,
    video_client: httpx.AsyncClient,
    daily: DailyFake,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    refused = await book_session(video_client, c, day_at(4, 9))
    daily.failures.append(_error(400, "invalid-request-error", "exp must be in the future"))
    await video_app.scheduling.run_once()
    answer = await video_client.get(f"/v1/appointments/{refused['id']}", headers=c.staff.auth)
    assert answer.json()["video"]["status"] == "failed"

    worn_out = await book_session(video_client, c, day_at(4, 11))
    admin_conn.execute(
        "UPDATE scheduling.video_tasks SET attempts = 7 WHERE appointment_id = %s",
        (worn_out["id"],),
    )
    daily.failures.append(_error(503, "server-error", "unavailable"))
    await video_app.scheduling.run_once()
    answer = await video_client.get(f"/v1/appointments/{worn_out['id']}", headers=c.staff.auth)
    assert answer.json()["video"]["status"] == "failed"
    [(_, attempts, done, error, _)] = task_state(admin_conn, worn_out["id"])
    assert (attempts, done) == (8, True)
    assert "503" in error


async def test_a_rescheduled_session_keeps_its_room_at_the_new_time(
    video_app: CoreApp,
    video_client: httpx.AsyncClient,
    daily: DailyFake,
    clinic: Callable[..., Clinic],
) -> None:
    c = clinic()
    made = await book_session(video_client, c, day_at(5, 9))
    await video_app.scheduling.run_once()
    moved = await video_client.post(
        f"/v1/appointments/{made['id']}/reschedule",
        headers={**c.staff.auth, "If-Match": "*"},
        json={"starts_at": rfc3339(day_at(5, 15)), "reason": "Afternoon."},
    )
    assert moved.json()["video"]["status"] == "pending"  # no token for the old times
    token = await video_client.post(
        f"/v1/appointments/{made['id']}/video-token", headers=c.patient.auth
    )
    assert token.status_code == 409
    await video_app.scheduling.run_once()
    room = daily.rooms[f"cb-{made['uid']}"]
    assert room["config"]["nbf"] == int((day_at(5, 15) - dt.timedelta(minutes=15)).timestamp())
    after = await video_client.get(f"/v1/appointments/{made['id']}", headers=c.staff.auth)
    assert dt.datetime.fromisoformat(after.json()["video"]["expires_at"]) == day_at(5, 16, 30)


async def test_a_session_without_video_or_not_yet_ready_has_no_token(
    video_client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    plain = (await book(video_client, c, day_at(2, 8))).json()
    pending = await book_session(video_client, c, day_at(2, 9))
    for made in (plain, pending):
        refused = await video_client.post(
            f"/v1/appointments/{made['id']}/video-token", headers=c.patient.auth
        )
        assert refused.status_code == 409
    missing = await video_client.post(
        f"/v1/appointments/{uuid.uuid4()}/video-token", headers=c.patient.auth
    )
    assert missing.status_code == 404


# --- reminders ------------------------------------------------------------------------------


async def test_a_reminder_goes_out_once_at_the_organizations_lead_and_not_when_cancelled(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
    inbox: Inbox,
) -> None:
    c = clinic(zone="Europe/Bucharest")
    org = await client.get(f"/v1/organizations/{c.org}", headers=c.admin.auth)
    assert org.json()["reminder_lead_minutes"] == 1440
    changed = await client.patch(
        f"/v1/organizations/{c.org}",
        headers={**c.admin.auth, "If-Match": "*"},
        json={"reminder_lead_minutes": 120, "time_zone": "Europe/Bucharest"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["time_zone"] == "Europe/Bucharest"
    bad_zone = await client.patch(
        f"/v1/organizations/{c.org}",
        headers={**c.admin.auth, "If-Match": "*"},
        json={"time_zone": "Europe/Atlantis"},
    )
    assert bad_zone.status_code == 422
    assert bad_zone.json()["errors"][0]["pointer"] == "/body/time_zone"

    kept = (await book(client, c, day_at(10, 10))).json()
    dropped = (await book(client, c, day_at(10, 14))).json()
    due = admin_conn.execute(
        "SELECT appointment_id::text, due_at FROM scheduling.reminders"
        " WHERE organization_id = %s ORDER BY due_at",
        (c.org,),
    ).fetchall()
    assert due == [
        (kept["id"], day_at(10, 8)),
        (dropped["id"], day_at(10, 12)),
    ]
    await client.post(
        f"/v1/appointments/{dropped['id']}/cancel", headers=c.staff.auth, json={"reason": "x"}
    )
    admin_conn.execute(
        "UPDATE scheduling.reminders SET due_at = now() - interval '1 second'"
        " WHERE organization_id = %s",
        (c.org,),
    )
    await app.scheduling.run_once()
    await app.scheduling.run_once()
    queued = admin_conn.execute(
        "SELECT subject, body FROM identity.email_outbox WHERE recipient = %s", (c.patient.email,)
    ).fetchall()
    assert len(queued) == 1
    subject, body = queued[0]
    assert "Clinic" in subject
    assert "12:00 (Europe/Bucharest)" in body  # 10:00 UTC in winter
    assert "Knee" not in body  # no clinical detail in a mail
    await inbox.wait_for(app.relay, c.patient.email)

    no_lead = clinic()
    admin_conn.execute(
        "UPDATE platform.organizations SET reminder_lead_minutes = 0 WHERE id = %s", (no_lead.org,)
    )
    await book(client, no_lead, day_at(3, 10))
    none = admin_conn.execute(
        "SELECT count(*) FROM scheduling.reminders WHERE organization_id = %s", (no_lead.org,)
    ).fetchone()
    assert none == (0,)


async def test_expired_holds_leave_the_calendar(
    app: CoreApp,
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    fresh = (await book(client, c, day_at(2, 9), hold=True)).json()
    stale = (await book(client, c, day_at(2, 11), hold=True)).json()
    admin_conn.execute(
        "UPDATE scheduling.appointments SET hold_expires_at = now() - interval '2 minutes'"
        " WHERE id = %s",
        (stale["id"],),
    )
    await app.scheduling.run_once()
    assert (
        await client.get(f"/v1/appointments/{stale['id']}", headers=c.staff.auth)
    ).status_code == 404
    kept = await client.get(f"/v1/appointments/{fresh['id']}", headers=c.staff.auth)
    assert kept.json()["status"] == "held"
