"""The outbox's consumers, run by `carebase worker`: events become webhook deliveries, the
deliveries are sent, and the events are forwarded to telemetry.

* `EventDispatcher` claims undispatched outbox events (SKIP LOCKED) and, in the same
  transaction, writes one delivery per matching endpoint with the exact body every attempt
  will send. No I/O happens while rows are locked.
* `WebhookSender` claims due deliveries with a lease, each endpoint at most 10 in flight,
  sends them concurrently (checking the destination again and connecting to the checked
  address), and marks outcomes in batches. A worker killed between sending and marking leaves
  the lease to run out; the delivery is then sent again under the same `webhook-id`.
* `TelemetryForwarder` claims events with a lease, posts them in batches to telemetry's audit
  ingest (each carries its `event_id`, which the ingest dedupes on), and marks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import orjson
import structlog

from carebase.integrations.webhooks import Response, WebhookPoster, secret_key, signed_headers
from carebase.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_SECONDS,
    OUTBOX_REFUSED,
    WEBHOOK_ATTEMPTS,
)
from carebase.persistence import webhooks as repo
from carebase.persistence.db import Database, Querier
from carebase.persistence.work_queue import Rounds
from carebase.principal import Principal
from carebase.security.egress import EgressPolicy, EgressRefused
from carebase.security.encryption import Sealer
from carebase.security.events import TOPIC as SECURITY_TOPIC
from carebase.security.events import SecurityEvents
from carebase.services.audit import TOPIC as AUDIT_TOPIC
from carebase.services.audit import record
from carebase.services.webhooks import secret_aad, timestamp_text
from carebase.tracing import (
    NO_TRACER,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    context_of,
    inject,
    link_to,
)

_log = structlog.get_logger("carebase.webhooks")

# After the first attempt (at once) fails: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2
MAX_BODY_BYTES = 65536
FAILING_FOR_S = 5 * 86400.0
PER_ENDPOINT = 10
MARK_BATCH = 100
MARK_LINGER_S = 0.005


def retry_delay_s(
    step: int, retry_after_s: float | None = None, *, rand: Callable[[], float] = random.random
) -> float | None:
    """The wait after the `step`-th failed attempt of a schedule (0-based), ±20 %; a
    `Retry-After` replaces it, within 1 s and the schedule's longest wait. None: no more."""
    if step >= len(RETRY_SCHEDULE_S):
        return None
    if retry_after_s is not None:
        return min(max(retry_after_s, 1.0), max(RETRY_SCHEDULE_S))
    return RETRY_SCHEDULE_S[step] * (1 + JITTER * (2 * rand() - 1))


def event_body(payload: dict[str, Any]) -> bytes:
    """`{type, timestamp, data}`: ids and changed field names only, never values."""
    actor: dict[str, str | None]
    if payload.get("actor_api_key_id"):
        actor = {"type": "api_key", "id": payload["actor_api_key_id"]}
    elif payload.get("actor_user_id"):
        actor = {"type": "user", "id": payload["actor_user_id"]}
    else:
        actor = {"type": "system", "id": None}
    occurred = datetime.fromisoformat(payload["occurred_at"])
    data: dict[str, Any] = {
        "organization_id": payload.get("organization_id"),
        "entity_type": payload.get("entity_type"),
        "entity_id": payload.get("entity_id"),
        "changed_fields": payload.get("changed_fields") or [],
        "actor": actor,
    }
    if payload.get("impersonator_id"):
        data["impersonator_id"] = payload["impersonator_id"]
    body = orjson.dumps(
        {"type": payload["action"], "timestamp": timestamp_text(occurred), "data": data}
    )
    if len(body) > MAX_BODY_BYTES:  # a change of thousands of fields: name none, say so
        data["changed_fields"] = []
        data["changed_fields_truncated"] = True
        body = orjson.dumps(
            {"type": payload["action"], "timestamp": timestamp_text(occurred), "data": data}
        )
    return body


class EventDispatcher:
    def __init__(
        self,
        db: Database,
        *,
        batch: int = 500,
        interval_s: float = 1.0,
        on_deliveries: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._batch = batch
        self._on_deliveries = on_deliveries
        self.rounds = Rounds("webhook_dispatcher", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self._drain)

    async def _drain(self) -> None:
        while not self.rounds.stopping and await self.dispatch_once() == self._batch:
            pass

    async def dispatch_once(self) -> int:
        """Dispatch one batch of events; answers how many events it took."""
        async with self._db.admin_transaction() as q:
            events = await repo.claim_undispatched(q, limit=self._batch)
            if not events:
                return 0
            organizations = sorted({e.organization_id for e in events if e.organization_id})
            by_org: dict[UUID, list[repo.Subscription]] = defaultdict(list)
            if organizations:
                for subscription in await repo.subscriptions(q, organizations):
                    by_org[subscription.organization_id].append(subscription)
            new: list[repo.NewDelivery] = []
            for event in events:
                if event.organization_id is None or event.topic != AUDIT_TOPIC:
                    continue  # security events go to telemetry only
                event_type = event.payload["action"]
                matching = [
                    s
                    for s in by_org.get(event.organization_id, ())
                    if not s.event_types or event_type in s.event_types
                ]
                if not matching:
                    continue
                body = event_body(event.payload)
                new += [
                    repo.NewDelivery(
                        event.organization_id,
                        s.id,
                        event.event_id,
                        event_type,
                        body,
                        event.traceparent,
                    )
                    for s in matching
                ]
            await repo.insert_dispatched(q, new)
            await repo.mark_dispatched(q, [e.id for e in events])
        if new and self._on_deliveries is not None:
            self._on_deliveries()
        return len(events)


@dataclass(frozen=True, slots=True)
class Attempted:
    outcome: repo.Outcome
    gone: bool
    blocked: str | None


class WebhookSender:
    def __init__(
        self,
        db: Database,
        *,
        sealer: Sealer,
        egress: EgressPolicy,
        poster: WebhookPoster | None = None,
        max_in_flight: int = 200,
        per_endpoint: int = PER_ENDPOINT,
        lease_s: float = 60.0,
        failing_s: float = FAILING_FOR_S,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        security: SecurityEvents | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._security = security
        self._tracer = tracer
        self._db = db
        self._clock = clock
        self._sealer = sealer
        self._egress = egress
        self._poster = poster or WebhookPoster(per_endpoint=per_endpoint)
        self._max_in_flight = max_in_flight
        self._per_endpoint = per_endpoint
        self._lease_s = lease_s
        self._failing_s = failing_s
        self.rounds = Rounds("webhook_sender", interval_s, _log)
        self.nudge = self.rounds.nudge
        self._in_flight: set[asyncio.Task[None]] = set()
        self._done: list[Attempted] = []
        self._marks = asyncio.Event()

    # --- step by step (tests, and the shape of one round) ---------------------------------

    async def send_once(self, *, limit: int = 500) -> list[Attempted]:
        """Claim what is due, attempt it all, mark the outcomes; answers the attempts."""
        claimed = await self._claim(limit)
        done = list(await asyncio.gather(*(self._attempt(c) for c in claimed)))
        if done:
            await self._mark(done)
        return done

    # --- the running worker: claims while attempts are in flight --------------------------

    async def run(self) -> None:
        marker = asyncio.create_task(self._mark_loop(), name="webhook-marker")
        try:
            await self.rounds.run(self._fill)
            # Stopped, not cancelled: the attempts in flight finish and their outcomes are
            # marked, so no lease is left to run out. Cancelled meanwhile (the drain's bound),
            # they are cut off and sent again after the lease, under the same webhook-id.
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            await self._mark_done()
        finally:
            marker.cancel()
            for task in list(self._in_flight):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await marker
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            await self._poster.close()

    async def _fill(self) -> None:
        while not self.rounds.stopping:
            room = self._max_in_flight - len(self._in_flight)
            if room <= 0:
                return
            claimed = await self._claim(room)
            for delivery in claimed:
                task = asyncio.create_task(self._attempt_and_queue(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if len(claimed) < room:
                return

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.rounds.nudge()  # a slot is free (the endpoint's lease goes when it is marked)

    async def _attempt_and_queue(self, delivery: repo.ClaimedDelivery) -> None:
        self._done.append(await self._attempt(delivery))
        self._marks.set()

    async def _mark_loop(self) -> None:
        while True:
            await self._marks.wait()
            # Until the attempts in flight finish (at most a moment), so that those finishing
            # together share one transaction: marking one at a time freed one slot at a time,
            # and claims and marks went in lockstep (~200 deliveries/s).
            if len(self._done) < MARK_BATCH and self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=MARK_LINGER_S)
            self._marks.clear()
            await self._mark_done()

    async def _mark_done(self) -> None:
        """Mark every finished attempt, 500 to a transaction, until none is left."""
        while self._done:
            batch, self._done = self._done[:500], self._done[500:]
            try:
                await self._mark(batch)
                # Marked, their leases are gone: the endpoints have room for more now.
                self.rounds.nudge()
            except Exception as exc:
                # Kept for the next try; meanwhile leases may run out and the deliveries be
                # sent again: at least once, never lost.
                _log.warning("webhook_mark_failed", error=type(exc).__name__, detail=str(exc))
                self._done = batch + self._done
                await asyncio.sleep(1.0)

    # --- the parts ------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[repo.ClaimedDelivery]:
        async with self._db.admin_transaction() as q:
            return await repo.claim_due(
                q, limit=limit, per_endpoint=self._per_endpoint, lease_s=self._lease_s
            )

    async def _attempt(self, delivery: repo.ClaimedDelivery) -> Attempted:
        """One attempt, as a span that is a child of the request whose event it carries."""
        attempted_at = datetime.now(UTC)
        with self._tracer.start_as_current_span(
            f"webhook {delivery.event_type}",
            context=context_of(delivery.traceparent),
            kind=SpanKind.CLIENT,
            attributes={
                "carebase.webhook.delivery_id": str(delivery.id),
                "carebase.webhook.endpoint_id": str(delivery.endpoint_id),
                "carebase.webhook.attempt": delivery.attempts,
                "carebase.event_id": str(delivery.event_id),
            },
        ) as span:
            try:
                attempted = await self._try(delivery, attempted_at)
            except Exception as exc:  # a bug or a surprise: a failed attempt, never a stuck lease
                _log.exception("webhook_attempt_crashed", delivery_id=str(delivery.id))
                span.record_exception(exc)
                response = Response(None, f"internal error: {type(exc).__name__}", None, None, 0)
                attempted = self._judge(delivery, attempted_at, response, blocked=None)
            outcome = attempted.outcome
            WEBHOOK_ATTEMPTS.labels(outcome.outcome).inc()
            span.set_attribute("carebase.webhook.outcome", outcome.outcome)
            if outcome.status_code is not None:
                span.set_attribute("http.response.status_code", outcome.status_code)
            if outcome.outcome != "succeeded":
                span.set_status(Status(StatusCode.ERROR, outcome.error or outcome.outcome))
            return attempted

    async def _try(self, delivery: repo.ClaimedDelivery, attempted_at: datetime) -> Attempted:
        try:
            destination = await self._egress.check(delivery.url)
        except EgressRefused as exc:
            if self._security is not None:  # once an hour per endpoint: retries repeat it
                self._security.record(
                    "webhook_target_blocked",
                    organization_id=delivery.organization_id,
                    detail={
                        "at": "delivery",
                        "endpoint_id": str(delivery.endpoint_id),
                        "reason": exc.reason[:200],
                    },
                    once_per_s=3600,
                    once_key=(str(delivery.endpoint_id),),
                )
            response = Response(None, f"blocked: {exc.reason}", None, None, 0)
            return self._judge(delivery, attempted_at, response, blocked=exc.reason)
        aad = secret_aad(delivery.organization_id, delivery.endpoint_id)
        keys = [secret_key(self._sealer.open(delivery.secret_sealed, aad).decode())]
        if delivery.previous_secret_sealed is not None:
            keys.append(
                secret_key(self._sealer.open(delivery.previous_secret_sealed, aad).decode())
            )
        headers = signed_headers(keys, str(delivery.event_id), delivery.body, now=self._clock())
        response = await self._poster.post(
            delivery.endpoint_id, destination, headers, delivery.body
        )
        return self._judge(delivery, attempted_at, response, blocked=None)

    def _judge(
        self,
        delivery: repo.ClaimedDelivery,
        attempted_at: datetime,
        response: Response,
        *,
        blocked: str | None,
    ) -> Attempted:
        code = response.status_code
        succeeded = code is not None and 200 <= code < 300
        if succeeded:
            status, step, next_at = "succeeded", delivery.step, attempted_at
        else:
            delay = retry_delay_s(delivery.step, response.retry_after_s)
            if delay is None:
                status, step, next_at = "failed", delivery.step + 1, attempted_at
            else:
                status, step = "pending", delivery.step + 1
                next_at = datetime.now(UTC) + timedelta(seconds=delay)
        error = response.error
        if error is None and not succeeded:
            error = f"HTTP {code}"
        outcome = repo.Outcome(
            organization_id=delivery.organization_id,
            delivery_id=delivery.id,
            endpoint_id=delivery.endpoint_id,
            attempt=delivery.attempts,
            attempted_at=attempted_at,
            duration_ms=response.duration_ms,
            outcome="succeeded" if succeeded else ("blocked" if blocked else "failed"),
            status_code=code,
            error=error[:500] if error else None,
            response_excerpt=response.excerpt,
            status=status,
            step=step,
            next_attempt_at=next_at,
        )
        return Attempted(outcome, gone=code == 410, blocked=blocked)

    async def _mark(self, done: Sequence[Attempted]) -> None:
        outcomes = [a.outcome for a in done]
        gone = sorted({a.outcome.endpoint_id for a in done if a.gone})
        async with self._db.admin_transaction() as q:
            disabled = await repo.mark(q, outcomes, gone=gone, failing_s=self._failing_s)
            for attempted in done:
                o = attempted.outcome
                if attempted.blocked:
                    await self._audit(q, o, "security.webhook_blocked", "webhook_endpoint")
                if o.status == "failed":
                    await self._audit(q, o, "webhook.delivery.exhausted", "webhook_delivery")
            for endpoint in disabled:
                await record(
                    q,
                    Principal.system(endpoint.organization_id),
                    action="webhook_endpoint.auto_disabled",
                    entity_type="webhook_endpoint",
                    entity_id=endpoint.id,
                    changed_fields=["status"],
                )
        for attempted in done:
            o = attempted.outcome
            if attempted.blocked:
                _log.warning(
                    "webhook_destination_blocked",
                    endpoint_id=str(o.endpoint_id),
                    delivery_id=str(o.delivery_id),
                    reason=attempted.blocked,
                )
        for endpoint in disabled:
            _log.warning(
                "webhook_endpoint_disabled",
                endpoint_id=str(endpoint.id),
                reason=endpoint.disabled_reason,
            )

    @staticmethod
    async def _audit(q: Querier, o: repo.Outcome, action: str, entity_type: str) -> None:
        entity_id = o.endpoint_id if entity_type == "webhook_endpoint" else o.delivery_id
        await record(
            q,
            Principal.system(o.organization_id),
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
        )


async def sample_backlog(db: Database, *, forwarding: bool) -> None:
    """The outbox's backlog and its oldest event's age, per consumer, into the metrics (the
    telemetry consumer only where events are forwarded)."""
    async with db.admin_transaction() as q:
        found = await repo.backlog(q)
    OUTBOX_BACKLOG.labels("webhooks").set(found.dispatch_backlog)
    OUTBOX_OLDEST_SECONDS.labels("webhooks").set(found.dispatch_oldest_s or 0.0)
    if forwarding:
        OUTBOX_BACKLOG.labels("telemetry").set(found.forward_backlog)
        OUTBOX_OLDEST_SECONDS.labels("telemetry").set(found.forward_oldest_s or 0.0)


REFUSED = "HTTP 422"


class TelemetryForwarder:
    """Posts outbox events to telemetry's ingest, `batch` at a time, until accepted: audit
    events to `/v1/audit/events`, security events to `/v1/security/events`."""

    PATHS: Mapping[str, str] = {
        AUDIT_TOPIC: "/v1/audit/events",
        SECURITY_TOPIC: "/v1/security/events",
    }

    def __init__(
        self,
        db: Database,
        *,
        base_url: str,
        token: str,
        batch: int = 100,
        lease_s: float = 60.0,
        interval_s: float = 1.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._db = db
        self._tracer = tracer
        self._base = base_url.rstrip("/")
        self._token = token
        self._batch = batch
        self._lease_s = lease_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport
        )
        self.rounds = Rounds("telemetry_forwarder", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        try:
            await self.rounds.run(self._drain)
        finally:
            await self._client.aclose()

    async def _drain(self) -> None:
        while not self.rounds.stopping and await self.forward_once() == self._batch:
            pass

    async def forward_once(self) -> int:
        """Forward one batch; answers how many events were accepted (0 when all failed)."""
        async with self._db.admin_transaction() as q:
            rows = await repo.claim_unforwarded(q, limit=self._batch, lease_s=self._lease_s)
        if not rows:
            return 0
        by_topic: dict[str, list[repo.ForwardRow]] = defaultdict(list)
        for row in rows:
            by_topic[row.topic].append(row)
        done: list[int] = []
        failed: list[repo.ForwardRow] = []
        for topic, group in by_topic.items():
            path = self.PATHS.get(topic)
            retry = await self._deliver(path, group) if path else []
            done += [row.id for row in group if row not in retry]  # an unknown topic: nowhere
            failed += retry
        async with self._db.admin_transaction() as q:
            if done:
                await repo.mark_forwarded(q, done)
            if failed:
                delay = forward_backoff_s(max(row.forward_attempts for row in failed))
                await repo.retry_forward(q, [row.id for row in failed], delay_s=delay)
        return len(done)

    async def _deliver(self, path: str, rows: Sequence[repo.ForwardRow]) -> list[repo.ForwardRow]:
        """Post `rows`; answers those to try again later. A batch telemetry's contract
        refuses (422) is split in halves until the event it refuses stands alone: that one
        would be refused forever, so it is logged and counted as dropped, and the rest of its
        batch goes through instead of waiting behind it."""
        failure = await self._post(path, rows)
        if failure is None:
            return []
        if failure == REFUSED:
            if len(rows) == 1:
                OUTBOX_REFUSED.inc()
                _log.error("telemetry_event_refused", event_id=str(rows[0].event_id), path=path)
                return []
            half = len(rows) // 2
            return [
                *await self._deliver(path, rows[:half]),
                *await self._deliver(path, rows[half:]),
            ]
        _log.warning("telemetry_forward_failed", path=path, events=len(rows), error=failure)
        return list(rows)

    async def _post(self, path: str, rows: Sequence[repo.ForwardRow]) -> str | None:
        """One batch, as a span linked to each request whose event it carries (a batch has
        many causes, so none is its parent); the httpx call beneath carries `traceparent` on
        to telemetry."""
        links = [link for link in map(link_to, (row.traceparent for row in rows)) if link]
        with self._tracer.start_as_current_span(
            f"telemetry forward {path}",
            kind=SpanKind.PRODUCER,
            links=links,
            attributes={"carebase.events": len(rows)},
        ) as span:
            failure = await self._send(path, rows)
            if failure is not None:
                span.set_status(Status(StatusCode.ERROR, failure))
            return failure

    async def _send(self, path: str, rows: Sequence[repo.ForwardRow]) -> str | None:
        body = orjson.dumps({"events": [row.payload for row in rows]})
        headers = {
            "authorization": f"Bearer {self._token}",
            "content-type": "application/json",
            "user-agent": "Carebase-Relay/1",
        }
        inject(headers)
        try:
            reply = await self._client.post(self._base + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if reply.status_code == 422:
            return REFUSED
        if not 200 <= reply.status_code < 300:
            return f"HTTP {reply.status_code}"
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            rejected = orjson.loads(reply.content).get("rejected") or []
            for entry in rejected:  # refused for good (malformed): retrying would not help
                index = entry.get("index")
                event_id = rows[index].event_id if isinstance(index, int) else None
                _log.error(
                    "telemetry_event_rejected", event_id=str(event_id), reason=entry.get("reason")
                )
        return None


def forward_backoff_s(attempts: int, *, rand: Callable[[], float] = random.random) -> float:
    """1 s, 2 s, 4 s … at most 5 minutes, ±20 %."""
    return min(2.0 ** max(attempts - 1, 0), 300.0) * (1 + JITTER * (2 * rand() - 1))
