"""Handlers for openapi/core/availability.yaml."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from carebase.generated.models import core as api
from carebase.principal import Principal
from carebase.services.availability import AvailabilityService, AvailabilityView
from carebase.web.results import Reply, ok, resource


class AvailabilityHandlers:
    def __init__(self, *, availability: AvailabilityService) -> None:
        self._availability = availability

    async def get_availability(self, principal: Principal, *, specialist_id: UUID) -> Reply:
        view = await self._availability.get(principal, specialist_id)
        return resource(_availability(view), version=view.version)

    async def replace_availability(
        self,
        principal: Principal,
        *,
        specialist_id: UUID,
        if_match: int | None,
        body: dict[str, Any],
    ) -> Reply:
        # The contract checked the shapes; the service checks zones and overlaps.
        view = await self._availability.replace(principal, specialist_id, body, version=if_match)
        return resource(_availability(view), version=view.version)

    async def list_available_slots(
        self,
        principal: Principal,
        *,
        template_id: UUID,
        specialist_id: UUID,
        from_: dt.datetime,
        to: dt.datetime,
    ) -> Reply:
        found = await self._availability.slots(
            principal, template_id=template_id, specialist_id=specialist_id, since=from_, until=to
        )
        return ok(
            api.SlotList.model_construct(
                time_zone=found.time_zone,
                data=[
                    api.Slot.model_construct(starts_at=start, ends_at=end)
                    for start, end in found.slots
                ],
            )
        )


def _availability(view: AvailabilityView) -> dict[str, Any]:
    return {
        "specialist_id": view.specialist_id,
        "time_zone": view.time_zone,
        "weekly": view.weekly,
        "overrides": view.overrides,
        "version": view.version,
    }
