"""Clinical demo and benchmark data: specialties, specialists, custom fields and patients.

Patients are written with COPY on the owner connection and sealed exactly as the API seals
them (same keyring, same associated data), so the API reads them like any other row.
`carebase seed --patients N` spreads N patients over benchmark organizations with a
progress bar; `carebase dev` puts about 50 in each demo clinic.
"""

from __future__ import annotations

import random
import sys
import time
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from carebase.security.encryption import DataKeyring
from carebase.services.patients import aad, normalise_national_id, normalise_phone

SPECIALTIES = (
    ("Physiotherapy", "Movement and function after injury, surgery or illness."),
    ("Occupational therapy", "Daily activities, work and independence."),
    ("Speech therapy", "Speech, language and swallowing."),
    ("Sports rehabilitation", "Return to sport after injury."),
)
FieldSeed = tuple[str, str, str, bool, dict[str, Any]]
PATIENT_FIELDS: tuple[FieldSeed, ...] = (
    ("injury_side", "Injured side", "select", False, {"options": ["left", "right", "both"]}),
    ("pain_score", "Pain score (0–10)", "number", False, {"min_value": 0, "max_value": 10}),
    ("allergies", "Allergies", "text", True, {"max_value": 500}),
    ("referral_date", "Referral date", "date", False, {}),
)
SPECIALIST_FIELDS: tuple[FieldSeed, ...] = (
    ("languages", "Languages", "multi_select", False, {"options": ["en", "de", "hr", "es", "fr"]}),
)
GIVEN = (
    "Ana",
    "Luka",
    "Iva",
    "Marko",
    "Petra",
    "Ivan",
    "Maja",
    "Tomislav",
    "Sara",
    "Josip",
    "Lea",
    "Nikola",
    "Emma",
    "Noah",
    "Olivia",
    "Liam",
    "Mia",
    "Lucas",
    "Sofia",
    "Elias",
    "Hana",
    "David",
)
FAMILY = (
    "Kovač",
    "Horvat",
    "Babić",
    "Novak",
    "Marić",
    "Jurić",
    "Knežević",
    "Vuković",
    "Petrović",
    "Müller",
    "Schmidt",
    "Rossi",
    "García",
    "Martin",
    "Smith",
    "Jones",
    "Nowak",
    "Dubois",
    "Silva",
)
NOTES = (
    "Post-operative knee rehabilitation.",
    "Lower back pain, desk work.",
    "Shoulder impingement, overhead sport.",
    "Ankle sprain, second episode.",
    "Stroke recovery, fine motor skills.",
)
COPY_PATIENTS = """
COPY patients.patients (organization_id, id, user_id, given_name, family_name, email, status,
                        birth_date_sealed, national_id_sealed, national_id_index, phone_sealed,
                        phone_index, address_sealed, notes_sealed, custom_values)
FROM STDIN
"""

Conn = psycopg.Connection[tuple[Any, ...]]


def seed_clinic(
    conn: Conn,
    organization_id: uuid.UUID,
    keyring: DataKeyring,
    *,
    patients: int,
    specialist_user: object,
    patient_user: object,
) -> bool:
    """Specialties, a specialist, the field library and `patients` patients; once per clinic."""
    if conn.execute(
        "SELECT 1 FROM specialists.specialties WHERE organization_id = %s LIMIT 1",
        (organization_id,),
    ).fetchone():
        return False
    specialty_ids = []
    for name, description in SPECIALTIES:
        row = conn.execute(
            "INSERT INTO specialists.specialties (organization_id, name, description)"
            " VALUES (%s, %s, %s) RETURNING id",
            (organization_id, name, description),
        ).fetchone()
        specialty_ids.append(row[0] if row else None)
    specialist = conn.execute(
        "INSERT INTO specialists.specialists (organization_id, user_id, display_name, title, bio)"
        " VALUES (%s, %s, 'Dana Reyes', 'Senior physiotherapist',"
        " 'Knee and shoulder rehabilitation.')"
        " RETURNING id",
        (organization_id, specialist_user),
    ).fetchone()
    assert specialist is not None  # noqa: S101 - RETURNING always yields the row
    for specialty in specialty_ids[:2]:
        conn.execute(
            "INSERT INTO specialists.specialist_specialties VALUES (%s, %s, %s)",
            (organization_id, specialist[0], specialty),
        )
    fields = {}
    for entity, library in (("patient", PATIENT_FIELDS), ("specialist", SPECIALIST_FIELDS)):
        for key, label, kind, sensitive, extra in library:
            field_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO custom_fields.fields (organization_id, id, entity_type, key)"
                " VALUES (%s, %s, %s, %s)",
                (organization_id, field_id, entity, key),
            )
            conn.execute(
                "INSERT INTO custom_fields.definitions (organization_id, field_id, definition,"
                " label, type, sensitive, min_value, max_value, options)"
                " VALUES (%s, %s, 1, %s, %s, %s, %s, %s, %s)",
                (
                    organization_id,
                    field_id,
                    label,
                    kind,
                    sensitive,
                    extra.get("min_value"),
                    extra.get("max_value"),
                    extra.get("options"),
                ),
            )
            fields[key] = field_id
    rng = random.Random(str(organization_id))  # noqa: S311 - deterministic demo data, not secrets
    rows = _patients(organization_id, keyring, patients, rng, fields)
    with conn.cursor().copy(COPY_PATIENTS) as copy:
        for index, row in enumerate(rows):
            copy.write_row((*row[:2], patient_user if index == 0 else None, *row[3:]))
    return True


def seed_benchmark(
    conn: Conn, keyring: DataKeyring, *, patients: int, organizations: int, progress: bool = True
) -> list[uuid.UUID]:
    """`patients` patients spread evenly over `organizations` benchmark clinics (created here).

    Tops up: a clinic that already has its share gets no more, so a re-run adds nothing.
    """
    org_ids = []
    for number in range(1, organizations + 1):
        row = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, %s)"
            " ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (f"bench-clinic-{number:02d}", f"Benchmark Clinic {number:02d}"),
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING always yields the row
        org_ids.append(uuid.UUID(str(row[0])))
    per_org, extra = divmod(patients, organizations)
    missing = []
    for index, org in enumerate(org_ids):
        row = conn.execute(
            "SELECT count(*) FROM patients.patients WHERE organization_id = %s", (org,)
        ).fetchone()
        have = int(row[0]) if row else 0
        missing.append(max(0, per_org + (1 if index < extra else 0) - have))
    bar = _Progress(sum(missing), enabled=progress)
    rng = random.Random(patients)  # noqa: S311 - deterministic benchmark data, not secrets
    for org, count in zip(org_ids, missing, strict=True):
        with conn.cursor().copy(COPY_PATIENTS) as copy:
            for row in _patients(org, keyring, count, rng, {}):
                copy.write_row(row)
                bar.advance()
        conn.commit()
    bar.finish()
    return org_ids


def _patients(
    organization_id: uuid.UUID,
    keyring: DataKeyring,
    count: int,
    rng: random.Random,
    fields: dict[str, uuid.UUID],
) -> Iterator[tuple[Any, ...]]:
    today = date.today()
    for _ in range(count):
        patient_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        birth = today - timedelta(days=rng.randrange(18 * 365, 90 * 365))
        national_id = f"{birth:%y%m%d}-{rng.randrange(10_000):04d}{rng.randrange(100):02d}"
        phone = f"+385 9{rng.randrange(10)} {rng.randrange(1_000_000, 9_999_999)}"

        def seal(column: str, text: str, pid: uuid.UUID = patient_id) -> bytes:
            return keyring.seal(text.encode(), aad(organization_id, pid, column))

        custom = {}
        if "injury_side" in fields:
            custom[str(fields["injury_side"])] = {"d": 1, "v": rng.choice(["left", "right"])}
            custom[str(fields["pain_score"])] = {"d": 1, "v": rng.randrange(11)}
        yield (
            organization_id,
            patient_id,
            None,
            given,
            family,
            _ascii(f"{given}.{family}.{patient_id.hex[:6]}@example.com").lower(),
            "active",
            seal("birth_date", birth.isoformat()),
            seal("national_id", national_id),
            keyring.blind_index("patient.national_id", normalise_national_id(national_id)),
            seal("phone", phone),
            keyring.blind_index("patient.phone", normalise_phone(phone)),
            seal("address", f"{rng.randrange(1, 200)} Demo Street, Zagreb"),
            seal("notes", rng.choice(NOTES)),
            Jsonb(custom),
        )


def _ascii(text: str) -> str:
    """`Babić` → `Babic`: demo addresses stay plain ASCII."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


class _Progress:
    """A one-line progress bar on stderr (a terminal only), redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()
        self.drawn = 0.0
        self.enabled = enabled

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self.drawn >= 0.1 or self.done == self.total):
            self.drawn = now
            filled = self.WIDTH * self.done // self.total
            rate = self.done / max(now - self.started, 1e-6)
            sys.stderr.write(
                f"\r  patients [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                f"{self.done:,}/{self.total:,}  {rate:,.0f}/s"
            )
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
