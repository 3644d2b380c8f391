"""Users, sessions (refresh-token families), single-use mail links and the mail outbox.

Functions named for sign-in, refresh, reset and mail delivery run on the owner pool (there
is no tenant before authentication); the profile functions run under row-level security.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from carebase.persistence.db import Querier

# --- users ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    id: UUID
    email: str
    display_name: str
    locale: str
    email_verified_at: datetime | None
    is_superadmin: bool
    default_org_id: UUID | None
    version: int


@dataclass(frozen=True, slots=True)
class CredentialRow:
    id: UUID
    email: str
    password_hash: str | None
    is_superadmin: bool
    default_org_id: UUID | None


INSERT_USER = """
INSERT INTO identity.users (email, display_name, locale, password_hash, password_changed_at)
VALUES (%(email)s, %(display_name)s, %(locale)s, %(password_hash)s, now())
ON CONFLICT (email) DO NOTHING
RETURNING id
"""
SELECT_CREDENTIAL_BY_EMAIL = """
SELECT id, email, password_hash, is_superadmin, default_org_id
  FROM identity.users WHERE email = %s
"""
SELECT_CREDENTIAL_BY_ID = """
SELECT id, email, password_hash, is_superadmin, default_org_id
  FROM identity.users WHERE id = %s
"""
RECORD_LOGIN = """
UPDATE identity.users
   SET last_login_at = now(), password_hash = coalesce(%(rehashed)s, password_hash)
 WHERE id = %(id)s
"""
UPDATE_CREDENTIAL = """
UPDATE identity.users
   SET password_hash = %(password_hash)s, password_changed_at = now(), updated_at = now(),
       email_verified_at = CASE WHEN %(verify)s THEN coalesce(email_verified_at, now())
                                ELSE email_verified_at END,
       version = version + 1
 WHERE id = %(id)s
"""
MARK_EMAIL_VERIFIED = """
UPDATE identity.users
   SET email_verified_at = coalesce(email_verified_at, now()), updated_at = now(),
       version = version + 1
 WHERE id = %s
"""
SELECT_USER = """
SELECT id, email, display_name, locale, email_verified_at, is_superadmin, default_org_id, version
  FROM identity.users WHERE id = %s
"""
UPDATE_PROFILE = """
UPDATE identity.users
   SET display_name = coalesce(%(display_name)s, display_name),
       locale = coalesce(%(locale)s, locale),
       updated_at = now(), version = version + 1
 WHERE id = %(id)s AND (%(version)s::integer IS NULL OR version = %(version)s)
RETURNING id, email, display_name, locale, email_verified_at, is_superadmin, default_org_id,
          version
"""
SET_DEFAULT_ORGANIZATION = "UPDATE identity.users SET default_org_id = %s WHERE id = %s"


async def insert_user(
    q: Querier, *, email: str, display_name: str, locale: str, password_hash: str
) -> UUID | None:
    """The new user's id, or None when the address already has an account."""
    params = {
        "email": email,
        "display_name": display_name,
        "locale": locale,
        "password_hash": password_hash,
    }
    found: UUID | None = await q.fetch_value(INSERT_USER, params)
    return found


async def credential_by_email(q: Querier, email: str) -> CredentialRow | None:
    return await q.fetch_one(SELECT_CREDENTIAL_BY_EMAIL, (email,), row=CredentialRow)


async def credential_by_id(q: Querier, user_id: UUID) -> CredentialRow | None:
    return await q.fetch_one(SELECT_CREDENTIAL_BY_ID, (user_id,), row=CredentialRow)


async def record_login(q: Querier, user_id: UUID, *, rehashed: str | None) -> None:
    await q.execute(RECORD_LOGIN, {"id": user_id, "rehashed": rehashed})


async def set_password(q: Querier, user_id: UUID, password_hash: str, *, verify: bool) -> None:
    await q.execute(
        UPDATE_CREDENTIAL, {"id": user_id, "password_hash": password_hash, "verify": verify}
    )


async def mark_email_verified(q: Querier, user_id: UUID) -> None:
    await q.execute(MARK_EMAIL_VERIFIED, (user_id,))


async def user(q: Querier, user_id: UUID) -> UserRow | None:
    return await q.fetch_one(SELECT_USER, (user_id,), row=UserRow)


async def update_profile(
    q: Querier, user_id: UUID, *, version: int | None, display_name: str | None, locale: str | None
) -> UserRow | None:
    """None when `version` is not current (or the row is not visible)."""
    params = {"id": user_id, "version": version, "display_name": display_name, "locale": locale}
    return await q.fetch_one(UPDATE_PROFILE, params, row=UserRow)


async def set_default_organization(q: Querier, user_id: UUID, organization_id: UUID) -> None:
    await q.execute(SET_DEFAULT_ORGANIZATION, (organization_id, user_id))


# --- memberships ----------------------------------------------------------------------------

SELECT_MEMBERSHIP_ROLE = """
SELECT role FROM identity.memberships WHERE organization_id = %s AND user_id = %s
"""
SELECT_FIRST_MEMBERSHIP = """
SELECT organization_id FROM identity.memberships WHERE user_id = %s
 ORDER BY created_at, organization_id LIMIT 1
"""


async def membership_role(q: Querier, organization_id: UUID, user_id: UUID) -> str | None:
    role: str | None = await q.fetch_value(SELECT_MEMBERSHIP_ROLE, (organization_id, user_id))
    return role


@dataclass(frozen=True, slots=True)
class ActiveOrganizationRow:
    id: UUID
    slug: str
    name: str
    role: str


SELECT_ACTIVE_ORGANIZATION = """
SELECT o.id, o.slug, o.name, m.role
  FROM platform.organizations o
  JOIN identity.memberships m ON m.organization_id = o.id AND m.user_id = %s
 WHERE o.id = %s
"""


async def active_organization(
    q: Querier, user_id: UUID, organization_id: UUID
) -> ActiveOrganizationRow | None:
    """The organization a user acts in, with their role there; None once they left it."""
    return await q.fetch_one(
        SELECT_ACTIVE_ORGANIZATION, (user_id, organization_id), row=ActiveOrganizationRow
    )


async def first_organization(q: Querier, user_id: UUID) -> UUID | None:
    found: UUID | None = await q.fetch_value(SELECT_FIRST_MEMBERSHIP, (user_id,))
    return found


@dataclass(frozen=True, slots=True)
class AccessRow:
    is_superadmin: bool
    role: str | None


SELECT_USER_ACCESS = """
SELECT u.is_superadmin,
       (SELECT m.role FROM identity.memberships m
         WHERE m.user_id = u.id AND m.organization_id = %(org)s) AS role
  FROM identity.users u WHERE u.id = %(user)s
"""


async def user_access(q: Querier, user_id: UUID, organization_id: UUID | None) -> AccessRow | None:
    """Platform flag and membership role, as authentication needs them on every request."""
    return await q.fetch_one(
        SELECT_USER_ACCESS, {"user": user_id, "org": organization_id}, row=AccessRow
    )


# --- API keys (authentication side; management lives in persistence.organizations) ---------


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: UUID
    organization_id: UUID
    role: str
    secret_hash: bytes
    expires_at: datetime | None
    revoked_at: datetime | None


SELECT_API_KEY_BY_PREFIX = """
SELECT id, organization_id, role, secret_hash, expires_at, revoked_at
  FROM identity.api_keys WHERE prefix = %s
"""
# At most one write a minute per key, however busy it is.
TOUCH_API_KEY = """
UPDATE identity.api_keys SET last_used_at = now()
 WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
"""


async def api_key_by_prefix(q: Querier, prefix: str) -> ApiKeyRow | None:
    return await q.fetch_one(SELECT_API_KEY_BY_PREFIX, (prefix,), row=ApiKeyRow)


async def touch_api_key(q: Querier, key_id: UUID) -> None:
    await q.execute(TOUCH_API_KEY, (key_id,))


# --- refresh tokens -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefreshRow:
    id: UUID
    family_id: UUID
    user_id: UUID
    organization_id: UUID | None
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


INSERT_REFRESH = """
INSERT INTO identity.refresh_tokens (family_id, user_id, organization_id, token_hash, expires_at)
VALUES (%(family_id)s, %(user_id)s, %(organization_id)s, %(token_hash)s,
        now() + make_interval(secs => %(ttl_s)s))
"""
# FOR UPDATE: two refreshes racing with one token are serialised; the second sees it rotated.
SELECT_REFRESH_FOR_UPDATE = """
SELECT id, family_id, user_id, organization_id, expires_at, rotated_at, revoked_at
  FROM identity.refresh_tokens WHERE token_hash = %s FOR UPDATE
"""
MARK_ROTATED = "UPDATE identity.refresh_tokens SET rotated_at = now() WHERE id = %s"
REVOKE_FAMILY = """
UPDATE identity.refresh_tokens SET revoked_at = now()
 WHERE family_id = %s AND revoked_at IS NULL
"""
REVOKE_USER_SESSIONS = """
UPDATE identity.refresh_tokens SET revoked_at = now()
 WHERE user_id = %s AND revoked_at IS NULL
"""


async def insert_refresh(
    q: Querier,
    *,
    family_id: UUID,
    user_id: UUID,
    organization_id: UUID | None,
    token_hash: bytes,
    ttl_s: int,
) -> None:
    await q.execute(
        INSERT_REFRESH,
        {
            "family_id": family_id,
            "user_id": user_id,
            "organization_id": organization_id,
            "token_hash": token_hash,
            "ttl_s": ttl_s,
        },
    )


async def refresh_for_update(q: Querier, token_hash: bytes) -> RefreshRow | None:
    return await q.fetch_one(SELECT_REFRESH_FOR_UPDATE, (token_hash,), row=RefreshRow)


async def mark_rotated(q: Querier, refresh_id: UUID) -> None:
    await q.execute(MARK_ROTATED, (refresh_id,))


async def revoke_family(q: Querier, family_id: UUID) -> int:
    return await q.execute(REVOKE_FAMILY, (family_id,))


async def revoke_user_sessions(q: Querier, user_id: UUID) -> int:
    return await q.execute(REVOKE_USER_SESSIONS, (user_id,))


# --- single-use mail links ------------------------------------------------------------------

INSERT_MAIL_LINK = """
INSERT INTO identity.action_tokens (token_hash, user_id, purpose, expires_at)
VALUES (%(token_hash)s, %(user_id)s, %(purpose)s, now() + make_interval(secs => %(ttl_s)s))
"""
CONSUME_MAIL_LINK = """
UPDATE identity.action_tokens SET used_at = now()
 WHERE token_hash = %s AND purpose = ANY(%s) AND used_at IS NULL AND expires_at > now()
RETURNING user_id, purpose
"""
SELECT_PENDING_MAIL_LINK = """
SELECT user_id, purpose FROM identity.action_tokens
 WHERE token_hash = %s AND purpose = ANY(%s) AND used_at IS NULL AND expires_at > now()
"""
RETIRE_MAIL_LINKS = """
UPDATE identity.action_tokens SET used_at = now()
 WHERE user_id = %s AND purpose = ANY(%s) AND used_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class ActionRow:
    user_id: UUID
    purpose: str


async def insert_action_token(
    q: Querier, *, token_hash: bytes, user_id: UUID, purpose: str, ttl_s: int
) -> None:
    await q.execute(
        INSERT_MAIL_LINK,
        {"token_hash": token_hash, "user_id": user_id, "purpose": purpose, "ttl_s": ttl_s},
    )


async def consume_action_token(
    q: Querier, token_hash: bytes, purposes: list[str]
) -> ActionRow | None:
    return await q.fetch_one(CONSUME_MAIL_LINK, (token_hash, purposes), row=ActionRow)


async def pending_action_token(
    q: Querier, token_hash: bytes, purposes: list[str]
) -> ActionRow | None:
    return await q.fetch_one(SELECT_PENDING_MAIL_LINK, (token_hash, purposes), row=ActionRow)


async def retire_action_tokens(q: Querier, user_id: UUID, purposes: list[str]) -> None:
    """Older links of these kinds stop working once one is used."""
    await q.execute(RETIRE_MAIL_LINKS, (user_id, purposes))


# --- mail outbox ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailRow:
    id: int
    recipient: str
    subject: str
    body: str
    attempts: int


INSERT_MAIL = """
INSERT INTO identity.email_outbox (user_id, recipient, subject, body)
VALUES (%(user_id)s, %(recipient)s, %(subject)s, %(body)s)
"""
# SKIP LOCKED: several senders (processes) share the outbox without sending a mail twice.
CLAIM_MAIL = """
UPDATE identity.email_outbox m
   SET claimed_until = now() + make_interval(secs => %(lease_s)s)
 WHERE m.id IN (SELECT id FROM identity.email_outbox
                 WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < %(max)s
                   AND (claimed_until IS NULL OR claimed_until < now())
                 ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING m.id, m.recipient, m.subject, m.body, m.attempts
"""
MARK_MAIL_SENT = """
UPDATE identity.email_outbox
   SET sent_at = now(), body = NULL, attempts = attempts + 1, last_error = NULL,
       claimed_until = NULL
 WHERE id = %s
"""
MARK_MAIL_FAILED = """
UPDATE identity.email_outbox
   SET attempts = attempts + 1, last_error = %(error)s, claimed_until = NULL,
       next_attempt_at = now() + make_interval(secs => %(delay_s)s)
 WHERE id = %(id)s
"""


async def enqueue_mail(
    q: Querier, *, user_id: UUID | None, recipient: str, subject: str, body: str
) -> None:
    await q.execute(
        INSERT_MAIL, {"user_id": user_id, "recipient": recipient, "subject": subject, "body": body}
    )


async def claim_mail(q: Querier, *, limit: int, max_attempts: int, lease_s: float) -> list[MailRow]:
    """Due mail, leased to the caller for `lease_s` (the claim commits with its transaction)."""
    params = {"limit": limit, "max": max_attempts, "lease_s": lease_s}
    return await q.fetch_all(CLAIM_MAIL, params, row=MailRow)


async def mark_mail_sent(q: Querier, mail_id: int) -> None:
    await q.execute(MARK_MAIL_SENT, (mail_id,))


async def mark_mail_failed(q: Querier, mail_id: int, *, error: str, delay_s: int) -> None:
    await q.execute(MARK_MAIL_FAILED, {"id": mail_id, "error": error[:500], "delay_s": delay_s})


# --- users of an external identity provider (owner pool) ------------------------------------

USER_BY_EXTERNAL = "SELECT id FROM identity.users WHERE external_subject = %s"
LINK_EXTERNAL = """
UPDATE identity.users SET external_subject = %(subject)s, last_login_at = now()
 WHERE email = %(email)s AND external_subject IS NULL AND email_verified_at IS NOT NULL
RETURNING id
"""
INSERT_EXTERNAL = """
INSERT INTO identity.users (email, display_name, external_subject, email_verified_at,
                            last_login_at)
VALUES (%(email)s, %(name)s, %(subject)s, CASE WHEN %(verified)s THEN now() END, now())
ON CONFLICT DO NOTHING
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class _UserId:
    id: UUID


async def user_by_external_subject(q: Querier, subject: str) -> UUID | None:
    found = await q.fetch_one(USER_BY_EXTERNAL, (subject,), row=_UserId)
    return found.id if found else None


async def link_external(q: Querier, subject: str, email: str) -> UUID | None:
    """The verified local account with this address, now also known by `subject`."""
    found = await q.fetch_one(LINK_EXTERNAL, {"subject": subject, "email": email}, row=_UserId)
    return found.id if found else None


async def insert_external(
    q: Querier, subject: str, *, email: str, name: str, verified: bool
) -> UUID | None:
    """A new account for `subject`; None when the address or the subject is taken."""
    params = {"subject": subject, "email": email, "name": name, "verified": verified}
    found = await q.fetch_one(INSERT_EXTERNAL, params, row=_UserId)
    return found.id if found else None
