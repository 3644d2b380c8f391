"""A data subject's telemetry, for core's GDPR worker (service credential only): exported,
erased, or restricted — telemetry's part of the data map (`services/data_map.py`).

The subject is named by their user id (hashed here with the organization's key, the form
every stored event has) and by their appointments (telemetry's session ids). An erasure
writes the tombstone first, so that ingest drops the subject from then on (at once in this
process, within the privacy refresh elsewhere), writes what the buffer holds, then deletes:
PostgreSQL rows, and ClickHouse rows by mutation (parts rewritten, rows physically gone).
It answers what it deleted and what remains, so a second erasure is a no-op that verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from carebase.persistence.clickhouse import ClickHouse
from carebase.persistence.db import Database
from carebase.persistence.telemetry import privacy as repo
from carebase.services.telemetry.buffer import IngestBuffer
from carebase.services.telemetry.privacy import PrivacyGate, actor_hash

EXPORT_LIMIT = 100_000  # rows per table in one export

# ClickHouse: (table, what names the subject's rows). Every statement filters the organization.
_BY_ACTOR = "organization_id = {organization_id:UUID} AND actor_hash = {actor_hash:String}"
_BY_SESSION = "organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, session_id)"
_BY_EITHER = (
    "organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String}"
    " OR has({sessions:Array(UUID)}, session_id))"
)
_CLICKHOUSE: tuple[tuple[str, str, bool], ...] = (
    # (table, condition, exported)
    ("analytics_events", _BY_ACTOR, True),
    ("pose_frames", _BY_EITHER, True),
    ("media_events", _BY_EITHER, True),
    ("media_samples", _BY_EITHER, True),
    ("media_summaries", _BY_SESSION, True),
    ("session_pose", _BY_SESSION, True),
    ("daily_staff", _BY_ACTOR, False),
)

# Every statement in full (a test scans for ClickHouse reads without the organization).
_COUNT = {
    "analytics_events": (
        "SELECT count() FROM telemetry.analytics_events"
        " WHERE organization_id = {organization_id:UUID} AND actor_hash = {actor_hash:String}"
    ),
    "pose_frames": (
        "SELECT count() FROM telemetry.pose_frames"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id))"
    ),
    "media_events": (
        "SELECT count() FROM telemetry.media_events"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id))"
    ),
    "media_samples": (
        "SELECT count() FROM telemetry.media_samples"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id))"
    ),
    "media_summaries": (
        "SELECT count() FROM telemetry.media_summaries"
        " WHERE organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, "
        "session_id)"
    ),
    "session_pose": (
        "SELECT count() FROM telemetry.session_pose"
        " WHERE organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, "
        "session_id)"
    ),
    "daily_staff": (
        "SELECT count() FROM telemetry.daily_staff"
        " WHERE organization_id = {organization_id:UUID} AND actor_hash = {actor_hash:String}"
    ),
}
_SELECT = {
    "analytics_events": (
        "SELECT * FROM telemetry.analytics_events"
        " WHERE organization_id = {organization_id:UUID} AND actor_hash = {actor_hash:String} "
        "LIMIT 100000"
    ),
    "pose_frames": (
        "SELECT * FROM telemetry.pose_frames"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id)) LIMIT 100000"
    ),
    "media_events": (
        "SELECT * FROM telemetry.media_events"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id)) LIMIT 100000"
    ),
    "media_samples": (
        "SELECT * FROM telemetry.media_samples"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id)) LIMIT 100000"
    ),
    "media_summaries": (
        "SELECT * FROM telemetry.media_summaries"
        " WHERE organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, "
        "session_id) LIMIT 100000"
    ),
    # Aggregate states are read finalized (the minutes of pose a session had).
    "session_pose": (
        "SELECT session_id, sum(frames) AS frames, uniqExactMerge(minutes) AS minutes,"
        " min(first_at) AS first_at, max(last_at) AS last_at FROM telemetry.session_pose"
        " WHERE organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, "
        "session_id) GROUP BY session_id LIMIT 100000"
    ),
}
_DELETE = {
    "analytics_events": (
        "ALTER TABLE telemetry.analytics_events DELETE"
        " WHERE organization_id = {organization_id:UUID} AND actor_hash = {actor_hash:String}"
    ),
    "pose_frames": (
        "ALTER TABLE telemetry.pose_frames DELETE"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id))"
    ),
    "media_events": (
        "ALTER TABLE telemetry.media_events DELETE"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id))"
    ),
    "media_samples": (
        "ALTER TABLE telemetry.media_samples DELETE"
        " WHERE organization_id = {organization_id:UUID} AND (actor_hash = {actor_hash:String} "
        "OR has({sessions:Array(UUID)}, session_id))"
    ),
    "media_summaries": (
        "ALTER TABLE telemetry.media_summaries DELETE"
        " WHERE organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, "
        "session_id)"
    ),
    "session_pose": (
        "ALTER TABLE telemetry.session_pose DELETE"
        " WHERE organization_id = {organization_id:UUID} AND has({sessions:Array(UUID)}, "
        "session_id)"
    ),
    "daily_staff": (
        "ALTER TABLE telemetry.daily_staff DELETE"
        " WHERE organization_id = {organization_id:UUID} AND actor_hash = {actor_hash:String}"
    ),
}
_POSTGRES = {
    "privacy.consents": (
        "SELECT to_jsonb(c) AS row FROM privacy.consents c WHERE c.organization_id = %(org)s"
        " AND c.subject_id = %(subject)s ORDER BY c.recorded_at",
        "DELETE FROM privacy.consents WHERE organization_id = %(org)s AND subject_id = %(subject)s",
        "SELECT count(*) FROM privacy.consents WHERE organization_id = %(org)s"
        " AND subject_id = %(subject)s",
    ),
    "events.media_sessions": (
        "SELECT to_jsonb(s) AS row FROM events.media_sessions s WHERE s.organization_id = %(org)s"
        " AND s.session_id = ANY(%(sessions)s::uuid[]) ORDER BY s.session_id",
        "DELETE FROM events.media_sessions WHERE organization_id = %(org)s"
        " AND session_id = ANY(%(sessions)s::uuid[])",
        "SELECT count(*) FROM events.media_sessions WHERE organization_id = %(org)s"
        " AND session_id = ANY(%(sessions)s::uuid[])",
    ),
}


@dataclass(frozen=True, slots=True)
class Subject:
    organization_id: UUID
    subject_id: UUID | None
    session_ids: Sequence[UUID]


@dataclass(frozen=True, slots=True)
class TableOutcome:
    table: str
    deleted: int
    remaining: int


class SubjectData:
    def __init__(
        self, *, db: Database, store: ClickHouse, privacy: PrivacyGate, buffer: IngestBuffer
    ) -> None:
        self._db = db
        self._store = store
        self._privacy = privacy
        self._buffer = buffer

    async def _hash(self, subject: Subject) -> str:
        """The subject's keyed hash ('' names nobody: no stored event has an empty actor)."""
        if subject.subject_id is None:
            return ""
        async with self._db.admin_transaction() as q:
            key = await repo.hash_key(q, subject.organization_id)
        return actor_hash(key, subject.subject_id)

    def _bound(self, subject: Subject, hashed: str) -> dict[str, Any]:
        return {"actor_hash": hashed, "sessions": list(subject.session_ids)}

    def _params(self, subject: Subject) -> dict[str, Any]:
        return {
            "org": subject.organization_id,
            "subject": subject.subject_id,
            "sessions": list(subject.session_ids),
        }

    async def export(self, subject: Subject) -> dict[str, list[dict[str, Any]]]:
        hashed = await self._hash(subject)
        await self._buffer.flush()  # what was accepted is part of what is held
        found: dict[str, list[dict[str, Any]]] = {}
        async with self._db.admin_transaction() as q:
            for table, (select, _, _) in _POSTGRES.items():
                rows = await q.fetch_all(select, self._params(subject), row=_Row)
                found[table] = [r.row for r in rows]
        for table, query in _SELECT.items():
            found[f"telemetry.{table}"] = await self._store.scoped_records(
                subject.organization_id, query, self._bound(subject, hashed)
            )
        return found

    async def erase(self, subject: Subject, *, reason: str = "erase") -> list[TableOutcome]:
        """Tombstone first, then every table; `reason` `restrict` only writes the tombstone
        (kept, but no longer taken in)."""
        hashed = await self._hash(subject)
        if hashed:
            async with self._db.admin_transaction() as q:
                await repo.add_tombstone(q, subject.organization_id, hashed, reason=reason)
            self._privacy.forget(subject.organization_id)
        if reason == "restrict":
            return []
        await self._buffer.flush()  # rows accepted before the tombstone are deleted too
        outcomes = []
        async with self._db.admin_transaction() as q:
            for table, (_, delete, count) in _POSTGRES.items():
                deleted = await q.execute(delete, self._params(subject))
                remaining = int(await q.fetch_value(count, self._params(subject)))
                outcomes.append(TableOutcome(table, deleted, remaining))
        bound = self._bound(subject, hashed)
        for table, _, _ in _CLICKHOUSE:
            before = await self._count(subject.organization_id, _COUNT[table], bound)
            if before:
                await self._store.scoped_mutation(subject.organization_id, _DELETE[table], bound)
            after = await self._count(subject.organization_id, _COUNT[table], bound)
            outcomes.append(TableOutcome(f"telemetry.{table}", before - after, after))
        return outcomes

    async def _count(self, org: UUID, query: str, bound: dict[str, Any]) -> int:
        rows = await self._store.scoped(org, query, bound)
        return int(rows[0][0]) if rows else 0


@dataclass(frozen=True, slots=True)
class _Row:
    row: dict[str, Any]
