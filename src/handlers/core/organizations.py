"""Handlers for openapi/core/organizations.yaml."""

from __future__ import annotations

from uuid import UUID

from carebase.generated.models import core as api
from carebase.pages import PageRequest
from carebase.persistence.organizations import (
    ApiKeyViewRow,
    MemberRow,
    MyOrganizationRow,
    OrganizationRow,
)
from carebase.principal import Principal
from carebase.services.organizations import OrganizationService
from carebase.web.results import NO_STORE, Reply, created, no_content, ok, resource

BASE = "/v1/organizations"


class OrganizationHandlers:
    def __init__(self, *, organizations: OrganizationService) -> None:
        self._organizations = organizations

    async def list_my_organizations(
        self, principal: Principal, *, page: int, page_size: int
    ) -> Reply:
        found = await self._organizations.list_mine(principal, PageRequest(page, page_size))
        return ok(
            api.MyOrganizationPage(
                data=[_mine(row) for row in found.items], meta=api.PageMeta(**found.meta)
            )
        )

    async def create_organization(
        self, principal: Principal, body: api.OrganizationCreate
    ) -> Reply:
        row = await self._organizations.create(
            principal, name=body.name, slug=body.slug, admin_email=body.admin_email
        )
        return created(_organization(row), location=f"{BASE}/{row.id}", version=row.version)

    async def get_organization_by_slug(self, principal: Principal, *, slug: str) -> Reply:
        found = await self._organizations.get_by_slug(principal, slug)
        return ok(api.OrganizationSummary(id=found.id, slug=found.slug, name=found.name))

    async def get_organization(self, principal: Principal, *, organization_id: UUID) -> Reply:
        row = await self._organizations.get(principal, organization_id)
        return resource(_organization(row), version=row.version)

    async def update_organization(
        self,
        principal: Principal,
        *,
        organization_id: UUID,
        if_match: int | None,
        body: api.OrganizationUpdate,
    ) -> Reply:
        changes = body.model_dump(exclude_unset=True)
        row = await self._organizations.update(
            principal, organization_id, changes, version=if_match
        )
        return resource(_organization(row), version=row.version)

    async def list_members(
        self,
        principal: Principal,
        *,
        organization_id: UUID,
        page: int,
        page_size: int,
        role: str | None,
    ) -> Reply:
        found = await self._organizations.members(
            principal, organization_id, PageRequest(page, page_size), role=role
        )
        return ok(
            api.MemberPage(
                data=[_member(row) for row in found.items], meta=api.PageMeta(**found.meta)
            )
        )

    async def add_member(
        self, principal: Principal, organization_id: UUID, body: api.MemberCreate
    ) -> Reply:
        row = await self._organizations.add_member(
            principal,
            organization_id,
            email=body.email,
            role=body.role.value,
            display_name=body.display_name,
        )
        location = f"{BASE}/{organization_id}/members/{row.user_id}"
        return created(_member(row), location=location, version=row.version)

    async def get_member(
        self, principal: Principal, *, organization_id: UUID, user_id: UUID
    ) -> Reply:
        row = await self._organizations.member(principal, organization_id, user_id)
        return resource(_member(row), version=row.version)

    async def update_member(
        self,
        principal: Principal,
        *,
        organization_id: UUID,
        user_id: UUID,
        if_match: int | None,
        body: api.MemberUpdate,
    ) -> Reply:
        row = await self._organizations.update_member(
            principal, organization_id, user_id, version=if_match, role=body.role.value
        )
        return resource(_member(row), version=row.version)

    async def remove_member(
        self, principal: Principal, organization_id: UUID, user_id: UUID, if_match: int | None
    ) -> Reply:
        await self._organizations.remove_member(
            principal, organization_id, user_id, version=if_match
        )
        return no_content()

    async def list_api_keys(
        self, principal: Principal, organization_id: UUID, page: int, page_size: int
    ) -> Reply:
        found = await self._organizations.api_keys(
            principal, organization_id, PageRequest(page, page_size)
        )
        return ok(
            api.ApiKeyPage(
                data=[_api_key(row) for row in found.items], meta=api.PageMeta(**found.meta)
            )
        )

    async def create_api_key(
        self, principal: Principal, organization_id: UUID, body: api.ApiKeyCreate
    ) -> Reply:
        made = await self._organizations.create_api_key(
            principal,
            organization_id,
            name=body.name,
            role=body.role.value,
            expires_at=body.expires_at,
        )
        shown = api.ApiKeyWithSecret(**_api_key(made.key).model_dump(), key=made.secret)
        location = f"{BASE}/{organization_id}/api-keys/{made.key.id}"
        return created(shown, location=location, headers=NO_STORE)

    async def revoke_api_key(
        self, principal: Principal, organization_id: UUID, api_key_id: UUID
    ) -> Reply:
        await self._organizations.revoke_api_key(principal, organization_id, api_key_id)
        return no_content()


def _mine(row: MyOrganizationRow) -> api.MyOrganization:
    return api.MyOrganization(id=row.id, slug=row.slug, name=row.name, role=api.Role(row.role))


def _organization(row: OrganizationRow) -> api.Organization:
    return api.Organization(
        id=row.id,
        slug=row.slug,
        name=row.name,
        time_zone=row.time_zone,
        reminder_lead_minutes=row.reminder_lead_minutes,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _member(row: MemberRow) -> api.Member:
    return api.Member(
        user_id=row.user_id,
        email=row.email,
        display_name=row.display_name,
        role=api.Role(row.role),
        email_verified=row.email_verified,
        version=row.version,
        joined_at=row.joined_at,
    )


def _api_key(row: ApiKeyViewRow) -> api.ApiKey:
    return api.ApiKey(
        id=row.id,
        name=row.name,
        prefix=f"cbk_{row.prefix}",
        role=api.ApiKeyRole(row.role),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
