"""The outer layer over a real socket: bodies over the limit, the access line, HEAD, 405."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from support import Person

from carebase.config import Settings

pytestmark = pytest.mark.integration

TWENTY_MB = 20 * 1024 * 1024


def test_a_20_mb_body_gets_a_413_the_client_reads(live_server: str, settings: Settings) -> None:
    """urllib sends the whole body before it reads the answer: the server drains the body
    instead of resetting the connection, so the client sees the problem, not ECONNRESET."""
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        f"{live_server}/v1/auth/login",
        data=b"x" * TWENTY_MB,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310
    answer = caught.value
    assert answer.code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    problem = json.loads(answer.read())
    assert problem["code"] == "payload_too_large"
    assert str(settings.max_body_bytes) in problem["detail"]


def test_a_client_that_expects_100_continue_is_answered_without_sending(live_server: str) -> None:
    address = urlsplit(live_server)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: carebase.test\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {TWENTY_MB}\r\n\r\n".encode()
        )
        head = conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]
    assert b"100 Continue" not in head


async def test_each_request_writes_one_access_line(
    client: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    response = await client.get("/health/live", headers={"X-Request-ID": "access-line-test-1"})
    await client.get("/v1/nowhere", headers={"X-Request-ID": "access-line-test-2"})
    lines = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")
    ]
    # Only this test's requests: an earlier test's refused upload may still be draining, and
    # its line is written when it ends.
    access = [
        line
        for line in lines
        if line.get("logger") == "carebase.access"
        and line.get("request_id") in ("access-line-test-1", "access-line-test-2")
    ]
    assert len(access) == 2
    first, second = access
    assert first["request_id"] == response.headers["x-request-id"] == "access-line-test-1"
    assert first["event"] == "request"
    assert first["level"] == "info"
    assert (first["method"], first["route"], first["status"]) == ("GET", "/health/live", 200)
    assert first["duration_ms"] >= 0
    assert first["timestamp"].endswith("Z")
    assert "path" not in first
    assert (second["route"], second["path"], second["status"]) == (None, "/v1/nowhere", 404)


async def test_the_access_line_names_the_actor_even_when_the_request_fails(
    client: httpx.AsyncClient,
    capfd: pytest.CaptureFixture[str],
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    staff = person(new_org(), "staff")
    capfd.readouterr()
    missing = await client.get(f"/v1/patients/{uuid.uuid4()}", headers=staff.auth)
    assert missing.status_code == 404
    lines = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")
    ]
    access = [line for line in lines if line.get("logger") == "carebase.access"]
    assert access[-1]["actor"] == f"user:{staff.user_id}"
    assert access[-1]["status"] == 404


async def test_head_answers_headers_only(client: httpx.AsyncClient) -> None:
    get = await client.get("/openapi.json")
    head = await client.head("/openapi.json")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


async def test_a_trailing_slash_is_no_route_not_a_redirect(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live/")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_undeclared_method_on_a_template_gets_the_contract_allow(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/patients/5c5ed5b6-1f8e-4b9a-9f4e-2f0b6f3a8e11")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, DELETE, PATCH, HEAD"
    assert response.json()["code"] == "method_not_allowed"


def _access_lines(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "carebase.access"]
