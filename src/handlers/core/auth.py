"""Handlers for openapi/core/auth.yaml."""

from __future__ import annotations

import time

from carebase.generated.models import core as api
from carebase.principal import Principal
from carebase.security.tokens import TokenService
from carebase.services.identity import IdentityService, MeView, Session
from carebase.web.results import NO_STORE, Reply, accepted, no_content, ok, resource

# Long enough to spare the endpoint, short next to the token lifetime a rotation waits out.
JWKS_MAX_AGE_S = 300
ACCEPTED = api.Accepted(
    status=api.Status.accepted,
    detail="If the address can receive mail, a message is on its way.",
)


class AuthHandlers:
    def __init__(self, *, tokens: TokenService, identity: IdentityService) -> None:
        self._tokens = tokens
        self._identity = identity

    async def get_jwks(self) -> Reply:
        key_set = api.JsonWebKeySet.model_validate(self._tokens.keyring.jwks(int(time.time())))
        return ok(key_set, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"})

    async def register(self, body: api.RegisterRequest) -> Reply:
        await self._identity.register(
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            locale=body.locale,
        )
        return accepted(ACCEPTED)

    async def login(self, principal: Principal, *, body: api.LoginRequest) -> Reply:
        session = await self._identity.login(
            email=body.email,
            password=body.password,
            organization_id=body.organization_id,
            origin=principal.origin,
        )
        return _session(session)

    async def refresh_tokens(self, principal: Principal, *, body: api.RefreshRequest) -> Reply:
        session = await self._identity.refresh(
            refresh_token=body.refresh_token,
            organization_id=body.organization_id,
            origin=principal.origin,
        )
        return _session(session)

    async def logout(self, body: api.LogoutRequest) -> Reply:
        await self._identity.logout(refresh_token=body.refresh_token)
        return no_content()

    async def request_email_verification(self, principal: Principal) -> Reply:
        await self._identity.request_verification(principal)
        return accepted(ACCEPTED)

    async def confirm_email_verification(self, body: api.ActionTokenRequest) -> Reply:
        await self._identity.confirm_verification(token=body.token)
        return no_content()

    async def forgot_password(self, body: api.ForgotPasswordRequest) -> Reply:
        await self._identity.forgot_password(email=body.email)
        return accepted(ACCEPTED)

    async def reset_password(self, body: api.ResetPasswordRequest) -> Reply:
        await self._identity.reset_password(token=body.token, password=body.password)
        return no_content()

    async def get_me(self, principal: Principal) -> Reply:
        return _me(await self._identity.me(principal))

    async def update_me(
        self, principal: Principal, if_match: int | None, body: api.MeUpdate
    ) -> Reply:
        view = await self._identity.update_me(
            principal, version=if_match, display_name=body.display_name, locale=body.locale
        )
        return _me(view)

    async def switch_organization(
        self, principal: Principal, body: api.SwitchOrganizationRequest
    ) -> Reply:
        grant = await self._identity.switch_organization(principal, body.organization_id)
        token = api.AccessToken(
            access_token=grant.access_token,
            token_type=api.TokenType.Bearer,
            expires_in=grant.expires_in,
        )
        return ok(token, headers=NO_STORE)


def _session(session: Session) -> Reply:
    pair = api.TokenPair(
        access_token=session.access.access_token,
        token_type=api.TokenType.Bearer,
        expires_in=session.access.expires_in,
        refresh_token=session.refresh_token,
        refresh_expires_in=session.refresh_expires_in,
    )
    return ok(pair, headers=NO_STORE)


def _me(view: MeView) -> Reply:
    user = view.user
    organization = view.organization
    me = api.Me(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        locale=user.locale,
        email_verified=user.email_verified_at is not None,
        is_superadmin=user.is_superadmin,
        organization=api.ActiveOrganization(
            id=organization.id,
            slug=organization.slug,
            name=organization.name,
            role=api.Role(organization.role),
        )
        if organization
        else None,
        version=user.version,
    )
    return resource(me, version=user.version, headers=NO_STORE)
