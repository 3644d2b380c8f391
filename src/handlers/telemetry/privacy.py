"""Handlers for openapi/telemetry/privacy.yaml."""

from __future__ import annotations

from carebase.generated.models import telemetry as api
from carebase.persistence.telemetry.privacy import SettingsRow
from carebase.principal import Principal
from carebase.services.telemetry.consents import PrivacySettingsService
from carebase.web.results import Reply, ok


class PrivacyHandlers:
    def __init__(self, *, settings: PrivacySettingsService) -> None:
        self._settings = settings

    async def get_privacy_settings(self, principal: Principal) -> Reply:
        return ok(_settings(await self._settings.get(principal)))

    async def put_privacy_settings(
        self, principal: Principal, *, body: api.PrivacySettingsChange
    ) -> Reply:
        row = await self._settings.put(principal, analytics_opt_out=body.analytics_opt_out)
        return ok(_settings(row))


def _settings(row: SettingsRow) -> api.PrivacySettings:
    return api.PrivacySettings.model_construct(
        analytics_opt_out=row.analytics_opt_out, updated_at=row.updated_at
    )
