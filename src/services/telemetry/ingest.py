"""Ingest: validated batches in, privacy applied, rows into the buffer (and PostgreSQL).

The contract's compiled validator has checked each body before it gets here; what is left is
what a schema cannot say (an event's encoded size, a timestamp's plausibility), privacy,
deduplication and encoding rows for ClickHouse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import structlog

from carebase.errors import FieldError, ValidationFailed
from carebase.instants import instant
from carebase.integrations.redis_pipe import (
    RedisPipe,
    RedisReplyError,
    RedisScript,
    RedisUnavailable,
)
from carebase.persistence.db import Database
from carebase.persistence.telemetry import audit_events as audit_repo
from carebase.principal import Principal
from carebase.services.telemetry.buffer import IngestBuffer, Table
from carebase.services.telemetry.privacy import NO_ORGANIZATION, PrivacyGate, truncate_ip

_log = structlog.get_logger("carebase.telemetry.ingest")

MAX_EVENT_BYTES = 32 * 1024
FUTURE_SKEW = timedelta(days=1)
ANALYTICS_RETENTION = timedelta(days=730)
DEDUPE_WINDOW_S = 86_400

ANALYTICS_COLUMNS = (
    "organization_id",
    "message_id",
    "event",
    "occurred_at",
    "received_at",
    "actor_hash",
    "actor_role",
    "properties",
    "context",
    "ip_prefix",
    "user_agent",
)
AUDIT_COLUMNS = (
    "organization_id",
    "event_id",
    "occurred_at",
    "received_at",
    "action",
    "entity_type",
    "entity_id",
    "changed_fields",
    "actor_type",
    "actor_hash",
)
POSE_COLUMNS = (
    "organization_id",
    "session_id",
    "actor_hash",
    "batch_seq",
    "frame_number",
    "t_ms",
    "landmarks",
    "received_at",
)
TABLES: Mapping[str, Table] = {
    "analytics_events": Table(ANALYTICS_COLUMNS),
    "audit_events": Table(AUDIT_COLUMNS),
    "pose_frames": Table(POSE_COLUMNS, fmt="RowBinary"),
}

# SET NX EX for every key; answers 1 for a key set now (new), 0 for one already there.
_FIRST_SEEN = RedisScript(b"""
local fresh = {}
for i, key in ipairs(KEYS) do
  fresh[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and 1 or 0
end
return fresh
""")


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    rejected: list[tuple[int, str]]

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": [{"index": i, "reason": reason} for i, reason in self.rejected],
        }


def clickhouse_time(moment: datetime) -> str:
    """DateTime64(3) text in UTC: `2026-11-30 09:15:02.120`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


_UTC_TEXT = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?[Zz]")


def clickhouse_text(text: str, moment: datetime) -> str:
    """`clickhouse_time` of an instant already parsed from `text`: the usual UTC form
    (`…T…Z`) is cut into shape, ~10× cheaper than formatting the datetime."""
    found = _UTC_TEXT.fullmatch(text)
    if found is None:
        return clickhouse_time(moment)
    return f"{found[1]} {found[2]}.{(found[3] or '').ljust(3, '0')[:3]}"


class MessageIds:
    """Which message ids a batch sends for the first time (Redis, for a day). Redis down →
    every id counts as new: the raw table's ReplacingMergeTree still merges repeats away."""

    def __init__(self, redis: RedisPipe, *, window_s: int = DEDUPE_WINDOW_S) -> None:
        self._redis = redis
        self._window_s = window_s

    async def first_seen(self, organization_id: UUID, ids: Sequence[str]) -> list[bool]:
        if not ids:
            return []
        prefix = f"tm:seen:{organization_id}:"
        keys = [prefix + message_id for message_id in ids]
        try:
            fresh = await _FIRST_SEEN(self._redis, keys, (self._window_s,))
        except (RedisUnavailable, RedisReplyError) as exc:
            _log.warning("telemetry_dedupe_unavailable", error=type(exc).__name__)
            return [True] * len(ids)
        return [bool(flag) for flag in fresh]


class AnalyticsIngest:
    def __init__(self, *, privacy: PrivacyGate, buffer: IngestBuffer, seen: MessageIds) -> None:
        self._privacy = privacy
        self._buffer = buffer
        self._seen = seen

    async def track(
        self, principal: Principal, batch: Mapping[str, Any], *, gpc: bool
    ) -> IngestResult:
        events: list[dict[str, Any]] = batch["batch"]
        encoded = [_encoded_parts(event) for event in events]
        too_large = [
            FieldError(
                f"/body/batch/{index}",
                f"An event may take at most {MAX_EVENT_BYTES // 1024} KB encoded.",
                "max_size",
            )
            for index, (_, _, size) in enumerate(encoded)
            if size > MAX_EVENT_BYTES
        ]
        if too_large:
            raise ValidationFailed(too_large)
        if gpc:
            self._privacy.dropped.add("global_privacy_control", len(events))
            return IngestResult(len(events), [])
        organization_id = principal.organization_id or NO_ORGANIZATION
        state = await self._privacy.state(organization_id)
        subject = principal.user_id
        hashed = state.hash(subject) if subject else ""
        excluded = state.excludes(subject, "analytics", hashed or None)
        if excluded:
            self._privacy.dropped.add(excluded, len(events))
            return IngestResult(len(events), [])
        now = datetime.now(UTC)
        rejected: list[tuple[int, str]] = []
        keep: list[int] = []
        times: dict[int, str] = {}
        for index, event in enumerate(events):
            text = event["timestamp"]
            occurred = instant(text)
            if occurred is None or not now - ANALYTICS_RETENTION < occurred < now + FUTURE_SKEW:
                rejected.append((index, "timestamp_out_of_range"))
            else:
                keep.append(index)
                times[index] = clickhouse_text(text, occurred)
        self._buffer.ensure_room(len(keep))  # before the ids are marked seen
        fresh = await self._seen.first_seen(
            organization_id, [events[index]["message_id"] for index in keep]
        )
        origin = principal.origin
        ip = truncate_ip(origin.ip if origin else None)
        agent = (origin.user_agent or "") if origin else ""
        received = clickhouse_time(now)
        role = principal.role or ""
        org = str(organization_id)
        rows = []
        for index, new in zip(keep, fresh, strict=True):
            if not new:
                continue
            event = events[index]
            properties, context, _ = encoded[index]
            rows.append(
                orjson.dumps(
                    {
                        "organization_id": org,
                        "message_id": event["message_id"],
                        "event": event["event"],
                        "occurred_at": times[index],
                        "received_at": received,
                        "actor_hash": hashed,
                        "actor_role": role,
                        "properties": properties,
                        "context": context,
                        "ip_prefix": ip,
                        "user_agent": agent,
                    }
                )
            )
        self._buffer.add("analytics_events", rows)
        return IngestResult(len(events) - len(rejected), rejected)


def json_text(value: Any) -> str:
    """JSON text of a free-form object. orjson refuses integers beyond 64 bits, which JSON
    allows; the standard library writes those (rarely, so only then)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _encoded_parts(event: Mapping[str, Any]) -> tuple[str, str, int]:
    """The properties and the context (without `ip`) as JSON text, and the event's size."""
    properties = json_text(event.get("properties") or {})
    context = dict(event.get("context") or {})
    context.pop("ip", None)  # never stored: the connection's truncated address is used
    context_text = json_text(context)
    size = len(properties) + len(context_text) + len(event["event"]) + len(event["message_id"])
    return properties, context_text, size


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""Before this, an event's time is not a time Carebase could have recorded it."""


class AuditIngest:
    """Core's audit events: PostgreSQL first (the event id dedupes), then ClickHouse for the
    events new to PostgreSQL, and the batch is answered only when both hold them."""

    def __init__(self, *, db: Database, privacy: PrivacyGate, buffer: IngestBuffer) -> None:
        self._db = db
        self._privacy = privacy
        self._buffer = buffer

    async def ingest(self, events: Sequence[Mapping[str, Any]]) -> IngestResult:
        """Events whose time is not plausible (before 2000, or a day ahead) are rejected by
        index and not stored; core's relay logs them."""
        now = datetime.now(UTC)
        rows: list[audit_repo.NewAuditEvent] = []
        rejected: list[tuple[int, str]] = []
        for event, occurred in plausible(events, rejected):
            organization = uuid_or_none(event.get("organization_id"))
            state = await self._privacy.state(organization)
            user, key = (
                uuid_or_none(event.get("actor_user_id")),
                uuid_or_none(event.get("actor_api_key_id")),
            )
            actor_type = "api_key" if key else "user" if user else "system"
            actor = key or user
            impersonator = uuid_or_none(event.get("impersonator_id"))
            rows.append(
                audit_repo.NewAuditEvent(
                    event_id=UUID(event["event_id"]),
                    organization_id=organization,
                    occurred_at=occurred,
                    action=event["action"],
                    entity_type=event["entity_type"],
                    entity_id=uuid_or_none(event.get("entity_id")),
                    changed_fields=list(event.get("changed_fields") or []),
                    actor_type=actor_type,
                    actor_hash=state.hash(actor) if actor else None,
                    impersonator_hash=state.hash(impersonator) if impersonator else None,
                    request_id=event.get("request_id"),
                )
            )
        received = clickhouse_time(now)
        async with self._db.admin_transaction() as q:
            new_ids = set(await audit_repo.insert_new(q, rows))
            fresh = [row for row in rows if row.event_id in new_ids]
            # Held until ClickHouse has the rows too: a failure rolls back, and the relay
            # sends the batch again.
            await self._buffer.write(
                "audit_events",
                [
                    orjson.dumps(
                        {
                            "organization_id": str(row.organization_id or NO_ORGANIZATION),
                            "event_id": str(row.event_id),
                            "occurred_at": clickhouse_time(row.occurred_at),
                            "received_at": received,
                            "action": row.action,
                            "entity_type": row.entity_type,
                            "entity_id": str(row.entity_id) if row.entity_id else None,
                            "changed_fields": row.changed_fields,
                            "actor_type": row.actor_type,
                            "actor_hash": row.actor_hash or "",
                        }
                    )
                    for row in fresh
                ],
            )
        return IngestResult(len(rows), rejected)


def plausible(
    events: Sequence[Mapping[str, Any]], rejected: list[tuple[int, str]]
) -> Iterator[tuple[Mapping[str, Any], datetime]]:
    """Core's relayed events whose `occurred_at` is plausible (from 2000 to a day ahead),
    with it; the others go to `rejected` by index."""
    now = datetime.now(UTC)
    for index, event in enumerate(events):
        occurred = instant(event["occurred_at"])
        if occurred is None or not EARLIEST <= occurred < now + FUTURE_SKEW:
            rejected.append((index, "timestamp_out_of_range"))
        else:
            yield event, occurred


def uuid_or_none(value: Any) -> UUID | None:
    return UUID(value) if isinstance(value, str) and value else None
