"""The demo data `make dev` seeds: idempotent, and a calendar that shows every status."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from argon2 import PasswordHasher

from carebase.apps.core import CoreApp
from carebase.operations import devstack, seed
from carebase.services import appointment_states as states


async def test_demo_clinics_get_a_calendar_in_every_status(
    stack: devstack.EmbeddedStack,
    app: CoreApp,
    client: httpx.AsyncClient,
    admin_conn: psycopg.Connection[Any],
) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=4)
    keyring = app.dependencies.sealer.keyring
    stored: dict[str, tuple[bytes, str]] = {}
    for _ in range(2):  # the second run finds everything in place
        accounts = seed.seed_demo(
            stack.database_admin_url,
            password="demo-password-for-tests",
            hasher=hasher,
            keyring=keyring,
            patients_per_clinic=12,
            store_blob=lambda key, data, media: stored.setdefault(key, (data, media)),
        )
    files = admin_conn.execute(
        "SELECT a.storage_key, a.size_bytes, a.media_type FROM attachments.attachments a"
        " JOIN platform.organizations o ON o.id = a.organization_id"
        " WHERE o.slug IN ('north-clinic', 'south-clinic')"
    ).fetchall()
    assert len(files) == 2  # a referral letter per clinic, made once
    for key, size, media_type in files:
        assert stored[key] == (stored[key][0], media_type)
        assert len(stored[key][0]) == size
    rows = admin_conn.execute(
        "SELECT o.slug, o.time_zone, a.status, count(*) FROM scheduling.appointments a"
        " JOIN platform.organizations o ON o.id = a.organization_id"
        " WHERE o.slug IN ('north-clinic', 'south-clinic') GROUP BY 1, 2, 3"
    ).fetchall()
    by_clinic: dict[str, set[str]] = {}
    for slug, zone, status, _count in rows:
        by_clinic.setdefault(slug, set()).add(status)
        assert zone in {"Europe/Zagreb", "Europe/Bucharest"}
    for statuses in by_clinic.values():
        assert {"done", "no_show", "cancelled", "entered_in_error", "upcoming", "confirmed"} <= (
            statuses
        )
        assert statuses <= set(states.NEXT)
    templates = admin_conn.execute(
        "SELECT count(*) FROM scheduling.appointment_templates t"
        " JOIN platform.organizations o ON o.id = t.organization_id WHERE o.slug = 'north-clinic'"
    ).fetchone()
    assert templates == (3,)

    patient = next(a for a in accounts if a.role == "patient" and a.organization == "north-clinic")
    login = await client.post(
        "/v1/auth/login", json={"email": patient.email, "password": "demo-password-for-tests"}
    )
    assert login.status_code == 200, login.text
    mine = await client.get(
        "/v1/appointments",
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert mine.status_code == 200
    assert mine.json()["meta"]["total"] == 3

    # Forms: both templates published, forms in every state, the patient's own signed ones
    # verify against the hashes the seed computed the way the API does.
    statuses = admin_conn.execute(
        "SELECT DISTINCT f.status FROM forms.forms f"
        " JOIN platform.organizations o ON o.id = f.organization_id WHERE o.slug = 'south-clinic'"
    ).fetchall()
    assert {s[0] for s in statuses} == {"draft", "in_progress", "completed", "signed"}
    patient_auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    forms = await client.get("/v1/forms?status=signed", headers=patient_auth)
    assert sorted(f["title"] for f in forms.json()["data"]) == [
        "Rehabilitation intake",
        "Tele-rehabilitation consent",
    ]
    for form in forms.json()["data"]:
        verified = await client.get(f"/v1/forms/{form['id']}/verify", headers=patient_auth)
        assert verified.json()["valid"] is True, verified.text

    for kind in ("reports", "prescriptions"):
        listed = await client.get(f"/v1/{kind}", headers=patient_auth)
        assert [d["status"] for d in listed.json()["data"]] == ["final"]
        pdf = await client.get(
            f"/v1/{kind}/{listed.json()['data'][0]['id']}/pdf", headers=patient_auth
        )
        assert pdf.status_code == 200
        assert pdf.content.startswith(b"%PDF-")

    # Segments: the seed's evaluation is the API's own (evaluating again changes nothing).
    admin = next(a for a in accounts if a.role == "admin" and a.organization == "north-clinic")
    login = await client.post(
        "/v1/auth/login", json={"email": admin.email, "password": "demo-password-for-tests"}
    )
    admin_auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    segments = {
        s["kind"]: s for s in (await client.get("/v1/segments", headers=admin_auth)).json()["data"]
    }
    assert segments["static"]["member_count"] == 5
    assert segments["dynamic"]["member_count"] > 0
    again = await client.post(
        f"/v1/segments/{segments['dynamic']['id']}/evaluate", headers=admin_auth
    )
    assert (again.json()["added"], again.json()["removed"]) == (0, 0), again.text

    await _demo_broadcasts(client, admin_auth)


async def _demo_broadcasts(client: httpx.AsyncClient, admin_auth: dict[str, str]) -> None:
    """Templates, last week's sent campaign with its log, and a draft ready to send."""
    templates = (await client.get("/v1/broadcasts/templates", headers=admin_auth)).json()["data"]
    assert {t["channel"] for t in templates} == {"email", "sms"}
    campaigns = {
        c["status"]: c
        for c in (await client.get("/v1/broadcasts/campaigns", headers=admin_auth)).json()["data"]
    }
    assert set(campaigns) == {"sent", "draft"}
    stats = await client.get(
        f"/v1/broadcasts/campaigns/{campaigns['sent']['id']}/stats", headers=admin_auth
    )
    assert stats.json()["audience"] == 5
    assert stats.json()["messages"]["sent"] == 5, stats.text
    preview = await client.post(
        f"/v1/broadcasts/templates/{campaigns['sent']['template_id']}/preview",
        headers=admin_auth,
        json={},
    )
    assert "{{" not in preview.json()["text"]
