"""Tenants, their members and their API keys.

A member acts in the organization their token names; any other organization id answers
exactly as a missing one (404). Row-level security enforces the same, and only an admin
of the organization can change memberships or keys even if this code were wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from carebase.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from carebase.pages import Page, PageRequest
from carebase.persistence import identity
from carebase.persistence import organizations as orgs
from carebase.persistence.db import Database, Querier, one
from carebase.principal import Principal
from carebase.security import credentials
from carebase.services import working_hours as wh
from carebase.services.audit import record
from carebase.services.identity import (
    INVITATION_TTL_S,
    Links,
    normalise_email,
    queue_action_mail,
)

NO_ORGANIZATION = "No such organization."
NO_MEMBER = "No such member."
NO_API_KEY = "No such API key."

INVITATION_MAIL = (
    "You are invited to {organization} on Carebase",
    "Hello,\n\nyou are invited to join {organization} on Carebase as {role}. Choose a "
    "password here to accept:\n\n{{link}}\n\nThe link works once, for 7 days.\n",
)
ADDED_MAIL = (
    "You were added to {organization} on Carebase",
    "Hello,\n\nyou can now act in {organization} on Carebase as {role}. Sign in as usual "
    "and pick it from your organizations.\n",
)


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    key: orgs.ApiKeyViewRow
    secret: str


class OrganizationService:
    def __init__(
        self, *, db: Database, links: Links, on_access_changed: Callable[[], None]
    ) -> None:
        self._db = db
        self._links = links
        # Authentication caches roles and keys per process; a change made here drops them.
        self._on_access_changed = on_access_changed

    # --- organizations ----------------------------------------------------------------------

    async def list_mine(
        self, principal: Principal, page: PageRequest
    ) -> Page[orgs.MyOrganizationRow]:
        if principal.user_id is None:
            raise Forbidden("Only a signed-in user has organizations of their own.")
        as_user = Principal(user_id=principal.user_id, organization_id=None, role=None)
        q = self._db.reader(as_user)
        rows, total = await orgs.my_organizations(q, principal.user_id, page)
        return Page(rows, total, page)

    async def create(
        self, principal: Principal, *, name: str, slug: str, admin_email: str | None
    ) -> orgs.OrganizationRow:
        """A platform job (superadmin): the tenant has no member yet, so the owner pool."""
        async with self._db.admin_transaction() as q:
            created = await orgs.insert_organization(q, slug=slug, name=name.strip())
            await record(
                q,
                principal,
                action="organization.created",
                entity_type="organization",
                entity_id=created.id,
                changed_fields=["name", "slug"],
                organization_id=created.id,
            )
            if admin_email:
                email = normalise_email(admin_email)
                user = await orgs.ensure_user(q, email=email, display_name="")
                await orgs.insert_membership(q, created.id, user.user_id, "admin")
                await self._welcome(q, created, user, email=email, role="admin")
        return created

    async def get(self, principal: Principal, organization_id: UUID) -> orgs.OrganizationRow:
        _same_tenant(principal, organization_id, NO_ORGANIZATION)
        q = self._db.reader(principal)
        found = await orgs.organization(q, organization_id)
        if found is None:
            raise NotFound(NO_ORGANIZATION)
        return found

    async def get_by_slug(self, principal: Principal, slug: str) -> orgs.OrganizationRow:
        """Row-level security shows the current organization and those the user belongs to."""
        q = self._db.reader(principal)
        found = await orgs.organization_by_slug(q, slug)
        if found is None:
            raise NotFound(NO_ORGANIZATION)
        return found

    async def update(
        self,
        principal: Principal,
        organization_id: UUID,
        changes: Mapping[str, Any],
        *,
        version: int | None,
    ) -> orgs.OrganizationRow:
        """Rename, move to another time zone, or change the reminder lead (the keys given)."""
        _same_tenant(principal, organization_id, NO_ORGANIZATION)
        time_zone = changes.get("time_zone")
        if time_zone is not None and wh.zone(time_zone) is None:
            raise ValidationFailed(
                [
                    FieldError(
                        "/body/time_zone", "Not a time zone the zone database knows.", "format"
                    )
                ]
            )
        name = changes.get("name")
        async with self._db.transaction(principal) as q:
            changed = await orgs.update_organization(
                q,
                organization_id,
                version=version,
                name=name.strip() if name is not None else None,
                time_zone=time_zone,
                reminder_lead_minutes=changes.get("reminder_lead_minutes"),
            )
            if changed is None:
                if await orgs.organization(q, organization_id) is None:
                    raise NotFound(NO_ORGANIZATION)
                raise PreconditionFailed("The organization changed since it was read.")
            await record(
                q,
                principal,
                action="organization.updated",
                entity_type="organization",
                entity_id=organization_id,
                changed_fields=sorted(changes),
            )
            return changed

    # --- members ----------------------------------------------------------------------------

    async def members(
        self, principal: Principal, organization_id: UUID, page: PageRequest, *, role: str | None
    ) -> Page[orgs.MemberRow]:
        _same_tenant(principal, organization_id, NO_ORGANIZATION)
        q = self._db.reader(principal)
        rows, total = await orgs.members(q, organization_id, page, role=role)
        return Page(rows, total, page)

    async def member(
        self, principal: Principal, organization_id: UUID, user_id: UUID
    ) -> orgs.MemberRow:
        _same_tenant(principal, organization_id, NO_MEMBER)
        q = self._db.reader(principal)
        found = await orgs.member(q, organization_id, user_id)
        if found is None:
            raise NotFound(NO_MEMBER)
        return found

    async def add_member(
        self,
        principal: Principal,
        organization_id: UUID,
        *,
        email: str,
        role: str,
        display_name: str | None,
    ) -> orgs.MemberRow:
        _same_tenant(principal, organization_id, NO_ORGANIZATION)
        email = normalise_email(email)
        async with self._db.transaction(principal) as q:
            organization = await orgs.organization(q, organization_id)
            if organization is None:
                raise NotFound(NO_ORGANIZATION)
            user = await orgs.find_or_invite_user(
                q, email=email, display_name=(display_name or "").strip()
            )
            if not await orgs.insert_membership(q, organization_id, user.user_id, role):
                raise Conflict("This person is already a member; change their role instead.")
            await self._welcome(q, organization, user, email=email, role=role)
            await record(
                q,
                principal,
                action="member.added",
                entity_type="member",
                entity_id=user.user_id,
                changed_fields=["role"],
            )
            added = await orgs.member(q, organization_id, user.user_id)
        return one(added)

    async def update_member(
        self,
        principal: Principal,
        organization_id: UUID,
        user_id: UUID,
        *,
        version: int | None,
        role: str,
    ) -> orgs.MemberRow:
        _same_tenant(principal, organization_id, NO_MEMBER)
        async with self._db.transaction(principal) as q:
            current = await orgs.member(q, organization_id, user_id)
            if current is None:
                raise NotFound(NO_MEMBER)
            if current.role == "admin" and role != "admin":
                await _keep_an_admin(q, organization_id, user_id)
            if not await orgs.update_membership(
                q, organization_id, user_id, version=version, role=role
            ):
                raise PreconditionFailed("The member changed since it was read; read it again.")
            await record(
                q,
                principal,
                action="member.updated",
                entity_type="member",
                entity_id=user_id,
                changed_fields=["role"],
            )
            changed = await orgs.member(q, organization_id, user_id)
        self._on_access_changed()
        return one(changed)

    async def remove_member(
        self, principal: Principal, organization_id: UUID, user_id: UUID, *, version: int | None
    ) -> None:
        _same_tenant(principal, organization_id, NO_MEMBER)
        async with self._db.transaction(principal) as q:
            current = await orgs.member(q, organization_id, user_id)
            if current is None:
                raise NotFound(NO_MEMBER)
            if current.role == "admin":
                await _keep_an_admin(q, organization_id, user_id)
            if not await orgs.delete_membership(q, organization_id, user_id, version=version):
                raise PreconditionFailed("The member changed since it was read; read it again.")
            await record(
                q, principal, action="member.removed", entity_type="member", entity_id=user_id
            )
        self._on_access_changed()

    # --- API keys ---------------------------------------------------------------------------

    async def api_keys(
        self, principal: Principal, organization_id: UUID, page: PageRequest
    ) -> Page[orgs.ApiKeyViewRow]:
        _same_tenant(principal, organization_id, NO_ORGANIZATION)
        q = self._db.reader(principal)
        rows, total = await orgs.api_keys(q, organization_id, page)
        return Page(rows, total, page)

    async def create_api_key(
        self,
        principal: Principal,
        organization_id: UUID,
        *,
        name: str,
        role: str,
        expires_at: datetime | None,
    ) -> CreatedApiKey:
        _same_tenant(principal, organization_id, NO_ORGANIZATION)
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValidationFailed(
                [FieldError("/body/expires_at", "Give a time zone offset.", "format")]
            )
        prefix, secret = credentials.new_api_key()
        async with self._db.transaction(principal) as q:
            if expires_at is not None and expires_at <= await q.fetch_value("SELECT now()"):
                raise ValidationFailed(
                    [FieldError("/body/expires_at", "Must be in the future.", "minimum")]
                )
            created = await orgs.insert_api_key(
                q,
                organization_id=organization_id,
                name=name.strip(),
                prefix=prefix,
                secret_hash=credentials.digest(secret),
                role=role,
                created_by=principal.user_id,
                expires_at=expires_at,
            )
            await record(
                q,
                principal,
                action="api_key.created",
                entity_type="api_key",
                entity_id=created.id,
                changed_fields=["name", "role", "expires_at"],
            )
        return CreatedApiKey(created, secret)

    async def revoke_api_key(
        self, principal: Principal, organization_id: UUID, key_id: UUID
    ) -> None:
        _same_tenant(principal, organization_id, NO_API_KEY)
        async with self._db.transaction(principal) as q:
            if not await orgs.revoke_api_key(q, organization_id, key_id):
                raise NotFound(NO_API_KEY)
            await record(
                q, principal, action="api_key.revoked", entity_type="api_key", entity_id=key_id
            )
        self._on_access_changed()

    # --- helpers ----------------------------------------------------------------------------

    async def _welcome(
        self,
        q: Querier,
        organization: orgs.OrganizationRow,
        user: orgs.EnsuredUser,
        *,
        email: str,
        role: str,
    ) -> None:
        """New people get an invitation link to set a password; others are told."""
        if user.created:
            subject, body = INVITATION_MAIL
            await queue_action_mail(
                q,
                user_id=user.user_id,
                email=email,
                purpose="invitation",
                ttl_s=INVITATION_TTL_S,
                subject=subject.format(organization=organization.name),
                body=body.format(organization=organization.name, role=role),
                link_path="/accept-invitation",
                links=self._links,
            )
            return
        subject, body = ADDED_MAIL
        await identity.enqueue_mail(
            q,
            user_id=user.user_id,
            recipient=email,
            subject=subject.format(organization=organization.name),
            body=body.format(organization=organization.name, role=role),
        )


def _same_tenant(principal: Principal, organization_id: UUID, missing: str) -> None:
    """Another organization's id answers like a missing one."""
    if principal.organization_id != organization_id:
        raise NotFound(missing)


async def _keep_an_admin(q: Querier, organization_id: UUID, leaving: UUID) -> None:
    admins = await orgs.lock_admins(q, organization_id)
    if [admin for admin in admins if admin != leaving] == []:
        raise Conflict("An organization keeps at least one admin; promote another member first.")
