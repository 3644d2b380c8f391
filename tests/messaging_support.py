"""A local fake of a Twilio-shaped messaging API, for the adapter and the broadcast tests.

Like the real thing it checks basic auth and the form, answers 201 with a message `sid`, and
honours `Idempotency-Key`: a request that repeats a key gets the first answer and sends
nothing again. It can be told to answer 429 (with Retry-After) or 5xx for the next calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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
    failures: list[Response] = field(default_factory=list)
    """Answers to give, in order, before any message is sent again."""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/2010-04-01/Accounts/{account}/Messages.json", self._messages, methods=["POST"]
                )
            ]
        )

    async def _messages(self, request: Request) -> Response:
        self.requests += 1
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"code": 20003, "message": "Authenticate"}, status_code=401)
        if self.failures:
            return self.failures.pop(0)
        form = await request.form()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        if not to.removeprefix("whatsapp:").startswith("+"):
            return JSONResponse(
                {"code": 21211, "message": "The 'To' number is not a valid phone number."},
                status_code=400,
            )
        key = request.headers.get("idempotency-key")
        if key is not None and key in self.by_key:
            self.repeats[key] += 1
            return JSONResponse({"sid": self.by_key[key], "status": "queued"}, status_code=201)
        sid = "SM" + uuid.uuid4().hex
        self.sent[sid] = {"to": to, "from": str(form.get("From", "")), "body": body}
        if key is not None:
            self.by_key[key] = sid
        return JSONResponse({"sid": sid, "status": "queued"}, status_code=201)


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


def too_many(retry_after: int = 1) -> Response:
    return JSONResponse(
        {"code": 20429, "message": "Too Many Requests"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )


def server_error() -> Response:
    return JSONResponse({"message": "unavailable"}, status_code=503)


def json_of(response: Any) -> Any:
    return response.json()
