"""Webhook endpoints, their deliveries and attempts; and the outbox's two consumers.

The API reads and writes endpoints under row-level security (admins only). The worker runs on
the owner pool: it dispatches outbox events into deliveries, claims due deliveries with a
lease (`claimed_until`), and marks a batch of outcomes in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from carebase.pages import PageRequest
from carebase.persistence.db import Querier, fetch_page, one
from carebase.persistence.work_queue import announce

# --- endpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: UUID
    url: str
    description: str
    event_types: list[str]
    status: str
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    failing_since: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    organization_id: UUID
    id: UUID
    url: str
    description: str
    event_types: Sequence[str]
    secret_sealed: bytes


INSERT_ENDPOINT = """
INSERT INTO webhooks.endpoints (organization_id, id, url, description, event_types, secret_sealed)
VALUES (%(organization_id)s, %(id)s, %(url)s, %(description)s, %(event_types)s, %(secret_sealed)s)
RETURNING id, url, description, event_types, status, disabled_reason,
       previous_secret_expires_at, failing_since, version, created_at, updated_at
"""
SELECT_ENDPOINT = """
SELECT id, url, description, event_types, status, disabled_reason,
       previous_secret_expires_at, failing_since, version, created_at, updated_at
  FROM webhooks.endpoints WHERE organization_id = %s AND id = %s
"""
COUNT_ENDPOINTS = """
SELECT count(*) FROM webhooks.endpoints
 WHERE organization_id = %(org)s AND (%(status)s::text IS NULL OR status = %(status)s)
"""
LIST_ENDPOINTS = """
SELECT id, url, description, event_types, status, disabled_reason,
       previous_secret_expires_at, failing_since, version, created_at, updated_at
  FROM webhooks.endpoints
 WHERE organization_id = %(org)s AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY created_at, id LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_ALL_ENDPOINTS = "SELECT count(*) FROM webhooks.endpoints WHERE organization_id = %s"
UPDATE_ENDPOINT = """
UPDATE webhooks.endpoints
   SET url = %(url)s, description = %(description)s, event_types = %(event_types)s,
       status = %(status)s, disabled_reason = %(disabled_reason)s,
       failing_since = CASE WHEN %(status)s = 'enabled' AND status <> 'enabled' THEN NULL
                            ELSE failing_since END,
       version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING id, url, description, event_types, status, disabled_reason,
       previous_secret_expires_at, failing_since, version, created_at, updated_at
"""
ENABLE_ENDPOINT = """
UPDATE webhooks.endpoints
   SET status = 'enabled', disabled_reason = NULL, failing_since = NULL,
       version = version + 1, updated_at = now()
 WHERE organization_id = %s AND id = %s
RETURNING id, url, description, event_types, status, disabled_reason,
       previous_secret_expires_at, failing_since, version, created_at, updated_at
"""
ROTATE_SIGNING_KEY = """
UPDATE webhooks.endpoints
   SET previous_secret_sealed = CASE WHEN %(overlap_s)s > 0 THEN secret_sealed END,
       previous_secret_expires_at = CASE WHEN %(overlap_s)s > 0
                                         THEN now() + make_interval(secs => %(overlap_s)s) END,
       secret_sealed = %(secret_sealed)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND id = %(id)s
RETURNING id, url, description, event_types, status, disabled_reason,
       previous_secret_expires_at, failing_since, version, created_at, updated_at
"""
DELETE_ENDPOINT = """
DELETE FROM webhooks.endpoints
 WHERE organization_id = %s AND id = %s AND (%s::integer IS NULL OR version = %s)
"""


async def insert_endpoint(q: Querier, new: NewEndpoint) -> EndpointRow | None:
    params = {
        "organization_id": new.organization_id,
        "id": new.id,
        "url": new.url,
        "description": new.description,
        "event_types": list(new.event_types),
        "secret_sealed": new.secret_sealed,
    }
    return await q.fetch_one(INSERT_ENDPOINT, params, row=EndpointRow)


async def endpoint(q: Querier, organization_id: UUID, endpoint_id: UUID) -> EndpointRow | None:
    return await q.fetch_one(SELECT_ENDPOINT, (organization_id, endpoint_id), row=EndpointRow)


async def endpoints(
    q: Querier, organization_id: UUID, page: PageRequest, *, status: str | None
) -> tuple[list[EndpointRow], int]:
    params = {"org": organization_id, "status": status}
    return await fetch_page(q, COUNT_ENDPOINTS, LIST_ENDPOINTS, params, page, row=EndpointRow)


async def count_endpoints(q: Querier, organization_id: UUID) -> int:
    return int(await q.fetch_value(COUNT_ALL_ENDPOINTS, (organization_id,)))


async def update_endpoint(
    q: Querier, organization_id: UUID, current: EndpointRow, *, version: int | None
) -> EndpointRow | None:
    params = {
        "org": organization_id,
        "id": current.id,
        "url": current.url,
        "description": current.description,
        "event_types": current.event_types,
        "status": current.status,
        "disabled_reason": current.disabled_reason,
        "version": version,
    }
    return await q.fetch_one(UPDATE_ENDPOINT, params, row=EndpointRow)


async def enable_endpoint(q: Querier, organization_id: UUID, endpoint_id: UUID) -> EndpointRow:
    # Runs after the endpoint was read in the same transaction: the row is there.
    return one(await q.fetch_one(ENABLE_ENDPOINT, (organization_id, endpoint_id), row=EndpointRow))


async def rotate_secret(
    q: Querier, organization_id: UUID, endpoint_id: UUID, *, sealed: bytes, overlap_s: int
) -> EndpointRow | None:
    params = {"org": organization_id, "id": endpoint_id, "secret_sealed": sealed}
    return await q.fetch_one(
        ROTATE_SIGNING_KEY, {**params, "overlap_s": overlap_s}, row=EndpointRow
    )


async def delete_endpoint(
    q: Querier, organization_id: UUID, endpoint_id: UUID, *, version: int | None
) -> bool:
    params = (organization_id, endpoint_id, version, version)
    return await q.execute(DELETE_ENDPOINT, params) == 1


# --- deliveries, as the API shows them -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    number: int
    attempted_at: datetime
    duration_ms: int
    outcome: str
    status_code: int | None
    error: str | None
    response_excerpt: str | None


COUNT_DELIVERIES = """
SELECT count(*) FROM webhooks.deliveries
 WHERE organization_id = %(org)s AND endpoint_id = %(endpoint)s
   AND (%(status)s::text IS NULL OR status = %(status)s)
"""
LIST_DELIVERIES = """
SELECT id, endpoint_id, event_id, event_type, status, attempts,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       last_status_code, last_error, created_at, finished_at FROM webhooks.deliveries
 WHERE organization_id = %(org)s AND endpoint_id = %(endpoint)s
   AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
SELECT_DELIVERY = """
SELECT id, endpoint_id, event_id, event_type, status, attempts,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       last_status_code, last_error, created_at, finished_at FROM webhooks.deliveries
 WHERE organization_id = %s AND endpoint_id = %s AND id = %s
"""
LIST_ATTEMPTS = """
SELECT number, attempted_at, duration_ms, outcome, status_code, error, response_excerpt
  FROM webhooks.attempts WHERE organization_id = %s AND delivery_id = %s ORDER BY number
"""
INSERT_DELIVERY = """
INSERT INTO webhooks.deliveries (organization_id, endpoint_id, event_id, event_type, body)
VALUES (%s, %s, %s, %s, %s)
RETURNING id, endpoint_id, event_id, event_type, status, attempts,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       last_status_code, last_error, created_at, finished_at
"""
# A redelivery starts the schedule again; a delivery in flight is left to finish.
REDELIVER = """
UPDATE webhooks.deliveries
   SET status = 'pending', step = 0, next_attempt_at = now(), finished_at = NULL
 WHERE organization_id = %s AND endpoint_id = %s AND id = %s
   AND (claimed_until IS NULL OR claimed_until < now())
RETURNING id, endpoint_id, event_id, event_type, status, attempts,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       last_status_code, last_error, created_at, finished_at
"""
RECOVER = """
UPDATE webhooks.deliveries
   SET status = 'pending', step = 0, next_attempt_at = now(), finished_at = NULL
 WHERE organization_id = %s AND endpoint_id = %s AND status = 'failed' AND created_at >= %s
"""
DELIVERIES_TABLE = "webhooks.deliveries"


async def deliveries(
    q: Querier, organization_id: UUID, endpoint_id: UUID, page: PageRequest, *, status: str | None
) -> tuple[list[DeliveryRow], int]:
    params = {"org": organization_id, "endpoint": endpoint_id, "status": status}
    return await fetch_page(q, COUNT_DELIVERIES, LIST_DELIVERIES, params, page, row=DeliveryRow)


async def delivery(
    q: Querier, organization_id: UUID, endpoint_id: UUID, delivery_id: UUID
) -> DeliveryRow | None:
    params = (organization_id, endpoint_id, delivery_id)
    return await q.fetch_one(SELECT_DELIVERY, params, row=DeliveryRow)


async def attempts(q: Querier, organization_id: UUID, delivery_id: UUID) -> list[AttemptRow]:
    return await q.fetch_all(LIST_ATTEMPTS, (organization_id, delivery_id), row=AttemptRow)


async def insert_delivery(
    q: Querier,
    organization_id: UUID,
    *,
    endpoint_id: UUID,
    event_id: UUID,
    event_type: str,
    body: bytes,
) -> DeliveryRow | None:
    params = (organization_id, endpoint_id, event_id, event_type, body)
    return await q.fetch_one(INSERT_DELIVERY, params, row=DeliveryRow)


async def redeliver(
    q: Querier, organization_id: UUID, endpoint_id: UUID, delivery_id: UUID
) -> DeliveryRow | None:
    params = (organization_id, endpoint_id, delivery_id)
    found = await q.fetch_one(REDELIVER, params, row=DeliveryRow)
    if found is not None:  # an update: the insert trigger does not announce it
        await announce(q, DELIVERIES_TABLE)
    return found


async def recover(q: Querier, organization_id: UUID, endpoint_id: UUID, since: datetime) -> int:
    count = await q.execute(RECOVER, (organization_id, endpoint_id, since))
    if count:
        await announce(q, DELIVERIES_TABLE)
    return count


# --- the dispatcher: outbox events → deliveries (owner pool) --------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    event_id: UUID
    organization_id: UUID | None
    payload: dict[str, Any]
    topic: str
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class Subscription:
    organization_id: UUID
    id: UUID
    event_types: list[str]


CLAIM_UNDISPATCHED = """
SELECT id, event_id, organization_id, payload, topic, traceparent FROM audit.outbox
 WHERE dispatched_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
# A manually disabled endpoint takes no events; one the platform disabled (gone, failing)
# keeps them pending for when an admin enables it again.
SUBSCRIPTIONS = """
SELECT organization_id, id, event_types FROM webhooks.endpoints
 WHERE organization_id = ANY(%s) AND status IN ('enabled', 'disabled_auto')
"""
INSERT_DISPATCHED = """
INSERT INTO webhooks.deliveries
       (organization_id, endpoint_id, event_id, event_type, body, traceparent)
SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::bytea[], %s::text[])
    ON CONFLICT (endpoint_id, event_id) DO NOTHING
"""
MARK_DISPATCHED = "UPDATE audit.outbox SET dispatched_at = now() WHERE id = ANY(%s)"


@dataclass(frozen=True, slots=True)
class NewDelivery:
    organization_id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    body: bytes
    traceparent: str | None = None


async def claim_undispatched(q: Querier, *, limit: int) -> list[OutboxEvent]:
    return await q.fetch_all(CLAIM_UNDISPATCHED, (limit,), row=OutboxEvent)


async def subscriptions(q: Querier, organization_ids: Sequence[UUID]) -> list[Subscription]:
    return await q.fetch_all(SUBSCRIPTIONS, (list(organization_ids),), row=Subscription)


async def insert_dispatched(q: Querier, new: Sequence[NewDelivery]) -> int:
    if not new:
        return 0
    columns = (
        [d.organization_id for d in new],
        [d.endpoint_id for d in new],
        [d.event_id for d in new],
        [d.event_type for d in new],
        [d.body for d in new],
        [d.traceparent for d in new],
    )
    return await q.execute(INSERT_DISPATCHED, columns)


async def mark_dispatched(q: Querier, outbox_ids: Sequence[int]) -> None:
    await q.execute(MARK_DISPATCHED, (list(outbox_ids),))


# --- the sender: claim due deliveries, mark outcomes (owner pool) ---------------------------


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    organization_id: UUID
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    body: bytes
    attempts: int
    step: int
    url: str
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
    previous_secret_expires_at: datetime | None
    traceparent: str | None


# Each enabled endpoint in turn gives its oldest due deliveries, up to its free slots (at most
# `per_endpoint` in flight, counting unexpired leases), so a dead endpoint's backlog never
# fills a claim. Rows are locked SKIP LOCKED: competing workers take different ones.
CLAIM_DUE = """
WITH chosen AS (
    SELECT d.organization_id, d.id
      FROM webhooks.endpoints e
     CROSS JOIN LATERAL (
           SELECT x.organization_id, x.id, x.next_attempt_at
             FROM webhooks.deliveries x
            WHERE x.endpoint_id = e.id AND x.organization_id = e.organization_id
              AND x.status = 'pending' AND x.next_attempt_at <= now()
              AND (x.claimed_until IS NULL OR x.claimed_until < now())
            ORDER BY x.next_attempt_at
            LIMIT greatest(0, %(per_endpoint)s - (
                  SELECT count(*) FROM webhooks.deliveries b
                   WHERE b.endpoint_id = e.id AND b.claimed_until > now()))
              FOR UPDATE SKIP LOCKED) d
     WHERE e.status = 'enabled'
     ORDER BY d.next_attempt_at
     LIMIT %(limit)s
)
UPDATE webhooks.deliveries d
   SET claimed_until = now() + make_interval(secs => %(lease_s)s), attempts = d.attempts + 1
  FROM chosen c, webhooks.endpoints e
 WHERE d.organization_id = c.organization_id AND d.id = c.id
   AND e.organization_id = d.organization_id AND e.id = d.endpoint_id
RETURNING d.organization_id, d.id, d.endpoint_id, d.event_id, d.event_type, d.body, d.attempts,
          d.step, e.url, e.secret_sealed,
          CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_sealed END
              AS previous_secret_sealed,
          CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_expires_at END
              AS previous_secret_expires_at,
          d.traceparent
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to, and what follows: `status` is the delivery's next status
    (`pending` with `next_attempt_at` for a retry). Marks only the claim it answers (the
    `attempt` number): a claim whose lease ran out and was taken again is not overwritten."""

    organization_id: UUID
    delivery_id: UUID
    endpoint_id: UUID
    attempt: int
    attempted_at: datetime
    duration_ms: int
    outcome: str
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    status: str
    step: int
    next_attempt_at: datetime


MARK_DELIVERIES = """
UPDATE webhooks.deliveries d
   SET status = r.status, step = r.step, next_attempt_at = r.next_at, claimed_until = NULL,
       finished_at = CASE WHEN r.status = 'pending' THEN NULL ELSE now() END,
       last_status_code = r.code, last_error = r.error
  FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::text[], %s::int[], %s::timestamptz[],
              %s::int[], %s::text[]) AS r(org, id, attempt, status, step, next_at, code, error)
 WHERE d.organization_id = r.org AND d.id = r.id AND d.attempts = r.attempt
"""
INSERT_ATTEMPTS = """
INSERT INTO webhooks.attempts (organization_id, delivery_id, number, attempted_at, duration_ms,
                               outcome, status_code, error, response_excerpt)
SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::timestamptz[], %s::int[],
                     %s::text[], %s::int[], %s::text[], %s::text[])
    ON CONFLICT DO NOTHING
"""
# A success ends an endpoint's failing streak; a failure starts one (or continues it).
ENDPOINTS_SUCCEEDED = """
UPDATE webhooks.endpoints SET failing_since = NULL
 WHERE id = ANY(%s) AND failing_since IS NOT NULL
"""
ENDPOINTS_FAILED = """
UPDATE webhooks.endpoints SET failing_since = now()
 WHERE id = ANY(%s) AND failing_since IS NULL
"""
# Gone (410) at once; failing everything for `failing_s`. Answers the endpoints it disabled.
DISABLE_ENDPOINTS = """
UPDATE webhooks.endpoints
   SET status = 'disabled_auto', version = version + 1, updated_at = now(),
       disabled_reason = CASE WHEN id = ANY(%(gone)s) THEN 'gone' ELSE 'failing' END
 WHERE status = 'enabled'
   AND (id = ANY(%(gone)s)
        OR (id = ANY(%(failed)s) AND failing_since <= now() - make_interval(secs => %(failing_s)s)))
RETURNING organization_id, id, disabled_reason
"""


@dataclass(frozen=True, slots=True)
class Disabled:
    organization_id: UUID
    id: UUID
    disabled_reason: str


def _columns(rows: Sequence[Any], *names: str) -> tuple[list[Any], ...]:
    """One array per field, in the order the `unnest(...)` of a statement takes them."""
    return tuple([getattr(row, name) for row in rows] for name in names)


async def claim_due(
    q: Querier, *, limit: int, per_endpoint: int, lease_s: float
) -> list[ClaimedDelivery]:
    params = {"limit": limit, "per_endpoint": per_endpoint, "lease_s": lease_s}
    return await q.fetch_all(CLAIM_DUE, params, row=ClaimedDelivery)


async def mark(
    q: Querier, outcomes: Sequence[Outcome], *, gone: Sequence[UUID], failing_s: float
) -> list[Disabled]:
    """Record a batch of attempts and their consequences; answers the endpoints disabled."""
    await q.execute(
        MARK_DELIVERIES,
        _columns(
            outcomes,
            "organization_id",
            "delivery_id",
            "attempt",
            "status",
            "step",
            "next_attempt_at",
            "status_code",
            "error",
        ),
    )
    await q.execute(
        INSERT_ATTEMPTS,
        _columns(
            outcomes,
            "organization_id",
            "delivery_id",
            "attempt",
            "attempted_at",
            "duration_ms",
            "outcome",
            "status_code",
            "error",
            "response_excerpt",
        ),
    )
    succeeded = sorted({o.endpoint_id for o in outcomes if o.outcome == "succeeded"})
    failed = sorted({o.endpoint_id for o in outcomes if o.outcome != "succeeded"} - set(succeeded))
    if succeeded:
        await q.execute(ENDPOINTS_SUCCEEDED, (succeeded,))
    if not failed and not gone:
        return []
    if failed:
        await q.execute(ENDPOINTS_FAILED, (failed,))
    params = {"gone": list(gone), "failed": failed, "failing_s": failing_s}
    return await q.fetch_all(DISABLE_ENDPOINTS, params, row=Disabled)


# --- the telemetry forwarder (owner pool) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardRow:
    id: int
    event_id: UUID
    payload: dict[str, Any]
    forward_attempts: int
    topic: str
    traceparent: str | None


CLAIM_UNFORWARDED = """
UPDATE audit.outbox o
   SET forward_claimed_until = now() + make_interval(secs => %(lease_s)s),
       forward_attempts = o.forward_attempts + 1
 WHERE o.id IN (SELECT id FROM audit.outbox
                 WHERE forwarded_at IS NULL AND forward_next_at <= now()
                   AND (forward_claimed_until IS NULL OR forward_claimed_until < now())
                 ORDER BY forward_next_at, id
                 LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED)
RETURNING o.id, o.event_id, o.payload, o.forward_attempts, o.topic, o.traceparent
"""
MARK_FORWARDED = """
UPDATE audit.outbox SET forwarded_at = now(), forward_claimed_until = NULL
 WHERE id = ANY(%s) AND forwarded_at IS NULL
"""
RETRY_FORWARD = """
UPDATE audit.outbox
   SET forward_claimed_until = NULL, forward_next_at = now() + make_interval(secs => %s)
 WHERE id = ANY(%s) AND forwarded_at IS NULL
"""


async def claim_unforwarded(q: Querier, *, limit: int, lease_s: float) -> list[ForwardRow]:
    params = {"limit": limit, "lease_s": lease_s}
    return await q.fetch_all(CLAIM_UNFORWARDED, params, row=ForwardRow)


async def mark_forwarded(q: Querier, outbox_ids: Sequence[int]) -> None:
    await q.execute(MARK_FORWARDED, (list(outbox_ids),))


async def retry_forward(q: Querier, outbox_ids: Sequence[int], *, delay_s: float) -> None:
    await q.execute(RETRY_FORWARD, (delay_s, list(outbox_ids)))


# --- housekeeping and the operator's numbers (owner pool) ------------------------------------

# An event is done with once dispatched and forwarded (or, with no forwarding, a day after it
# was dispatched: long enough to point a new telemetry at recent history).
PURGE_OUTBOX = """
DELETE FROM audit.outbox
 WHERE dispatched_at IS NOT NULL
   AND (forwarded_at IS NOT NULL OR (NOT %s AND created_at < now() - interval '1 day'))
   AND created_at < now() - interval '1 hour'
"""
PURGE_DELIVERIES = """
DELETE FROM webhooks.deliveries
 WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(days => %s)
"""


async def purge(q: Querier, *, forwarding: bool, keep_days: int) -> tuple[int, int]:
    events = await q.execute(PURGE_OUTBOX, (forwarding,))
    finished = await q.execute(PURGE_DELIVERIES, (keep_days,))
    return events, finished


@dataclass(frozen=True, slots=True)
class Metrics:
    dispatch_backlog: int
    dispatch_oldest_s: float | None
    forward_backlog: int
    forward_oldest_s: float | None
    deliveries: dict[str, int]
    deliveries_due: int
    delivery_oldest_due_s: float | None
    endpoints: dict[str, int]


METRICS = """
SELECT (SELECT count(*) FROM audit.outbox WHERE dispatched_at IS NULL) AS dispatch_backlog,
       (SELECT extract(epoch FROM now() - min(created_at))::float8
          FROM audit.outbox WHERE dispatched_at IS NULL) AS dispatch_oldest_s,
       (SELECT count(*) FROM audit.outbox WHERE forwarded_at IS NULL) AS forward_backlog,
       (SELECT extract(epoch FROM now() - min(created_at))::float8
          FROM audit.outbox WHERE forwarded_at IS NULL) AS forward_oldest_s,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}')
          FROM (SELECT status, count(*) AS n FROM webhooks.deliveries GROUP BY status) s)
       AS deliveries,
       (SELECT count(*) FROM webhooks.deliveries d JOIN webhooks.endpoints e
            ON e.organization_id = d.organization_id AND e.id = d.endpoint_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.status = 'enabled')
       AS deliveries_due,
       (SELECT extract(epoch FROM now() - min(d.next_attempt_at))::float8
          FROM webhooks.deliveries d JOIN webhooks.endpoints e
            ON e.organization_id = d.organization_id AND e.id = d.endpoint_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.status = 'enabled')
       AS delivery_oldest_due_s,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}')
          FROM (SELECT status, count(*) AS n FROM webhooks.endpoints GROUP BY status) s)
       AS endpoints
"""


async def metrics(q: Querier) -> Metrics:
    return one(await q.fetch_one(METRICS, row=Metrics))


@dataclass(frozen=True, slots=True)
class Backlog:
    dispatch_backlog: int
    dispatch_oldest_s: float | None
    forward_backlog: int
    forward_oldest_s: float | None


# What the metrics sample every few seconds: only the outbox's partial indexes are read (the
# operator's full `metrics` also counts every delivery by status).
BACKLOG = """
SELECT (SELECT count(*) FROM audit.outbox WHERE dispatched_at IS NULL) AS dispatch_backlog,
       (SELECT extract(epoch FROM now() - created_at)::float8 FROM audit.outbox
         WHERE dispatched_at IS NULL ORDER BY id LIMIT 1) AS dispatch_oldest_s,
       (SELECT count(*) FROM audit.outbox WHERE forwarded_at IS NULL) AS forward_backlog,
       (SELECT extract(epoch FROM now() - min(created_at))::float8
          FROM audit.outbox WHERE forwarded_at IS NULL) AS forward_oldest_s
"""


async def backlog(q: Querier) -> Backlog:
    return one(await q.fetch_one(BACKLOG, row=Backlog))


# --- re-sealing secrets under the newest data key (owner pool) -------------------------------


@dataclass(frozen=True, slots=True)
class SealedSecrets:
    organization_id: UUID
    id: UUID
    secret_sealed: bytes
    previous_secret_sealed: bytes | None


SELECT_SEALED_BATCH = """
SELECT organization_id, id, secret_sealed, previous_secret_sealed FROM webhooks.endpoints
 WHERE (organization_id, id) > (%s, %s) ORDER BY organization_id, id LIMIT %s
"""
RESEAL_SECRETS = """
UPDATE webhooks.endpoints SET secret_sealed = %s, previous_secret_sealed = %s
 WHERE organization_id = %s AND id = %s
"""


async def sealed_batch(q: Querier, after: tuple[UUID, UUID], limit: int) -> list[SealedSecrets]:
    return await q.fetch_all(SELECT_SEALED_BATCH, (*after, limit), row=SealedSecrets)


async def reseal(q: Querier, row: SealedSecrets, secret: bytes, previous: bytes | None) -> None:
    await q.execute(RESEAL_SECRETS, (secret, previous, row.organization_id, row.id))
