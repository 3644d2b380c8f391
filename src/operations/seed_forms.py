"""Forms and documents demo data: an intake and a consent template, forms in every state,
and a final report and prescription.

`carebase dev` gives each demo clinic a rehabilitation intake (groups, enable_when, prefill,
sensitive answers) and a tele-rehabilitation consent, both published as version 1; attaches
the intake to the clinic's initial-assessment template; and fills forms for its patients:
the demo patient's intake signed by the specialist and consent signed by the patient, and a
few other patients' forms as drafts, in progress and completed. Rows are written on the owner
connection with the shapes the API writes: normalised items, schema and signature hashes the
API verifies, sensitive answers sealed under the row's identity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from carebase.security.encryption import DataKeyring
from carebase.services import form_schema
from carebase.services import forms as form_service
from carebase.services.documents import Identity, content_sha256, seal_body
from carebase.services.forms import Content, seal_answers, signature_sha256

Conn = psycopg.Connection[tuple[Any, ...]]

INTAKE = form_schema.normalised(
    [
        {"link_id": "about", "text": "About you", "type": "group"},
        {
            "link_id": "given_name",
            "parent_link_id": "about",
            "text": "Given name",
            "type": "string",
            "required": True,
            "prefill": "patient.given_name",
        },
        {
            "link_id": "family_name",
            "parent_link_id": "about",
            "text": "Family name",
            "type": "string",
            "required": True,
            "prefill": "patient.family_name",
        },
        {
            "link_id": "phone",
            "parent_link_id": "about",
            "text": "Phone",
            "type": "string",
            "prefill": "patient.phone",
            "sensitive": True,
        },
        {"link_id": "complaint", "text": "What brings you in", "type": "group"},
        {
            "link_id": "area",
            "parent_link_id": "complaint",
            "text": "Where does it hurt?",
            "type": "multi-choice",
            "options": ["knee", "hip", "shoulder", "back", "ankle", "neck"],
            "required": True,
            "min": 1,
        },
        {
            "link_id": "side",
            "parent_link_id": "complaint",
            "text": "Which side?",
            "type": "choice",
            "options": ["left", "right", "both"],
        },
        {
            "link_id": "pain",
            "parent_link_id": "complaint",
            "text": "Pain today, 0 (none) to 10 (worst)",
            "type": "integer",
            "required": True,
            "min": 0,
            "max": 10,
        },
        {
            "link_id": "surgery",
            "parent_link_id": "complaint",
            "text": "Have you had surgery on it?",
            "type": "boolean",
            "required": True,
        },
        {
            "link_id": "surgery_date",
            "parent_link_id": "complaint",
            "text": "When was the surgery?",
            "type": "date",
            "required": True,
            "enable_when": {
                "conditions": [{"question": "surgery", "operator": "=", "answer": True}]
            },
        },
        {
            "link_id": "medications",
            "text": "Medications you take",
            "type": "text",
            "max": 2000,
            "sensitive": True,
        },
        {"link_id": "goals", "text": "What would you like to be able to do again?", "type": "text"},
    ]
)
CONSENT = form_schema.normalised(
    [
        {
            "link_id": "statement",
            "text": (
                "Sessions take place over video. Recordings are never made. You may stop a "
                "session at any time, and withdraw this consent in writing."
            ),
            "type": "display",
        },
        {
            "link_id": "agree",
            "text": "I agree to tele-rehabilitation sessions",
            "type": "boolean",
            "required": True,
        },
        {
            "link_id": "emergency_contact",
            "text": "Emergency contact (name and phone)",
            "type": "string",
            "required": True,
            "sensitive": True,
        },
    ]
)
TEMPLATES = (
    ("Rehabilitation intake", "Filled before the first assessment.", ["specialist"], INTAKE),
    (
        "Tele-rehabilitation consent",
        "Signed by the patient before the first video session.",
        ["patient", "specialist"],
        CONSENT,
    ),
)


def seed_forms(
    conn: Conn,
    organization_id: uuid.UUID,
    keyring: DataKeyring,
    *,
    specialist_user: uuid.UUID,
    patient_user: uuid.UUID,
    own_patient_id: uuid.UUID | None,
    patient_ids: Sequence[uuid.UUID],
) -> bool:
    """Templates and forms for one clinic; once per clinic."""
    if conn.execute(
        "SELECT 1 FROM forms.templates WHERE organization_id = %s LIMIT 1", (organization_id,)
    ).fetchone():
        return False
    now = dt.datetime.now(dt.UTC)
    versions = {}
    for title, description, signers, items in TEMPLATES:
        template_id = uuid.uuid4()
        digest = form_schema.schema_sha256(items)
        conn.execute(
            "INSERT INTO forms.templates (organization_id, id, title, description, signer_roles,"
            " latest_version) VALUES (%s, %s, %s, %s, %s, 1)",
            (organization_id, template_id, title, description, signers),
        )
        conn.execute(
            "INSERT INTO forms.template_versions (organization_id, template_id, number, title,"
            " description, signer_roles, items, schema_sha256, published_by)"
            " VALUES (%s, %s, 1, %s, %s, %s, %s, %s, %s)",
            (
                organization_id,
                template_id,
                title,
                description,
                signers,
                Jsonb(items),
                digest,
                specialist_user,
            ),
        )
        versions[title] = (template_id, items, digest)
    intake_id, intake_items, intake_digest = versions["Rehabilitation intake"]
    consent_id, consent_items, consent_digest = versions["Tele-rehabilitation consent"]
    conn.execute(
        "UPDATE scheduling.appointment_templates SET form_template_ids = ARRAY[%s]::uuid[]"
        " WHERE organization_id = %s AND slug = 'initial-assessment'",
        (intake_id, organization_id),
    )
    writer = _Writer(conn, organization_id, keyring, now)
    if own_patient_id is not None:
        name = conn.execute(
            "SELECT given_name, family_name FROM patients.patients WHERE id = %s",
            (own_patient_id,),
        ).fetchone()
        assert name is not None  # noqa: S101 - the demo patient exists
        answers = {
            "given_name": name[0],
            "family_name": name[1],
            "area": ["knee"],
            "side": "left",
            "pain": 4,
            "surgery": True,
            "surgery_date": "2025-09-18",
            "medications": "Ibuprofen 400 mg when needed",
            "goals": "Climb the stairs to my flat without stopping.",
        }
        writer.form(
            intake_id,
            intake_items,
            intake_digest,
            own_patient_id,
            answers,
            signed=(specialist_user, "specialist", "reviewed"),
        )
        writer.form(
            consent_id,
            consent_items,
            consent_digest,
            own_patient_id,
            {"agree": True, "emergency_contact": "Mara Pop, +40 721 555 010"},
            signed=(patient_user, "patient", "consented"),
        )
    for number, patient_id in enumerate(patient_ids[:6]):
        status = ("draft", "in_progress", "completed")[number % 3]
        answers = {} if status == "draft" else {"area": ["back"], "pain": 2 + number}
        if status == "completed":
            answers.update({"given_name": "Demo", "family_name": "Patient", "surgery": False})
        writer.form(intake_id, intake_items, intake_digest, patient_id, answers, status=status)
    return True


class _Writer:
    def __init__(
        self, conn: Conn, organization_id: uuid.UUID, keyring: DataKeyring, now: dt.datetime
    ) -> None:
        self._conn = conn
        self._org = organization_id
        self._keyring = keyring
        self._now = now

    def form(
        self,
        template_id: uuid.UUID,
        items: Sequence[Mapping[str, Any]],
        digest: str,
        patient_id: uuid.UUID,
        answers: Mapping[str, Any],
        *,
        status: str = "signed",
        signed: tuple[uuid.UUID, str, str] | None = None,
    ) -> None:
        form_id = uuid.uuid4()
        plain, sealed = seal_answers(self._keyring, self._org, form_id, items, answers)
        signature: tuple[Any, ...] = (None,) * 6
        if signed is not None:
            signer, role, meaning = signed
            content = form_service.content_sha256(
                Content(form_id, self._org, template_id, 1, digest, patient_id, None), answers
            )
            signature = (
                signer,
                role,
                meaning,
                self._now,
                content,
                signature_sha256(content, signer, role, meaning, self._now),
            )
        self._conn.execute(
            "INSERT INTO forms.forms (organization_id, id, template_id, template_version,"
            " patient_id, status, answers, sealed_answers, submitted_at, signer_user_id,"
            " signer_role, signature_meaning, signed_at, content_sha256, signature_sha256)"
            " VALUES (%s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                self._org,
                form_id,
                template_id,
                patient_id,
                status,
                Jsonb(plain),
                sealed,
                self._now if status in ("completed", "signed") else None,
                *signature,
            ),
        )


REPORT = {
    "summary": "Knee flexion improved from 95° to 110°; pain 3/10 after the exercises.",
    "findings": "Mild swelling at the medial joint line; no instability.",
    "plan": "Continue the home programme twice a day; add step-ups (2 × 10).",
    "recommendations": "Ice for 15 minutes after exercising.",
}
PRESCRIPTION = {
    "items": [
        {
            "medication": "Ibuprofen 400 mg tablets",
            "dose": "1 tablet",
            "route": "oral",
            "frequency": "every 8 hours with food",
            "duration_days": 7,
            "quantity": 21,
            "repeats": 0,
            "instructions": "Stop and call the clinic if your stomach hurts.",
        },
        {
            "medication": "Diclofenac 1% gel",
            "dose": "a 4 cm strip",
            "route": "topical",
            "frequency": "three times a day",
            "duration_days": 14,
            "quantity": 1,
            "repeats": 1,
        },
    ],
    "notes": "Review at the next session.",
}


def seed_documents(
    conn: Conn,
    organization_id: uuid.UUID,
    keyring: DataKeyring,
    *,
    specialist_user: uuid.UUID,
    own_patient_id: uuid.UUID | None,
) -> bool:
    """A final report and a final prescription on the demo patient's last past visit; once."""
    if (
        own_patient_id is None
        or conn.execute(
            "SELECT 1 FROM documents.documents WHERE organization_id = %s LIMIT 1",
            (organization_id,),
        ).fetchone()
    ):
        return False
    visit = conn.execute(
        "SELECT id FROM scheduling.appointments WHERE organization_id = %s AND patient_id = %s"
        " AND status <> 'held' ORDER BY (status = 'done') DESC, starts_at DESC LIMIT 1",
        (organization_id, own_patient_id),
    ).fetchone()
    if visit is None:
        return False
    now = dt.datetime.now(dt.UTC)
    for kind, title, body in (
        ("report", "Session report: knee rehabilitation", REPORT),
        ("prescription", "After the knee assessment", PRESCRIPTION),
    ):
        document_id = uuid.uuid4()
        identity = Identity(
            document_id, organization_id, kind, visit[0], own_patient_id, specialist_user, title
        )
        conn.execute(
            "INSERT INTO documents.documents (organization_id, id, kind, appointment_id,"
            " patient_id, title, status, body_sealed, author_user_id, finalized_at, finalized_by,"
            " content_sha256) VALUES (%s, %s, %s, %s, %s, %s, 'final', %s, %s, %s, %s, %s)",
            (
                organization_id,
                document_id,
                kind,
                visit[0],
                own_patient_id,
                title,
                seal_body(keyring, organization_id, document_id, body),
                specialist_user,
                now,
                specialist_user,
                content_sha256(identity, body),
            ),
        )
    return True


REFERRAL = (
    b"Referral letter\n\n"
    b"Dear colleague,\n\n"
    b"please see this patient for rehabilitation of the right knee after an arthroscopic\n"
    b"meniscectomy. Full weight bearing is allowed; no restrictions on range of motion.\n\n"
    b"Kind regards,\nDr. Ana Novak, orthopaedics\n"
)


def seed_attachments(
    conn: Conn,
    organization_id: uuid.UUID,
    *,
    own_patient_id: uuid.UUID | None,
    uploaded_by: uuid.UUID,
    store: Callable[[str, bytes, str], None],
) -> bool:
    """A referral letter on the demo patient's record, stored through `store`; once."""
    if (
        own_patient_id is None
        or conn.execute(
            "SELECT 1 FROM attachments.attachments WHERE organization_id = %s LIMIT 1",
            (organization_id,),
        ).fetchone()
    ):
        return False
    attachment_id = uuid.uuid4()
    key = f"{organization_id}/{attachment_id}"
    # The object first: if storing fails, the transaction (and the row) is rolled back.
    store(key, REFERRAL, "text/plain")
    conn.execute(
        "INSERT INTO attachments.attachments (organization_id, id, owner_type, patient_id,"
        " filename, media_type, size_bytes, sha256, storage_key, status, uploaded_by,"
        " completed_at) VALUES (%s, %s, 'patient', %s, 'referral-letter.txt', 'text/plain',"
        " %s, %s, %s, 'available', %s, now())",
        (
            organization_id,
            attachment_id,
            own_patient_id,
            len(REFERRAL),
            hashlib.sha256(REFERRAL).hexdigest(),
            key,
            uploaded_by,
        ),
    )
    return True
