"""Broadcasts against the real database, Redis, SMTP server and a local fake of the messaging
provider's API: templates and their injection attempts, recipient imports (CSV and XLSX),
campaigns sent exactly once through worker crashes, opt-outs, restriction, the unsubscribe
link, signed receipts, and another tenant's rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import psycopg
import pytest
from conftest import RECEIPT_SECRET
from messaging_support import (
    ACCOUNT,
    TOKEN,
    FakeProviderProcess,
    fake_provider_process,
    signed_receipt,
)
from support import Clinic, Inbox

from carebase.apps import common
from carebase.apps.core import CoreApp
from carebase.config import Settings
from carebase.integrations.messaging import (
    Channels,
    EmailMessaging,
    HttpMessaging,
    OutboxMessaging,
    OutgoingMessage,
    SendFailed,
)
from carebase.security.ratelimit import RateLimiter
from carebase.services.broadcast_worker import BroadcastWorker, Pace, Rates
from carebase.services.patients import aad, normalise_phone

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]
ANY = {"If-Match": "*"}


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProviderProcess]:
    with fake_provider_process() as fake:
        yield fake


def http_messaging(url: str, **options: Any) -> HttpMessaging:
    return HttpMessaging(
        base_url=url, account_id=ACCOUNT, auth_token=TOKEN, from_sms="+38512345678",
        from_whatsapp="+38512345679", backoff_s=0.01, **options,
    )  # fmt: skip


@pytest.fixture
async def worker(
    app: CoreApp, settings: Settings, provider: FakeProviderProcess
) -> AsyncIterator[BroadcastWorker]:
    """A broadcast worker whose SMS go to the fake provider and e-mail to the test SMTP server;
    driven step by step (the app runs no background work in tests)."""
    deps = app.dependencies
    channels = Channels(EmailMessaging(deps.mail), http_messaging(provider.url))
    made = common.broadcast_worker(
        settings, deps.database, sealer=deps.sealer, blobs=app.blobs, mail=deps.mail,
        redis_pipe=None, channels=channels,
    )  # fmt: skip
    yield made
    await made.close()


def add_patients(
    app: CoreApp, conn: Conn, org: uuid.UUID, count: int, *, prefix: str = "p"
) -> list[str]:
    """`count` patients with an e-mail address and a sealed phone, as the service stores them."""
    sealer = app.dependencies.sealer
    rows = []
    for n in range(count):
        patient_id = uuid.uuid4()
        phone = f"+3859{n:08d}"
        rows.append(
            (org, patient_id, f"Given{n}", f"{prefix}{n}", f"{prefix}{n}-{org.hex[:8]}@example.com",
             sealer.seal(phone.encode(), aad(org, patient_id, "phone")),
             sealer.blind_index("patient.phone", normalise_phone(phone)))
        )  # fmt: skip
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO patients.patients (organization_id, id, given_name, family_name, email,"
            " phone_sealed, phone_index) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return [str(r[1]) for r in rows]


def renamed(c: Clinic, conn: Conn, what: str) -> str:
    """A clinic name no other test's has: its messages at the fake provider end with it."""
    name = f"{what} clinic {uuid.uuid4().hex[:8]}"
    conn.execute("UPDATE platform.organizations SET name = %s WHERE id = %s", (name, c.org))
    return name


async def static_segment(
    client: httpx.AsyncClient, c: Clinic, conn: Conn, patient_ids: list[str]
) -> str:
    made = await client.post(
        "/v1/segments", headers=c.staff.auth, json={"name": "Everyone", "kind": "static"}
    )
    assert made.status_code == 201, made.text
    segment_id = made.json()["id"]
    conn.execute(
        "INSERT INTO segments.members (organization_id, segment_id, patient_id, source)"
        " SELECT %s, %s, unnest(%s::uuid[]), 'manual'",
        (c.org, segment_id, patient_ids),
    )
    return str(segment_id)


async def template(client: httpx.AsyncClient, c: Clinic, **body: Any) -> dict[str, Any]:
    answer = await client.post("/v1/broadcasts/templates", headers=c.staff.auth, json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def campaign(
    client: httpx.AsyncClient, c: Clinic, template_id: str, **audience: Any
) -> dict[str, Any]:
    answer = await client.post(
        "/v1/broadcasts/campaigns",
        headers=c.staff.auth,
        json={"name": "Recall", "template_id": template_id, "audience": audience},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def send(client: httpx.AsyncClient, c: Clinic, campaign_id: str) -> None:
    answer = await client.post(f"/v1/broadcasts/campaigns/{campaign_id}/send", headers=c.staff.auth)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "sending"


async def stats(client: httpx.AsyncClient, c: Clinic, campaign_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/broadcasts/campaigns/{campaign_id}/stats", headers=c.staff.auth)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


SMS = "Hi {{patient.given_name}}, your exercises are in the app. {{clinic.name}}"


# --- templates ----------------------------------------------------------------------------------


async def test_an_unknown_variable_is_refused_with_a_pointer_when_saved(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    answer = await client.post(
        "/v1/broadcasts/templates",
        headers=c.staff.auth,
        json={"name": "Bad", "channel": "email", "subject": "Hi {{ patient.age }}",
              "body": "{{ 7*7 }} and {{unsubscribe_url}}"},
    )  # fmt: skip
    assert answer.status_code == 422, answer.text
    errors = {(e["pointer"], e["message"]) for e in answer.json()["errors"]}
    assert errors == {
        ("/body/subject", "Unknown variable {{patient.age}}."),
        ("/body/body", "Unknown variable {{7*7}}."),
    }
    sms = await client.post(
        "/v1/broadcasts/templates",
        headers=c.staff.auth,
        json={"name": "Bad", "channel": "sms", "body": "Stop: {{unsubscribe_url}}"},
    )
    assert sms.status_code == 422
    assert sms.json()["errors"][0]["pointer"] == "/body/body"
    no_subject = await client.post(
        "/v1/broadcasts/templates", headers=c.staff.auth,
        json={"name": "Bad", "channel": "email", "body": "Hello"},
    )  # fmt: skip
    assert no_subject.status_code == 422
    assert no_subject.json()["errors"][0]["pointer"] == "/body/subject"


async def test_template_code_and_html_in_values_render_inert(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], admin_conn: Conn
) -> None:
    c = clinic()
    admin_conn.execute(
        "UPDATE patients.patients SET given_name = %s WHERE organization_id = %s AND id = %s",
        ("<script>alert(1)</script>{{clinic.name}}", c.org, c.patient_id),
    )
    made = await template(
        client, c, name="Inert", channel="email", subject="Hi {{patient.given_name}}",
        body="{% import os %}{{ patient.given_name }} <b>bold</b>\n\n{{clinic.name}}",
    )  # fmt: skip
    answer = await client.post(
        f"/v1/broadcasts/templates/{made['id']}/preview",
        headers=c.staff.auth,
        json={"patient_id": c.patient_id},
    )
    assert answer.status_code == 200, answer.text
    rendered = answer.json()
    name = "<script>alert(1)</script>{{clinic.name}}"
    # Text: the value as it is, never evaluated or expanded again; `{% %}` is plain text.
    assert rendered["subject"] == f"Hi {name}"
    assert rendered["text"].startswith(f"{{% import os %}}{name} <b>bold</b>\n\nClinic")
    # HTML: everything escaped, the value's braces kept literally.
    html = rendered["html"]
    assert "<script>" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{clinic.name}}" in html
    assert "{% import os %}" in html
    assert "/unsubscribe?token=preview" in html


async def test_a_template_in_use_cannot_be_deleted(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await template(client, c, name="Used", channel="sms", body=SMS)
    await campaign(client, c, made["id"], recipient_lists=["newsletter"])
    refused = await client.delete(
        f"/v1/broadcasts/templates/{made['id']}", headers={**c.staff.auth, **ANY}
    )
    assert refused.status_code == 409


# --- recipient imports --------------------------------------------------------------------------


def csv_file(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def xlsx_file(rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload(
    client: httpx.AsyncClient, c: Clinic, list_name: str, name: str, data: bytes
) -> httpx.Response:
    return await client.post(
        "/v1/broadcasts/recipients/import",
        headers=c.staff.auth,
        data={"list_name": list_name},
        files={"file": (name, data, "application/octet-stream")},
    )


async def lines(client: httpx.AsyncClient, c: Clinic, import_id: str) -> dict[int, tuple[str, Any]]:
    answer = await client.get(
        f"/v1/broadcasts/recipients/imports/{import_id}/rows",
        headers=c.staff.auth,
        params={"page_size": 100},
    )
    assert answer.status_code == 200, answer.text
    return {x["line"]: (x["outcome"], x["reason"]) for x in answer.json()["data"]}


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
async def test_an_import_reports_each_line_and_the_same_file_again_changes_nothing(
    client: httpx.AsyncClient,
    *,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    app: CoreApp,
    worker: BroadcastWorker,
    kind: str,
) -> None:
    c = clinic()
    (patient,) = add_patients(app, admin_conn, c.org, 1)
    email = admin_conn.execute(
        "SELECT email FROM patients.patients WHERE id = %s", (patient,)
    ).fetchone()
    assert email is not None
    rows: list[list[Any]] = [
        ["E-mail", "Phone", "First name", "Last name"],
        ["marko@example.com", "", "Marko", "Perić"],  # 2 created
        [email[0].upper(), "", "Given0", "p0"],  # 3 matched (by e-mail, any case)
        ["not-an-address", "", "X", "Y"],  # 4 invalid
        ["", "+3859 0000 0000", "", ""],  # 5 matched (by phone: the patient again) → duplicate
        ["", "", "Nobody", ""],  # 6 invalid
        ["marko@example.com", "", "Marko", "Again"],  # 7 duplicate
        ["", "12", "", ""],  # 8 invalid
        ["", "+385 91 555 0101", "Iva", ""],  # 9 created (a phone-only contact)
    ]
    data = csv_file(rows) if kind == "csv" else xlsx_file(rows)
    first = await upload(client, c, "newsletter", f"list.{kind}", data)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "queued"
    assert await worker.run_once() >= 1
    got = await client.get(first.headers["Location"], headers=c.staff.auth)
    assert got.status_code == 200, got.text
    done = got.json()
    assert done["status"] == "completed"
    assert (done["total_rows"], done["rows_done"]) == (8, 8)
    assert done["counts"] == {"created": 2, "matched": 1, "invalid": 3, "duplicate": 2}
    assert await lines(client, c, done["id"]) == {
        2: ("created", None),
        3: ("matched", None),
        4: ("invalid", "not an e-mail address"),
        5: ("duplicate", None),
        6: ("invalid", "no e-mail address or phone number"),
        7: ("duplicate", None),
        8: ("invalid", "not a phone number"),
        9: ("created", None),
    }
    listed = await client.get(
        "/v1/broadcasts/recipients", headers=c.staff.auth, params={"list_name": "newsletter"}
    )
    recipients = listed.json()["data"]
    assert {(r["email"], r["phone"], r["patient_id"]) for r in recipients} == {
        ("marko@example.com", None, None),
        (email[0], None, patient),
        (None, "+385 91 555 0101", None),
    }
    again = await upload(client, c, "newsletter", "renamed." + kind, data)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == done["id"]
    assert await worker.run_once() == 0
    count = admin_conn.execute(
        "SELECT count(*) FROM broadcasts.recipients WHERE organization_id = %s", (c.org,)
    ).fetchone()
    assert count == (3,)


async def test_a_file_that_is_neither_csv_nor_xlsx_is_refused(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    answer = await upload(client, c, "list", "x.bin", b"\xff\xfe\x00binary" * 100)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/body/file"


async def test_an_import_without_an_address_column_fails_as_a_whole(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], worker: BroadcastWorker
) -> None:
    c = clinic()
    answer = await upload(client, c, "list", "x.csv", b"name,city\nAna,Split\n")
    assert answer.status_code == 202
    await worker.run_once()
    got = (await client.get(answer.headers["Location"], headers=c.staff.auth)).json()
    assert got["status"] == "failed"
    assert "email" in got["error"]


# --- campaigns ----------------------------------------------------------------------------------


async def test_a_campaign_reaches_each_address_once_through_two_worker_crashes(
    client: httpx.AsyncClient,
    *,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    app: CoreApp,
    worker: BroadcastWorker,
    provider: FakeProviderProcess,
) -> None:
    c = clinic()
    name = renamed(c, admin_conn, "Crash")
    patients = add_patients(app, admin_conn, c.org, 10_000)
    segment = await static_segment(client, c, admin_conn, patients)
    made = await template(client, c, name="Weekly", channel="sms", body=SMS)
    sent = await campaign(client, c, made["id"], segment_ids=[segment])
    await send(client, c, sent["id"])
    before = provider.state()
    assert await worker.expand_one()
    # Two crashes: each time a batch is claimed, half of it handed to the provider, and the
    # worker dies before writing down what it sent. Its claims outlive it until they expire.
    for _ in range(2):
        await worker.send_batch(stop_after=50)
        admin_conn.execute(
            "UPDATE broadcasts.messages SET claimed_until = now() - interval '1 second'"
            " WHERE organization_id = %s AND status = 'sending'",
            (c.org,),
        )
    while await worker.send_batch():
        pass
    after = provider.state(suffix=name)
    assert (after["sent"], after["recipients"]) == (10_000, 10_000)
    # The 100 messages sent before the crashes went to the provider again, with their keys:
    # it answered with the first sid and sent nothing.
    assert after["repeats"] - before["repeats"] == 100
    assert after["requests"] - before["requests"] == 10_100
    counts = await stats(client, c, sent["id"])
    assert counts["status"] == "sent"
    assert counts["audience"] == 10_000
    assert counts["messages"]["sent"] == 10_000
    assert counts["messages"]["total"] == 10_000
    log = await client.get(
        "/v1/broadcasts/messages",
        headers=c.staff.auth,
        params={"campaign_id": sent["id"], "page_size": 5},
    )
    assert log.status_code == 200
    first = log.json()["data"][0]
    assert first["provider"] == "http"
    assert first["provider_message_id"].startswith("SM")
    assert "body" not in first


async def test_opted_out_and_restricted_patients_get_nothing(
    client: httpx.AsyncClient,
    *,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    app: CoreApp,
    worker: BroadcastWorker,
    inbox: Inbox,
) -> None:
    c = clinic()
    kept, opted, restricted, late = add_patients(app, admin_conn, c.org, 4, prefix="e")
    segment = await static_segment(client, c, admin_conn, [kept, opted, restricted, late])
    # The patient's own choice, through the API, and a restriction (GDPR Art. 18).
    admin_conn.execute(
        "UPDATE patients.patients SET user_id = %s WHERE organization_id = %s AND id = %s",
        (None, c.org, c.patient_id),
    )
    admin_conn.execute(
        "UPDATE patients.patients SET user_id = %s WHERE organization_id = %s AND id = %s",
        (c.patient.user_id, c.org, opted),
    )
    stop = await client.put(
        f"/v1/patients/{opted}/message-preferences", headers=c.patient.auth, json={"email": False}
    )
    assert stop.status_code == 200, stop.text
    assert [x["subscribed"] for x in stop.json()["channels"]] == [False, True, True]
    admin_conn.execute(
        "UPDATE patients.patients SET restricted_at = now() WHERE id = %s", (restricted,)
    )
    made = await template(
        client, c, name="News", channel="email", subject="News from {{clinic.name}}",
        body="Hello {{patient.given_name}}.\n\nStop: {{unsubscribe_url}}",
    )  # fmt: skip
    sent = await campaign(client, c, made["id"], segment_ids=[segment])
    await send(client, c, sent["id"])
    assert await worker.expand_one()
    # Opting out after the audience was expanded still keeps the message from leaving.
    late_stop = await client.put(
        f"/v1/patients/{late}/message-preferences", headers=c.staff.auth, json={"email": False}
    )
    assert late_stop.status_code == 200
    while await worker.send_batch():
        pass
    addresses = {
        row[0]: row[1]
        for row in admin_conn.execute(
            "SELECT id::text, email FROM patients.patients WHERE id = ANY(%s::uuid[])",
            ([kept, opted, restricted, late],),
        )
    }
    assert inbox.to(addresses[kept])
    for other in (opted, restricted, late):
        assert not inbox.to(addresses[other])
    counts = await stats(client, c, sent["id"])
    assert counts["excluded"] == {"opted_out": 1, "restricted": 1, "no_address": 0}
    assert counts["messages"]["sent"] == 1
    assert counts["messages"]["suppressed"] == 1
    mail = inbox.to(addresses[kept])[-1]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Subject"] == "News from Clinic"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello Given0." in text


async def test_the_unsubscribe_link_works_once_and_only_for_its_recipient(
    client: httpx.AsyncClient,
    *,
    anon: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    app: CoreApp,
    worker: BroadcastWorker,
    inbox: Inbox,
) -> None:
    c = clinic()
    first, second = add_patients(app, admin_conn, c.org, 2, prefix="u")
    segment = await static_segment(client, c, admin_conn, [first, second])
    made = await template(
        client, c, name="News", channel="email", subject="News", body="Hello {{patient.given_name}}"
    )
    sent = await campaign(client, c, made["id"], segment_ids=[segment])
    await send(client, c, sent["id"])
    await worker.run_once()
    emails = dict(
        admin_conn.execute(
            "SELECT id::text, email FROM patients.patients WHERE id = ANY(%s::uuid[])",
            ([first, second],),
        ).fetchall()
    )
    mail = inbox.to(emails[first])[-1]
    token = re.search(r"token=([A-Za-z0-9_\-]+)", mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert token is not None
    one_click = mail["List-Unsubscribe"].strip("<>")
    assert one_click.endswith(f"/v1/broadcasts/unsubscribe/{token.group(1)}")
    # A token changed by one character names nothing.
    forged = token.group(1)[:-1] + ("A" if token.group(1)[-1] != "A" else "B")
    assert (await anon.post(f"/v1/broadcasts/unsubscribe/{forged}")).status_code == 404
    # RFC 8058's one-click POST, with its form body, and no credentials.
    done = await anon.post(
        f"/v1/broadcasts/unsubscribe/{token.group(1)}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"channel": "email", "unsubscribed": True}
    again = await anon.post(f"/v1/broadcasts/unsubscribe/{token.group(1)}")
    assert again.status_code == 404
    opted = admin_conn.execute(
        "SELECT patient_id::text, source FROM broadcasts.opt_outs WHERE organization_id = %s",
        (c.org,),
    ).fetchall()
    assert opted == [(first, "unsubscribe_link")]
    audit = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE organization_id = %s"
        " AND action = 'broadcast_message.unsubscribed'",
        (c.org,),
    ).fetchone()
    assert audit == (1,)


# --- receipts -----------------------------------------------------------------------------------


async def test_receipts_need_the_providers_signature(
    anon: httpx.AsyncClient,
    client: httpx.AsyncClient,
    *,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    app: CoreApp,
    worker: BroadcastWorker,
) -> None:
    c = clinic()
    patients = add_patients(app, admin_conn, c.org, 2, prefix="r")
    segment = await static_segment(client, c, admin_conn, patients)
    made = await template(client, c, name="Weekly", channel="sms", body=SMS)
    sent = await campaign(client, c, made["id"], segment_ids=[segment])
    await send(client, c, sent["id"])
    await worker.run_once()
    sids = [
        row[0]
        for row in admin_conn.execute(
            "SELECT provider_message_id FROM broadcasts.messages WHERE campaign_id = %s"
            " ORDER BY id",
            (sent["id"],),
        )
    ]
    body = json.dumps({"provider_message_id": sids[0], "status": "delivered"}).encode()
    unsigned = await anon.post(
        "/v1/broadcasts/provider-events", content=body, headers={"content-type": "application/json"}
    )
    assert unsigned.status_code == 401, unsigned.text
    wrong = signed_receipt("whsec_" + "A" * 44, body)
    assert (
        await anon.post("/v1/broadcasts/provider-events", content=body, headers=wrong)
    ).status_code == 401
    stale = signed_receipt(RECEIPT_SECRET, body, at=1_700_000_000)
    assert (
        await anon.post("/v1/broadcasts/provider-events", content=body, headers=stale)
    ).status_code == 401
    # The right signature over other bytes than those sent.
    tampered = signed_receipt(RECEIPT_SECRET, body)
    other = json.dumps({"provider_message_id": sids[1], "status": "bounced"}).encode()
    assert (
        await anon.post("/v1/broadcasts/provider-events", content=other, headers=tampered)
    ).status_code == 401
    statuses = admin_conn.execute(
        "SELECT status FROM broadcasts.messages WHERE campaign_id = %s", (sent["id"],)
    ).fetchall()
    assert statuses == [("sent",), ("sent",)]
    good = await anon.post(
        "/v1/broadcasts/provider-events", content=body, headers=signed_receipt(RECEIPT_SECRET, body)
    )
    assert good.status_code == 202, good.text
    assert good.json() == {"applied": True}
    bounce = await anon.post(
        "/v1/broadcasts/provider-events",
        content=other,
        headers=signed_receipt(RECEIPT_SECRET, other),
    )
    assert bounce.json() == {"applied": True}
    # Forward only: a late `sent` does not undo `delivered`.
    late = json.dumps({"provider_message_id": sids[0], "status": "sent"}).encode()
    replay = await anon.post(
        "/v1/broadcasts/provider-events", content=late, headers=signed_receipt(RECEIPT_SECRET, late)
    )
    assert replay.json() == {"applied": False}
    counts = await stats(client, c, sent["id"])
    assert (counts["messages"]["delivered"], counts["messages"]["bounced"]) == (1, 1)
    suppressed = admin_conn.execute(
        "SELECT source FROM broadcasts.opt_outs"
        " WHERE organization_id = %s AND address_key IS NOT NULL",
        (c.org,),
    ).fetchall()
    assert suppressed == [("provider",)]


# --- the provider adapter -----------------------------------------------------------------------


async def test_the_adapter_retries_server_errors_and_honours_retry_after(
    provider: FakeProviderProcess,
) -> None:
    adapter = http_messaging(provider.url, max_wait_s=2.0)
    message = OutgoingMessage(uuid.uuid4(), "whatsapp", "+385915550101", None, "Hello")
    try:
        provider.fail_next((503, None), (429, 1))
        accepted = await adapter.send(message)
        sent = provider.message(accepted.provider_message_id)
        assert sent is not None
        assert sent["to"] == "whatsapp:+385915550101"
        assert provider.state()["failures_left"] == 0
        # A Retry-After longer than the adapter waits: back to the queue, with the delay.
        provider.fail_next((429, 30))
        with pytest.raises(SendFailed) as waited:
            await adapter.send(OutgoingMessage(uuid.uuid4(), "sms", "+385915550102", None, "Hi"))
        assert not waited.value.permanent
        assert waited.value.retry_after_s == 30
        # A number the provider refuses: permanent, not retried.
        requests = provider.state()["requests"]
        with pytest.raises(SendFailed) as refused:
            await adapter.send(OutgoingMessage(uuid.uuid4(), "sms", "0915550102", None, "Hi"))
        assert refused.value.permanent
        assert "21211" in refused.value.reason
        assert provider.state()["requests"] == requests + 1
        bad_login = HttpMessaging(
            base_url=provider.url, account_id=ACCOUNT, auth_token="wrong", from_sms="+1",
            from_whatsapp=None,
        )  # fmt: skip
        with pytest.raises(SendFailed) as denied:
            await bad_login.send(message)
        assert denied.value.permanent
        await bad_login.close()
    finally:
        provider.clear_failures()
        await adapter.close()


# --- states and tenancy -------------------------------------------------------------------------


async def test_campaign_states_move_forward_only(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], worker: BroadcastWorker
) -> None:
    c = clinic()
    made = await template(client, c, name="Weekly", channel="sms", body=SMS)
    draft = await campaign(client, c, made["id"], recipient_lists=["nobody"])
    base = f"/v1/broadcasts/campaigns/{draft['id']}"
    past = await client.post(
        f"{base}/schedule", headers=c.staff.auth, json={"at": "2020-01-01T00:00:00Z"}
    )
    assert past.status_code == 422
    assert past.json()["errors"][0]["pointer"] == "/body/at"
    later = await client.post(
        f"{base}/schedule", headers=c.staff.auth, json={"at": "2099-01-01T00:00:00+14:00"}
    )
    assert later.status_code == 422  # more than a year ahead
    # Year 1 with a positive offset is before year 1 in UTC: a 422 with its pointer, not a 500.
    unheld = await client.post(
        f"{base}/schedule", headers=c.staff.auth, json={"at": "0001-01-01T00:30:00+01:00"}
    )
    assert unheld.status_code == 422, unheld.text
    assert unheld.json()["errors"][0]["pointer"] == "/body/at"
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    soon = await client.post(f"{base}/schedule", headers=c.staff.auth, json={"at": at})
    assert soon.status_code == 200, soon.text
    assert soon.json()["status"] == "scheduled"
    await send(client, c, draft["id"])
    assert (
        await client.patch(base, headers={**c.staff.auth, **ANY}, json={"name": "x"})
    ).status_code == 409
    await worker.run_once()
    # Nobody in the list: nothing went out, and the campaign says why.
    finished = (await client.get(base, headers=c.staff.auth)).json()
    assert finished["status"] == "failed"
    assert finished["failure_reason"] == "No one in the audience could be messaged."
    trail = await client.get(
        "/v1/audit-log",
        headers=c.admin.auth,
        params={"action": "broadcast_campaign.failed", "entity_id": draft["id"]},
    )
    assert trail.status_code == 200, trail.text
    assert len(trail.json()["data"]) == 1
    assert (await client.post(f"{base}/cancel", headers=c.staff.auth)).status_code == 409
    bad = await client.post(
        "/v1/broadcasts/campaigns",
        headers=c.staff.auth,
        json={"name": "x", "template_id": str(uuid.uuid4()),
              "audience": {"segment_ids": [str(uuid.uuid4())]}},
    )  # fmt: skip
    assert bad.status_code == 422
    assert {e["pointer"] for e in bad.json()["errors"]} == {
        "/body/template_id",
        "/body/audience/segment_ids/0",
    }


async def test_a_scheduled_campaign_goes_out_when_its_time_comes_with_the_template_of_then(
    client: httpx.AsyncClient,
    *,
    clinic: Callable[..., Clinic],
    admin_conn: Conn,
    app: CoreApp,
    worker: BroadcastWorker,
    provider: FakeProviderProcess,
) -> None:
    c = clinic()
    name = renamed(c, admin_conn, "Scheduled")
    patients = add_patients(app, admin_conn, c.org, 3, prefix="s")
    segment = await static_segment(client, c, admin_conn, patients)
    made = await template(client, c, name="Weekly", channel="sms", body="Old text. {{clinic.name}}")
    planned = await campaign(client, c, made["id"], segment_ids=[segment])
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    scheduled = await client.post(
        f"/v1/broadcasts/campaigns/{planned['id']}/schedule", headers=c.staff.auth, json={"at": at}
    )
    assert scheduled.status_code == 200, scheduled.text
    edited = await client.patch(
        f"/v1/broadcasts/templates/{made['id']}",
        headers={**c.staff.auth, **ANY},
        json={"body": "New text. {{clinic.name}}"},
    )
    assert edited.status_code == 200
    await worker.run_once()
    waiting = await client.get(f"/v1/broadcasts/campaigns/{planned['id']}", headers=c.staff.auth)
    assert waiting.json()["status"] == "scheduled"  # not yet
    # The hour passes.
    admin_conn.execute(
        "UPDATE broadcasts.campaigns SET scheduled_at = now() - interval '1 second' WHERE id = %s",
        (planned["id"],),
    )
    assert await worker.run_once() >= 3
    done = (
        await client.get(f"/v1/broadcasts/campaigns/{planned['id']}", headers=c.staff.auth)
    ).json()
    assert done["status"] == "sent"
    assert done["started_at"] is not None
    assert provider.state(suffix=f"New text. {name}")["sent"] == 3
    # The template changed again after it went out: the campaign keeps what it sent.
    await client.patch(
        f"/v1/broadcasts/templates/{made['id']}",
        headers={**c.staff.auth, **ANY},
        json={"body": "Third text."},
    )
    kept = admin_conn.execute(
        "SELECT body FROM broadcasts.campaigns WHERE id = %s", (planned["id"],)
    ).fetchone()
    assert kept == ("New text. {{clinic.name}}",)


async def test_the_pace_holds_an_organization_to_its_rate(app: CoreApp) -> None:
    pace = Pace(RateLimiter(app.dependencies.redis_pipe, prefix=f"t{uuid.uuid4().hex[:6]}"),
                Rates(organization=2, provider=1000))  # fmt: skip
    org = uuid.uuid4()
    for _ in range(3):
        await pace.admit(org, "http")
    # The third send waited for the next one-second window; another organization did not.
    assert pace.waited >= 1
    waited = pace.waited
    await pace.admit(uuid.uuid4(), "http")
    assert pace.waited == waited


async def test_the_development_outbox_writes_each_message_once(tmp_path: Path) -> None:
    outbox = OutboxMessaging(tmp_path / "outbox")
    message = OutgoingMessage(uuid.uuid4(), "sms", "+385915550101", None, "Hi Ana")
    first = await outbox.send(message)
    again = await outbox.send(message)
    assert first == again
    files = list((tmp_path / "outbox").iterdir())
    assert len(files) == 1
    assert json.loads(files[0].read_text()) == {
        "channel": "sms", "to": "+385915550101", "body": "Hi Ana",
    }  # fmt: skip


async def test_another_tenants_broadcasts_are_not_found(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    a, b = clinic(), clinic()
    made = await template(client, a, name="Mine", channel="sms", body=SMS)
    theirs = await campaign(client, a, made["id"], recipient_lists=["x"])
    for path in (
        f"/v1/broadcasts/templates/{made['id']}",
        f"/v1/broadcasts/campaigns/{theirs['id']}",
        f"/v1/broadcasts/campaigns/{theirs['id']}/stats",
        f"/v1/patients/{a.patient_id}/message-preferences",
    ):
        assert (await client.get(path, headers=b.admin.auth)).status_code == 404, path
    assert (
        await client.post(f"/v1/broadcasts/campaigns/{theirs['id']}/send", headers=b.staff.auth)
    ).status_code == 404
    # Using another tenant's template is as if it did not exist.
    borrowed = await client.post(
        "/v1/broadcasts/campaigns", headers=b.staff.auth,
        json={"name": "x", "template_id": made["id"], "audience": {"recipient_lists": ["x"]}},
    )  # fmt: skip
    assert borrowed.status_code == 422
    # A patient reads their own preferences only, and no campaign at all.
    assert (
        await client.get(f"/v1/patients/{a.patient_id}/message-preferences", headers=a.patient.auth)
    ).status_code == 200
    assert (await client.get("/v1/broadcasts/campaigns", headers=a.patient.auth)).status_code == 403
