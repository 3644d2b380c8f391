"""Video-session quality: events and bandwidth samples in, a summary per session out.

Ingest keeps each session's state in telemetry's PostgreSQL database (started, ended, last
seen) and sends the events and samples to ClickHouse through the buffer. A sweep, in every
telemetry process, summarizes sessions that ended (a few seconds later, once every process
has flushed their rows) or went five minutes without an event: p50 and p95 of the received
bitrate and the stalls, kept on the session and in `telemetry.media_summaries` for the
dashboards. Sessions are claimed with SKIP LOCKED, so several processes never summarize one
twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import structlog

from carebase.instants import instant
from carebase.persistence.clickhouse import ClickHouse
from carebase.persistence.db import Database
from carebase.persistence.telemetry import media as repo
from carebase.persistence.work_queue import Rounds
from carebase.principal import Principal, organization_of
from carebase.services.telemetry.buffer import IngestBuffer, Table
from carebase.services.telemetry.ingest import IngestResult, clickhouse_time
from carebase.services.telemetry.privacy import PrivacyGate

_log = structlog.get_logger("carebase.telemetry.media")

PAST = timedelta(days=1)
AHEAD = timedelta(minutes=5)
IDLE_S = 300.0
SETTLE_S = 5.0

MEDIA_TABLES: Mapping[str, Table] = {
    "media_events": Table(
        ("organization_id", "session_id", "actor_hash", "type", "at", "stall_ms", "received_at")
    ),
    "media_samples": Table(
        (
            "organization_id",
            "session_id",
            "actor_hash",
            "at",
            "kbps_up",
            "kbps_down",
            "rtt_ms",
            "loss_pct",
            "jitter_ms",
        )
    ),
    "media_summaries": Table(
        (
            "organization_id",
            "session_id",
            "day",
            "status",
            "p50_kbps",
            "p95_kbps",
            "stalls",
            "samples",
        )
    ),
}


class MediaIngest:
    def __init__(self, *, db: Database, privacy: PrivacyGate, buffer: IngestBuffer) -> None:
        self._db = db
        self._privacy = privacy
        self._buffer = buffer

    async def events(
        self, principal: Principal, session_id: UUID, batch: Mapping[str, Any]
    ) -> IngestResult:
        organization_id = organization_of(principal, "No organization to send session data in.")
        events: list[dict[str, Any]] = batch["events"]
        state = await self._privacy.state(organization_id)
        hashed = state.hash(principal.user_id) if principal.user_id else ""
        excluded = state.excludes(principal.user_id, "media_quality", hashed or None)
        if excluded:
            self._privacy.dropped.add(excluded, len(events))
            return IngestResult(len(events), [])
        now = datetime.now(UTC)
        received = clickhouse_time(now)
        org, session = str(organization_id), str(session_id)
        rejected: list[tuple[int, str]] = []
        event_rows: list[bytes] = []
        sample_rows: list[bytes] = []
        started: datetime | None = None
        ended: datetime | None = None
        for index, event in enumerate(events):
            at = instant(event["at"])
            if at is None or not now - PAST < at < now + AHEAD:
                rejected.append((index, "timestamp_out_of_range"))
                continue
            kind = event["type"]
            if kind == "start":
                started = min(started or at, at)
            elif kind == "end":
                ended = max(ended or at, at)
            event_rows.append(
                orjson.dumps(
                    {
                        "organization_id": org,
                        "session_id": session,
                        "actor_hash": hashed,
                        "type": kind,
                        "at": clickhouse_time(at),
                        "stall_ms": int(event.get("stall_ms") or 0),
                        "received_at": received,
                    }
                )
            )
            for sample in event.get("samples") or []:
                taken = instant(sample["at"])
                if taken is None or not now - PAST < taken < now + AHEAD:
                    continue  # a sample from a wrong clock says nothing about this session
                sample_rows.append(
                    orjson.dumps(
                        {
                            "organization_id": org,
                            "session_id": session,
                            "actor_hash": hashed,
                            "at": clickhouse_time(taken),
                            "kbps_up": sample.get("kbps_up") or 0,
                            "kbps_down": sample["kbps_down"],
                            "rtt_ms": sample.get("rtt_ms") or 0,
                            "loss_pct": sample.get("loss_pct") or 0,
                            "jitter_ms": sample.get("jitter_ms") or 0,
                        }
                    )
                )
        if event_rows:
            self._buffer.ensure_room(len(event_rows) + len(sample_rows))
            async with self._db.transaction(principal) as q:
                await repo.touch(q, organization_id, session_id, started_at=started, ended_at=ended)
            self._buffer.add("media_events", event_rows)
            self._buffer.add("media_samples", sample_rows)
        return IngestResult(len(events) - len(rejected), rejected)


class MediaSummaries:
    """The sweep that closes sessions and computes their quality."""

    def __init__(
        self,
        db: Database,
        store: ClickHouse,
        buffer: IngestBuffer,
        *,
        interval_s: float = 15.0,
        idle_s: float = IDLE_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._db = db
        self._store = store
        self._buffer = buffer
        self._idle_s = idle_s
        self._settle_s = settle_s
        self.rounds = Rounds("media_summaries", interval_s, _log)

    async def run(self) -> None:
        await self.rounds.run(self.run_once)

    async def run_once(self, *, limit: int = 100) -> int:
        """Summarize the sessions due now; answers how many."""
        await self._buffer.flush()  # this process's rows first
        async with self._db.admin_transaction() as q:
            due = await repo.due(q, settle_s=self._settle_s, idle_s=self._idle_s, limit=limit)
            rows = []
            for session in due:
                quality = await repo.quality(
                    self._store, session.organization_id, session.session_id
                )
                status = "ended" if session.ended_at is not None else "timed_out"
                await repo.summarize(q, session, status, quality)
                day = (session.ended_at or session.last_seen_at).astimezone(UTC).date()
                rows.append(
                    orjson.dumps(
                        {
                            "organization_id": str(session.organization_id),
                            "session_id": str(session.session_id),
                            "day": day.isoformat(),
                            "status": status,
                            "p50_kbps": quality.p50_kbps,
                            "p95_kbps": quality.p95_kbps,
                            "stalls": quality.stalls,
                            "samples": quality.samples,
                        }
                    )
                )
            # Written before the claim commits: a failure leaves the sessions to the next sweep.
            await self._buffer.write("media_summaries", rows)
        return len(due)
