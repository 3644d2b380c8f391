"""The field library: versioned definitions, values checked against them, sensitive values
sealed, and specialists' profiles built on the same machinery."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from support import Person


async def _field(client: httpx.AsyncClient, admin: Person, **body: Any) -> dict[str, Any]:
    answer = await client.post(
        "/v1/custom-fields", headers=admin.auth, json={"entity_type": "patient", **body}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def test_values_are_checked_with_pointers_and_definitions_version(
    client: httpx.AsyncClient,
    person: Callable[..., Person],
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    org = new_org()
    admin = person(org, "admin")
    pain = await _field(
        client, admin, key="pain", label="Pain", type="number", min=0, max=10, required=True
    )
    side = await _field(
        client, admin, key="side", label="Side", type="select", options=["left", "right"]
    )
    code = await _field(
        client, admin, key="code", label="Code", type="text", pattern="^[A-Z]{3}$", sensitive=True
    )
    await _field(client, admin, key="seen", label="Seen", type="date")
    patient = (
        await client.post(
            "/v1/patients", headers=admin.auth, json={"given_name": "V", "family_name": "W"}
        )
    ).json()
    url = f"/v1/patients/{patient['id']}/profile"
    bad = await client.put(
        url,
        headers={**admin.auth, "If-Match": "*"},
        json={"values": {"pain": 11, "side": "up", "code": "xqz", "seen": "2026-02-30", "nope": 1}},
    )
    assert bad.status_code == 422
    assert {e["pointer"]: e["code"] for e in bad.json()["errors"]} == {
        "/body/values/pain": "maximum",
        "/body/values/side": "enum",
        "/body/values/code": "pattern",
        "/body/values/seen": "format",
        "/body/values/nope": "unknown",
    }
    # The refused value is never echoed ("xqz" cannot hide in a hex request id, as "abc" could).
    assert "xqz" not in bad.text
    missing = await client.put(url, headers={**admin.auth, "If-Match": "*"}, json={"values": {}})
    assert [e["pointer"] for e in missing.json()["errors"]] == ["/body/values/pain"]

    good = await client.put(
        url,
        headers={**admin.auth, "If-Match": '"1"'},
        json={"values": {"pain": 4, "side": "left", "code": "ABC", "seen": "2026-02-28"}},
    )
    assert good.status_code == 200, good.text
    assert good.json()["values"] == {"code": "ABC", "pain": 4, "seen": "2026-02-28", "side": "left"}
    assert good.headers["ETag"] == '"2"'
    stored = admin_conn.execute(
        "SELECT custom_values::text, custom_sealed FROM patients.patients WHERE id = %s",
        (patient["id"],),
    ).fetchone()
    assert stored is not None
    assert "ABC" not in str(stored[0])
    assert b"ABC" not in bytes(stored[1])

    # Editing a field with values adds a definition; the stored value keeps its own.
    edited = await client.patch(
        f"/v1/custom-fields/{pain['id']}",
        headers={**admin.auth, "If-Match": '"1"'},
        json={"max": 5},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["definition"] == 2
    assert edited.json()["max"] == 5
    definitions = (
        await client.get(f"/v1/custom-fields/{pain['id']}/definitions", headers=admin.auth)
    ).json()["data"]
    assert [(d["definition"], d["max"], d["in_use"]) for d in definitions] == [
        (2, 5, False),
        (1, 10, True),
    ]
    profile = (await client.get(url, headers=admin.auth)).json()
    assert {f["key"]: f["definition"] for f in profile["fields"]}["pain"] == 1
    over = await client.put(
        url, headers={**admin.auth, "If-Match": "*"}, json={"values": {"pain": 6}}
    )
    assert over.status_code == 422
    # An unused field changes in place.
    relabelled = await client.patch(
        f"/v1/custom-fields/{side['id']}",
        headers={**admin.auth, "If-Match": "*"},
        json={"label": "Which side"},
    )
    assert relabelled.json()["definition"] == 2  # `side` has a value, so it versioned too
    archived = await client.delete(
        f"/v1/custom-fields/{code['id']}", headers={**admin.auth, "If-Match": "*"}
    )
    assert archived.status_code == 204
    refused = await client.put(
        url, headers={**admin.auth, "If-Match": "*"}, json={"values": {"pain": 1, "code": "XYZ"}}
    )
    assert [e["pointer"] for e in refused.json()["errors"]] == ["/body/values/code"]


async def test_field_definitions_are_checked(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    admin = person(new_org(), "admin")
    cases = [
        ({"key": "a", "label": "A", "type": "select"}, "/body/options"),
        ({"key": "b", "label": "B", "type": "text", "options": ["x"]}, "/body/options"),
        ({"key": "c", "label": "C", "type": "number", "min": 5, "max": 1}, "/body/min"),
        ({"key": "d", "label": "D", "type": "text", "pattern": "(unclosed"}, "/body/pattern"),
        ({"key": "e", "label": "E", "type": "boolean", "max": 1}, "/body/max"),
    ]
    for body, pointer in cases:
        answer = await client.post(
            "/v1/custom-fields", headers=admin.auth, json={"entity_type": "patient", **body}
        )
        assert answer.status_code == 422, body
        assert [e["pointer"] for e in answer.json()["errors"]] == [pointer]
    await _field(client, admin, key="dup", label="Dup", type="text")
    again = await client.post(
        "/v1/custom-fields",
        headers=admin.auth,
        json={"entity_type": "patient", "key": "dup", "label": "Dup", "type": "text"},
    )
    assert again.status_code == 409


async def test_specialists_and_their_specialties(
    client: httpx.AsyncClient, person: Callable[..., Person], new_org: Callable[..., uuid.UUID]
) -> None:
    org = new_org()
    admin, member, patient = person(org, "admin"), person(org, "specialist"), person(org, "patient")
    physio = (
        await client.post("/v1/specialties", headers=admin.auth, json={"name": "Physio"})
    ).json()
    twin = await client.post("/v1/specialties", headers=admin.auth, json={"name": "PHYSIO"})
    assert twin.status_code == 409
    created = await client.post(
        "/v1/specialists",
        headers=admin.auth,
        json={
            "user_id": str(member.user_id),
            "display_name": "Dana",
            "specialty_ids": [physio["id"]],
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["specialty_ids"] == [physio["id"]]
    stranger = await client.post(
        "/v1/specialists",
        headers=admin.auth,
        json={"user_id": str(uuid.uuid4()), "display_name": "X"},
    )
    assert stranger.status_code == 422
    assert stranger.json()["errors"][0]["pointer"] == "/body/user_id"
    held = await client.delete(
        f"/v1/specialties/{physio['id']}", headers={**admin.auth, "If-Match": "*"}
    )
    assert held.status_code == 409
    listed = await client.get(
        "/v1/specialists", headers=patient.auth, params={"specialty_id": physio["id"], "q": "dan"}
    )
    assert [s["display_name"] for s in listed.json()["data"]] == ["Dana"]
    assert (
        await client.post("/v1/specialties", headers=member.auth, json={"name": "Y"})
    ).status_code == 403
