"""`Idempotency-Key` on creates, as a layer after contract validation.

The first request with a key reserves it (its own short transaction), runs, and stores its
2xx answer sealed (a created patient's answer holds health data). Then, for the key's
lifetime (24 hours):

- the same key with the same request → the stored answer, byte for byte, with
  `Idempotent-Replayed: true`; nothing runs again, so no second row, audit row or event;
- the same key with another request → 422;
- the same key while the first is still running → 409.

A failed first request releases the key, so a corrected retry may use it. Keys belong to the
caller's organization (or user): another organization's key never matches. A process that
dies holding a key leaves a reservation that lapses after `LOCK_S`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carebase.errors import Conflict, FieldError, ValidationFailed
from carebase.persistence import idempotency
from carebase.persistence.db import Database
from carebase.principal import Principal
from carebase.security.encryption import Sealer, UnsealError
from carebase.web.contract import Operation
from carebase.web.middleware import HttpLayer, header, operation_id, principal_of

LOCK_S = 60
KEPT_HEADERS = ("content-type", "location", "etag", "cache-control")
POINTER = "/header/Idempotency-Key"

_log = structlog.get_logger("carebase.web.idempotency")


class Idempotency(HttpLayer):
    def __init__(
        self,
        app: ASGIApp,
        *,
        db: Database,
        sealer: Sealer,
        operations: Mapping[str, Operation],
        ttl_s: int,
    ) -> None:
        super().__init__(app)
        self.db = db
        self.sealer = sealer
        self.operations = operations
        self.ttl_s = ttl_s

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = self.operations.get(operation_id(scope) or "")
        key = header(scope, b"idempotency-key")
        if operation is None or not operation.idempotent or key is None:
            await self.app(scope, receive, send)
            return
        body, replay_receive = await _buffer(receive)
        principal = principal_of(scope)
        fingerprint = _fingerprint(operation.operation_id, scope["path"], body)
        async with self.db.transaction(principal) as q:
            scope_id = await idempotency.claim(
                q,
                key=key,
                operation_id=operation.operation_id,
                request_hash=fingerprint,
                lock_s=LOCK_S,
                ttl_s=self.ttl_s,
            )
            existing = None if scope_id else await idempotency.stored(q, key)
        if scope_id is None:
            await self._answer_again(existing, key, fingerprint, send)
            return
        status, headers, chunks = 500, [], []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await self._release(principal, key)
            raise
        answer = b"".join(chunks)
        if 200 <= status < 300:
            kept = {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in headers
                if k.decode("latin-1").lower() in KEPT_HEADERS
            }
            sealed = self.sealer.seal(answer, _aad(scope_id, key))
            async with self.db.transaction(principal) as q:
                await idempotency.complete(q, key=key, status=status, headers=kept, body=sealed)
        else:
            await self._release(principal, key)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _answer_again(
        self, existing: idempotency.StoredKey | None, key: str, fingerprint: bytes, send: Send
    ) -> None:
        if existing is None:  # expired and purged between the two statements: rare, retryable
            raise Conflict("The idempotency key is being reused; retry the request.")
        if existing.request_hash != fingerprint:
            raise ValidationFailed(
                [
                    FieldError(
                        POINTER,
                        "This key was used with another request; use a new key.",
                        "idempotency_mismatch",
                    )
                ]
            )
        if existing.state != "done" or existing.body_sealed is None or existing.status is None:
            raise Conflict("A request with this idempotency key is still in progress.")
        try:
            body = self.sealer.open(existing.body_sealed, _aad(existing.scope, key))
        except UnsealError:
            _log.error("idempotent_answer_unreadable", operation=existing.operation_id)
            raise Conflict(
                "The stored answer for this key cannot be replayed; use a new key."
            ) from None
        headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in (existing.headers or {}).items()
        ]
        headers.append((b"idempotent-replayed", b"true"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": existing.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _release(self, principal: Principal, key: str) -> None:
        try:
            async with self.db.transaction(principal) as q:
                await idempotency.release(q, key)
        except Exception:  # the reservation lapses after LOCK_S anyway
            _log.warning("idempotency_release_failed", exc_info=True)


def _fingerprint(operation: str, path: str, body: bytes) -> bytes:
    """Equal for the same operation, path and JSON document (key order and spacing aside)."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(operation.encode() + b"\0" + path.encode() + b"\0" + canonical).digest()


def _aad(scope_id: object, key: str) -> bytes:
    return f"platform.idempotency_keys|{scope_id}|{key}".encode()


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that hands it on once, then the original."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
