"""Accounts and sessions over HTTP, against real PostgreSQL, Redis and a real SMTP server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis
from support import PASSWORD, Inbox, Person, fresh_ip

from carebase.apps.core import CoreApp, create_app
from carebase.config import Settings

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a-brand-new-long-passphrase"


def new_email() -> str:
    return f"new-{uuid.uuid4().hex[:12]}@example.com"


def comparable(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("request_id", "instance")}


async def login(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": password, **extra})


async def test_register_verify_and_sign_in(
    anon: httpx.AsyncClient, app: CoreApp, inbox: Inbox
) -> None:
    email = new_email()
    registered = await anon.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Dana"}
    )
    assert registered.status_code == 202
    await inbox.wait_for(app.relay, email)
    token = inbox.link_token(email)

    signed_in = await login(anon, email)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.headers["cache-control"] == "no-store"
    auth = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    answer = await anon.get("/v1/me", headers=auth)
    assert answer.status_code == 200, answer.text
    me = answer.json()
    assert (me["email"], me["email_verified"], "organization" in me) == (email, False, False)

    confirmed = await anon.post("/v1/auth/verify-email/confirm", json={"token": token})
    assert confirmed.status_code == 204
    assert (await anon.get("/v1/me", headers=auth)).json()["email_verified"] is True
    again = await anon.post("/v1/auth/verify-email/confirm", json={"token": token})
    assert again.status_code == 422
    assert again.json()["errors"][0]["pointer"] == "/body/token"


async def test_registering_a_taken_address_answers_the_same_and_tells_its_owner(
    anon: httpx.AsyncClient,
    app: CoreApp,
    inbox: Inbox,
    person: Callable[..., Person],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    owner = person()
    fresh = await anon.post("/v1/auth/register", json={"email": new_email(), "password": PASSWORD})
    taken = await anon.post("/v1/auth/register", json={"email": owner.email, "password": PASSWORD})
    assert (taken.status_code, taken.json()) == (fresh.status_code, fresh.json())
    await inbox.wait_for(app.relay, owner.email)
    assert "already" in str(inbox.to(owner.email)[-1]["Subject"]) or "tried" in str(
        inbox.to(owner.email)[-1]["Subject"]
    )
    count = admin_conn.execute(
        "SELECT count(*) FROM identity.users WHERE email = %s", (owner.email,)
    ).fetchone()
    assert count == (1,)
    # The original password still works: the second registration changed nothing.
    assert (await login(anon, owner.email)).status_code == 200


async def test_password_policy_lists_the_problem_without_echoing_the_password(
    anon: httpx.AsyncClient,
) -> None:
    weak = "password1234"
    answer = await anon.post("/v1/auth/register", json={"email": new_email(), "password": weak})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/body/password"
    assert weak not in answer.text
    long = "x" * 2000
    answer = await anon.post("/v1/auth/register", json={"email": new_email(), "password": long})
    assert answer.status_code == 422
    assert long[:50] not in answer.text


async def test_wrong_password_and_unknown_address_answer_alike(
    anon: httpx.AsyncClient, person: Callable[..., Person]
) -> None:
    known = person()
    wrong = await login(anon, known.email, "not-the-password-at-all")
    unknown = await login(anon, new_email(), "not-the-password-at-all")
    assert wrong.status_code == unknown.status_code == 401
    assert comparable(wrong.json()) == comparable(unknown.json())
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]


@pytest.mark.parametrize("exists", [True, False])
async def test_repeated_failures_lock_sign_in_for_known_and_unknown_addresses(
    anon: httpx.AsyncClient, person: Callable[..., Person], settings: Settings, exists: bool
) -> None:
    email = person().email if exists else new_email()
    for _ in range(settings.login_max_failures):
        assert (await login(anon, email, "not-the-password-at-all")).status_code == 401
    locked = await login(anon, email)  # even the right password waits out the lock
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert locked.json()["code"] == "rate_limited"


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(
    anon: httpx.AsyncClient, person: Callable[..., Person]
) -> None:
    user = person()
    first = (await login(anon, user.email)).json()
    second = await anon.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()["refresh_token"]
    assert rotated != first["refresh_token"]

    stolen = await anon.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert stolen.status_code == 401
    # The thief's replay ended the legitimate session too.
    after = await anon.post("/v1/auth/refresh", json={"refresh_token": rotated})
    assert after.status_code == 401
    # Another sign-in is another family, untouched.
    other = (await login(anon, user.email)).json()
    assert (
        await anon.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    ).status_code == 200


async def test_logout_revokes_and_is_idempotent(
    anon: httpx.AsyncClient, person: Callable[..., Person]
) -> None:
    session = (await login(anon, person().email)).json()
    for _ in range(2):
        out = await anon.post("/v1/auth/logout", json={"refresh_token": session["refresh_token"]})
        assert out.status_code == 204
    refused = await anon.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert refused.status_code == 401


async def test_forgot_and_reset_password_ends_other_sessions(
    anon: httpx.AsyncClient, app: CoreApp, inbox: Inbox, person: Callable[..., Person]
) -> None:
    user = person()
    old_session = (await login(anon, user.email)).json()
    unknown = await anon.post("/v1/auth/forgot-password", json={"email": new_email()})
    known = await anon.post("/v1/auth/forgot-password", json={"email": user.email})
    assert (
        (unknown.status_code, unknown.json())
        == (known.status_code, known.json())
        == (
            202,
            known.json(),
        )
    )
    await inbox.wait_for(app.relay, user.email)
    token = inbox.link_token(user.email)

    weak = await anon.post("/v1/auth/reset-password", json={"token": token, "password": "short"})
    assert weak.status_code == 422  # refused, and the link still works:
    reset = await anon.post(
        "/v1/auth/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
    reused = await anon.post(
        "/v1/auth/reset-password", json={"token": token, "password": NEW_PASSWORD + "x"}
    )
    assert reused.status_code == 422

    assert (await login(anon, user.email)).status_code == 401
    assert (await login(anon, user.email, NEW_PASSWORD)).status_code == 200
    refresh = await anon.post(
        "/v1/auth/refresh", json={"refresh_token": old_session["refresh_token"]}
    )
    assert refresh.status_code == 401


async def test_me_is_versioned(client: httpx.AsyncClient, person: Callable[..., Person]) -> None:
    user = person()
    me = await client.get("/v1/me", headers=user.auth)
    assert me.status_code == 200
    assert me.headers["etag"] == '"1"'

    missing = await client.patch("/v1/me", headers=user.auth, json={"display_name": "D"})
    assert missing.status_code == 428
    stale = await client.patch(
        "/v1/me", headers={**user.auth, "If-Match": '"7"'}, json={"display_name": "D"}
    )
    assert stale.status_code == 412
    changed = await client.patch(
        "/v1/me",
        headers={**user.auth, "If-Match": me.headers["etag"]},
        json={"display_name": "Dana R.", "locale": "de-AT"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"'
    assert (changed.json()["display_name"], changed.json()["locale"]) == ("Dana R.", "de-AT")


async def test_sign_in_and_switch_between_organizations(
    anon: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    a, b, stranger = new_org("A"), new_org("B"), new_org("C")
    user = person(a, "staff")
    admin_conn.execute(
        "INSERT INTO identity.memberships (organization_id, user_id, role)"
        " VALUES (%s, %s, 'admin')",
        (b, user.user_id),
    )
    session = (await login(anon, user.email, organization_id=str(b))).json()
    auth = {"Authorization": f"Bearer {session['access_token']}"}
    me = (await anon.get("/v1/me", headers=auth)).json()
    assert (me["organization"]["id"], me["organization"]["role"]) == (str(b), "admin")

    switched = await anon.put(
        "/v1/me/switch-organization", headers=auth, json={"organization_id": str(a)}
    )
    assert switched.status_code == 200
    auth_a = {"Authorization": f"Bearer {switched.json()['access_token']}"}
    assert (await anon.get("/v1/me", headers=auth_a)).json()["organization"]["role"] == "staff"

    for other in (stranger, uuid.uuid4()):  # not a member, and no such organization: alike
        refused = await anon.put(
            "/v1/me/switch-organization", headers=auth, json={"organization_id": str(other)}
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["pointer"] == "/body/organization_id"
    refused = await login(anon, user.email, organization_id=str(stranger))
    assert refused.status_code == 422


async def test_a_removed_membership_stops_working_at_once(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    org = new_org()
    admin = person(org, "admin")
    path = f"/v1/organizations/{org}"
    assert (await client.get(path, headers=admin.auth)).status_code == 200
    admin_conn.execute("DELETE FROM identity.memberships WHERE user_id = %s", (admin.user_id,))
    # The token still names the organization and the role; the database no longer does.
    assert (await client.get(path, headers=admin.auth)).status_code == 403


async def test_sign_in_fails_closed_without_redis(
    settings: Settings, person: Callable[..., Person], tmp_path: Any
) -> None:
    user = person()
    dead = Redis.from_url(f"unix://{tmp_path}/no-redis.sock", socket_timeout=0.2)
    app = create_app(settings, overrides={"redis": dead})
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=(fresh_ip(), 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            answer = await login(c, user.email)
            me = await c.get("/v1/me", headers=user.auth)
    assert answer.status_code == 503
    assert "retry-after" in answer.headers
    assert me.status_code == 200  # ordinary operations fail open


async def test_a_nul_character_is_refused_before_it_reaches_postgresql(
    client: httpx.AsyncClient, person: Callable[..., Person]
) -> None:
    user = person()
    answer = await client.patch(
        "/v1/me", headers={**user.auth, "If-Match": '"1"'}, json={"display_name": "Da\x00na"}
    )
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {
            "pointer": "/body/display_name",
            "message": "Must not contain the NUL character.",
            "code": "nul",
        }
    ]
    assert (await client.get("/v1/me", headers=user.auth)).headers["etag"] == '"1"'
