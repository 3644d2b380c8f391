"""Reports and prescriptions against the real database: drafts, final documents the database
locks, amendments, withdrawal, sealed bodies, audited reads and a patient's own documents."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from support import Clinic, Person, book, day_at, pg_dump

from carebase.operations import devstack

REPORT = {"summary": "Knee flexion 110°; pain 3/10.", "plan": "Step-ups twice a day."}
ITEM = {
    "medication": "Ibuprofen 400 mg tablets",
    "dose": "1 tablet",
    "route": "oral",
    "frequency": "every 8 hours with food",
    "duration_days": 7,
    "quantity": 21,
}


async def visit(client: httpx.AsyncClient, c: Clinic) -> str:
    made = await book(client, c, day_at(2, 9))
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def write(
    client: httpx.AsyncClient,
    c: Clinic,
    appointment_id: str,
    kind: str = "reports",
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    made = await client.post(
        f"/v1/{kind}",
        headers=c.specialist.auth,
        json={
            "appointment_id": appointment_id,
            "patient_id": c.patient_id,
            "title": "Session report",
            "body": body or (REPORT if kind == "reports" else {"items": [ITEM]}),
        },
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_a_report_goes_from_draft_to_final_and_stays(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    appointment_id = await visit(client, c)
    canary = f"canary-{uuid.uuid4().hex}"
    report = await write(client, c, appointment_id, body={**REPORT, "findings": canary})
    assert report["status"] == "draft"
    assert report["content_sha256"] is None
    path = f"/v1/reports/{report['id']}"
    edited = await client.patch(
        path, headers={**c.specialist.auth, "If-Match": '"1"'}, json={"title": "Week 3"}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["body"]["findings"] == canary

    raw = admin_conn.execute(
        "SELECT body_sealed FROM documents.documents WHERE id = %s", (report["id"],)
    ).fetchone()
    assert raw is not None
    assert canary.encode() not in bytes(raw[0])

    final = await client.post(f"{path}/finalize", headers=c.specialist.auth)
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "final"
    assert len(final.json()["content_sha256"]) == 64
    assert final.json()["finalized_by"] == str(c.specialist.user_id)
    locked = await client.patch(
        path, headers={**c.specialist.auth, "If-Match": "*"}, json={"title": "Changed"}
    )
    assert locked.status_code == 409
    assert locked.json()["code"] == "form_locked"
    kept = await client.delete(path, headers={**c.admin.auth, "If-Match": "*"})
    assert kept.status_code == 409
    again = await client.post(f"{path}/finalize", headers=c.specialist.auth)
    assert again.status_code == 409
    with pytest.raises(psycopg.errors.RestrictViolation):
        admin_conn.execute(
            "UPDATE documents.documents SET title = 'owner edit' WHERE id = %s", (report["id"],)
        )
    with pytest.raises(psycopg.errors.RestrictViolation):
        admin_conn.execute("DELETE FROM documents.documents WHERE id = %s", (report["id"],))


async def test_a_document_belongs_to_its_appointments_patient(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    appointment_id = await visit(client, c)
    other = admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name)"
        " VALUES (%s, 'Ion', 'Rus') RETURNING id",
        (c.org,),
    ).fetchone()
    assert other is not None
    mismatch = await client.post(
        "/v1/reports",
        headers=c.specialist.auth,
        json={
            "appointment_id": appointment_id,
            "patient_id": str(other[0]),
            "title": "Wrong patient",
            "body": REPORT,
        },
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["pointer"] == "/body/patient_id"
    held = await book(client, c, day_at(3, 9), hold=True)
    on_hold = await client.post(
        "/v1/prescriptions",
        headers=c.specialist.auth,
        json={
            "appointment_id": held.json()["id"],
            "patient_id": c.patient_id,
            "title": "Too early",
            "body": {"items": [ITEM]},
        },
    )
    assert on_hold.status_code == 422
    assert on_hold.json()["errors"][0]["code"] == "held"
    too_many = await client.post(
        "/v1/prescriptions",
        headers=c.specialist.auth,
        json={
            "appointment_id": appointment_id,
            "patient_id": c.patient_id,
            "title": "Too long",
            "body": {"items": [ITEM] * 31},
        },
    )
    assert too_many.status_code in (413, 422)  # the 4 KiB test body limit may come first
    assert (
        await client.post(
            "/v1/prescriptions",
            headers=c.staff.auth,
            json={
                "appointment_id": appointment_id,
                "patient_id": c.patient_id,
                "title": "x",
                "body": {"items": [ITEM]},
            },
        )
    ).status_code == 403


async def test_corrections_amend_and_admins_withdraw(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    appointment_id = await visit(client, c)
    prescription = await write(client, c, appointment_id, "prescriptions")
    path = f"/v1/prescriptions/{prescription['id']}"
    early = await client.post(f"{path}/amend", headers=c.specialist.auth, json={"reason": "x"})
    assert early.status_code == 409  # a draft is edited, not amended
    await client.post(f"{path}/finalize", headers=c.specialist.auth)
    amended = await client.post(
        f"{path}/amend", headers=c.specialist.auth, json={"reason": "Dose for the adult form."}
    )
    assert amended.status_code == 201, amended.text
    correction = amended.json()
    assert correction["amends_id"] == prescription["id"]
    assert correction["status"] == "draft"
    assert correction["body"] == {"items": [ITEM]}
    twice = await client.post(f"{path}/amend", headers=c.specialist.auth, json={"reason": "y"})
    assert twice.status_code == 409
    original = await client.get(path, headers=c.staff.auth)
    assert original.json()["amended_by_id"] == correction["id"]
    kept = await client.delete(
        f"/v1/prescriptions/{correction['id']}", headers={**c.admin.auth, "If-Match": "*"}
    )
    assert kept.status_code == 409  # a correction is finished, not dropped

    by_specialist = await client.post(
        f"{path}/entered-in-error", headers=c.specialist.auth, json={"reason": "Wrong patient."}
    )
    assert by_specialist.status_code == 403
    withdrawn = await client.post(
        f"{path}/entered-in-error", headers=c.admin.auth, json={"reason": "Wrong patient."}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "entered_in_error"
    assert withdrawn.json()["error_reason"] == "Wrong patient."
    again = await client.post(
        f"{path}/entered-in-error", headers=c.admin.auth, json={"reason": "Again."}
    )
    assert again.status_code == 409


async def test_patients_read_their_own_final_documents_and_reads_are_audited(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    person: Callable[..., Person],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    appointment_id = await visit(client, c)
    draft = await write(client, c, appointment_id)
    final = await write(client, c, appointment_id)
    await client.post(f"/v1/reports/{final['id']}/finalize", headers=c.specialist.auth)

    assert (
        await client.get(f"/v1/reports/{draft['id']}", headers=c.patient.auth)
    ).status_code == 404
    mine = await client.get("/v1/reports", headers=c.patient.auth)
    assert [r["id"] for r in mine.json()["data"]] == [final["id"]]
    assert "body" not in mine.json()["data"][0]  # lists carry no bodies
    read = await client.get(f"/v1/reports/{final['id']}", headers=c.patient.auth)
    assert read.status_code == 200
    assert read.json()["body"] == REPORT

    stranger = person(c.org, "patient")
    admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name, user_id)"
        " VALUES (%s, 'Ion', 'Rus', %s)",
        (c.org, stranger.user_id),
    )
    assert (
        await client.get(f"/v1/reports/{final['id']}", headers=stranger.auth)
    ).status_code == 404
    assert (await client.get("/v1/reports", headers=stranger.auth)).json()["data"] == []

    await client.get(f"/v1/reports/{draft['id']}", headers=c.staff.auth)  # drafts: not audited
    reads = admin_conn.execute(
        "SELECT actor_user_id FROM audit.events WHERE organization_id = %s"
        " AND action = 'report.read' ORDER BY occurred_at",
        (c.org,),
    ).fetchall()
    assert [r[0] for r in reads] == [c.patient.user_id]

    cancelled = await client.post(
        f"/v1/appointments/{appointment_id}/cancel", headers=c.staff.auth, json={"reason": "Ill."}
    )
    assert cancelled.status_code == 200, cancelled.text
    gone = await client.delete(
        f"/v1/patients/{c.patient_id}", headers={**c.admin.auth, "If-Match": "*"}
    )
    assert gone.status_code == 409  # a final report is a clinical record


async def test_a_database_dump_holds_no_sealed_answer_or_body_in_clear(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    stack: devstack.EmbeddedStack,
    tmp_path: Path,
) -> None:
    c = clinic()
    canaries = {name: f"canary-{name}-{uuid.uuid4().hex}" for name in ("answer", "report", "rx")}
    made = await client.post(
        "/v1/form-templates",
        headers=c.admin.auth,
        json={
            "title": "Sealed",
            "items": [{"link_id": "secret", "text": "S", "type": "text", "sensitive": True}],
        },
    )
    template_id = made.json()["id"]
    await client.post(f"/v1/form-templates/{template_id}/publish", headers=c.admin.auth)
    form = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={
            "template_id": template_id,
            "patient_id": c.patient_id,
            "values": {"secret": canaries["answer"]},
        },
    )
    assert form.status_code == 201, form.text
    appointment_id = await visit(client, c)
    await write(client, c, appointment_id, body={"summary": canaries["report"]})
    await write(
        client,
        c,
        appointment_id,
        "prescriptions",
        {"items": [{**ITEM, "instructions": canaries["rx"]}]},
    )
    dump = pg_dump(stack.database_admin_url, tmp_path / "dump.sql")
    assert b"Session report" in dump  # titles are not sealed: the dump did catch the rows
    for canary in canaries.values():
        assert canary.encode() not in dump, canary
