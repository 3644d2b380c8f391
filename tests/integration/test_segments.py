"""Segments through the API against the real database: dynamic segments evaluated on write
and by the worker, static ones by hand and by import, the registry, pointers on bad rules,
roles, and another tenant's rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from support import Clinic, Person

from carebase.apps.core import CoreApp
from carebase.errors import DependencyUnavailable
from carebase.principal import Principal
from carebase.services import segments as segment_service
from carebase.services.segments import SegmentRefresher, SegmentService

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]
ANY = {"If-Match": "*"}


def active(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "combinator": "and",
        "rules": [{"field": "status", "operator": "=", "value": "active"}, *extra],
    }


def add_patients(conn: Conn, org: uuid.UUID, *names: tuple[str, str, str]) -> list[str]:
    """Patients (given, family, status) of `org`, straight into the database."""
    ids = []
    for given, family, status in names:
        row = conn.execute(
            "INSERT INTO patients.patients (organization_id, given_name, family_name, status)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (org, given, family, status),
        ).fetchone()
        assert row is not None
        ids.append(str(row[0]))
    return ids


async def make_segment(
    client: httpx.AsyncClient, who: Person, body: dict[str, Any]
) -> dict[str, Any]:
    answer = await client.post("/v1/segments", headers=who.auth, json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def member_ids(client: httpx.AsyncClient, who: Person, segment_id: str) -> set[str]:
    answer = await client.get(
        f"/v1/segments/{segment_id}/members", headers=who.auth, params={"page_size": 100}
    )
    assert answer.status_code == 200, answer.text
    return {m["patient_id"] for m in answer.json()["data"]}


async def test_a_dynamic_segment_is_evaluated_on_create_and_when_its_rules_change(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    kept, archived, other = add_patients(
        admin_conn, c.org, ("Ana", "Horvat", "active"), ("Ivo", "Horvat", "archived"),
        ("Mia", "Babic", "active"),
    )  # fmt: skip
    made = await make_segment(
        client,
        c.staff,
        {
            "name": "Horvats",
            "kind": "dynamic",
            "rules": active({"field": "family_name", "operator": "beginsWith", "value": "hor"}),
        },
    )
    assert made["member_count"] == 1
    assert made["evaluated_at"] is not None
    assert await member_ids(client, c.staff, made["id"]) == {kept}
    assert made["rules"]["rules"][1]["value"] == "hor"  # kept as given

    changed = await client.patch(
        f"/v1/segments/{made['id']}",
        headers={**c.staff.auth, "If-Match": f'"{made["version"]}"'},
        json={"rules": {"combinator": "or", "not": True, "rules": [active()]}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["member_count"] == 1
    assert await member_ids(client, c.staff, made["id"]) == {archived}
    stale = await client.patch(
        f"/v1/segments/{made['id']}",
        headers={**c.staff.auth, "If-Match": f'"{made["version"]}"'},
        json={"name": "Late"},
    )
    assert stale.status_code == 412

    mine = await client.get(f"/v1/patients/{archived}/segments", headers=c.specialist.auth)
    assert [s["name"] for s in mine.json()["data"]] == ["Horvats"]
    none = await client.get(f"/v1/patients/{other}/segments", headers=c.specialist.auth)
    assert none.json()["data"] == []


async def test_evaluating_reports_who_joined_and_who_left(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    first, second = add_patients(
        admin_conn, c.org, ("Ana", "Kovac", "active"), ("Ivo", "Kovac", "active")
    )
    made = await make_segment(
        client,
        c.admin,
        {"name": "Kovac", "kind": "dynamic", "rules": active({"field": "family_name",
         "operator": "=", "value": "Kovac"})},
    )  # fmt: skip
    assert made["member_count"] == 2
    admin_conn.execute("UPDATE patients.patients SET status = 'archived' WHERE id = %s", (first,))
    (third,) = add_patients(admin_conn, c.org, ("Ema", "Kovac", "active"))
    answer = await client.post(f"/v1/segments/{made['id']}/evaluate", headers=c.admin.auth)
    assert answer.status_code == 200, answer.text
    assert {k: answer.json()[k] for k in ("added", "removed", "member_count")} == {
        "added": 1,
        "removed": 1,
        "member_count": 2,
    }
    assert await member_ids(client, c.admin, made["id"]) == {second, third}
    again = await client.post(f"/v1/segments/{made['id']}/evaluate", headers=c.admin.auth)
    assert (again.json()["added"], again.json()["removed"]) == (0, 0)
    fetched = await client.get(f"/v1/segments/{made['id']}", headers=c.admin.auth)
    assert fetched.json()["version"] > made["version"]  # what it shows changed: a new ETag


async def test_static_segments_take_members_by_hand_and_by_import(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    a, b, d = add_patients(
        admin_conn, c.org, ("Ana", "A", "active"), ("Bo", "B", "active"), ("Di", "D", "archived")
    )
    static = await make_segment(client, c.staff, {"name": "Campaign", "kind": "static"})
    assert "rules" not in static
    assert static["evaluated_at"] is None
    base = f"/v1/segments/{static['id']}/members"
    added = await client.post(base, headers=c.staff.auth, json={"patient_ids": [a, b]})
    assert added.json() == {"added": 2, "removed": 0, "member_count": 2}
    twice = await client.post(base, headers=c.staff.auth, json={"patient_ids": [a]})
    assert twice.json() == {"added": 0, "removed": 0, "member_count": 2}
    unknown = await client.post(
        base, headers=c.staff.auth, json={"patient_ids": [d, str(uuid.uuid4())]}
    )
    assert unknown.status_code == 422
    assert [e["pointer"] for e in unknown.json()["errors"]] == ["/body/patient_ids/1"]
    assert await member_ids(client, c.staff, static["id"]) == {a, b}  # nothing half-written

    removed = await client.delete(
        base, headers=c.staff.auth, params=[("patient_id", a), ("patient_id", str(uuid.uuid4()))]
    )
    assert removed.json() == {"added": 0, "removed": 1, "member_count": 1}

    listed_by_rule = {"field": "family_name", "operator": "in", "value": ["A", "B", "D"]}
    everyone = await make_segment(
        client,
        c.staff,
        {"name": "A, B, D", "kind": "dynamic", "rules": {"combinator": "and",
         "rules": [listed_by_rule]}},
    )  # fmt: skip
    assert everyone["member_count"] == 3
    imported = await client.post(
        base, headers=c.staff.auth, json={"from_segment_id": everyone["id"]}
    )
    assert imported.json() == {"added": 2, "removed": 0, "member_count": 3}
    listed = await client.get(base, headers=c.staff.auth)
    assert {m["patient_id"]: m["source"] for m in listed.json()["data"]} == {
        a: "import",
        b: "manual",
        d: "import",
    }
    # A dynamic segment's rules decide its members; a static one has no rules to evaluate.
    to_dynamic = await client.post(
        f"/v1/segments/{everyone['id']}/members", headers=c.staff.auth, json={"patient_ids": [a]}
    )
    assert to_dynamic.status_code == 409
    evaluated = await client.post(f"/v1/segments/{static['id']}/evaluate", headers=c.staff.auth)
    assert evaluated.status_code == 409
    deleted = await client.delete(f"/v1/segments/{static['id']}", headers={**c.staff.auth, **ANY})
    assert deleted.status_code == 204
    assert (await client.get(base, headers=c.staff.auth)).status_code == 404


async def test_bad_rules_are_refused_with_pointers_and_nothing_is_written(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    cases = [
        ({"name": "x", "kind": "dynamic"}, "/body/rules"),
        ({"name": "x", "kind": "static", "rules": active()}, "/body/rules"),
        (
            {"name": "x", "kind": "dynamic", "rules": active(
                {"field": "notes", "operator": "contains", "value": "pain"})},
            "/body/rules/rules/1/field",
        ),
        (
            {"name": "x", "kind": "dynamic", "rules": active(
                {"field": "last_visit", "operator": "moreThanDaysAgo", "value": -1})},
            "/body/rules/rules/1/value",
        ),
        (
            {"name": "x", "kind": "dynamic", "rules": active(
                {"field": "email", "operator": "in", "value": ["a"] * 501})},
            "/body/rules/rules/1",  # the contract's bound: no shape of a rule allows it
        ),
    ]  # fmt: skip
    for body, pointer in cases:
        answer = await client.post("/v1/segments", headers=c.admin.auth, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert pointer in [e["pointer"] for e in answer.json()["errors"]], answer.text
    deep: dict[str, Any] = {"field": "status", "operator": "null"}
    for _ in range(5):
        deep = {"combinator": "and", "rules": [deep]}
    too_deep = await client.post(
        "/v1/segments", headers=c.admin.auth, json={"name": "x", "kind": "dynamic", "rules": deep}
    )
    assert too_deep.status_code == 422  # the contract's levels stop at four
    count = admin_conn.execute(
        "SELECT count(*) FROM segments.segments WHERE organization_id = %s", (c.org,)
    ).fetchone()
    assert count == (0,)


async def test_the_registry_lists_safe_fields_with_their_options(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    for key, kind, sensitive, options in (
        ("goal", "select", False, ["walk", "run"]),
        ("diagnosis", "text", True, None),
    ):
        body: dict[str, Any] = {
            "entity_type": "patient", "key": key, "label": key.title(), "type": kind,
            "sensitive": sensitive,
        }  # fmt: skip
        if options:
            body["options"] = options
        made = await client.post("/v1/custom-fields", headers=c.admin.auth, json=body)
        assert made.status_code == 201, made.text
    specialty = await client.post("/v1/specialties", headers=c.admin.auth, json={"name": "Physio"})
    answer = await client.get("/v1/segments/fields", headers=c.specialist.auth)
    assert answer.status_code == 200, answer.text
    fields = {f["key"]: f for f in answer.json()["data"]}
    assert "custom.diagnosis" not in fields  # sensitive: sealed, never a field
    assert fields["custom.goal"]["options"] == [
        {"value": "walk", "label": "walk"},
        {"value": "run", "label": "run"},
    ]
    assert {"value": specialty.json()["id"], "label": "Physio"} in fields["specialty_seen"][
        "options"
    ]
    assert fields["last_visit"]["type"] == "date"
    assert "withinLastDays" in fields["last_visit"]["operators"]
    assert not {"birth_date", "national_id", "phone", "address", "notes"} & set(fields)

    goal = await make_segment(
        client, c.admin, {"name": "Runners", "kind": "dynamic", "rules": {"combinator": "and",
        "rules": [{"field": "custom.goal", "operator": "in", "value": ["run"]}]}},
    )  # fmt: skip
    assert goal["member_count"] == 0


async def test_roles_and_other_tenants(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c, other = clinic(), clinic()
    (theirs,) = add_patients(admin_conn, other.org, ("Zed", "Other", "active"))
    mine = await make_segment(client, c.admin, {"name": "Mine", "kind": "static"})
    theirs_segment = await make_segment(client, other.admin, {"name": "Theirs", "kind": "static"})

    assert (await client.get("/v1/segments", headers=c.patient.auth)).status_code == 403
    read = await client.get("/v1/segments", headers=c.specialist.auth)
    assert [s["name"] for s in read.json()["data"]] == ["Mine"]
    write = await client.post(
        f"/v1/segments/{mine['id']}/members", headers=c.specialist.auth,
        json={"patient_ids": [c.patient_id]},
    )  # fmt: skip
    assert write.status_code == 403

    for path in (f"/v1/segments/{theirs_segment['id']}", f"/v1/patients/{theirs}/segments"):
        assert (await client.get(path, headers=c.admin.auth)).status_code == 404
    foreign_patient = await client.post(
        f"/v1/segments/{mine['id']}/members", headers=c.admin.auth, json={"patient_ids": [theirs]}
    )
    assert foreign_patient.status_code == 422
    foreign_import = await client.post(
        f"/v1/segments/{mine['id']}/members",
        headers=c.admin.auth,
        json={"from_segment_id": theirs_segment["id"]},
    )
    assert foreign_import.status_code == 422
    assert [e["pointer"] for e in foreign_import.json()["errors"]] == ["/body/from_segment_id"]


async def test_the_worker_refreshes_due_dynamic_segments_once(
    app: CoreApp, client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    made = await make_segment(
        client, c.admin, {"name": "Active", "kind": "dynamic", "rules": active()}
    )
    assert made["member_count"] == 1  # the clinic's own patient
    add_patients(admin_conn, c.org, ("Ana", "New", "active"))
    database = app.dependencies.database
    service = SegmentService(db=database)
    refresher = SegmentRefresher(database, service, age_s=3600)
    await refresher.run_once()
    fresh = await client.get(f"/v1/segments/{made['id']}", headers=c.admin.auth)
    assert fresh.json()["member_count"] == 1  # evaluated just now: not due yet

    admin_conn.execute(
        "UPDATE segments.segments SET evaluated_at = now() - interval '2 hours' WHERE id = %s",
        (made["id"],),
    )
    # Two workers at once: one evaluates it, the other finds it taken or no longer due.
    done = await asyncio.gather(
        service.refresh(c.org, uuid.UUID(made["id"]), age_s=3600),
        service.refresh(c.org, uuid.UUID(made["id"]), age_s=3600),
    )
    assert sorted(done) == [False, True]
    fresh = await client.get(f"/v1/segments/{made['id']}", headers=c.admin.auth)
    assert fresh.json()["member_count"] == 2


async def test_rules_slower_than_the_timeout_are_a_503_and_change_nothing(
    app: CoreApp,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = clinic()
    service = SegmentService(db=app.dependencies.database, timeout_ms=50)
    principal = Principal(c.admin.user_id, c.org, "admin")
    made = await service.create(principal, name="Slow", description="", kind="dynamic",
                                tree=active())  # fmt: skip
    slow = sql.SQL("SELECT p.id FROM patients.patients p, pg_sleep(0.5) WHERE true")
    monkeypatch.setattr(segment_service.rules, "matching_patients", lambda compiled: slow)
    with pytest.raises(DependencyUnavailable):
        await service.evaluate(principal, made.id)
    row = admin_conn.execute(
        "SELECT version, evaluated_at FROM segments.segments WHERE id = %s", (made.id,)
    ).fetchone()
    assert row == (made.version, made.evaluated_at)
