"""Organizations, members and API keys over HTTP, against the real engines and SMTP server."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from support import PASSWORD, Inbox, Person

from carebase.apps.core import CoreApp

pytestmark = pytest.mark.integration


async def test_a_superadmin_creates_a_clinic_whose_invited_admin_signs_in(
    client: httpx.AsyncClient,
    anon: httpx.AsyncClient,
    app: CoreApp,
    inbox: Inbox,
    person: Callable[..., Person],
) -> None:
    operator = person(superadmin=True)
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    slug = f"clinic-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v1/organizations",
        headers=operator.auth,
        json={"name": "North Clinic", "slug": slug, "admin_email": admin_email},
    )
    assert created.status_code == 201, created.text
    org_id = created.json()["id"]
    assert created.headers["location"] == f"/v1/organizations/{org_id}"
    assert created.headers["etag"] == '"1"'

    again = await client.post(
        "/v1/organizations", headers=operator.auth, json={"name": "Copy", "slug": slug}
    )
    assert again.status_code == 409

    await inbox.wait_for(app.relay, admin_email)
    token = inbox.link_token(admin_email)
    accepted = await anon.post(
        "/v1/auth/reset-password", json={"token": token, "password": PASSWORD}
    )
    assert accepted.status_code == 204
    session = await anon.post("/v1/auth/login", json={"email": admin_email, "password": PASSWORD})
    assert session.status_code == 200
    auth = {"Authorization": f"Bearer {session.json()['access_token']}"}
    me = (await anon.get("/v1/me", headers=auth)).json()
    assert me["organization"] == {
        "id": org_id,
        "slug": slug,
        "name": "North Clinic",
        "role": "admin",
    }
    assert me["email_verified"] is True  # accepting the invitation proved the address
    mine = (await anon.get("/v1/organizations", headers=auth)).json()
    assert [o["slug"] for o in mine["data"]] == [slug]
    by_slug = await anon.get(f"/v1/organizations/by-slug/{slug}", headers=auth)
    assert by_slug.json()["id"] == org_id


async def test_members_are_added_listed_changed_and_removed(
    client: httpx.AsyncClient,
    app: CoreApp,
    inbox: Inbox,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
) -> None:
    org = new_org()
    admin = person(org, "admin")
    existing = person()  # has an account elsewhere
    base = f"/v1/organizations/{org}/members"

    added = await client.post(
        base, headers=admin.auth, json={"email": existing.email, "role": "specialist"}
    )
    assert added.status_code == 201, added.text
    assert added.json()["role"] == "specialist"
    duplicate = await client.post(
        base, headers=admin.auth, json={"email": existing.email, "role": "staff"}
    )
    assert duplicate.status_code == 409
    invited_email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    invited = await client.post(
        base, headers=admin.auth, json={"email": invited_email, "role": "staff"}
    )
    assert invited.status_code == 201
    await inbox.wait_for(app.relay, existing.email, invited_email)
    assert "added" in str(inbox.to(existing.email)[-1]["Subject"])
    assert "invited" in str(inbox.to(invited_email)[-1]["Subject"])

    page = (await client.get(f"{base}?page_size=2&page=1", headers=admin.auth)).json()
    assert page["meta"] == {"page": 1, "page_size": 2, "total": 3, "total_pages": 2}
    staff = (await client.get(f"{base}?role=staff", headers=admin.auth)).json()
    assert [m["email"] for m in staff["data"]] == [invited_email]

    member_path = f"{base}/{existing.user_id}"
    current = await client.get(member_path, headers=admin.auth)
    promoted = await client.patch(
        member_path,
        headers={**admin.auth, "If-Match": current.headers["etag"]},
        json={"role": "admin"},
    )
    assert promoted.status_code == 200
    assert promoted.headers["etag"] == '"2"'
    stale = await client.delete(member_path, headers={**admin.auth, "If-Match": '"1"'})
    assert stale.status_code == 412
    removed = await client.delete(member_path, headers={**admin.auth, "If-Match": '"2"'})
    assert removed.status_code == 204
    assert (await client.get(member_path, headers=admin.auth)).status_code == 404


async def test_the_last_admin_stays(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    org = new_org()
    admin = person(org, "admin")
    path = f"/v1/organizations/{org}/members/{admin.user_id}"
    demoted = await client.patch(
        path, headers={**admin.auth, "If-Match": "*"}, json={"role": "staff"}
    )
    assert demoted.status_code == 409
    removed = await client.delete(path, headers={**admin.auth, "If-Match": "*"})
    assert removed.status_code == 409


async def test_organization_rename_is_versioned(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    org = new_org()
    admin = person(org, "admin")
    path = f"/v1/organizations/{org}"
    renamed = await client.patch(
        path, headers={**admin.auth, "If-Match": '"1"'}, json={"name": "Renamed clinic"}
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Renamed clinic"
    stale = await client.patch(
        path, headers={**admin.auth, "If-Match": '"1"'}, json={"name": "Again"}
    )
    assert stale.status_code == 412
    missing = await client.patch(path, headers=admin.auth, json={"name": "Again"})
    assert missing.status_code == 428


async def test_api_keys_show_their_secret_once_and_stop_when_revoked(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    org = new_org()
    admin = person(org, "admin")
    base = f"/v1/organizations/{org}/api-keys"
    created = await client.post(base, headers=admin.auth, json={"name": "Billing", "role": "staff"})
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(body["prefix"] + "_")
    listed = (await client.get(base, headers=admin.auth)).json()
    assert "key" not in listed["data"][0]
    key = {"X-API-Key": body["key"]}
    assert (await client.get(f"/v1/organizations/{org}/members", headers=key)).status_code == 200
    # A staff key may read members but not manage keys.
    assert (await client.get(base, headers=key)).status_code == 403

    revoked = await client.delete(f"{base}/{body['id']}", headers=admin.auth)
    assert revoked.status_code == 204
    assert (await client.delete(f"{base}/{body['id']}", headers=admin.auth)).status_code == 204
    refused = await client.get(f"/v1/organizations/{org}/members", headers=key)
    assert refused.status_code == 401
    forged = {"X-API-Key": body["key"][:-4] + "AAAA"}
    assert (await client.get(f"/v1/organizations/{org}/members", headers=forged)).status_code == 401

    past = await client.post(
        base,
        headers=admin.auth,
        json={"name": "Old", "role": "staff", "expires_at": "2001-01-01T00:00:00Z"},
    )
    assert past.status_code == 422
    assert past.json()["errors"][0]["pointer"] == "/body/expires_at"
