"""Segments: groups of patients by rules (dynamic) or by hand (static).

A dynamic segment's rules are checked against the field registry when written (422 with a
pointer), then evaluated at once in the same transaction, and again by `SegmentRefresher`
in the worker. Evaluation is one set-based statement in the organization's transaction
under a statement timeout (`segment_rules` compiles the rules; `persistence.segments` runs
them): members the rules no longer match leave, new ones join.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
import structlog

from carebase.errors import (
    Conflict,
    DependencyUnavailable,
    FieldError,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from carebase.pages import Page, PageRequest
from carebase.persistence import segments as repo
from carebase.persistence.db import Database, Querier
from carebase.persistence.work_queue import Rounds
from carebase.principal import Principal, organization_of
from carebase.services import segment_rules as rules
from carebase.services.audit import record
from carebase.services.working_hours import zone_or_utc

_log = structlog.get_logger("carebase.segments")

NO_SEGMENT = "No such segment."
NO_PATIENT = "No such patient."
NOT_ADDED = "No such patient, or one whose data is restricted (GDPR Art. 18)."
ENTITY = "segment"


@dataclass(frozen=True, slots=True)
class MembersChange:
    added: int
    removed: int
    member_count: int


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    added: int
    removed: int
    segment: repo.SegmentRow


async def registry(q: Querier, org: UUID) -> rules.Registry:
    """The fields a rule may name in this organization, with their current options."""
    specialties = await repo.specialties(q, org)
    templates = await repo.form_templates(q, org)
    custom = await repo.custom_fields(q, org)
    return rules.Registry.of(
        [
            *rules.BUILT_IN,
            rules.specialty_field((o.value, o.label) for o in specialties),
            rules.signed_forms_field((o.value, o.label) for o in templates),
            *(rules.custom_field(f.key, f.label, f.type, f.id, f.options) for f in custom),
        ]
    )


class SegmentService:
    def __init__(
        self,
        *,
        db: Database,
        timeout_ms: int = 30_000,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._db = db
        self._timeout_ms = timeout_ms
        self._now = now or (lambda: dt.datetime.now(dt.UTC))

    async def fields(self, principal: Principal) -> list[rules.Field]:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal, read_only=True) as q:
            found = await registry(q, org)
        return list(found.fields.values())

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        description: str,
        kind: str,
        tree: Mapping[str, Any] | None,
    ) -> repo.SegmentRow:
        org = organization_of(principal, NO_SEGMENT)
        if (kind == "dynamic") != (tree is not None):
            message = (
                "A dynamic segment needs rules."
                if kind == "dynamic"
                else "A static segment has no rules: add its members instead."
            )
            raise ValidationFailed([FieldError("/body/rules", message, "invalid")])
        async with self._db.transaction(principal) as q:
            if tree is not None:
                rules.check(tree, await registry(q, org))
            row = await repo.insert_segment(
                q, org, uuid4(), name=name, description=description, kind=kind, rules=tree
            )
            changed = ["name", "description", "kind", *(["rules"] if tree is not None else [])]
            await record(
                q, principal, action="segment.created", entity_type=ENTITY, entity_id=row.id,
                changed_fields=changed,
            )  # fmt: skip
            if tree is not None:
                row = (await self._evaluate(q, org, row, bump=False)).segment
        return row

    async def list_segments(
        self, principal: Principal, page: PageRequest, *, kind: str | None
    ) -> Page[repo.SegmentRow]:
        org = organization_of(principal, NO_SEGMENT)
        found, total = await repo.segments(self._db.reader(principal), org, page, kind=kind)
        return Page(found, total, page)

    async def get(self, principal: Principal, segment_id: UUID) -> repo.SegmentRow:
        org = organization_of(principal, NO_SEGMENT)
        row = await repo.segment(self._db.reader(principal), org, segment_id)
        if row is None:
            raise NotFound(NO_SEGMENT)
        return row

    async def update(
        self,
        principal: Principal,
        segment_id: UUID,
        given: Mapping[str, Any],
        *,
        version: int | None,
    ) -> repo.SegmentRow:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, segment_id, version)
            tree = given.get("rules", current.rules)
            if "rules" in given:
                if current.kind == "static":
                    raise ValidationFailed(
                        [FieldError("/body/rules", "A static segment has no rules.", "invalid")]
                    )
                rules.check(given["rules"], await registry(q, org))
            row = await repo.update_segment(
                q,
                org,
                segment_id,
                name=given.get("name", current.name),
                description=given.get("description", current.description),
                rules=tree,
            )
            await record(
                q, principal, action="segment.updated", entity_type=ENTITY, entity_id=row.id,
                changed_fields=sorted(given),
            )  # fmt: skip
            if "rules" in given:
                row = (await self._evaluate(q, org, row, bump=False)).segment
        return row

    async def delete(self, principal: Principal, segment_id: UUID, *, version: int | None) -> None:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal) as q:
            await self._locked(q, org, segment_id, version)
            await repo.delete_segment(q, org, segment_id, version)
            await record(
                q, principal, action="segment.deleted", entity_type=ENTITY, entity_id=segment_id
            )

    async def evaluate(self, principal: Principal, segment_id: UUID) -> EvaluationResult:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal) as q:
            current = await self._locked(q, org, segment_id, None)
            if current.kind != "dynamic":
                raise Conflict("A static segment holds the members added to it; it has no rules.")
            result = await self._evaluate(q, org, current)
            await record(
                q, principal, action="segment.evaluated", entity_type=ENTITY,
                entity_id=segment_id, changed_fields=["members"],
            )  # fmt: skip
        return result

    async def refresh(self, org: UUID, segment_id: UUID, *, age_s: float) -> bool:
        """The worker's: evaluate a dynamic segment that is still due, as the organization's
        system (another worker evaluating it, or having just done so, makes this a no-op)."""
        system = Principal(user_id=None, organization_id=org, role="admin")
        async with self._db.transaction(system) as q:
            current = await repo.lock_due(q, org, segment_id, age_s=age_s)
            if current is None:
                return False
            result = await self._evaluate(q, org, current)
        _log.info(
            "segment_refreshed",
            organization_id=str(org),
            segment_id=str(segment_id),
            added=result.added,
            removed=result.removed,
            member_count=result.segment.member_count,
        )
        return True

    async def members(
        self, principal: Principal, segment_id: UUID, page: PageRequest
    ) -> Page[repo.MemberRow]:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal, read_only=True) as q:
            if await repo.segment(q, org, segment_id) is None:
                raise NotFound(NO_SEGMENT)
            found, total = await repo.members(q, org, segment_id, page)
        return Page(found, total, page)

    async def add_members(
        self,
        principal: Principal,
        segment_id: UUID,
        *,
        patient_ids: Sequence[UUID],
        from_segment_id: UUID | None,
    ) -> MembersChange:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal) as q:
            current = await self._static(q, org, segment_id)
            known = await repo.existing_patients(q, org, patient_ids)
            problems = [
                FieldError(f"/body/patient_ids/{i}", NOT_ADDED, "unknown")
                for i, patient in enumerate(patient_ids)
                if patient not in known
            ]
            if from_segment_id is not None and (
                from_segment_id == segment_id or await repo.segment(q, org, from_segment_id) is None
            ):
                problems.append(
                    FieldError("/body/from_segment_id", "No other segment has this id.", "unknown")
                )
            if problems:
                raise ValidationFailed(problems[:100])
            added = await repo.add_members(q, org, segment_id, patient_ids, source="manual")
            if from_segment_id is not None:
                added += await repo.import_members(q, org, segment_id, from_segment_id)
            row = await self._recount(q, org, current, changed=added > 0)
            await record(
                q, principal, action="segment.members_added", entity_type=ENTITY,
                entity_id=segment_id, changed_fields=["members"],
            )  # fmt: skip
        return MembersChange(added, 0, row.member_count)

    async def remove_members(
        self, principal: Principal, segment_id: UUID, patient_ids: Sequence[UUID]
    ) -> MembersChange:
        org = organization_of(principal, NO_SEGMENT)
        async with self._db.transaction(principal) as q:
            current = await self._static(q, org, segment_id)
            removed = await repo.remove_members(q, org, segment_id, patient_ids)
            row = await self._recount(q, org, current, changed=removed > 0)
            await record(
                q, principal, action="segment.members_removed", entity_type=ENTITY,
                entity_id=segment_id, changed_fields=["members"],
            )  # fmt: skip
        return MembersChange(0, removed, row.member_count)

    async def patient_segments(
        self, principal: Principal, patient_id: UUID, page: PageRequest
    ) -> Page[repo.SegmentRow]:
        org = organization_of(principal, NO_PATIENT)
        async with self._db.transaction(principal, read_only=True) as q:
            if not await repo.patient_exists(q, org, patient_id):
                raise NotFound(NO_PATIENT)
            found, total = await repo.patient_segments(q, org, patient_id, page)
        return Page(found, total, page)

    # --- inside a transaction ---------------------------------------------------------------

    async def _locked(
        self, q: Querier, org: UUID, segment_id: UUID, version: int | None
    ) -> repo.SegmentRow:
        current = await repo.segment(q, org, segment_id, lock=True)
        if current is None:
            raise NotFound(NO_SEGMENT)
        if version is not None and current.version != version:
            raise PreconditionFailed("The segment has changed since it was read.")
        return current

    async def _static(self, q: Querier, org: UUID, segment_id: UUID) -> repo.SegmentRow:
        current = await self._locked(q, org, segment_id, None)
        if current.kind != "static":
            raise Conflict("A dynamic segment's rules decide its members.")
        return current

    async def _recount(
        self, q: Querier, org: UUID, current: repo.SegmentRow, *, changed: bool
    ) -> repo.SegmentRow:
        if not changed:
            return current
        count = await repo.member_count(q, org, current.id)
        return await repo.recount(q, org, current.id, count)

    async def _evaluate(
        self, q: Querier, org: UUID, current: repo.SegmentRow, *, bump: bool = True
    ) -> EvaluationResult:
        now = self._now()
        zone = await repo.time_zone(q, org)
        local = zone_or_utc(zone)
        zone, today = local.key, now.astimezone(local).date()
        compiled = rules.compile_tree(current.rules or {}, await registry(q, org), today=today)
        params = {**compiled.params, "tz": zone, "now": now}
        try:
            found = await repo.evaluate(
                q,
                org,
                current.id,
                rules.matching_patients(compiled),
                params,
                timeout_ms=self._timeout_ms,
            )
        except psycopg.errors.QueryCanceled as exc:
            raise DependencyUnavailable(
                f"The segment's rules took longer than {self._timeout_ms // 1000} s to evaluate;"
                " narrow them, or try again later.",
                retry_after=60,
            ) from exc
        row = await repo.recount(q, org, current.id, found.member_count, bump=bump)
        return EvaluationResult(found.added, found.removed, row)


class SegmentRefresher:
    """The worker's round: dynamic segments evaluated more than `age_s` ago, oldest first."""

    def __init__(
        self, db: Database, segments: SegmentService, *, age_s: float, interval_s: float = 60.0
    ) -> None:
        self._db = db
        self._segments = segments
        self._age_s = age_s
        self.rounds = Rounds("segment_refresher", interval_s, _log)
        self.nudge = self.rounds.nudge

    async def run(self) -> None:
        await self.rounds.run(self.run_once)

    async def run_once(self) -> int:
        async with self._db.admin_transaction() as q:
            due = await repo.due(q, age_s=self._age_s, limit=50)
        refreshed = 0
        for found in due:
            if self.rounds.stopping:
                break
            try:
                refreshed += await self._segments.refresh(
                    found.organization_id, found.id, age_s=self._age_s
                )
            except DependencyUnavailable:
                _log.warning(
                    "segment_refresh_timed_out",
                    organization_id=str(found.organization_id),
                    segment_id=str(found.id),
                )
        return refreshed
