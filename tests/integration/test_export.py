"""CSV export against the real database and a real uvicorn: formula defusing, health data
behind `export:phi`, filters, the audit record, the rate limit, one export at a time per
organization, flat memory and an early first byte at 100k rows, and a cut connection when
an export fails midway."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from support import Clinic

from carebase.services import export as export_service

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rows_of(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline="")))


async def cursor_left_open(superuser_url: str, within_s: float = 10.0) -> bool:
    """Whether a core connection sits in a transaction whose last statement was a FETCH
    (the superuser: other roles' sessions show no query to the owner)."""
    deadline = asyncio.get_running_loop().time() + within_s
    async with await psycopg.AsyncConnection.connect(superuser_url, autocommit=True) as conn:
        while asyncio.get_running_loop().time() < deadline:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'carebase-core'"
                " AND query LIKE 'FETCH%%' AND state IN ('idle in transaction', 'active')"
            )
            found = await cursor.fetchone()
            if found and found[0]:
                return True
            await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
    return False


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


async def export(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/v1/export/csv", headers=auth, json=body)


async def test_cells_that_spreadsheets_would_run_come_out_defused(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await client.post(
        "/v1/patients",
        headers=c.admin.auth,
        json={"given_name": '=HYPERLINK("x")', "family_name": "@SUM(1)", "phone": "+40 712 345 678",
              "notes": "\t=1"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    answer = await export(
        client,
        c.admin.auth,
        {"entity": "patients", "columns": ["given_name", "family_name", "phone", "notes", "id"]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith('attachment; filename="patients-')
    assert b"\r\n" in answer.content
    found = {row[4]: row for row in rows_of(answer.text)[1:]}
    assert found[made.json()["id"]][:4] == ["'=HYPERLINK(\"x\")", "'@SUM(1)", "'+40 712 345 678",
                                           "'\t=1"]  # fmt: skip


def test_numbers_stay_numbers_and_text_is_defused() -> None:
    assert export_service.cell(-3) == "-3"
    assert export_service.cell(2.5) == "2.5"
    assert export_service.cell("-3") == "'-3"
    assert export_service.cell("\0x") == "'\0x"
    assert export_service.cell("\rx") == "'\rx"
    assert export_service.cell("Ana") == "Ana"
    assert export_service.cell(True) == "true"
    assert export_service.cell(None) == ""


async def test_health_data_needs_its_permission_and_columns_their_allow_list(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    refused = await export(client, c.staff.auth, {"entity": "patients", "columns": ["id", "phone"]})
    assert refused.status_code == 403
    assert "phone" in refused.json()["detail"]
    unknown = await export(
        client, c.admin.auth, {"entity": "patients", "columns": ["id", "password_hash"]}
    )
    assert unknown.status_code == 422
    assert [e["pointer"] for e in unknown.json()["errors"]] == ["/body/columns/1"]
    default = await export(client, c.staff.auth, {"entity": "patients", "bom": False})
    header = default.text.splitlines()[0].split(",")
    assert not default.text.startswith("\ufeff")
    assert "phone" not in header
    assert "notes" not in header
    assert "given_name" in header
    patient = await export(client, c.patient.auth, {"entity": "patients"})
    assert patient.status_code == 403
    listed = await client.get("/v1/export/columns", headers=c.staff.auth)
    health = {(col["entity"], col["key"]) for col in listed.json()["data"] if col["health_data"]}
    assert ("forms", "answers") in health
    assert ("patients", "national_id") in health


async def test_a_segment_and_a_range_narrow_it_and_the_trail_records_it(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    for given, created in (("Old", "2025-01-10T12:00Z"), ("Mid", "2025-06-01T12:00Z")):
        admin_conn.execute(
            "INSERT INTO patients.patients (organization_id, given_name, family_name, created_at)"
            " VALUES (%s, %s, 'Range', %s)",
            (c.org, given, created),
        )
    segment = await client.post(
        "/v1/segments",
        headers=c.admin.auth,
        json={"name": "Range", "kind": "dynamic", "rules": {"combinator": "and", "rules": [
            {"field": "family_name", "operator": "=", "value": "Range"}]}},
    )  # fmt: skip
    assert segment.json()["member_count"] == 2
    body = {
        "entity": "patients",
        "columns": ["given_name"],
        "segment_id": segment.json()["id"],
        "from": "2025-05-01",
        "to": "2025-06-01",
    }
    answer = await export(client, c.admin.auth, body)
    assert rows_of(answer.text) == [["given_name"], ["Mid"]]
    unknown = await export(client, c.admin.auth, {**body, "segment_id": str(uuid.uuid4())})
    assert [e["pointer"] for e in unknown.json()["errors"]] == ["/body/segment_id"]
    backwards = await export(client, c.admin.auth, {**body, "from": "2025-07-01"})
    assert [e["pointer"] for e in backwards.json()["errors"]] == ["/body/to"]

    trail = await client.get("/v1/audit-log", headers=c.admin.auth, params={"action": "export.csv"})
    (event,) = trail.json()["data"]
    assert event["detail"] == {
        "entity": "patients",
        "columns": ["given_name"],
        "segment_id": segment.json()["id"],
        "from": "2025-05-01",
        "to": "2025-06-01",
        "rows": 1,
        "bytes": len(answer.content),
        "complete": True,
    }


async def test_appointments_and_forms_export_with_their_own_columns(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    for entity, column in (("appointments", "specialist_name"), ("forms", "template_title")):
        answer = await export(client, c.admin.auth, {"entity": entity})
        assert answer.status_code == 200, answer.text
        assert column in rows_of(answer.text)[0]
    answers = await export(
        client, c.admin.auth, {"entity": "forms", "columns": ["id", "answers", "status"]}
    )
    assert rows_of(answers.text)[0] == ["id", "answers", "status"]


async def test_the_sixth_export_in_five_minutes_is_429(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    for _ in range(5):
        answer = await export(client, c.staff.auth, {"entity": "patients", "columns": ["id"]})
        assert answer.status_code == 200, answer.text
    sixth = await export(client, c.staff.auth, {"entity": "patients", "columns": ["id"]})
    assert sixth.status_code == 429
    assert int(sixth.headers["retry-after"]) > 0
    other = await export(client, c.admin.auth, {"entity": "patients", "columns": ["id"]})
    assert other.status_code == 200  # per user


async def test_one_export_at_a_time_per_organization(
    live_server: str, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name)"
        " SELECT %s, 'Many', 'P' || n FROM generate_series(1, 20000) AS n",
        (c.org,),
    )
    body = {"entity": "patients", "columns": ["id", "given_name", "family_name"]}
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as http:
        async with http.stream("POST", "/v1/export/csv", headers=c.admin.auth, json=body) as first:
            assert first.status_code == 200
            chunks = first.aiter_bytes()
            lines = (await anext(chunks)).count(b"\r\n")
            second = await http.post("/v1/export/csv", headers=c.staff.auth, json=body)
            assert second.status_code == 409, second.text
            async for chunk in chunks:
                lines += chunk.count(b"\r\n")
        assert lines >= 20_000
        third = await http.post("/v1/export/csv", headers=c.staff.auth, json=body)
        assert third.status_code == 200  # the lock ended with the first export


async def test_100k_rows_stream_in_flat_memory_and_start_before_the_end(
    live_server: str, clinic: Callable[..., Clinic], admin_conn: Conn, stack: Any
) -> None:
    c = clinic()
    admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name, email)"
        " SELECT %s, 'Patient', 'Number ' || n, 'p' || n || '@example.com'"
        " FROM generate_series(1, 100000) AS n",
        (c.org,),
    )
    body = {"entity": "patients"}
    baseline = rss_bytes()
    peak = baseline
    lines = 0
    async with (
        httpx.AsyncClient(base_url=live_server, timeout=60) as http,
        http.stream("POST", "/v1/export/csv", headers=c.admin.auth, json=body) as got,
    ):
        assert got.status_code == 200
        chunks = got.aiter_bytes()
        lines += (await anext(chunks)).count(b"\r\n")
        # The first bytes are here (the header row leaves before the query runs); while the
        # client reads no further, the export's cursor stays open mid-way: a FETCH of a
        # transaction that has not ended. Polled, with a deadline: the server may still be
        # declaring the cursor when the header arrives.
        assert await cursor_left_open(stack.superuser_url)
        async for chunk in chunks:
            lines += chunk.count(b"\r\n")
            peak = max(peak, rss_bytes())
    assert lines == 100_001
    assert peak - baseline < 20 * 1024 * 1024, f"RSS grew {(peak - baseline) / 2**20:.1f} MiB"


async def test_a_failure_midway_cuts_the_connection(
    live_server: str,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = clinic()
    admin_conn.execute(
        "INSERT INTO patients.patients (organization_id, given_name, family_name)"
        " SELECT %s, CASE WHEN n = 5000 THEN 'Boom' ELSE 'Fine' END, 'P' || n"
        " FROM generate_series(1, 8000) AS n",
        (c.org,),
    )
    plain = export_service.cell

    def failing(value: Any) -> str:
        if value == "Boom":
            raise RuntimeError("the disk of the database server caught fire")
        return plain(value)

    monkeypatch.setattr(export_service, "cell", failing)
    body = {"entity": "patients", "columns": ["given_name", "family_name"]}

    async def read_all() -> int:
        async with (
            httpx.AsyncClient(base_url=live_server, timeout=30) as http,
            http.stream("POST", "/v1/export/csv", headers=c.admin.auth, json=body) as answer,
        ):
            assert answer.status_code == 200
            return len(await answer.aread())

    with pytest.raises(httpx.RemoteProtocolError):
        await read_all()
    # The export records itself before the exception reaches the server, which then cuts.
    trail = admin_conn.execute(
        "SELECT detail->>'complete' FROM audit.events"
        " WHERE organization_id = %s AND action = 'export.csv'",
        (c.org,),
    ).fetchall()
    assert trail == [("false",)]
