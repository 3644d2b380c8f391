"""Security events: failed sign-ins, refresh-token reuse, rate limiting, permission denials,
blocked webhook targets, probes of well-known attack paths.

Each is logged at once, and queued in process for the outbox (topic `security.event`), which
core's relay forwards to telemetry's `/v1/security/events`. The queue is written once a
second in one INSERT on the owner pool, never inside the request that met the event: a
flood of refusals (the point of several of these) costs the database one statement a
second, not one per refusal. The queue is bounded (past it events are only logged and
counted), and what it holds at a crash is lost — the log line stays.

Events carry ids, kinds and short reasons, never a password, a token or an e-mail address.
The client's full address goes to core's outbox (core's audit trail keeps it too); telemetry
truncates it at ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from psycopg.types.json import Jsonb

from carebase.persistence.db import Database
from carebase.tracing import current_traceparent

_log = structlog.get_logger("carebase.security.events")

TOPIC = "security.event"
KINDS = frozenset(
    {
        "login_failed",
        "refresh_token_reused",
        "rate_limited",
        "permission_denied",
        "webhook_target_blocked",
        "attack_path",
    }
)
INSERT = """
INSERT INTO audit.outbox (organization_id, topic, payload, traceparent)
SELECT * FROM unnest(%s::uuid[], %s::text[], %s::jsonb[], %s::text[])
"""


class SecurityEvents:
    def __init__(
        self, db: Database | None, *, interval_s: float = 1.0, max_queued: int = 10_000
    ) -> None:
        """`db` None: events are only logged (a process without core's database)."""
        self._db = db
        self._interval_s = interval_s
        self._max = max_queued
        self._queue: list[tuple[UUID | None, dict[str, Any], str | None]] = []
        self._once: dict[tuple[str, ...], float] = {}
        self.dropped = 0

    def record(
        self,
        kind: str,
        *,
        organization_id: UUID | None = None,
        actor_user_id: UUID | None = None,
        ip: str | None = None,
        request_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
        once_per_s: float | None = None,
        once_key: tuple[str, ...] = (),
    ) -> None:
        """Log the event and queue it for the relay. With `once_per_s`, an event of the same
        kind and `once_key` within that many seconds is not recorded again."""
        if kind not in KINDS:
            raise ValueError(f"unknown security event kind {kind!r}")
        if once_per_s is not None:
            key = (kind, *once_key)
            now = time.monotonic()
            if self._once.get(key, 0.0) > now:
                return
            if len(self._once) > 50_000:
                self._once = {k: v for k, v in self._once.items() if v > now}
            self._once[key] = now + once_per_s
        payload = {
            "event_id": str(uuid.uuid4()),
            "kind": kind,
            "occurred_at": datetime.now(UTC).isoformat(),
            "organization_id": str(organization_id) if organization_id else None,
            "actor_user_id": str(actor_user_id) if actor_user_id else None,
            "ip": ip,
            "request_id": request_id,
            "detail": dict(detail or {}),
        }
        _log.warning("security_event", **{k: v for k, v in payload.items() if k != "ip"})
        if self._db is None:
            return
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append((organization_id, payload, current_traceparent()))

    async def flush(self) -> int:
        """Write what is queued (one INSERT); answers how many events."""
        if not self._queue or self._db is None:
            return 0
        taken, self._queue = self._queue, []
        try:
            async with self._db.admin_transaction() as q:
                await q.execute(
                    INSERT,
                    (
                        [org for org, _, _ in taken],
                        [TOPIC] * len(taken),
                        [Jsonb(payload) for _, payload, _ in taken],
                        [traceparent for _, _, traceparent in taken],
                    ),
                )
        except Exception as exc:  # the events stay in the log; the queue must not grow on
            _log.warning("security_events_not_written", events=len(taken), error=str(exc))
            return 0
        return len(taken)

    async def run(self) -> None:
        """Flush every interval until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self._interval_s)
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())
