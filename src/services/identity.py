"""Accounts and sessions: register, sign in, refresh, sign out, verify an address, reset a password.

Everything before authentication has no tenant, so those verbs use the owner pool
(`db.admin_transaction()`); the profile verbs run as the user under row-level security.
Password hashing runs outside any transaction, so a connection is never held for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode
from uuid import UUID

import structlog

from carebase.errors import (
    FieldError,
    NotFound,
    PreconditionFailed,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)
from carebase.persistence import identity
from carebase.persistence.db import Database, Querier
from carebase.principal import Origin, Principal
from carebase.security import credentials, passwords
from carebase.security.events import SecurityEvents
from carebase.security.lockout import Lockout
from carebase.security.tokens import TokenService
from carebase.services.audit import record

_log = structlog.get_logger("carebase.identity")

VERIFY_TTL_S = 24 * 3600
RESET_TTL_S = 3600
INVITATION_TTL_S = 7 * 24 * 3600
WRONG_CREDENTIALS = "The email or password is wrong."
BAD_LINK = "The link is invalid, used or expired; ask for a new one."


@dataclass(frozen=True, slots=True)
class AccessGrant:
    access_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Session:
    access: AccessGrant
    refresh_token: str
    refresh_expires_in: int


@dataclass(frozen=True, slots=True)
class MeView:
    user: identity.UserRow
    organization: identity.ActiveOrganizationRow | None


class Links:
    """Where mailed links point: the web app, which calls the API with the token."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")

    def __call__(self, path: str, token: str) -> str:
        return f"{self._base}{path}?{urlencode({'token': token})}"


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def queue_action_mail(
    q: Querier,
    *,
    user_id: UUID,
    email: str,
    purpose: str,
    ttl_s: int,
    subject: str,
    body: str,
    link_path: str,
    links: Links,
) -> None:
    """A single-use link (stored hashed) and the mail that carries it where `body` says `{link}`."""
    token = credentials.new_secret()
    await identity.insert_action_token(
        q, token_hash=credentials.digest(token), user_id=user_id, purpose=purpose, ttl_s=ttl_s
    )
    await identity.enqueue_mail(
        q,
        user_id=user_id,
        recipient=email,
        subject=subject,
        body=body.replace("{link}", links(link_path, token)),
    )


VERIFY_MAIL = (
    "Confirm your Carebase address",
    "Hello,\n\nconfirm this address for your Carebase account:\n\n{link}\n\n"
    "The link works once, for 24 hours. If you did not sign up, ignore this mail.\n",
)
ALREADY_REGISTERED_MAIL = (
    "Someone tried to sign up with your address",
    "Hello,\n\nsomeone tried to create a Carebase account with this address, which already "
    "has one. If it was you, sign in or reset your password. Otherwise, ignore this mail.\n",
)
RESET_MAIL = (
    "Reset your Carebase password",
    "Hello,\n\nset a new Carebase password here:\n\n{link}\n\n"
    "The link works once, for one hour. If you did not ask for it, ignore this mail.\n",
)


class IdentityService:
    def __init__(
        self,
        *,
        db: Database,
        tokens: TokenService,
        passwords: passwords.Passwords,
        lockout: Lockout,
        links: Links,
        refresh_ttl_s: int,
        security: SecurityEvents | None = None,
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._passwords = passwords
        self._lockout = lockout
        self._links = links
        self._refresh_ttl_s = refresh_ttl_s
        self._security = security

    # --- accounts ---------------------------------------------------------------------------

    async def register(
        self, *, email: str, password: str, display_name: str | None, locale: str | None
    ) -> None:
        email = normalise_email(email)
        _raise_if_weak(password, email)
        # Hashed whether or not the address is taken, so both answers take as long.
        password_hash = await self._passwords.hash(password)
        async with self._db.admin_transaction() as q:
            user_id = await identity.insert_user(
                q,
                email=email,
                display_name=(display_name or "").strip(),
                locale=locale or "en",
                password_hash=password_hash,
            )
            if user_id is None:
                existing = await identity.credential_by_email(q, email)
                subject, body = ALREADY_REGISTERED_MAIL
                await identity.enqueue_mail(
                    q,
                    user_id=existing.id if existing else None,
                    recipient=email,
                    subject=subject,
                    body=body,
                )
                return
            await self._queue_verification(q, user_id, email)

    async def login(
        self,
        *,
        email: str,
        password: str,
        organization_id: UUID | None,
        origin: Origin | None = None,
    ) -> Session:
        email = normalise_email(email)
        try:
            await self._lockout.check(email)
        except RateLimited:
            self._security_event("login_failed", None, origin, {"reason": "locked"})
            raise
        async with self._db.admin_transaction() as q:
            found = await identity.credential_by_email(q, email)
        stored = found.password_hash if found else None
        if not await self._passwords.verify(stored, password) or found is None:
            await self._lockout.failed(email)
            reason = "wrong_password" if found else "unknown_account"
            self._security_event(
                "login_failed", found.id if found else None, origin, {"reason": reason}
            )
            raise Unauthenticated(WRONG_CREDENTIALS)
        await self._lockout.clear(email)
        rehashed = (
            await self._passwords.hash(password)
            if stored and self._passwords.needs_rehash(stored)
            else None
        )
        async with self._db.admin_transaction() as q:
            organization, role = await self._choose_organization(
                q, found, organization_id, pointer="/body/organization_id"
            )
            await identity.record_login(q, found.id, rehashed=rehashed)
            return await self._start_session(
                q, found.id, organization, role, family_id=uuid.uuid4()
            )

    async def refresh(
        self, *, refresh_token: str, organization_id: UUID | None, origin: Origin | None = None
    ) -> Session:
        reused: UUID | None = None
        reused_by: UUID | None = None
        async with self._db.admin_transaction() as q:
            row = await identity.refresh_for_update(q, credentials.digest(refresh_token))
            if row is not None and row.rotated_at is not None and row.revoked_at is None:
                # Only a copy of a token already exchanged can arrive here: end every
                # session of the family, then refuse (after the commit keeps the revocation).
                await identity.revoke_family(q, row.family_id)
                reused, reused_by = row.family_id, row.user_id
            elif row is not None and row.revoked_at is None and not _expired(row):
                found = await identity.credential_by_id(q, row.user_id)
                if found is not None:
                    wanted = organization_id or row.organization_id
                    organization, role = await self._choose_organization(
                        q,
                        found,
                        wanted,
                        pointer="/body/organization_id",
                        strict=bool(organization_id),
                    )
                    await identity.mark_rotated(q, row.id)
                    return await self._start_session(
                        q, found.id, organization, role, family_id=row.family_id
                    )
        if reused is not None:
            _log.warning("refresh_token_reused", family_id=str(reused))
            self._security_event(
                "refresh_token_reused", reused_by, origin, {"family_id": str(reused)}
            )
        raise Unauthenticated("The refresh token is invalid, expired or revoked.")

    def _security_event(
        self, kind: str, user_id: UUID | None, origin: Origin | None, detail: dict[str, str]
    ) -> None:
        if self._security is not None:
            self._security.record(
                kind,
                actor_user_id=user_id,
                ip=origin.ip if origin else None,
                request_id=origin.request_id if origin else None,
                detail=detail,
            )

    async def logout(self, *, refresh_token: str) -> None:
        async with self._db.admin_transaction() as q:
            row = await identity.refresh_for_update(q, credentials.digest(refresh_token))
            if row is not None:
                await identity.revoke_family(q, row.family_id)

    # --- mailed links -----------------------------------------------------------------------

    async def request_verification(self, principal: Principal) -> None:
        user_id = _user_of(principal)
        async with self._db.transaction(principal) as q:
            found = await identity.user(q, user_id)
            if found is None or found.email_verified_at is not None:
                return
            await self._queue_verification(q, user_id, found.email)

    async def confirm_verification(self, *, token: str) -> None:
        async with self._db.admin_transaction() as q:
            used = await identity.consume_action_token(
                q, credentials.digest(token), ["verify_email"]
            )
            if used is None:
                raise _bad_link()
            await identity.mark_email_verified(q, used.user_id)

    async def forgot_password(self, *, email: str) -> None:
        email = normalise_email(email)
        async with self._db.admin_transaction() as q:
            found = await identity.credential_by_email(q, email)
            if found is None:
                return
            await identity.retire_action_tokens(q, found.id, ["reset_password"])
            subject, body = RESET_MAIL
            await queue_action_mail(
                q,
                user_id=found.id,
                email=email,
                purpose="reset_password",
                ttl_s=RESET_TTL_S,
                subject=subject,
                body=body,
                link_path="/reset-password",
                links=self._links,
            )

    async def reset_password(self, *, token: str, password: str) -> None:
        """Sets the password from a reset or invitation link and ends every other session."""
        digest = credentials.digest(token)
        purposes = ["reset_password", "invitation"]
        # The policy needs the address, and a refused password must not burn the link:
        # look first, consume in the transaction that sets the password.
        async with self._db.admin_transaction() as q:
            pending = await identity.pending_action_token(q, digest, purposes)
            found = await identity.credential_by_id(q, pending.user_id) if pending else None
        if found is None:
            raise _bad_link()
        _raise_if_weak(password, found.email)
        password_hash = await self._passwords.hash(password)
        async with self._db.admin_transaction() as q:
            used = await identity.consume_action_token(q, digest, purposes)
            if used is None:
                raise _bad_link()
            await identity.set_password(
                q, used.user_id, password_hash, verify=used.purpose == "invitation"
            )
            await identity.retire_action_tokens(q, used.user_id, purposes)
            await identity.revoke_user_sessions(q, used.user_id)
        await self._lockout.clear(found.email)

    # --- the signed-in user -----------------------------------------------------------------

    async def me(self, principal: Principal) -> MeView:
        q = self._db.reader(principal)
        return await self._me(q, principal)

    async def update_me(
        self,
        principal: Principal,
        *,
        version: int | None,
        display_name: str | None,
        locale: str | None,
    ) -> MeView:
        user_id = _user_of(principal)
        async with self._db.transaction(principal) as q:
            changed = await identity.update_profile(
                q,
                user_id,
                version=version,
                display_name=display_name.strip() if display_name is not None else None,
                locale=locale,
            )
            if changed is None:
                if await identity.user(q, user_id) is None:
                    raise NotFound("The user no longer exists.")
                raise PreconditionFailed("The profile changed since it was read; read it again.")
            await record(
                q,
                principal,
                action="user.updated",
                entity_type="user",
                entity_id=user_id,
                changed_fields=[
                    name
                    for name, value in (("display_name", display_name), ("locale", locale))
                    if value is not None
                ],
            )
            return await self._me(q, principal)

    async def switch_organization(self, principal: Principal, organization_id: UUID) -> AccessGrant:
        user_id = _user_of(principal)
        # Acting as the user alone: row-level security shows their own memberships.
        as_user = Principal(user_id=user_id, organization_id=None, role=None)
        async with self._db.transaction(as_user) as q:
            role = await identity.membership_role(q, organization_id, user_id)
            if role is None:
                raise ValidationFailed([_not_a_member("/body/organization_id")])
            await identity.set_default_organization(q, user_id, organization_id)
        return self._access(user_id, organization_id, role)

    # --- helpers ----------------------------------------------------------------------------

    async def _queue_verification(self, q: Querier, user_id: UUID, email: str) -> None:
        subject, body = VERIFY_MAIL
        await queue_action_mail(
            q,
            user_id=user_id,
            email=email,
            purpose="verify_email",
            ttl_s=VERIFY_TTL_S,
            subject=subject,
            body=body,
            link_path="/verify-email",
            links=self._links,
        )

    async def _me(self, q: Querier, principal: Principal) -> MeView:
        user_id = _user_of(principal)
        found = await identity.user(q, user_id)
        if found is None:
            raise NotFound("The user no longer exists.")
        organization = None
        if principal.organization_id is not None:
            organization = await identity.active_organization(q, user_id, principal.organization_id)
        return MeView(found, organization)

    async def _choose_organization(
        self,
        q: Querier,
        user: identity.CredentialRow,
        wanted: UUID | None,
        *,
        pointer: str,
        strict: bool = True,
    ) -> tuple[UUID | None, str | None]:
        """The organization to act in and the role there, from the database membership."""
        if wanted is not None:
            role = await identity.membership_role(q, wanted, user.id)
            if role is not None:
                return wanted, role
            if strict:
                raise ValidationFailed([_not_a_member(pointer)])
        for candidate in (user.default_org_id, await identity.first_organization(q, user.id)):
            if candidate is not None:
                role = await identity.membership_role(q, candidate, user.id)
                if role is not None:
                    return candidate, role
        return None, None

    async def _start_session(
        self,
        q: Querier,
        user_id: UUID,
        organization_id: UUID | None,
        role: str | None,
        *,
        family_id: UUID,
    ) -> Session:
        refresh_token = credentials.new_secret()
        await identity.insert_refresh(
            q,
            family_id=family_id,
            user_id=user_id,
            organization_id=organization_id,
            token_hash=credentials.digest(refresh_token),
            ttl_s=self._refresh_ttl_s,
        )
        return Session(
            access=self._access(user_id, organization_id, role),
            refresh_token=refresh_token,
            refresh_expires_in=self._refresh_ttl_s,
        )

    def _access(self, user_id: UUID, organization_id: UUID | None, role: str | None) -> AccessGrant:
        token = self._tokens.issue(
            subject=str(user_id),
            organization_id=str(organization_id) if organization_id else None,
            role=role,
        )
        return AccessGrant(token, self._tokens.keyring.token_ttl_s)


def _raise_if_weak(password: str, email: str) -> None:
    problems = passwords.policy_errors(password, email=email)
    if problems:
        raise ValidationFailed(problems)


def _user_of(principal: Principal) -> UUID:
    if principal.user_id is None:
        raise Unauthenticated("This operation needs a signed-in user, not an API key.")
    return principal.user_id


def _bad_link() -> ValidationFailed:
    return ValidationFailed([FieldError("/body/token", BAD_LINK, "invalid_token")])


def _not_a_member(pointer: str) -> FieldError:
    # The same words for an organization that does not exist and one the user is not in.
    return FieldError(pointer, "You are not a member of this organization.", "not_a_member")


def _expired(row: identity.RefreshRow) -> bool:
    return row.expires_at <= datetime.now(UTC)
