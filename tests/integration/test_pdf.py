"""PDFs rendered with typst from stored documents and forms: the same version gives the same
bytes, diacritics survive (read back from the PDF's text), and text is never read as markup."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from pypdf import PdfReader
from support import Clinic, book, day_at

ROMANIAN = "Ștefan Țurcanu ăîâșț"


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


async def _romanian_clinic(
    clinic: Callable[..., Clinic], admin_conn: psycopg.Connection[Any]
) -> Clinic:
    c = clinic(zone="Europe/Bucharest")
    admin_conn.execute(
        "UPDATE patients.patients SET given_name = 'Ștefan', family_name = 'Țurcanu ăîâșț'"
        " WHERE id = %s",
        (c.patient_id,),
    )
    return c


async def test_a_final_report_prints_the_same_bytes_every_time(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = await _romanian_clinic(clinic, admin_conn)
    visit = (await book(client, c, day_at(2, 9))).json()
    made = await client.post(
        "/v1/reports",
        headers=c.specialist.auth,
        json={
            "appointment_id": visit["id"],
            "patient_id": c.patient_id,
            "title": "Week 3 #panic() *bold*",
            "body": {"summary": "Flexia genunchiului: 110°. $x$ [link](http://example.com)"},
        },
    )
    assert made.status_code == 201, made.text
    path = f"/v1/reports/{made.json()['id']}"
    draft = await client.get(f"{path}/pdf", headers=c.specialist.auth)
    assert draft.status_code == 200
    assert draft.headers["content-type"] == "application/pdf"
    assert draft.headers["cache-control"] == "no-store"
    assert draft.headers["content-disposition"].startswith('inline; filename="report-')
    assert draft.content.startswith(b"%PDF-")
    assert "Draft" in text_of(draft.content)

    await client.post(f"{path}/finalize", headers=c.specialist.auth)
    first = await client.get(f"{path}/pdf", headers=c.patient.auth)
    second = await client.get(f"{path}/pdf", headers=c.staff.auth)
    assert first.status_code == 200, first.text
    assert first.content == second.content
    assert first.content != draft.content  # another version, other bytes
    text = text_of(first.content)
    assert ROMANIAN in text
    assert "Week 3 #panic() *bold*" in text  # printed as written, not read as markup
    assert "$x$ [link](http://example.com)" in text
    digest = (await client.get(path, headers=c.staff.auth)).json()["content_sha256"]
    assert digest in text.replace("\n", "")
    reads = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE organization_id = %s AND action = 'report.read'",
        (c.org,),
    ).fetchone()
    assert reads == (3,)  # two PDFs and one body read of the final report


async def test_a_prescription_prints_its_items(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = await _romanian_clinic(clinic, admin_conn)
    visit = (await book(client, c, day_at(2, 11))).json()
    made = await client.post(
        "/v1/prescriptions",
        headers=c.specialist.auth,
        json={
            "appointment_id": visit["id"],
            "patient_id": c.patient_id,
            "title": "După evaluare",
            "body": {
                "items": [
                    {
                        "medication": "Ibuprofen 400 mg comprimate",
                        "dose": "1 comprimat",
                        "route": "oral",
                        "frequency": "la 8 ore",
                        "duration_days": 7,
                        "quantity": 21,
                        "instructions": "Se ia după masă.",
                    }
                ],
            },
        },
    )
    assert made.status_code == 201, made.text
    pdf = await client.get(f"/v1/prescriptions/{made.json()['id']}/pdf", headers=c.staff.auth)
    text = text_of(pdf.content)
    assert "Ibuprofen 400 mg comprimate" in text
    assert "Se ia după masă." in text
    assert ROMANIAN in text


async def test_a_form_prints_its_own_version_and_only_what_is_shown(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = await _romanian_clinic(clinic, admin_conn)
    items = [
        {"link_id": "pain", "text": "Durere azi", "type": "integer", "required": True},
        {"link_id": "surgery", "text": "Operație?", "type": "boolean", "required": True},
        {
            "link_id": "when",
            "text": "Când a fost operația?",
            "type": "date",
            "enable_when": {
                "conditions": [{"question": "surgery", "operator": "=", "answer": True}]
            },
        },
    ]
    made = await client.post(
        "/v1/form-templates",
        headers=c.admin.auth,
        json={"title": "Chestionar", "items": items, "signer_roles": ["specialist"]},
    )
    template_id = made.json()["id"]
    await client.post(f"/v1/form-templates/{template_id}/publish", headers=c.admin.auth)
    form = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={"template_id": template_id, "patient_id": c.patient_id, "values": {"pain": 4}},
    )
    form_id = form.json()["id"]
    await client.put(
        f"/v1/form-templates/{template_id}",
        headers={**c.admin.auth, "If-Match": "*"},
        json={"title": "Chestionar nou", "items": items[:1]},
    )
    await client.post(f"/v1/form-templates/{template_id}/publish", headers=c.admin.auth)

    await client.patch(
        f"/v1/forms/{form_id}",
        headers={**c.staff.auth, "If-Match": "*"},
        json={"values": {"surgery": False, "when": "2024-01-01"}},
    )
    await client.post(f"/v1/forms/{form_id}/submit", headers=c.staff.auth)
    signed = await client.post(
        f"/v1/forms/{form_id}/sign", headers=c.specialist.auth, json={"meaning": "reviewed"}
    )
    assert signed.status_code == 200, signed.text
    pdf = await client.get(f"/v1/forms/{form_id}/pdf", headers=c.patient.auth)
    assert pdf.status_code == 200, pdf.text
    again = await client.get(f"/v1/forms/{form_id}/pdf", headers=c.staff.auth)
    assert pdf.content == again.content
    text = text_of(pdf.content)
    assert "Chestionar" in text
    assert "Chestionar nou" not in text  # version 1, as pinned
    assert "Operație?" in text
    assert "Când a fost operația?" not in text  # hidden: surgery is false
    assert ROMANIAN in text
    assert signed.json()["signature"]["content_sha256"] in text.replace("\n", "")
