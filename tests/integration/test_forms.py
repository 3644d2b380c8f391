"""Forms against the real database: design checks, frozen versions, pinned forms, prefill,
enable_when on submit, signatures the database keeps, amendments and verification."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from support import Clinic, book, day_at, template

from carebase.apps.core import CoreApp
from carebase.services.data_keys import reseal_all

ITEMS: list[dict[str, Any]] = [
    {"link_id": "history", "text": "Your history", "type": "group"},
    {
        "link_id": "pain",
        "parent_link_id": "history",
        "text": "Pain today",
        "type": "integer",
        "required": True,
        "min": 0,
        "max": 10,
    },
    {
        "link_id": "surgery",
        "parent_link_id": "history",
        "text": "Surgery on this joint?",
        "type": "boolean",
        "required": True,
    },
    {
        "link_id": "surgery_date",
        "parent_link_id": "history",
        "text": "When?",
        "type": "date",
        "required": True,
        "enable_when": {"conditions": [{"question": "surgery", "operator": "=", "answer": True}]},
    },
    {"link_id": "name", "text": "Name", "type": "string", "prefill": "patient.given_name"},
    {"link_id": "phone", "text": "Phone", "type": "string", "prefill": "patient.phone"},
    {"link_id": "secret", "text": "Anything else?", "type": "text", "sensitive": True},
]


async def design(
    client: httpx.AsyncClient, c: Clinic, items: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    made = await client.post(
        "/v1/form-templates",
        headers=c.admin.auth,
        json={"title": "Knee intake", "items": ITEMS if items is None else items, **extra},
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def publish(client: httpx.AsyncClient, c: Clinic, template_id: str) -> dict[str, Any]:
    done = await client.post(f"/v1/form-templates/{template_id}/publish", headers=c.admin.auth)
    assert done.status_code == 201, done.text
    return dict(done.json())


async def new_form(
    client: httpx.AsyncClient, c: Clinic, template_id: str, **extra: Any
) -> dict[str, Any]:
    made = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={"template_id": template_id, "patient_id": c.patient_id, **extra},
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def fill(
    client: httpx.AsyncClient, c: Clinic, form: dict[str, Any], values: dict[str, Any]
) -> httpx.Response:
    return await client.patch(
        f"/v1/forms/{form['id']}",
        headers={**c.staff.auth, "If-Match": "*"},
        json={"values": values},
    )


# --- design ---------------------------------------------------------------------------------


async def test_a_template_is_checked_as_a_whole(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    nested = [{"link_id": "g0", "text": "g", "type": "group"}] + [
        {"link_id": f"g{n}", "parent_link_id": f"g{n - 1}", "text": "g", "type": "group"}
        for n in range(1, 6)
    ]
    broken = [
        {"link_id": "a", "text": "A", "type": "string"},
        {"link_id": "a", "text": "again", "type": "string"},
        {"link_id": "b", "parent_link_id": "nowhere", "text": "B", "type": "string"},
        {"link_id": "c", "text": "C", "type": "choice"},
        {"link_id": "d", "text": "D", "type": "string", "prefill": "patient.shoe_size"},
        {"link_id": "e", "text": "E", "type": "string", "pattern": "(unclosed"},
        {
            "link_id": "f",
            "text": "F",
            "type": "string",
            "enable_when": {"conditions": [{"question": "ghost", "operator": "exists"}]},
        },
        *nested,
    ]
    refused = await client.post(
        "/v1/form-templates", headers=c.admin.auth, json={"title": "Broken", "items": broken}
    )
    assert refused.status_code == 422
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
        ("/body/items/1/link_id", "duplicate"),
        ("/body/items/2/parent_link_id", "not_found"),
        ("/body/items/3/options", "required"),
        ("/body/items/4/prefill", "not_found"),
        ("/body/items/5/pattern", "pattern"),
        ("/body/items/12/parent_link_id", "depth"),
        ("/body/items/6/enable_when/conditions/0/question", "not_found"),
    ]

    cycle = [
        {
            "link_id": "x",
            "text": "X",
            "type": "boolean",
            "enable_when": {"conditions": [{"question": "y", "operator": "exists"}]},
        },
        {
            "link_id": "y",
            "text": "Y",
            "type": "boolean",
            "enable_when": {"conditions": [{"question": "x", "operator": "exists"}]},
        },
    ]
    refused = await client.post(
        "/v1/form-templates", headers=c.admin.auth, json={"title": "Loop", "items": cycle}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["code"] == "cycle"

    # A custom field's key is a prefill key once it exists.
    field = await client.post(
        "/v1/custom-fields",
        headers=c.admin.auth,
        json={"entity_type": "patient", "key": "injury_side", "label": "Side", "type": "text"},
    )
    assert field.status_code == 201, field.text
    await design(
        client,
        c,
        [{"link_id": "side", "text": "Side", "type": "string", "prefill": "custom.injury_side"}],
    )
    assert (
        await client.post(
            "/v1/form-templates", headers=c.patient.auth, json={"title": "x", "items": []}
        )
    ).status_code == 403


async def test_publishing_freezes_versions(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    made = await design(client, c)
    assert made["latest_version"] == 0
    assert made["draft"]["items"][0]["link_id"] == "history"
    v1 = await publish(client, c, made["id"])
    assert v1["number"] == 1
    assert len(v1["schema_sha256"]) == 64
    after = await client.get(f"/v1/form-templates/{made['id']}", headers=c.staff.auth)
    assert after.json()["draft"] is None
    assert after.json()["latest_version"] == 1
    again = await client.post(f"/v1/form-templates/{made['id']}/publish", headers=c.admin.auth)
    assert again.status_code == 409
    assert again.json()["code"] == "no_draft"

    edited = await client.put(
        f"/v1/form-templates/{made['id']}",
        headers={**c.admin.auth, "If-Match": after.headers["etag"]},
        json={"title": "Knee intake", "items": ITEMS[:3]},
    )
    assert edited.status_code == 200, edited.text
    v2 = await publish(client, c, made["id"])
    assert v2["number"] == 2
    assert v2["schema_sha256"] != v1["schema_sha256"]
    listed = await client.get(f"/v1/form-templates/{made['id']}/versions", headers=c.patient.auth)
    assert [(v["number"], v["item_count"]) for v in listed.json()["data"]] == [(2, 3), (1, 7)]
    first = await client.get(f"/v1/form-templates/{made['id']}/versions/1", headers=c.patient.auth)
    assert first.json()["items"] == v1["items"]

    with pytest.raises(psycopg.errors.RestrictViolation):
        admin_conn.execute(
            "UPDATE forms.template_versions SET title = 'changed' WHERE template_id = %s",
            (made["id"],),
        )


# --- filling ----------------------------------------------------------------------------------


async def test_forms_pin_their_version(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await design(client, c)
    await publish(client, c, made["id"])
    old = await new_form(client, c, made["id"])
    stricter = [dict(ITEMS[1], max=5, parent_link_id=None), dict(ITEMS[2], parent_link_id=None)]
    stricter.append({"link_id": "consent", "text": "I agree", "type": "boolean", "required": True})
    edited = await client.put(
        f"/v1/form-templates/{made['id']}",
        headers={**c.admin.auth, "If-Match": "*"},
        json={"title": "Knee intake v2", "items": stricter},
    )
    assert edited.status_code == 200, edited.text
    await publish(client, c, made["id"])
    new = await new_form(client, c, made["id"])
    assert (old["template_version"], new["template_version"]) == (1, 2)
    assert (old["title"], new["title"]) == ("Knee intake", "Knee intake v2")

    assert (await fill(client, c, old, {"pain": 8, "surgery": False})).status_code == 200
    submitted = await client.post(f"/v1/forms/{old['id']}/submit", headers=c.staff.auth)
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "completed"

    refused = await fill(client, c, new, {"pain": 8})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "/body/values/pain"
    assert (await fill(client, c, new, {"pain": 3, "surgery": False})).status_code == 200
    missing = await client.post(f"/v1/forms/{new['id']}/submit", headers=c.staff.auth)
    assert missing.status_code == 422
    assert [e["pointer"] for e in missing.json()["errors"]] == ["/values/consent"]
    pinned = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={"template_id": made["id"], "template_version": 1, "patient_id": c.patient_id},
    )
    assert pinned.json()["template_version"] == 1
    unknown = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={"template_id": made["id"], "template_version": 9, "patient_id": c.patient_id},
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "/body/template_version"


async def test_hidden_required_items_do_not_block_submit_and_their_answers_go(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await design(client, c)
    await publish(client, c, made["id"])
    form = await new_form(client, c, made["id"])
    filled = await fill(client, c, form, {"pain": 2, "surgery": True, "surgery_date": "2024-05-01"})
    assert filled.json()["status"] == "in_progress"
    needs_date = await fill(client, c, form, {"surgery_date": None})
    assert "surgery_date" not in needs_date.json()["values"]
    blocked = await client.post(f"/v1/forms/{form['id']}/submit", headers=c.patient.auth)
    assert [e["pointer"] for e in blocked.json()["errors"]] == ["/values/surgery_date"]

    await fill(client, c, form, {"surgery": False, "surgery_date": "2024-05-01"})
    done = await client.post(f"/v1/forms/{form['id']}/submit", headers=c.patient.auth)
    assert done.status_code == 200, done.text
    assert done.json()["values"] == {"pain": 2, "surgery": False}
    locked = await fill(client, c, form, {"pain": 3})
    assert locked.status_code == 409
    assert locked.json()["code"] == "form_locked"


async def test_prefill_copies_the_profile_once(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    record = await client.get(f"/v1/patients/{c.patient_id}", headers=c.staff.auth)
    changed = await client.patch(
        f"/v1/patients/{c.patient_id}",
        headers={**c.staff.auth, "If-Match": record.headers["etag"]},
        json={"phone": "+40 721 000 111"},
    )
    assert changed.status_code == 200, changed.text
    made = await design(client, c)
    await publish(client, c, made["id"])
    form = await new_form(client, c, made["id"], prefill=True, values={"name": "Anca"})
    assert form["values"] == {"name": "Anca", "phone": "+40 721 000 111"}
    assert form["prefill_sources"] == {"phone": "patient.phone"}

    await client.patch(
        f"/v1/patients/{c.patient_id}",
        headers={**c.staff.auth, "If-Match": "*"},
        json={"phone": "+40 799 999 999"},
    )
    again = await client.get(f"/v1/forms/{form['id']}", headers=c.staff.auth)
    assert again.json()["values"]["phone"] == "+40 721 000 111"
    nobody = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={"template_id": made["id"], "patient_id": str(uuid.uuid4()), "prefill": True},
    )
    assert nobody.status_code == 422
    assert nobody.json()["errors"][0]["pointer"] == "/body/patient_id"


# --- signing ----------------------------------------------------------------------------------


async def _signed(client: httpx.AsyncClient, c: Clinic, canary: str) -> dict[str, Any]:
    made = await design(client, c, signer_roles=["specialist", "patient"])
    await publish(client, c, made["id"])
    form = await new_form(client, c, made["id"])
    await fill(client, c, form, {"pain": 4, "surgery": False, "secret": canary})
    await client.post(f"/v1/forms/{form['id']}/submit", headers=c.staff.auth)
    staff = await client.post(
        f"/v1/forms/{form['id']}/sign", headers=c.staff.auth, json={"meaning": "reviewed"}
    )
    assert staff.status_code == 403  # the template names its signers
    signed = await client.post(
        f"/v1/forms/{form['id']}/sign", headers=c.specialist.auth, json={"meaning": "reviewed"}
    )
    assert signed.status_code == 200, signed.text
    return dict(signed.json())


async def test_a_signed_form_is_kept_by_the_database(
    client: httpx.AsyncClient,
    app: CoreApp,
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    canary = f"canary-{uuid.uuid4().hex}"
    form = await _signed(client, c, canary)
    signature = form["signature"]
    assert signature["signer_role"] == "specialist"
    assert signature["meaning"] == "reviewed"
    assert form["values"]["secret"] == canary

    raw = admin_conn.execute(
        "SELECT answers::text, sealed_answers FROM forms.forms WHERE id = %s", (form["id"],)
    ).fetchone()
    assert raw is not None
    assert canary not in raw[0]
    assert canary.encode() not in bytes(raw[1])

    with pytest.raises(psycopg.errors.RestrictViolation):
        admin_conn.execute(
            "UPDATE forms.forms SET answers = '{\"pain\": 9}' WHERE id = %s", (form["id"],)
        )
    with pytest.raises(psycopg.errors.RestrictViolation):
        admin_conn.execute("DELETE FROM forms.forms WHERE id = %s", (form["id"],))

    resign = await client.post(
        f"/v1/forms/{form['id']}/sign", headers=c.specialist.auth, json={"meaning": "approved"}
    )
    assert resign.status_code == 409
    deleted = await client.delete(
        f"/v1/forms/{form['id']}", headers={**c.admin.auth, "If-Match": "*"}
    )
    assert deleted.status_code == 409

    # Rotating the data keys re-seals the answers: the one change a signed form accepts.
    sealer = app.dependencies.sealer
    rotated = sealer.keyring.rotated(sealer.keyring.active.created_at + 1)
    sealer._keyring = rotated
    assert (await reseal_all(app.dependencies.database, sealer)).forms >= 1
    resealed = admin_conn.execute(
        "SELECT sealed_answers FROM forms.forms WHERE id = %s", (form["id"],)
    ).fetchone()
    assert resealed is not None
    assert rotated.is_current(bytes(resealed[0]))

    ok = await client.get(f"/v1/forms/{form['id']}/verify", headers=c.patient.auth)
    assert ok.status_code == 200
    assert ok.json()["valid"] is True
    assert ok.json()["computed_content_sha256"] == signature["content_sha256"]

    # Someone with the owner's rights switches the trigger off and edits the row.
    with admin_conn.transaction():
        admin_conn.execute("ALTER TABLE forms.forms DISABLE TRIGGER forms_signed_immutable")
        admin_conn.execute(
            "UPDATE forms.forms SET answers = answers || '{\"pain\": 1}' WHERE id = %s",
            (form["id"],),
        )
        admin_conn.execute("ALTER TABLE forms.forms ENABLE TRIGGER forms_signed_immutable")
    tampered = await client.get(f"/v1/forms/{form['id']}/verify", headers=c.staff.auth)
    assert tampered.status_code == 200
    assert tampered.json()["valid"] is False
    events = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE organization_id = %s"
        " AND action = 'security.form_signature_mismatch' AND entity_id = %s",
        (c.org, form["id"]),
    ).fetchone()
    assert events == (1,)


async def test_amending_makes_a_linked_correction(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    form = await _signed(client, c, "nothing to hide")
    draft = await client.post(f"/v1/forms/{form['id']}/amend", headers=c.staff.auth, json={})
    assert draft.status_code == 422
    amended = await client.post(
        f"/v1/forms/{form['id']}/amend", headers=c.staff.auth, json={"reason": "Wrong knee."}
    )
    assert amended.status_code == 201, amended.text
    correction = amended.json()
    assert correction["amends_id"] == form["id"]
    assert correction["amend_reason"] == "Wrong knee."
    assert correction["status"] == "in_progress"
    assert correction["values"] == form["values"]
    old = await client.get(f"/v1/forms/{form['id']}", headers=c.staff.auth)
    assert old.json()["amended_by_id"] == correction["id"]
    assert old.json()["signature"] == form["signature"]
    twice = await client.post(
        f"/v1/forms/{form['id']}/amend", headers=c.staff.auth, json={"reason": "Again."}
    )
    assert twice.status_code == 409
    verified = await client.get(f"/v1/forms/{form['id']}/verify", headers=c.staff.auth)
    assert verified.json()["valid"] is True  # the link to the correction is not content

    assert (await fill(client, c, correction, {"pain": 6})).status_code == 200
    not_signed = await client.get(f"/v1/forms/{correction['id']}/verify", headers=c.staff.auth)
    assert not_signed.status_code == 409


async def test_a_patient_reaches_only_their_own_forms(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    person: Callable[..., Any],
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    made = await design(client, c)
    await publish(client, c, made["id"])
    mine = await new_form(client, c, made["id"])
    other = person(c.org, "patient")
    row = admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name, user_id)"
        " VALUES (%s, 'Ion', 'Rus', %s) RETURNING id",
        (c.org, other.user_id),
    ).fetchone()
    assert row is not None
    theirs = await client.get(f"/v1/forms/{mine['id']}", headers=other.auth)
    assert theirs.status_code == 404
    listed = await client.get("/v1/forms", headers=other.auth)
    assert listed.json()["data"] == []
    for_someone_else = await client.post(
        "/v1/forms",
        headers=other.auth,
        json={"template_id": made["id"], "patient_id": c.patient_id},
    )
    assert for_someone_else.status_code == 422
    own = await client.get("/v1/forms", headers=c.patient.auth)
    assert [f["id"] for f in own.json()["data"]] == [mine["id"]]
    assert (await fill(client, c, mine, {"pain": 1})).status_code == 200

    # A patient with a signed form is kept: the form is a clinical record.
    await fill(client, c, mine, {"surgery": False})
    await client.post(f"/v1/forms/{mine['id']}/submit", headers=c.patient.auth)
    await client.post(
        f"/v1/forms/{mine['id']}/sign", headers=c.specialist.auth, json={"meaning": "reviewed"}
    )
    kept = await client.delete(
        f"/v1/patients/{c.patient_id}", headers={**c.admin.auth, "If-Match": "*"}
    )
    assert kept.status_code == 409


# --- appointments -----------------------------------------------------------------------------


async def test_forms_attach_to_appointments(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await design(client, c)
    draft_only = await design(client, c)
    await publish(client, c, made["id"])
    visit = (await book(client, c, day_at(3, 9))).json()
    path = f"/v1/appointments/{visit['id']}/attach-forms"
    refused = await client.post(
        path, headers=c.staff.auth, json={"form_template_ids": [made["id"], draft_only["id"]]}
    )
    assert refused.status_code == 422
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
        ("/body/form_template_ids/1", "unpublished")
    ]
    for _ in range(2):
        attached = await client.post(
            path, headers=c.staff.auth, json={"form_template_ids": [made["id"]]}
        )
        assert attached.status_code == 200, attached.text
        assert attached.json()["form_template_ids"] == [made["id"]]
    found = await client.get(f"/v1/forms?appointment_id={visit['id']}", headers=c.patient.auth)
    assert [(f["template_id"], f["status"]) for f in found.json()["data"]] == [
        (made["id"], "draft")
    ]
    history = await client.get(f"/v1/appointments/{visit['id']}/events", headers=c.staff.auth)
    assert [e["kind"] for e in history.json()["data"]].count("forms_attached") == 2

    # An appointment template's forms come with every booking made from it.
    unknown = await client.post(
        "/v1/appointment-templates",
        headers=c.admin.auth,
        json={
            "slug": "with-ghost-forms",
            "title": "x",
            "duration_minutes": 30,
            "form_template_ids": [str(uuid.uuid4())],
        },
    )
    assert unknown.status_code == 422
    offer = await template(client, c, form_template_ids=[made["id"]])
    booked = await client.post(
        "/v1/appointments/from-template",
        headers=c.staff.auth,
        json={
            "template_id": offer["id"],
            "specialist_id": c.specialist_id,
            "patient_id": c.patient_id,
            "starts_at": day_at(4, 9).isoformat(),
        },
    )
    assert booked.status_code == 201, booked.text
    found = await client.get(
        f"/v1/forms?appointment_id={booked.json()['id']}", headers=c.staff.auth
    )
    assert [f["template_id"] for f in found.json()["data"]] == [made["id"]]
    # A form deleted on purpose stays deleted when the visit moves.
    dropped = await client.delete(
        f"/v1/forms/{found.json()['data'][0]['id']}", headers={**c.staff.auth, "If-Match": "*"}
    )
    assert dropped.status_code == 204
    moved = await client.post(
        f"/v1/appointments/{booked.json()['id']}/reschedule",
        headers={**c.staff.auth, "If-Match": "*"},
        json={"starts_at": day_at(5, 9).isoformat(), "reason": "Later."},
    )
    assert moved.status_code == 200, moved.text
    again = await client.get(
        f"/v1/forms?appointment_id={booked.json()['id']}", headers=c.staff.auth
    )
    assert again.json()["data"] == []
    in_use = await client.delete(
        f"/v1/form-templates/{made['id']}", headers={**c.admin.auth, "If-Match": "*"}
    )
    assert in_use.status_code == 409
    unused = await client.delete(
        f"/v1/form-templates/{draft_only['id']}", headers={**c.admin.auth, "If-Match": "*"}
    )
    assert unused.status_code == 204
