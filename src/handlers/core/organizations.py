"""Handlers for openapi/core/organizations.yaml."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models import core as api
from carebase.handlers.context import expected_version, page_request, parse, principal
from carebase.pages import Page
from carebase.persistence.organizations import (
    ApiKeyViewRow,
    MemberRow,
    MyOrganizationRow,
    OrganizationRow,
)
from carebase.services.organizations import OrganizationService
from carebase.web.responses import json_response, no_content, resource_response

BASE = "/v1/organizations"


class OrganizationHandlers:
    def __init__(self, *, organizations: OrganizationService) -> None:
        self._organizations = organizations

    async def list_my_organizations(
        self, page: int | None = None, page_size: int | None = None
    ) -> ConnexionResponse:
        found = await self._organizations.list_mine(principal(), page_request(page, page_size))
        return json_response(
            api.MyOrganizationPage(data=[_mine(row) for row in found.items], meta=_meta(found))
        )

    async def create_organization(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.OrganizationCreate, body)
        created = await self._organizations.create(
            principal(), name=request.name, slug=request.slug, admin_email=request.admin_email
        )
        return _organization(created, status=201, location=f"{BASE}/{created.id}")

    async def get_organization_by_slug(self, slug: str) -> ConnexionResponse:
        found = await self._organizations.get_by_slug(principal(), slug)
        return json_response(api.OrganizationSummary(id=found.id, slug=found.slug, name=found.name))

    async def get_organization(self, organization_id: str) -> ConnexionResponse:
        return _organization(await self._organizations.get(principal(), UUID(organization_id)))

    async def update_organization(
        self, organization_id: str, body: dict[str, Any]
    ) -> ConnexionResponse:
        request = parse(api.OrganizationUpdate, body)
        changed = await self._organizations.update(
            principal(), UUID(organization_id), version=expected_version(), name=request.name
        )
        return _organization(changed)

    async def list_members(
        self,
        organization_id: str,
        page: int | None = None,
        page_size: int | None = None,
        role: str | None = None,
    ) -> ConnexionResponse:
        found = await self._organizations.members(
            principal(), UUID(organization_id), page_request(page, page_size), role=role
        )
        return json_response(
            api.MemberPage(data=[_member_model(row) for row in found.items], meta=_meta(found))
        )

    async def add_member(self, organization_id: str, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.MemberCreate, body)
        added = await self._organizations.add_member(
            principal(),
            UUID(organization_id),
            email=request.email,
            role=request.role.value,
            display_name=request.display_name,
        )
        location = f"{BASE}/{organization_id}/members/{added.user_id}"
        return _member(added, status=201, location=location)

    async def get_member(self, organization_id: str, user_id: str) -> ConnexionResponse:
        return _member(
            await self._organizations.member(principal(), UUID(organization_id), UUID(user_id))
        )

    async def update_member(
        self, organization_id: str, user_id: str, body: dict[str, Any]
    ) -> ConnexionResponse:
        request = parse(api.MemberUpdate, body)
        changed = await self._organizations.update_member(
            principal(),
            UUID(organization_id),
            UUID(user_id),
            version=expected_version(),
            role=request.role.value,
        )
        return _member(changed)

    async def remove_member(self, organization_id: str, user_id: str) -> ConnexionResponse:
        await self._organizations.remove_member(
            principal(), UUID(organization_id), UUID(user_id), version=expected_version()
        )
        return no_content()

    async def list_api_keys(
        self, organization_id: str, page: int | None = None, page_size: int | None = None
    ) -> ConnexionResponse:
        found = await self._organizations.api_keys(
            principal(), UUID(organization_id), page_request(page, page_size)
        )
        return json_response(
            api.ApiKeyPage(data=[_api_key(row) for row in found.items], meta=_meta(found))
        )

    async def create_api_key(self, organization_id: str, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.ApiKeyCreate, body)
        created = await self._organizations.create_api_key(
            principal(),
            UUID(organization_id),
            name=request.name,
            role=request.role.value,
            expires_at=request.expires_at,
        )
        shown = api.ApiKeyWithSecret(**_api_key(created.key).model_dump(), key=created.secret)
        return json_response(
            shown,
            status=201,
            headers={
                "Location": f"{BASE}/{organization_id}/api-keys/{created.key.id}",
                "Cache-Control": "no-store",
            },
        )

    async def revoke_api_key(self, organization_id: str, api_key_id: str) -> ConnexionResponse:
        await self._organizations.revoke_api_key(
            principal(), UUID(organization_id), UUID(api_key_id)
        )
        return no_content()


def _meta(page: Page[Any]) -> api.PageMeta:
    return api.PageMeta(**page.meta)


def _mine(row: MyOrganizationRow) -> api.MyOrganization:
    return api.MyOrganization(id=row.id, slug=row.slug, name=row.name, role=api.Role(row.role))


def _organization(
    row: OrganizationRow, *, status: int = 200, location: str | None = None
) -> ConnexionResponse:
    model = api.Organization(
        id=row.id,
        slug=row.slug,
        name=row.name,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
    return resource_response(model, version=row.version, status=status, location=location)


def _member_model(row: MemberRow) -> api.Member:
    return api.Member(
        user_id=row.user_id,
        email=row.email,
        display_name=row.display_name,
        role=api.Role(row.role),
        email_verified=row.email_verified,
        version=row.version,
        joined_at=row.joined_at,
    )


def _member(row: MemberRow, *, status: int = 200, location: str | None = None) -> ConnexionResponse:
    return resource_response(
        _member_model(row), version=row.version, status=status, location=location
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
