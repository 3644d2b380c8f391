"""Telemetry's PostgreSQL rows past their retention: ClickHouse drops its rows by TTL, and
this sweep does the same for telemetry's own database (audit and security events after the
audit retention, summarized media sessions after the media retention). Consent records are
never purged: they are the proof of what a person chose. Every telemetry process runs it;
the deletes are idempotent."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import structlog

from carebase.persistence.db import Database
from carebase.persistence.telemetry import audit_events, media, security_events
from carebase.persistence.work_queue import Rounds

_log = structlog.get_logger("carebase.telemetry.housekeeping")


@dataclass(frozen=True, slots=True)
class Purged:
    audit_events: int
    security_events: int
    media_sessions: int


class TelemetryHousekeeping:
    def __init__(
        self, db: Database, *, audit_days: int, media_days: int, interval_s: float = 3600.0
    ) -> None:
        self._db = db
        self._audit_days = audit_days
        self._media_days = media_days
        self.rounds = Rounds("telemetry_housekeeping", interval_s, _log)

    async def run(self) -> None:
        await self.rounds.run(self.sweep)

    async def sweep(self) -> Purged:
        async with self._db.admin_transaction() as q:
            purged = Purged(
                audit_events=await audit_events.purge(q, keep_days=self._audit_days),
                security_events=await security_events.purge(q, keep_days=self._audit_days),
                media_sessions=await media.purge(q, keep_days=self._media_days),
            )
        if purged.audit_events or purged.security_events or purged.media_sessions:
            _log.info("telemetry_purged", **asdict(purged))
        return purged
