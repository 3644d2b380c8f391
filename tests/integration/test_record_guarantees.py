"""What every clinical write promises: idempotent creates, sealed health data, and exactly one
audit row and one outbox event per change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from support import Person, pg_dump

from carebase.apps.core import CoreApp
from carebase.operations import devstack
from carebase.security.encryption import DataKeyring, Sealer
from carebase.services.data_keys import reseal_all

CANARIES = {
    "national_id": "CANARY-NID-7731",
    "phone": "+1 555 0100 7731",
    "address": "7731 Canary Lane",
    "notes": "canary clinical note 7731",
    "birth_date": "1931-07-07",
}


def _count(conn: psycopg.Connection[tuple[object, ...]], sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(str(row[0]))


# --- idempotency ------------------------------------------------------------------------------


async def test_a_replayed_create_is_byte_identical_and_creates_once(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    org = new_org()
    staff = person(org, "staff")
    headers = {**staff.auth, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"given_name": "Rita", "family_name": "Idem", "notes": "sealed in the stored answer"}
    first = await client.post("/v1/patients", headers=headers, json=body)
    again = await client.post("/v1/patients", headers=headers, json=dict(reversed(body.items())))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Location"] == first.headers["Location"]
    patient_id = first.json()["id"]
    assert (
        _count(admin_conn, "SELECT count(*) FROM patients.patients WHERE organization_id = %s", org)
        == 1
    )
    assert (
        _count(admin_conn, "SELECT count(*) FROM audit.events WHERE entity_id = %s", patient_id)
        == 1
    )
    assert (
        _count(
            admin_conn,
            "SELECT count(*) FROM audit.outbox WHERE payload->>'entity_id' = %s",
            patient_id,
        )
        == 1
    )
    stored = admin_conn.execute(
        "SELECT body_sealed FROM platform.idempotency_keys WHERE scope = %s", (org,)
    ).fetchone()
    assert stored is not None
    assert b"sealed in the stored answer" not in bytes(stored[0])

    other_body = await client.post("/v1/patients", headers=headers, json={**body, "notes": "x"})
    assert other_body.status_code == 422
    assert other_body.json()["errors"][0]["pointer"] == "/header/Idempotency-Key"

    # Another organization using the same key makes its own patient.
    elsewhere = person(new_org(), "staff")
    theirs = await client.post(
        "/v1/patients",
        headers={**elsewhere.auth, "Idempotency-Key": headers["Idempotency-Key"]},
        json=body,
    )
    assert theirs.status_code == 201
    assert theirs.json()["id"] != patient_id
    assert "idempotent-replayed" not in theirs.headers


async def test_parallel_requests_with_one_key_make_one_resource(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    org = new_org()
    staff = person(org, "staff")
    headers = {**staff.auth, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/patients", headers=headers, json={"given_name": "P", "family_name": "Q"}
            )
            for _ in range(20)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses
    assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
    assert (
        _count(admin_conn, "SELECT count(*) FROM patients.patients WHERE organization_id = %s", org)
        == 1
    )
    assert (
        _count(admin_conn, "SELECT count(*) FROM audit.events WHERE organization_id = %s", org) == 1
    )


async def test_a_failed_create_releases_its_key(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    staff = person(new_org(), "staff")
    headers = {**staff.auth, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"given_name": "F", "family_name": "G", "birth_date": "2999-01-01"}
    assert (await client.post("/v1/patients", headers=headers, json=body)).status_code == 422
    fixed = await client.post(
        "/v1/patients", headers=headers, json={**body, "birth_date": "1999-01-01"}
    )
    assert fixed.status_code == 201


# --- encryption -------------------------------------------------------------------------------


async def test_a_database_dump_holds_no_health_data_in_clear(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    stack: devstack.EmbeddedStack,
    tmp_path: Path,
) -> None:
    admin = person(new_org(), "admin")
    field = await client.post(
        "/v1/custom-fields",
        headers=admin.auth,
        json={
            "entity_type": "patient",
            "key": "diagnosis",
            "label": "Diagnosis",
            "type": "text",
            "sensitive": True,
        },
    )
    assert field.status_code == 201, field.text
    created = await client.post(
        "/v1/patients",
        headers={**admin.auth, "Idempotency-Key": f"key-{uuid.uuid4()}"},
        json={"given_name": "Dump", "family_name": "Test", **CANARIES},
    )
    assert created.status_code == 201, created.text
    profile = await client.put(
        f"/v1/patients/{created.json()['id']}/profile",
        headers={**admin.auth, "If-Match": "*"},
        json={"values": {"diagnosis": "canary diagnosis 7731"}},
    )
    assert profile.status_code == 200, profile.text
    dump = pg_dump(stack.database_admin_url, tmp_path / "dump.sql")
    assert b"Dump" in dump  # names are not sealed: the dump did catch the row
    for canary in [*CANARIES.values(), "canary diagnosis 7731"]:
        assert canary.encode() not in dump, canary


async def test_tampered_or_moved_ciphertext_fails_without_plaintext(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    staff = person(new_org(), "staff")
    first = (
        await client.post(
            "/v1/patients",
            headers=staff.auth,
            json={"given_name": "A", "family_name": "B", **CANARIES},
        )
    ).json()
    second = (
        await client.post(
            "/v1/patients",
            headers=staff.auth,
            json={"given_name": "C", "family_name": "D", "notes": "second's own note"},
        )
    ).json()
    # A flipped byte in the first patient's notes.
    row = admin_conn.execute(
        "SELECT notes_sealed FROM patients.patients WHERE id = %s", (first["id"],)
    ).fetchone()
    assert row is not None
    flipped = bytearray(bytes(row[0]))  # type: ignore[arg-type]
    flipped[-5] ^= 0x01
    admin_conn.execute(
        "UPDATE patients.patients SET notes_sealed = %s WHERE id = %s",
        (bytes(flipped), first["id"]),
    )
    tampered = await client.get(f"/v1/patients/{first['id']}", headers=staff.auth)
    assert tampered.status_code == 500
    assert tampered.json()["code"] == "data_integrity"
    for canary in CANARIES.values():
        assert canary not in tampered.text
    # The first patient's (valid) phone ciphertext copied onto the second patient.
    admin_conn.execute(
        "UPDATE patients.patients SET notes_sealed ="
        " (SELECT phone_sealed FROM patients.patients WHERE id = %s) WHERE id = %s",
        (first["id"], second["id"]),
    )
    moved = await client.get(f"/v1/patients/{second['id']}", headers=staff.auth)
    assert moved.status_code == 500
    assert moved.json()["code"] == "data_integrity"
    assert CANARIES["phone"] not in moved.text


async def test_rotation_keeps_old_rows_readable_and_reseals_them(
    client: httpx.AsyncClient,
    app: CoreApp,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    staff = person(new_org(), "staff")
    created = (
        await client.post(
            "/v1/patients",
            headers=staff.auth,
            json={"given_name": "R", "family_name": "K", **CANARIES},
        )
    ).json()
    contact = (
        await client.post(
            "/v1/broadcasts/recipients",
            headers=staff.auth,
            json={"list_name": "rotation", "phone": "+385 91 555 0177"},
        )
    ).json()
    sealer: Sealer = app.dependencies.sealer
    old = sealer.keyring
    rotated = old.rotated(old.active.created_at + 1)
    _swap(sealer, rotated)
    try:
        read = await client.get(f"/v1/patients/{created['id']}", headers=staff.auth)
        assert read.status_code == 200
        assert read.json()["national_id"] == CANARIES["national_id"]
        done = await reseal_all(app.dependencies.database, sealer, batch=50)
        assert done.patients >= len(CANARIES)
        assert done.recipients >= 1
        phone = admin_conn.execute(
            "SELECT phone_sealed FROM broadcasts.recipients WHERE id = %s", (contact["id"],)
        ).fetchone()
        assert phone is not None
        assert rotated.is_current(bytes(phone[0]))
        row = admin_conn.execute(
            "SELECT national_id_sealed FROM patients.patients WHERE id = %s", (created["id"],)
        ).fetchone()
        assert row is not None
        assert rotated.is_current(bytes(row[0]))
        again = await client.get(f"/v1/patients/{created['id']}", headers=staff.auth)
        assert again.json() == read.json()
        assert (await reseal_all(app.dependencies.database, sealer)).patients == 0
    finally:
        _swap(sealer, rotated)  # keep the new key: rows now need it


def _swap(sealer: Sealer, keyring: DataKeyring) -> DataKeyring:
    previous = sealer.keyring
    sealer._keyring = keyring
    return previous
