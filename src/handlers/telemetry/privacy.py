"""Handlers for openapi/telemetry/privacy.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from carebase.generated.models import telemetry as api
from carebase.persistence.telemetry.privacy import SettingsRow
from carebase.principal import Principal
from carebase.services.telemetry.consents import PrivacySettingsService
from carebase.services.telemetry.subjects import Subject, SubjectData
from carebase.web.results import Reply, ok


class PrivacyHandlers:
    def __init__(self, *, settings: PrivacySettingsService, subjects: SubjectData) -> None:
        self._settings = settings
        self._subjects = subjects

    async def get_privacy_settings(self, principal: Principal) -> Reply:
        return ok(_settings(await self._settings.get(principal)))

    async def put_privacy_settings(
        self, principal: Principal, *, body: api.PrivacySettingsChange
    ) -> Reply:
        row = await self._settings.put(principal, analytics_opt_out=body.analytics_opt_out)
        return ok(_settings(row))

    async def erase_subject(self, *, body: dict[str, Any]) -> Reply:
        """Core's GDPR worker (service credential): a subject's telemetry erased."""
        outcomes = await self._subjects.erase(_subject(body), reason=body.get("reason", "erase"))
        return ok(
            {
                "tables": [
                    {"table": o.table, "deleted": o.deleted, "remaining": o.remaining}
                    for o in outcomes
                ]
            }
        )

    async def export_subject(self, *, body: dict[str, Any]) -> Reply:
        """Core's GDPR worker (service credential): a subject's telemetry, by table."""
        found = await self._subjects.export(_subject(body))
        return ok({"tables": [{"table": name, "rows": rows} for name, rows in found.items()]})


def _subject(body: dict[str, Any]) -> Subject:
    subject = body.get("subject_id")
    return Subject(
        organization_id=UUID(body["organization_id"]),
        subject_id=UUID(subject) if subject else None,
        session_ids=[UUID(text) for text in body.get("session_ids", ())],
    )


def _settings(row: SettingsRow) -> api.PrivacySettings:
    return api.PrivacySettings.model_construct(
        analytics_opt_out=row.analytics_opt_out, updated_at=row.updated_at
    )
