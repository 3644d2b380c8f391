"""Patients over HTTP against the real engines: records, ETags, lost updates, a patient's own
view (row-level security), onboarding, impersonation, profiles and lookups."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import psycopg
from support import Inbox, Person

from carebase.apps.core import CoreApp
from carebase.principal import Principal

ANA = {
    "given_name": "Ana",
    "family_name": "Kovač",
    "birth_date": "1984-03-12",
    "national_id": "840312-1234",
    "phone": "+385 91 555 0101",
    "address": "Ilica 1, Zagreb",
    "notes": "Post-operative knee rehabilitation.",
}


async def _create(client: httpx.AsyncClient, who: Person, **extra: object) -> httpx.Response:
    answer = await client.post("/v1/patients", headers=who.auth, json={**ANA, **extra})
    assert answer.status_code == 201, answer.text
    return answer


async def test_create_read_update_delete_with_etags(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    staff = person(new_org(), "staff")
    created = await _create(client, staff)
    body, tag = created.json(), created.headers["ETag"]
    assert created.headers["Location"] == f"/v1/patients/{body['id']}"
    assert {k: body[k] for k in ANA} == ANA
    assert tag == '"1"'
    url = f"/v1/patients/{body['id']}"

    read = await client.get(url, headers=staff.auth)
    assert read.json() == body
    assert read.headers["ETag"] == tag
    cached = await client.get(url, headers={**staff.auth, "If-None-Match": tag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["ETag"] == tag

    missing_tag = await client.patch(url, headers=staff.auth, json={"phone": "+385 1 000"})
    assert missing_tag.status_code == 428
    changed = await client.patch(
        url, headers={**staff.auth, "If-Match": tag}, json={"phone": "+385 1 000", "notes": None}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["phone"] == "+385 1 000"
    assert changed.json()["notes"] is None
    assert changed.headers["ETag"] == '"2"'
    stale = await client.patch(url, headers={**staff.auth, "If-Match": tag}, json={"phone": "1234"})
    assert stale.status_code == 412
    assert (await client.get(url, headers={**staff.auth, "If-None-Match": tag})).status_code == 200

    assert (await client.delete(url, headers={**staff.auth, "If-Match": tag})).status_code == 412
    gone = await client.delete(url, headers={**staff.auth, "If-Match": '"2"'})
    assert gone.status_code == 204
    assert (await client.get(url, headers=staff.auth)).status_code == 404


async def test_lost_update_is_impossible(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    """50 trials: two writers with the same ETag at once, exactly one wins, one gets 412."""
    staff = person(new_org(), "staff")
    url = f"/v1/patients/{(await _create(client, staff)).json()['id']}"
    for trial in range(50):
        tag = (await client.get(url, headers=staff.auth)).headers["ETag"]
        answers = await asyncio.gather(
            *(
                client.patch(
                    url, headers={**staff.auth, "If-Match": tag}, json={"notes": f"{trial}-{who}"}
                )
                for who in ("a", "b")
            )
        )
        assert sorted(a.status_code for a in answers) == [200, 412], [a.text for a in answers]


async def test_a_patient_sees_and_edits_only_their_own_record(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    org = new_org()
    staff = person(org, "staff")
    me, other = person(org, "patient"), person(org, "patient")
    mine = (await _create(client, staff, email=me.email)).json()
    theirs = (await _create(client, staff, national_id="OTHER-1", email=other.email)).json()
    for patient, account in ((mine, me), (theirs, other)):
        admin_conn.execute(
            "UPDATE patients.patients SET user_id = %s WHERE id = %s",
            (account.user_id, patient["id"]),
        )

    assert (await client.get(f"/v1/patients/{mine['id']}", headers=me.auth)).status_code == 200
    foreign = await client.get(f"/v1/patients/{theirs['id']}", headers=me.auth)
    nowhere = await client.get(f"/v1/patients/{uuid.uuid4()}", headers=me.auth)
    assert foreign.status_code == 404
    assert foreign.json()["detail"] == nowhere.json()["detail"]
    listed = (await client.get("/v1/patients", headers=me.auth)).json()
    assert [p["id"] for p in listed["data"]] == [mine["id"]]
    assert listed["meta"]["total"] == 1
    edit = await client.patch(
        f"/v1/patients/{theirs['id']}", headers={**me.auth, "If-Match": "*"}, json={"notes": "x"}
    )
    assert edit.status_code == 404
    own = await client.patch(
        f"/v1/patients/{mine['id']}", headers={**me.auth, "If-Match": "*"}, json={"phone": "555 1"}
    )
    assert own.status_code == 200
    status = await client.patch(
        f"/v1/patients/{mine['id']}",
        headers={**me.auth, "If-Match": "*"},
        json={"status": "archived"},
    )
    assert status.status_code == 403
    create = await client.post("/v1/patients", headers=me.auth, json=ANA)
    assert create.status_code == 403


async def test_row_level_security_alone_limits_a_patient(
    app: CoreApp,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    """Not only the code: the database itself shows a patient their own row only."""
    org = new_org()
    me = person(org, "patient")
    for given, user in (("Me", me.user_id), ("Other", None)):
        admin_conn.execute(
            "INSERT INTO patients.patients (organization_id, given_name, family_name, user_id)"
            " VALUES (%s, %s, 'X', %s)",
            (org, given, user),
        )
    principal = Principal(user_id=me.user_id, organization_id=org, role="patient")
    async with app.dependencies.database.transaction(principal) as q:
        seen = await q.fetch_value("SELECT array_agg(given_name) FROM patients.patients")
        changed = await q.execute("UPDATE patients.patients SET family_name = 'Y'")
        deleted = await q.execute("DELETE FROM patients.patients")
    assert seen == ["Me"]
    assert changed == 1
    assert deleted == 0


async def test_onboarding_creates_the_account_and_mails_an_invitation(
    client: httpx.AsyncClient,
    app: CoreApp,
    inbox: Inbox,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
) -> None:
    org = new_org("Onboarding Clinic")
    specialist = person(org, "specialist")
    email = f"p-{uuid.uuid4().hex[:10]}@example.com"
    answer = await client.post(
        "/v1/patients/onboard",
        headers=specialist.auth,
        json={"email": email, "given_name": "Iva", "family_name": "Horvat"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["user_id"]
    assert answer.json()["email"] == email
    await inbox.wait_for(app.relay, email)
    token = inbox.link_token(email)
    accepted = await client.post(
        "/v1/auth/reset-password", json={"token": token, "password": "a-long-patient-passphrase"}
    )
    assert accepted.status_code in (200, 204), accepted.text
    login = await client.post(
        "/v1/auth/login",
        json={"email": email, "password": "a-long-patient-passphrase", "organization_id": str(org)},
    )
    assert login.status_code == 200, login.text
    own = await client.get(
        f"/v1/patients/{answer.json()['id']}",
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert own.status_code == 200
    # Someone who already works there cannot be onboarded as a patient.
    clash = await client.post(
        "/v1/patients/onboard",
        headers=specialist.auth,
        json={"email": specialist.email, "given_name": "S", "family_name": "P"},
    )
    assert clash.status_code == 409


async def test_impersonation_is_short_marked_and_audited(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    org = new_org()
    admin, patient = person(org, "admin"), person(org, "patient")
    record = (await _create(client, admin)).json()
    url = f"/v1/patients/{record['id']}"
    no_account = await client.post(f"{url}/impersonate", headers=admin.auth)
    assert no_account.status_code == 409
    admin_conn.execute(
        "UPDATE patients.patients SET user_id = %s WHERE id = %s", (patient.user_id, record["id"])
    )
    granted = await client.post(f"{url}/impersonate", headers=admin.auth)
    assert granted.status_code == 200, granted.text
    assert granted.headers["Cache-Control"] == "no-store"
    assert granted.json()["expires_in"] <= 900
    acting = {"Authorization": f"Bearer {granted.json()['access_token']}"}
    changed = await client.patch(url, headers={**acting, "If-Match": "*"}, json={"phone": "555 2"})
    assert changed.status_code == 200
    again = await client.post(f"{url}/impersonate", headers=acting)
    assert again.status_code == 403
    rows = admin_conn.execute(
        "SELECT action, actor_user_id, impersonator_id FROM audit.events"
        " WHERE entity_id = %s ORDER BY occurred_at",
        (record["id"],),
    ).fetchall()
    assert rows[-2:] == [
        ("patient.impersonated", admin.user_id, None),
        ("patient.updated", patient.user_id, admin.user_id),
    ]


async def test_lookup_by_blind_index_and_name_search(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    staff = person(new_org(), "staff")
    ana = (await _create(client, staff)).json()
    await _create(
        client, staff, given_name="Marko", family_name="Babić", national_id="X-9", phone="01 234"
    )
    by_id = await client.get(
        "/v1/patients", headers=staff.auth, params={"national_id": "840312 1234"}
    )
    assert [p["id"] for p in by_id.json()["data"]] == [ana["id"]]
    by_phone = await client.get(
        "/v1/patients", headers=staff.auth, params={"phone": "+38591 5550101"}
    )
    assert [p["id"] for p in by_phone.json()["data"]] == [ana["id"]]
    by_name = await client.get("/v1/patients", headers=staff.auth, params={"q": "kov"})
    assert [p["family_name"] for p in by_name.json()["data"]] == ["Kovač"]
    ordered = await client.get("/v1/patients", headers=staff.auth, params={"sort": "-name"})
    assert [p["family_name"] for p in ordered.json()["data"]] == ["Kovač", "Babić"]
    assert "national_id" not in ordered.json()["data"][0]  # summaries carry no identifiers
    duplicate = await client.post(
        "/v1/patients", headers=staff.auth, json={**ANA, "national_id": "8403121234"}
    )
    assert duplicate.status_code == 409


async def test_bad_input_gets_pointers(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    staff = person(new_org(), "staff")
    future = await client.post(
        "/v1/patients", headers=staff.auth, json={**ANA, "birth_date": "2999-01-01"}
    )
    assert future.status_code == 422
    assert [e["pointer"] for e in future.json()["errors"]] == ["/body/birth_date"]
    assert (
        "2999-01-01" not in future.text
    )  # never echoed (the date, not digits a request id may hold)
    empty = await client.post("/v1/patients", headers=staff.auth, json={"given_name": "A"})
    assert empty.status_code == 422
    assert "/body/family_name" in {e["pointer"] for e in empty.json()["errors"]}
