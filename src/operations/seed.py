"""Demo data for `carebase dev`: a platform superadmin and two clinics with one person per role,
each clinic with specialties, a specialist, a custom field library, about 50 patients, the
specialist's working hours, three appointment templates, two weeks of appointments, an intake
and a consent form template (published) and forms in every state, the demo patient's signed,
and a final report and prescription for the demo patient.

Idempotent: a second run finds everything in place. The shared demo password is generated
on the first run into `<DATA_DIR>/demo-credentials.json` (0600), never stored in the code.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from argon2 import PasswordHasher

from carebase.operations.seed_broadcasts import seed_broadcasts
from carebase.operations.seed_clinical import seed_clinic
from carebase.operations.seed_forms import seed_attachments, seed_documents, seed_forms
from carebase.operations.seed_scheduling import seed_schedule
from carebase.operations.seed_segments import seed_segments
from carebase.security.encryption import DataKeyring

DOMAIN = "carebase-demo.example.com"
CLINICS = (
    ("north-clinic", "North Rehabilitation Clinic", "Europe/Zagreb"),
    ("south-clinic", "South Tele-Health", "Europe/Bucharest"),
)
ROLES = ("admin", "specialist", "staff", "patient")
DEMO_PATIENTS = 50


@dataclass(frozen=True, slots=True)
class Account:
    email: str
    organization: str | None
    role: str


def demo_password(data_dir: Path) -> str:
    path = data_dir / "demo-credentials.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored["password"]
    password = "demo-" + secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"password": password}, handle, indent=2)
    return password


def seed_demo(
    admin_url: str,
    *,
    password: str,
    hasher: PasswordHasher,
    keyring: DataKeyring,
    patients_per_clinic: int = DEMO_PATIENTS,
    store_blob: Callable[[str, bytes, str], None] | None = None,
) -> list[Account]:
    """Owner connection: demo rows are a platform job, not a tenant's request. With
    `store_blob` (the blob store), each clinic's demo patient gets an attachment too."""
    password_hash = hasher.hash(password)
    accounts = [Account(f"superadmin@{DOMAIN}", None, "superadmin")]
    with psycopg.connect(admin_url, autocommit=False) as conn, conn.transaction():
        superadmin = _user(conn, accounts[0].email, "Platform Operator", password_hash)
        conn.execute("UPDATE identity.users SET is_superadmin = true WHERE id = %s", (superadmin,))
        for slug, name, zone in CLINICS:
            conn.execute(
                "INSERT INTO platform.organizations (slug, name) VALUES (%s, %s)"
                " ON CONFLICT (slug) DO NOTHING",
                (slug, name),
            )
            row = conn.execute(
                "SELECT id FROM platform.organizations WHERE slug = %s", (slug,)
            ).fetchone()
            assert row is not None  # noqa: S101 - inserted just above
            users = {}
            for role in ROLES:
                email = f"{role}@{slug}.{DOMAIN}"
                users[role] = _user(conn, email, f"Demo {role.title()} ({name})", password_hash)
                conn.execute(
                    "INSERT INTO identity.memberships (organization_id, user_id, role)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (row[0], users[role], role),
                )
                accounts.append(Account(email, slug, role))
            seed_clinic(
                conn,
                row[0],
                keyring,
                patients=patients_per_clinic,
                specialist_user=users["specialist"],
                patient_user=users["patient"],
            )
            _seed_schedule(conn, row[0], zone, users)
            _seed_forms(conn, row[0], keyring, users, store_blob)
            patients = conn.execute(
                "SELECT id FROM patients.patients WHERE organization_id = %s ORDER BY id",
                (row[0],),
            ).fetchall()
            seed_segments(
                conn,
                uuid.UUID(str(row[0])),
                patient_ids=[uuid.UUID(str(p[0])) for p in patients],
            )
            seed_broadcasts(conn, uuid.UUID(str(row[0])))
    return accounts


def _seed_schedule(
    conn: psycopg.Connection[tuple[object, ...]],
    organization_id: object,
    zone: str,
    users: dict[str, object],
) -> None:
    specialist = conn.execute(
        "SELECT id FROM specialists.specialists WHERE organization_id = %s AND user_id = %s",
        (organization_id, users["specialist"]),
    ).fetchone()
    assert specialist is not None  # noqa: S101 - seed_clinic made it
    patients = conn.execute(
        "SELECT id, user_id FROM patients.patients WHERE organization_id = %s ORDER BY id",
        (organization_id,),
    ).fetchall()
    own = next((p[0] for p in patients if p[1] == users["patient"]), None)
    seed_schedule(
        conn,
        uuid.UUID(str(organization_id)),
        zone=zone,
        specialist_id=uuid.UUID(str(specialist[0])),
        patient_ids=[uuid.UUID(str(p[0])) for p in patients if p[0] != own],
        own_patient_id=uuid.UUID(str(own)) if own else None,
    )


def _seed_forms(
    conn: psycopg.Connection[tuple[object, ...]],
    organization_id: object,
    keyring: DataKeyring,
    users: dict[str, object],
    store_blob: Callable[[str, bytes, str], None] | None,
) -> None:
    patients = conn.execute(
        "SELECT id, user_id FROM patients.patients WHERE organization_id = %s ORDER BY id",
        (organization_id,),
    ).fetchall()
    own = next((p[0] for p in patients if p[1] == users["patient"]), None)
    seed_forms(
        conn,
        uuid.UUID(str(organization_id)),
        keyring,
        specialist_user=uuid.UUID(str(users["specialist"])),
        patient_user=uuid.UUID(str(users["patient"])),
        own_patient_id=uuid.UUID(str(own)) if own else None,
        patient_ids=[uuid.UUID(str(p[0])) for p in patients if p[0] != own],
    )
    seed_documents(
        conn,
        uuid.UUID(str(organization_id)),
        keyring,
        specialist_user=uuid.UUID(str(users["specialist"])),
        own_patient_id=uuid.UUID(str(own)) if own else None,
    )
    if store_blob is not None:
        seed_attachments(
            conn,
            uuid.UUID(str(organization_id)),
            own_patient_id=uuid.UUID(str(own)) if own else None,
            uploaded_by=uuid.UUID(str(users["specialist"])),
            store=store_blob,
        )


def _user(
    conn: psycopg.Connection[tuple[object, ...]], email: str, name: str, hashed: str
) -> object:
    row = conn.execute(
        "INSERT INTO identity.users (email, display_name, password_hash, email_verified_at,"
        " password_changed_at) VALUES (%s, %s, %s, now(), now())"
        " ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash"
        " RETURNING id",
        (email, name, hashed),
    ).fetchone()
    assert row is not None  # noqa: S101 - RETURNING always yields the row
    return row[0]
