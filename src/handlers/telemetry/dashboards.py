"""Handlers for openapi/telemetry/dashboards.yaml."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from carebase.generated.models import telemetry as api
from carebase.pages import PageRequest
from carebase.principal import Principal
from carebase.services.telemetry.dashboards import DashboardService
from carebase.web.results import Reply, ok


class DashboardHandlers:
    def __init__(self, *, dashboards: DashboardService) -> None:
        self._dashboards = dashboards

    async def get_organization_dashboard(
        self, principal: Principal, *, from_: date | None, to: date | None
    ) -> Reply:
        first, last, days = await self._dashboards.organization(principal, from_, to)
        return ok(
            {
                "from": first.isoformat(),
                "to": last.isoformat(),
                "days": [
                    {
                        "day": d.day.isoformat(),
                        "events": d.events,
                        "active_patients": d.active_patients,
                        "completed_sessions": d.completed_sessions,
                        "pose_minutes": d.pose_minutes,
                        "median_bitrate_kbps": d.median_bitrate_kbps,
                        "stalls": d.stalls,
                    }
                    for d in days
                ],
            }
        )

    async def get_staff_dashboard(
        self,
        principal: Principal,
        *,
        from_: date | None,
        to: date | None,
        page: int,
        page_size: int,
    ) -> Reply:
        found = await self._dashboards.staff(principal, from_, to, PageRequest(page, page_size))
        return ok(
            api.StaffActivityPage.model_construct(
                data=[
                    api.StaffActivity.model_construct(
                        day=row.day,
                        actor=row.actor,
                        actions=row.actions,
                        active_minutes=row.active_minutes,
                        distinct_patients=row.distinct_patients,
                    )
                    for row in found.items
                ],
                meta=found.meta,
            )
        )

    async def get_session_dashboard(self, principal: Principal, *, session_id: UUID) -> Reply:
        view = await self._dashboards.session(principal, session_id)
        media = view.media
        pose = view.pose
        return ok(
            {
                "session_id": str(view.session_id),
                "media": None
                if media is None
                else {
                    "status": media.status,
                    "started_at": media.started_at,
                    "ended_at": media.ended_at,
                    "p50_kbps": media.p50_kbps,
                    "p95_kbps": media.p95_kbps,
                    "stalls": media.stalls,
                    "samples": media.samples,
                },
                "pose": None
                if pose is None
                else {
                    "frames": pose.frames,
                    "minutes": pose.minutes,
                    "first_at": pose.first_at,
                    "last_at": pose.last_at,
                },
            }
        )
