"""Idempotency keys: reserve, complete, release; scoped by row-level security to the caller's
organization (or, acting in none, to the user)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from carebase.persistence.db import Querier

# A fresh key, or one whose earlier use expired or whose holder died (lock lapsed).
CLAIM = """
INSERT INTO platform.idempotency_keys AS k
       (scope, key, operation_id, request_hash, locked_until, expires_at)
VALUES (platform.current_scope(), %(key)s, %(operation_id)s, %(hash)s,
        now() + make_interval(secs => %(lock_s)s), now() + make_interval(secs => %(ttl_s)s))
ON CONFLICT (scope, key) DO UPDATE
   SET operation_id = EXCLUDED.operation_id, request_hash = EXCLUDED.request_hash,
       state = 'pending', status = NULL, headers = NULL, body_sealed = NULL,
       locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, created_at = now()
 WHERE k.expires_at < now() OR (k.state = 'pending' AND k.locked_until < now())
RETURNING k.scope
"""
SELECT_KEY = """
SELECT scope, operation_id, request_hash, state, status, headers, body_sealed
  FROM platform.idempotency_keys WHERE scope = platform.current_scope() AND key = %s
"""
COMPLETE = """
UPDATE platform.idempotency_keys
   SET state = 'done', status = %(status)s, headers = %(headers)s, body_sealed = %(body)s
 WHERE scope = platform.current_scope() AND key = %(key)s AND state = 'pending'
"""
RELEASE = """
DELETE FROM platform.idempotency_keys
 WHERE scope = platform.current_scope() AND key = %s AND state = 'pending'
"""
PURGE_EXPIRED = "DELETE FROM platform.idempotency_keys WHERE expires_at < now()"


@dataclass(frozen=True, slots=True)
class StoredKey:
    scope: UUID
    operation_id: str
    request_hash: bytes
    state: str
    status: int | None
    headers: dict[str, str] | None
    body_sealed: bytes | None


async def claim(
    q: Querier, *, key: str, operation_id: str, request_hash: bytes, lock_s: int, ttl_s: int
) -> UUID | None:
    """The scope when this request now holds the key; None when another use holds it."""
    params = {
        "key": key,
        "operation_id": operation_id,
        "hash": request_hash,
        "lock_s": lock_s,
        "ttl_s": ttl_s,
    }
    found = await q.fetch_value(CLAIM, params)
    return found if isinstance(found, UUID) else None


async def stored(q: Querier, key: str) -> StoredKey | None:
    return await q.fetch_one(SELECT_KEY, (key,), row=StoredKey)


async def complete(
    q: Querier, *, key: str, status: int, headers: dict[str, Any], body: bytes
) -> None:
    params = {"key": key, "status": status, "headers": Jsonb(headers), "body": body}
    await q.execute(COMPLETE, params)


async def release(q: Querier, key: str) -> None:
    await q.execute(RELEASE, (key,))


async def purge_expired(q: Querier) -> int:
    return await q.execute(PURGE_EXPIRED)
