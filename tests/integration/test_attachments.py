"""Attachments against the real database and the real filesystem store (and S3 as moto's
server speaks it): sniffed types, signed URLs that expire, the owner's locks, tenancy, and
objects removed through the blob store's outbox."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from moto.server import ThreadedMotoServer
from support import Clinic, book, day_at, pg_dump

from carebase.apps.core import CoreApp, create_app
from carebase.config import Settings
from carebase.integrations.blobs import FileBlobStore, blob_key
from carebase.integrations.blobs.s3 import S3BlobStore
from carebase.operations import devstack

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n" + b"x" * 3000
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
EXECUTABLE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 200
DICOM = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00"


def store(app: CoreApp) -> FileBlobStore:
    assert isinstance(app.blobs, FileBlobStore)
    return app.blobs


async def upload(
    client: httpx.AsyncClient,
    who: dict[str, str],
    owner_type: str,
    owner_id: str,
    *,
    data: bytes = PDF,
    filename: str = "scan.pdf",
    **fields: str,
) -> httpx.Response:
    return await client.post(
        "/v1/attachments",
        headers=who,
        data={"owner_type": owner_type, "owner_id": owner_id, **fields},
        files={"file": (filename, data, "application/octet-stream")},
    )


def local(url: str) -> str:
    """A URL the API handed out, as a path the test client sends."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def draft_report(client: httpx.AsyncClient, c: Clinic) -> dict[str, Any]:
    booked = await book(client, c, day_at(2, 9))
    assert booked.status_code == 201, booked.text
    made = await client.post(
        "/v1/reports",
        headers=c.specialist.auth,
        json={
            "appointment_id": booked.json()["id"],
            "patient_id": c.patient_id,
            "title": "Session report",
            "body": {"summary": "Knee flexion 110°."},
        },
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_an_upload_is_sniffed_stored_and_downloaded_through_a_signed_url(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    app: CoreApp,
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    made = await upload(client, c.staff.auth, "patient", c.patient_id, filename="Ștefan scan")
    assert made.status_code == 201, made.text
    attachment = made.json()
    assert attachment["media_type"] == "application/pdf"
    assert attachment["status"] == "available"
    assert attachment["size_bytes"] == len(PDF)
    assert attachment["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert attachment["filename"] == "Ștefan scan"
    assert made.headers["location"] == f"/v1/attachments/{attachment['id']}"
    key = blob_key(c.org, attachment["id"])
    assert store(app).path(key).read_bytes() == PDF  # the key holds no name and no health data

    got = await client.get(f"/v1/attachments/{attachment['id']}", headers=c.admin.auth)
    assert got.status_code == 200
    assert got.json() == attachment

    link = await client.get(f"/v1/attachments/{attachment['id']}/download", headers=c.admin.auth)
    assert link.status_code == 200, link.text
    assert link.json()["method"] == "GET"
    expires_at = dt.datetime.fromisoformat(link.json()["expires_at"])
    assert expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=301)
    fetched = await client.get(local(link.json()["url"]))  # no credentials: the URL is the key
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == PDF
    assert fetched.headers["content-type"] == "application/pdf"
    # The name says what the file is, whatever the client called it.
    assert fetched.headers["content-disposition"] == (
        "attachment; filename=\"_tefan scan.pdf\"; filename*=UTF-8''%C8%98tefan%20scan.pdf"
    )
    assert fetched.headers["x-content-type-options"] == "nosniff"
    audited = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE entity_id = %s AND action = %s",
        (attachment["id"], "attachment.downloaded"),
    ).fetchone()
    assert audited == (1,)


async def test_a_type_outside_the_allow_list_is_refused_whatever_its_name(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    app: CoreApp,
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    refused = await upload(
        client, c.staff.auth, "patient", c.patient_id, data=EXECUTABLE, filename="cv.pdf"
    )
    assert refused.status_code == 415, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    rows = admin_conn.execute(
        "SELECT count(*) FROM attachments.attachments WHERE organization_id = %s", (c.org,)
    ).fetchone()
    assert rows == (0,)
    assert not (store(app).root / str(c.org)).exists() or not any(
        (store(app).root / str(c.org)).iterdir()
    )
    for data, media_type in ((PNG, "image/png"), (DICOM, "application/dicom")):
        made = await upload(
            client, c.staff.auth, "patient", c.patient_id, data=data, filename="file.bin"
        )
        assert made.status_code == 201, made.text
        assert made.json()["media_type"] == media_type


async def test_signed_urls_that_expired_or_were_altered_are_refused(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], app: CoreApp
) -> None:
    c = clinic()
    made = await upload(client, c.staff.auth, "patient", c.patient_id)
    attachment_id = made.json()["id"]
    key = blob_key(c.org, attachment_id)
    signer = store(app).signer
    past = int(time.time()) - 1
    expired = {
        "filename": "scan.pdf",
        "type": "application/pdf",
        "expires": past,
        "signature": signer.sign("GET", key, "scan.pdf", "application/pdf", str(past)),
    }
    late = await client.get(f"/v1/blobs/{key}?{urlencode(expired)}")
    assert late.status_code == 403
    assert late.json()["type"].endswith("/link-expired")

    link = await client.get(f"/v1/attachments/{attachment_id}/download", headers=c.staff.auth)
    query = {k: v[0] for k, v in parse_qs(urlsplit(link.json()["url"]).query).items()}
    for change in (
        {"filename": "other.pdf"},
        {"type": "text/plain"},
        {"expires": str(int(query["expires"]) + 3600)},
        {"signature": "0" * 64},
    ):
        altered = await client.get(f"/v1/blobs/{key}?{urlencode({**query, **change})}")
        assert altered.status_code == 403, change
        assert altered.json()["type"].endswith("/forbidden")
    elsewhere = await client.get(f"/v1/blobs/{c.org}/{uuid.uuid4()}?{urlencode(query)}")
    assert elsewhere.status_code == 403  # a signature is for one object only


async def test_another_tenants_attachment_is_not_found(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    mine, theirs = clinic(), clinic()
    made = await upload(client, theirs.staff.auth, "patient", theirs.patient_id)
    attachment_id = made.json()["id"]
    for method, path in (
        ("GET", f"/v1/attachments/{attachment_id}"),
        ("GET", f"/v1/attachments/{attachment_id}/download"),
        ("POST", f"/v1/attachments/{attachment_id}/complete"),
        ("DELETE", f"/v1/attachments/{attachment_id}"),
    ):
        answer = await client.request(method, path, headers=mine.admin.auth)
        assert answer.status_code == 404, (method, path)
    listed = await client.get("/v1/attachments", headers=mine.admin.auth)
    assert listed.json()["data"] == []
    onto = await upload(client, mine.staff.auth, "patient", theirs.patient_id)
    assert onto.status_code == 422  # their patient is no patient of mine
    assert onto.json()["errors"][0]["pointer"] == "/body/owner_id"


async def test_a_presigned_upload_is_checked_when_completed(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic], app: CoreApp
) -> None:
    c = clinic()
    started = await client.post(
        "/v1/attachments/uploads",
        headers=c.staff.auth,
        json={
            "owner_type": "patient",
            "owner_id": c.patient_id,
            "filename": "mri.pdf",
            "size_bytes": len(PDF),
            "sha256": hashlib.sha256(PDF).hexdigest().upper(),
        },
    )
    assert started.status_code == 201, started.text
    attachment = started.json()["attachment"]
    upload_to = started.json()["upload"]
    assert attachment["status"] == "pending"
    assert attachment["media_type"] is None
    complete = f"/v1/attachments/{attachment['id']}/complete"
    early = await client.post(complete, headers=c.staff.auth)
    assert early.status_code == 409
    assert early.json()["type"].endswith("/upload-incomplete")
    no_file = await client.get(f"/v1/attachments/{attachment['id']}/download", headers=c.staff.auth)
    assert no_file.status_code == 409

    wrong = await client.put(
        local(upload_to["url"]), content=PDF[:-1] + b"y", headers=upload_to["headers"]
    )
    assert wrong.status_code == 204, wrong.text
    mismatch = await client.post(complete, headers=c.staff.auth)
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["pointer"] == "/sha256"
    assert not store(app).path(blob_key(c.org, attachment["id"])).exists()  # upload again

    # Larger than the service's body limit in tests (4 KiB): the operation declares its own.
    stored = await client.put(local(upload_to["url"]), content=PDF, headers=upload_to["headers"])
    assert stored.status_code == 204, stored.text
    again = await client.put(local(upload_to["url"]), content=PNG, headers=upload_to["headers"])
    assert again.status_code == 409  # the bytes are never swapped after the fact
    done = await client.post(complete, headers=c.staff.auth)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "available"
    assert done.json()["media_type"] == "application/pdf"
    twice = await client.post(complete, headers=c.staff.auth)
    assert twice.status_code == 200
    assert twice.json() == done.json()


async def test_uploads_have_their_own_body_limit(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    big = PDF + b"y" * 100_000
    made = await upload(client, c.staff.auth, "patient", c.patient_id, data=big)
    assert made.status_code == 201, made.text  # over MAX_BODY_BYTES, under the upload's limit
    too_big = await upload(
        client, c.staff.auth, "patient", c.patient_id, data=b"%PDF-" + b"y" * (21 * 1024 * 1024)
    )
    assert too_big.status_code == 413
    elsewhere = await client.post(
        "/v1/reports", headers=c.staff.auth, content=b"{" + b" " * 5000 + b"}"
    )
    assert elsewhere.status_code == 413  # other operations keep the service's limit


async def test_files_follow_their_owners_lock(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    report = await draft_report(client, c)
    kept = await upload(client, c.specialist.auth, "report", report["id"])
    assert kept.status_code == 201, kept.text
    assert kept.json()["patient_id"] == c.patient_id
    removable = await upload(client, c.specialist.auth, "report", report["id"])
    gone = await client.delete(
        f"/v1/attachments/{removable.json()['id']}", headers=c.specialist.auth
    )
    assert gone.status_code == 204
    wrong_kind = await upload(client, c.specialist.auth, "prescription", report["id"])
    assert wrong_kind.status_code == 422

    # The patient does not see the files of a draft report, only of their own record.
    mine = await upload(client, c.patient.auth, "patient", c.patient_id)
    assert mine.status_code == 201, mine.text
    seen = await client.get("/v1/attachments", headers=c.patient.auth)
    assert [a["id"] for a in seen.json()["data"]] == [mine.json()["id"]]
    hidden = await client.get(f"/v1/attachments/{kept.json()['id']}", headers=c.patient.auth)
    assert hidden.status_code == 404
    not_theirs = await upload(client, c.patient.auth, "report", report["id"])
    assert not_theirs.status_code == 422

    final = await client.post(f"/v1/reports/{report['id']}/finalize", headers=c.specialist.auth)
    assert final.status_code == 200, final.text
    late = await upload(client, c.specialist.auth, "report", report["id"])
    assert late.status_code == 409
    locked = await client.delete(f"/v1/attachments/{kept.json()['id']}", headers=c.admin.auth)
    assert locked.status_code == 409
    visible = await client.get(f"/v1/attachments/{kept.json()['id']}", headers=c.patient.auth)
    assert visible.status_code == 200  # a final report's files are the patient's to read


async def test_a_form_answer_names_a_file_uploaded_to_that_item(
    client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    made = await client.post(
        "/v1/form-templates",
        headers=c.admin.auth,
        json={
            "title": "Referral",
            "items": [
                {"link_id": "letter", "text": "Referral letter", "type": "attachment"},
                {"link_id": "note", "text": "Note", "type": "string"},
            ],
        },
    )
    template_id = made.json()["id"]
    await client.post(f"/v1/form-templates/{template_id}/publish", headers=c.admin.auth)
    form = await client.post(
        "/v1/forms",
        headers=c.patient.auth,
        json={"template_id": template_id, "patient_id": c.patient_id},
    )
    assert form.status_code == 201, form.text
    form_id = form.json()["id"]
    invented = await client.patch(
        f"/v1/forms/{form_id}",
        headers={**c.patient.auth, "If-Match": "*"},
        json={"values": {"letter": str(uuid.uuid4())}},
    )
    assert invented.status_code == 422
    assert invented.json()["errors"][0]["pointer"] == "/body/values/letter"
    not_a_file_item = await upload(client, c.patient.auth, "form", form_id, link_id="note")
    assert not_a_file_item.status_code == 422
    assert not_a_file_item.json()["errors"][0]["pointer"] == "/body/link_id"
    letter = await upload(
        client,
        c.patient.auth,
        "form",
        form_id,
        data=b"Dear colleague,\r\nknee pain.\n",
        filename="letter.txt",
        link_id="letter",
    )
    assert letter.status_code == 201, letter.text
    assert letter.json()["media_type"] == "text/plain"
    answered = await client.patch(
        f"/v1/forms/{form_id}",
        headers={**c.patient.auth, "If-Match": "*"},
        json={"values": {"letter": letter.json()["id"]}},
    )
    assert answered.status_code == 200, answered.text


async def test_deleting_removes_the_object_through_the_outbox(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    app: CoreApp,
    admin_conn: psycopg.Connection[Any],
) -> None:
    c = clinic()
    made = await upload(client, c.staff.auth, "patient", c.patient_id)
    path = store(app).path(blob_key(c.org, made.json()["id"]))
    gone = await client.delete(f"/v1/attachments/{made.json()['id']}", headers=c.staff.auth)
    assert gone.status_code == 204
    queued = admin_conn.execute(
        "SELECT count(*) FROM attachments.blob_deletions WHERE organization_id = %s", (c.org,)
    ).fetchone()
    assert queued == (1,)
    assert path.exists()  # the request only queued it
    # A patient's record goes with its files (the trigger queues those too).
    other = await upload(client, c.staff.auth, "patient", c.patient_id)
    other_path = store(app).path(blob_key(c.org, other.json()["id"]))
    admin_conn.execute("DELETE FROM patients.patients WHERE id = %s", (c.patient_id,))
    while await app.reaper.run_once():
        pass
    assert not path.exists()
    assert not other_path.exists()
    left = admin_conn.execute(
        "SELECT count(*) FROM attachments.blob_deletions WHERE organization_id = %s", (c.org,)
    ).fetchone()
    assert left == (0,)


async def test_a_dump_and_the_blob_directory_hold_no_sealed_answer_in_clear(
    client: httpx.AsyncClient,
    clinic: Callable[..., Clinic],
    app: CoreApp,
    stack: devstack.EmbeddedStack,
    tmp_path: Path,
) -> None:
    c = clinic()
    canaries = [f"canary-{n}-{uuid.uuid4().hex}" for n in range(3)]
    made = await client.post(
        "/v1/form-templates",
        headers=c.admin.auth,
        json={
            "title": "Sealed intake",
            "items": [
                {"link_id": f"s{n}", "text": "S", "type": "text", "sensitive": True}
                for n in range(3)
            ]
            + [{"link_id": "scan", "text": "Scan", "type": "attachment"}],
        },
    )
    template_id = made.json()["id"]
    await client.post(f"/v1/form-templates/{template_id}/publish", headers=c.admin.auth)
    form = await client.post(
        "/v1/forms",
        headers=c.staff.auth,
        json={
            "template_id": template_id,
            "patient_id": c.patient_id,
            "values": {f"s{n}": canary for n, canary in enumerate(canaries)},
        },
    )
    assert form.status_code == 201, form.text
    scan = await upload(client, c.staff.auth, "form", form.json()["id"], link_id="scan")
    assert scan.status_code == 201, scan.text
    dump = pg_dump(stack.database_admin_url, tmp_path / "dump.sql")
    assert b"Sealed intake" in dump  # the dump did catch the rows
    blobs = b"".join(p.read_bytes() for p in store(app).root.rglob("*") if p.is_file())
    assert PDF in blobs  # the directory did catch the file
    for canary in canaries:
        assert canary.encode() not in dump, canary
        assert canary.encode() not in blobs, canary


# --- S3, as moto's server speaks it -----------------------------------------------------------

BUCKET = "carebase-attachments"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3BlobStore:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return S3BlobStore.from_url(f"s3://{BUCKET}?region=us-east-1&endpoint_url={s3_endpoint}")


@pytest.fixture
async def s3_client(settings: Settings, s3_store: S3BlobStore) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings, overrides={"blobs": s3_store})
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.8", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
            yield c


async def test_the_s3_store_uploads_and_downloads_through_presigned_urls(
    s3_client: httpx.AsyncClient, s3_store: S3BlobStore, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    started = await s3_client.post(
        "/v1/attachments/uploads",
        headers=c.staff.auth,
        json={
            "owner_type": "patient",
            "owner_id": c.patient_id,
            "filename": "x-ray.png",
            "size_bytes": len(PNG),
            "sha256": hashlib.sha256(PNG).hexdigest(),
        },
    )
    assert started.status_code == 201, started.text
    upload_to = started.json()["upload"]
    query = parse_qs(urlsplit(upload_to["url"]).query)
    assert query["X-Amz-Expires"] == ["300"]  # moto accepts expired URLs: read the expiry
    async with httpx.AsyncClient() as outside:
        assert upload_to["headers"] == {"If-None-Match": "*"}  # signed in: S3 only creates
        put = await outside.put(upload_to["url"], content=PNG, headers=upload_to["headers"])
        assert put.status_code == 200, put.text
        attachment_id = started.json()["attachment"]["id"]
        done = await s3_client.post(
            f"/v1/attachments/{attachment_id}/complete", headers=c.staff.auth
        )
        assert done.status_code == 200, done.text
        assert done.json()["media_type"] == "image/png"
        swap = await outside.put(upload_to["url"], content=PDF, headers=upload_to["headers"])
        assert swap.status_code == 412  # the checked bytes stay
        link = await s3_client.get(
            f"/v1/attachments/{attachment_id}/download", headers=c.staff.auth
        )
        assert link.status_code == 200, link.text
        signed = parse_qs(urlsplit(link.json()["url"]).query)
        assert int(signed["X-Amz-Expires"][0]) <= 300
        assert signed["response-content-disposition"][0].startswith("attachment; filename=")
        fetched = await outside.get(link.json()["url"])
        assert fetched.status_code == 200
        assert fetched.content == PNG
        assert fetched.headers["content-type"] == "image/png"
    query = urlencode({"expires": 1, "signature": "0" * 64, "filename": "a", "type": "image/png"})
    served = await s3_client.get(f"/v1/blobs/{c.org}/{attachment_id}?{query}")
    assert served.status_code == 404  # with S3, this API serves no files itself

    multipart = await s3_client.post(
        "/v1/attachments",
        headers=c.staff.auth,
        data={"owner_type": "patient", "owner_id": c.patient_id},
        files={"file": ("scan.pdf", PDF, "application/pdf")},
    )
    assert multipart.status_code == 201, multipart.text
    key = blob_key(c.org, multipart.json()["id"])
    assert await s3_store.get(key, max_bytes=len(PDF)) == PDF
    assert await s3_store.get(key, max_bytes=10) is None
    await s3_store.delete(key)
    assert await s3_store.get(key, max_bytes=len(PDF)) is None
    await s3_store.delete(key)  # deleting what is gone is fine
