"""A local fake of a Twilio-shaped messaging API, for the adapter and the broadcast tests and
bench/broadcasts.py. It runs under uvicorn in a process of its own (`FakeProviderProcess`), so
the provider's side of ten thousand messages does not share a core with the worker.

Like the real thing it checks basic auth and the form, answers 201 with a message `sid`, and
honours `Idempotency-Key`: a request that repeats a key gets the first answer and sends
nothing again. Tests read what it sent and queue failures (429 with Retry-After, 5xx) through
`/_fake/…`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.types import Receive, Scope, Send

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "fake-auth-token-for-tests"


@dataclass
class FakeProvider:
    sent: dict[str, dict[str, str]] = field(default_factory=dict)
    """Messages actually sent, by sid."""
    by_key: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    repeats: Counter[str] = field(default_factory=Counter)
    """Requests that repeated an idempotency key, by key."""
    failures: list[tuple[int, int | None]] = field(default_factory=list)
    """(status, Retry-After) to answer, in order, before any message is sent again."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Plain ASGI: at ten thousand messages a test, a framework's cost per request would
        be the fake's, not the worker's."""
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path.endswith("/Messages.json") and method == "POST":
            status, document, extra = self._messages(headers, body)
        elif path == "/_fake/state":
            query = parse_qs(scope["query_string"].decode())
            status, document, extra = 200, self._state(query.get("suffix", [""])[0]), {}
        elif path.startswith("/_fake/messages/"):
            found = self.sent.get(path.rsplit("/", 1)[1])
            status, document, extra = (200 if found else 404), found, {}
        elif path == "/_fake/failures":
            if method == "DELETE":
                self.failures.clear()
            else:
                self.failures.extend((int(s), r) for s, r in json.loads(body))
            status, document, extra = 200, {"failures_left": len(self.failures)}, {}
        else:
            status, document, extra = 404, {"message": "not found"}, {}
        payload = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *((k.encode(), v.encode()) for k, v in extra.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _messages(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        self.requests += 1
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if headers.get("authorization") != expected:
            return 401, {"code": 20003, "message": "Authenticate"}, {}
        if self.failures:
            status, retry_after = self.failures.pop(0)
            extra = {"retry-after": str(retry_after)} if retry_after is not None else {}
            return status, {"code": status, "message": "failing"}, extra
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        to, text = form.get("To", ""), form.get("Body", "")
        if not to.removeprefix("whatsapp:").startswith("+"):
            return (
                400,
                {"code": 21211, "message": "The 'To' number is not a valid phone number."},
                {},
            )
        key = headers.get("idempotency-key")
        if key is not None and key in self.by_key:
            self.repeats[key] += 1
            return 201, {"sid": self.by_key[key], "status": "queued"}, {}
        sid = "SM" + uuid.uuid4().hex
        self.sent[sid] = {"to": to, "from": form.get("From", ""), "body": text}
        if key is not None:
            self.by_key[key] = sid
        return 201, {"sid": sid, "status": "queued"}, {}

    def _state(self, suffix: str) -> dict[str, int]:
        """What was sent, for the messages whose body ends with `suffix`."""
        mine = [m for m in self.sent.values() if m["body"].endswith(suffix)]
        return {
            "requests": self.requests,
            "sent": len(mine),
            "recipients": len({m["to"] for m in mine}),
            "repeats": sum(self.repeats.values()),
            "failures_left": len(self.failures),
        }


def fake_app() -> FakeProvider:
    """`uvicorn messaging_support:fake_app --factory`."""
    return FakeProvider()


class FakeProviderProcess:
    """The fake under uvicorn in a child process; `url` is its base URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._control = httpx.Client(base_url=url, timeout=10)

    def state(self, suffix: str = "") -> dict[str, Any]:
        return dict(self._control.get("/_fake/state", params={"suffix": suffix}).json())

    def message(self, sid: str) -> dict[str, str] | None:
        answer = self._control.get(f"/_fake/messages/{sid}")
        return dict(answer.json()) if answer.status_code == 200 else None

    def fail_next(self, *answers: tuple[int, int | None]) -> None:
        self._control.post("/_fake/failures", json=[list(a) for a in answers])

    def clear_failures(self) -> None:
        self._control.delete("/_fake/failures")

    def close(self) -> None:
        self._control.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def fake_provider_process() -> Iterator[FakeProviderProcess]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "messaging_support:fake_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        cwd=Path(__file__).parent,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                httpx.get(f"{url}/_fake/state", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the fake provider did not start") from None
                time.sleep(0.05)
        fake = FakeProviderProcess(url)
        try:
            yield fake
        finally:
            fake.close()
    finally:
        process.kill()  # a fake: nothing to drain, and uvicorn's graceful stop takes seconds
        process.wait(timeout=10)


def signed_receipt(secret: str, body: bytes, *, at: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for `body`, as a provider signs its receipts."""
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time() if at is None else at)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
