"""`Idempotency-Key` on creates: a step of the pipeline, after contract validation.

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
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from carebase.errors import Conflict, FieldError, ValidationFailed
from carebase.persistence import idempotency
from carebase.persistence.db import Database
from carebase.principal import Principal
from carebase.security.encryption import Sealer, UnsealError
from carebase.web.wire import Rendered

LOCK_S = 60
KEPT_HEADERS = ("content-type", "location", "etag", "cache-control")
POINTER = "/header/Idempotency-Key"

_log = structlog.get_logger("carebase.idempotency")


class IdempotencyKeys:
    def __init__(self, *, db: Database, sealer: Sealer, ttl_s: int) -> None:
        self.db = db
        self.sealer = sealer
        self.ttl_s = ttl_s

    async def run(
        self,
        principal: Principal,
        *,
        key: str,
        operation_id: str,
        path: str,
        document: Any,
        answer: Callable[[], Awaitable[Rendered]],
    ) -> Rendered:
        """The stored answer for this key, or `answer()`'s, stored when it is a success."""
        fingerprint = _fingerprint(operation_id, path, document)
        async with self.db.transaction(principal) as q:
            scope_id = await idempotency.claim(
                q,
                key=key,
                operation_id=operation_id,
                request_hash=fingerprint,
                lock_s=LOCK_S,
                ttl_s=self.ttl_s,
            )
            existing = None if scope_id else await idempotency.stored(q, key)
        if scope_id is None:
            return self._answer_again(existing, key, fingerprint)
        try:
            rendered = await answer()
        except BaseException:
            await self._release(principal, key)
            raise
        if 200 <= rendered.status < 300:
            kept = {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in rendered.headers
                if k.decode("latin-1") in KEPT_HEADERS
            }
            sealed = self.sealer.seal(rendered.body, _aad(scope_id, key))
            async with self.db.transaction(principal) as q:
                await idempotency.complete(
                    q, key=key, status=rendered.status, headers=kept, body=sealed
                )
        else:
            await self._release(principal, key)
        return rendered

    def _answer_again(
        self, existing: idempotency.StoredKey | None, key: str, fingerprint: bytes
    ) -> Rendered:
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
        return Rendered(existing.status, headers, body)

    async def _release(self, principal: Principal, key: str) -> None:
        try:
            async with self.db.transaction(principal) as q:
                await idempotency.release(q, key)
        except Exception:  # the reservation lapses after LOCK_S anyway
            _log.warning("idempotency_release_failed", exc_info=True)


def _fingerprint(operation: str, path: str, document: Any) -> bytes:
    """Equal for the same operation, path and JSON document (key order and spacing aside)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{operation}\0{path}\0{canonical}".encode()).digest()


def _aad(scope_id: object, key: str) -> bytes:
    return f"platform.idempotency_keys|{scope_id}|{key}".encode()
