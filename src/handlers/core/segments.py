"""Handlers for openapi/core/segments.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.pages import Page, PageRequest
from carebase.persistence.segments import MemberRow, SegmentRow
from carebase.principal import Principal
from carebase.services.segments import MembersChange, SegmentService
from carebase.web.results import Reply, created, no_content, ok, resource

BASE = "/v1/segments"


class SegmentHandlers:
    def __init__(self, *, segments: SegmentService) -> None:
        self._segments = segments

    async def list_segment_fields(self, principal: Principal) -> Reply:
        fields = await self._segments.fields(principal)
        return ok(
            {
                "data": [
                    {
                        "key": f.key,
                        "label": f.label,
                        "type": f.type,
                        "operators": list(f.operators),
                        "options": None
                        if f.options is None
                        else [{"value": value, "label": label} for value, label in f.options],
                    }
                    for f in fields
                ]
            }
        )

    async def list_segments(
        self, principal: Principal, *, page: int, page_size: int, kind: str | None
    ) -> Reply:
        found = await self._segments.list_segments(
            principal, PageRequest(page, page_size), kind=kind
        )
        return ok(_page(found))

    async def create_segment(self, principal: Principal, *, body: dict[str, Any]) -> Reply:
        row = await self._segments.create(
            principal,
            name=body["name"],
            description=body.get("description", ""),
            kind=body["kind"],
            tree=body.get("rules"),
        )
        return created(segment_json(row), location=f"{BASE}/{row.id}", version=row.version)

    async def get_segment(self, principal: Principal, *, segment_id: UUID) -> Reply:
        row = await self._segments.get(principal, segment_id)
        return resource(segment_json(row), version=row.version)

    async def update_segment(
        self,
        principal: Principal,
        *,
        segment_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        row = await self._segments.update(principal, segment_id, body, version=if_match)
        return resource(segment_json(row), version=row.version)

    async def delete_segment(
        self, principal: Principal, *, segment_id: UUID, if_match: int | None
    ) -> Reply:
        await self._segments.delete(principal, segment_id, version=if_match)
        return no_content()

    async def evaluate_segment(self, principal: Principal, *, segment_id: UUID) -> Reply:
        result = await self._segments.evaluate(principal, segment_id)
        return ok(
            {
                "added": result.added,
                "removed": result.removed,
                "member_count": result.segment.member_count,
                "evaluated_at": result.segment.evaluated_at,
            }
        )

    async def list_segment_members(
        self, principal: Principal, *, segment_id: UUID, page: int, page_size: int
    ) -> Reply:
        found = await self._segments.members(principal, segment_id, PageRequest(page, page_size))
        return ok({"data": [_member(row) for row in found.items], "meta": found.meta})

    async def add_segment_members(
        self, principal: Principal, *, segment_id: UUID, body: dict[str, Any]
    ) -> Reply:
        source = body.get("from_segment_id")
        change = await self._segments.add_members(
            principal,
            segment_id,
            patient_ids=[UUID(text) for text in body.get("patient_ids", ())],
            from_segment_id=UUID(source) if source is not None else None,
        )
        return ok(_change(change))

    async def remove_segment_members(
        self, principal: Principal, *, segment_id: UUID, patient_id: list[UUID]
    ) -> Reply:
        change = await self._segments.remove_members(principal, segment_id, patient_id)
        return ok(_change(change))

    async def list_patient_segments(
        self, principal: Principal, *, patient_id: UUID, page: int, page_size: int
    ) -> Reply:
        found = await self._segments.patient_segments(
            principal, patient_id, PageRequest(page, page_size)
        )
        return ok(_page(found))


def segment_json(row: SegmentRow) -> dict[str, Any]:
    """A `Segment`; a static one has no `rules` (the key is left out, not null)."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "kind": row.kind,
        **({"rules": row.rules} if row.rules is not None else {}),
        "member_count": row.member_count,
        "evaluated_at": row.evaluated_at,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _page(found: Page[SegmentRow]) -> dict[str, Any]:
    return {"data": [segment_json(row) for row in found.items], "meta": found.meta}


def _member(row: MemberRow) -> dict[str, Any]:
    return {
        "patient_id": row.patient_id,
        "given_name": row.given_name,
        "family_name": row.family_name,
        "source": row.source,
        "added_at": row.added_at,
    }


def _change(change: MembersChange) -> dict[str, int]:
    return {
        "added": change.added,
        "removed": change.removed,
        "member_count": change.member_count,
    }
