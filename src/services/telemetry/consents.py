"""Consent records: append-only per person and purpose; the latest one is the state."""

from __future__ import annotations

from uuid import UUID

from carebase.errors import Forbidden, NotFound
from carebase.pages import Page, PageRequest
from carebase.persistence.db import Database
from carebase.persistence.telemetry import privacy as repo
from carebase.principal import Principal
from carebase.services.telemetry.privacy import PrivacyGate


class ConsentService:
    def __init__(self, *, db: Database, privacy: PrivacyGate) -> None:
        self._db = db
        self._privacy = privacy

    async def record(
        self, principal: Principal, *, purpose: str, granted: bool, notice_version: str
    ) -> repo.ConsentRow:
        organization_id, user_id = _person(principal)
        async with self._db.transaction(principal) as q:
            row = await repo.insert_consent(
                q,
                organization_id,
                user_id,
                purpose=purpose,
                granted=granted,
                notice_version=notice_version,
            )
        self._privacy.forget(organization_id)  # at once here; other processes within a minute
        return row

    async def history(
        self,
        principal: Principal,
        page: PageRequest,
        *,
        subject_id: UUID | None,
        purpose: str | None,
    ) -> Page[repo.ConsentRow]:
        organization_id, _ = _person(principal)
        async with self._db.transaction(principal, read_only=True) as q:
            rows, total = await repo.consents(
                q, organization_id, page, subject_id=subject_id, purpose=purpose
            )
        return Page(rows, total, page)


class PrivacySettingsService:
    """The organization's own choices: analytics opt-out, by its admins."""

    def __init__(self, *, db: Database, privacy: PrivacyGate) -> None:
        self._db = db
        self._privacy = privacy

    async def get(self, principal: Principal) -> repo.SettingsRow:
        organization_id = _organization(principal)
        async with self._db.transaction(principal, read_only=True) as q:
            return await repo.settings(q, organization_id)

    async def put(self, principal: Principal, *, analytics_opt_out: bool) -> repo.SettingsRow:
        organization_id = _organization(principal)
        async with self._db.transaction(principal) as q:
            row = await repo.put_settings(
                q, organization_id, analytics_opt_out=analytics_opt_out, by=principal.user_id
            )
        self._privacy.forget(organization_id)
        return row


def _organization(principal: Principal) -> UUID:
    if principal.organization_id is None:
        raise NotFound("No organization to keep settings for.")
    return principal.organization_id


def _person(principal: Principal) -> tuple[UUID, UUID]:
    if principal.organization_id is None:
        raise NotFound("No organization to keep consent in.")
    if principal.user_id is None:
        raise Forbidden("Consent is a person's own: sign in as that person.")
    return principal.organization_id, principal.user_id
