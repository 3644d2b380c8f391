"""Organizations, their memberships and their API keys.

Everything here runs under row-level security as a member of the organization, except
`insert_organization` and `ensure_user`, which creating a tenant needs on the owner pool.
A version of `None` means "any version" (`If-Match: *`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg

from carebase.errors import Conflict
from carebase.pages import PageRequest
from carebase.persistence.db import Querier, one

# --- organizations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrganizationRow:
    id: UUID
    slug: str
    name: str
    time_zone: str
    reminder_lead_minutes: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MyOrganizationRow:
    id: UUID
    slug: str
    name: str
    role: str


ORG_COLUMNS = "id, slug, name, time_zone, reminder_lead_minutes, version, created_at, updated_at"
INSERT_ORGANIZATION = f"""
INSERT INTO platform.organizations (slug, name) VALUES (%s, %s)
RETURNING {ORG_COLUMNS}
"""  # noqa: S608 - constant columns
SELECT_ORGANIZATION = f"""
SELECT {ORG_COLUMNS} FROM platform.organizations WHERE id = %s
"""  # noqa: S608 - constant columns
SELECT_ORGANIZATION_BY_SLUG = f"""
SELECT {ORG_COLUMNS} FROM platform.organizations
 WHERE slug = %s
"""  # noqa: S608 - constant columns
SELECT_CURRENT_NAME = "SELECT name FROM platform.organizations WHERE id = platform.current_org_id()"
UPDATE_ORGANIZATION = f"""
UPDATE platform.organizations
   SET name = coalesce(%(name)s, name), time_zone = coalesce(%(time_zone)s, time_zone),
       reminder_lead_minutes = coalesce(%(reminder_lead_minutes)s::integer, reminder_lead_minutes),
       version = version + 1, updated_at = now()
 WHERE id = %(id)s AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING {ORG_COLUMNS}
"""  # noqa: S608 - constant columns
COUNT_MY_ORGANIZATIONS = "SELECT count(*) FROM identity.memberships WHERE user_id = %s"
LIST_MY_ORGANIZATIONS = """
SELECT o.id, o.slug, o.name, m.role
  FROM identity.memberships m JOIN platform.organizations o ON o.id = m.organization_id
 WHERE m.user_id = %s
 ORDER BY o.name, o.id LIMIT %s OFFSET %s
"""


async def insert_organization(q: Querier, *, slug: str, name: str) -> OrganizationRow:
    try:
        row = await q.fetch_one(INSERT_ORGANIZATION, (slug, name), row=OrganizationRow)
    except psycopg.errors.UniqueViolation:
        raise Conflict("An organization with this slug exists.") from None
    return one(row)


async def organization(q: Querier, organization_id: UUID) -> OrganizationRow | None:
    return await q.fetch_one(SELECT_ORGANIZATION, (organization_id,), row=OrganizationRow)


async def current_organization_name(q: Querier) -> str | None:
    """The name of the organization the transaction acts in."""
    found = await q.fetch_value(SELECT_CURRENT_NAME)
    return None if found is None else str(found)


async def organization_by_slug(q: Querier, slug: str) -> OrganizationRow | None:
    return await q.fetch_one(SELECT_ORGANIZATION_BY_SLUG, (slug,), row=OrganizationRow)


async def update_organization(
    q: Querier,
    organization_id: UUID,
    *,
    version: int | None,
    name: str | None,
    time_zone: str | None,
    reminder_lead_minutes: int | None,
) -> OrganizationRow | None:
    """Changes the fields given (None keeps a field as it is)."""
    params = {
        "id": organization_id,
        "version": version,
        "name": name,
        "time_zone": time_zone,
        "reminder_lead_minutes": reminder_lead_minutes,
    }
    return await q.fetch_one(UPDATE_ORGANIZATION, params, row=OrganizationRow)


async def my_organizations(
    q: Querier, user_id: UUID, page: PageRequest
) -> tuple[list[MyOrganizationRow], int]:
    total = await q.fetch_value(COUNT_MY_ORGANIZATIONS, (user_id,))
    rows = await q.fetch_all(
        LIST_MY_ORGANIZATIONS, (user_id, page.page_size, page.offset), row=MyOrganizationRow
    )
    return rows, int(total)


# --- members --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberRow:
    user_id: UUID
    email: str
    display_name: str
    role: str
    email_verified: bool
    version: int
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class EnsuredUser:
    user_id: UUID
    created: bool


COUNT_MEMBERS = """
SELECT count(*) FROM identity.memberships
 WHERE organization_id = %(org)s AND (%(role)s::text IS NULL OR role = %(role)s)
"""
LIST_MEMBERS = """
SELECT m.user_id, u.email, u.display_name, m.role,
       u.email_verified_at IS NOT NULL AS email_verified, m.version, m.created_at AS joined_at
  FROM identity.memberships m JOIN identity.users u ON u.id = m.user_id
 WHERE m.organization_id = %(org)s AND (%(role)s::text IS NULL OR m.role = %(role)s)
 ORDER BY u.email LIMIT %(limit)s OFFSET %(offset)s
"""
SELECT_MEMBER = """
SELECT m.user_id, u.email, u.display_name, m.role,
       u.email_verified_at IS NOT NULL AS email_verified, m.version, m.created_at AS joined_at
  FROM identity.memberships m JOIN identity.users u ON u.id = m.user_id
 WHERE m.organization_id = %s AND m.user_id = %s
"""
# Runs as the owner for an admin of the current organization (see the migration).
FIND_OR_INVITE_USER = "SELECT user_id, created FROM identity.find_or_invite_user(%s, %s)"
ENSURE_USER = """
WITH inserted AS (
    INSERT INTO identity.users (email, display_name) VALUES (%s, %s)
    ON CONFLICT (email) DO NOTHING RETURNING id
)
SELECT id AS user_id, true AS created FROM inserted
UNION ALL
SELECT id, false FROM identity.users WHERE email = %s AND NOT EXISTS (SELECT 1 FROM inserted)
"""
INSERT_MEMBERSHIP = """
INSERT INTO identity.memberships (organization_id, user_id, role) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING RETURNING user_id
"""
UPDATE_MEMBERSHIP = """
UPDATE identity.memberships SET role = %(role)s, version = version + 1, updated_at = now()
 WHERE organization_id = %(org)s AND user_id = %(user)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING user_id
"""
DELETE_MEMBERSHIP = """
DELETE FROM identity.memberships
 WHERE organization_id = %(org)s AND user_id = %(user)s
   AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING user_id
"""
# Locks the admins' rows, so two requests demoting the last two admins cannot both pass.
LOCK_ADMINS = """
SELECT user_id FROM identity.memberships
 WHERE organization_id = %s AND role = 'admin' ORDER BY user_id FOR UPDATE
"""


@dataclass(frozen=True, slots=True)
class UserIdRow:
    user_id: UUID


async def members(
    q: Querier, organization_id: UUID, page: PageRequest, *, role: str | None
) -> tuple[list[MemberRow], int]:
    params = {
        "org": organization_id,
        "role": role,
        "limit": page.page_size,
        "offset": page.offset,
    }
    total = await q.fetch_value(COUNT_MEMBERS, params)
    return await q.fetch_all(LIST_MEMBERS, params, row=MemberRow), int(total)


async def member(q: Querier, organization_id: UUID, user_id: UUID) -> MemberRow | None:
    return await q.fetch_one(SELECT_MEMBER, (organization_id, user_id), row=MemberRow)


async def find_or_invite_user(q: Querier, *, email: str, display_name: str) -> EnsuredUser:
    row = await q.fetch_one(FIND_OR_INVITE_USER, (email, display_name), row=EnsuredUser)
    return one(row)


async def ensure_user(q: Querier, *, email: str, display_name: str) -> EnsuredUser:
    """Owner pool only (creating an organization): the account for an address, made if new."""
    row = await q.fetch_one(ENSURE_USER, (email, display_name, email), row=EnsuredUser)
    return one(row)


async def insert_membership(q: Querier, organization_id: UUID, user_id: UUID, role: str) -> bool:
    """False when the user is already a member."""
    added = await q.fetch_value(INSERT_MEMBERSHIP, (organization_id, user_id, role))
    return added is not None


async def update_membership(
    q: Querier, organization_id: UUID, user_id: UUID, *, version: int | None, role: str
) -> bool:
    params = {"org": organization_id, "user": user_id, "version": version, "role": role}
    return await q.fetch_value(UPDATE_MEMBERSHIP, params) is not None


async def delete_membership(
    q: Querier, organization_id: UUID, user_id: UUID, *, version: int | None
) -> bool:
    params = {"org": organization_id, "user": user_id, "version": version}
    return await q.fetch_value(DELETE_MEMBERSHIP, params) is not None


async def lock_admins(q: Querier, organization_id: UUID) -> list[UUID]:
    rows = await q.fetch_all(LOCK_ADMINS, (organization_id,), row=UserIdRow)
    return [row.user_id for row in rows]


# --- API keys -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKeyViewRow:
    id: UUID
    name: str
    prefix: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


COUNT_API_KEYS = "SELECT count(*) FROM identity.api_keys WHERE organization_id = %s"
LIST_API_KEYS = """
SELECT id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at
  FROM identity.api_keys WHERE organization_id = %s
 ORDER BY created_at DESC, id LIMIT %s OFFSET %s
"""
INSERT_API_KEY = """
INSERT INTO identity.api_keys
       (organization_id, name, prefix, secret_hash, role, created_by, expires_at)
VALUES (%(org)s, %(name)s, %(prefix)s, %(secret_hash)s, %(role)s, %(created_by)s, %(expires_at)s)
RETURNING id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at
"""
REVOKE_API_KEY = """
UPDATE identity.api_keys SET revoked_at = coalesce(revoked_at, now())
 WHERE organization_id = %s AND id = %s RETURNING id
"""


async def api_keys(
    q: Querier, organization_id: UUID, page: PageRequest
) -> tuple[list[ApiKeyViewRow], int]:
    total = await q.fetch_value(COUNT_API_KEYS, (organization_id,))
    rows = await q.fetch_all(
        LIST_API_KEYS, (organization_id, page.page_size, page.offset), row=ApiKeyViewRow
    )
    return rows, int(total)


async def insert_api_key(
    q: Querier,
    *,
    organization_id: UUID,
    name: str,
    prefix: str,
    secret_hash: bytes,
    role: str,
    created_by: UUID | None,
    expires_at: datetime | None,
) -> ApiKeyViewRow:
    params = {
        "org": organization_id,
        "name": name,
        "prefix": prefix,
        "secret_hash": secret_hash,
        "role": role,
        "created_by": created_by,
        "expires_at": expires_at,
    }
    row = await q.fetch_one(INSERT_API_KEY, params, row=ApiKeyViewRow)
    return one(row)


async def revoke_api_key(q: Querier, organization_id: UUID, key_id: UUID) -> bool:
    return await q.fetch_value(REVOKE_API_KEY, (organization_id, key_id)) is not None
