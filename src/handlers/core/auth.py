"""Handlers for openapi/core/auth.yaml."""

from __future__ import annotations

import time
from typing import Any

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models import core as api
from carebase.handlers.context import expected_version, parse, principal
from carebase.security.tokens import TokenService
from carebase.services.identity import IdentityService, MeView, Session
from carebase.web.etags import etag
from carebase.web.responses import json_response, no_content

# Long enough to spare the endpoint, short next to the token lifetime a rotation waits out.
JWKS_MAX_AGE_S = 300
ACCEPTED = api.Accepted(
    status=api.Status.accepted,
    detail="If the address can receive mail, a message is on its way.",
)
# Tokens must never sit in a shared cache (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store"}


class AuthHandlers:
    def __init__(self, *, tokens: TokenService, identity: IdentityService) -> None:
        self._tokens = tokens
        self._identity = identity

    async def get_jwks(self) -> ConnexionResponse:
        key_set = api.JsonWebKeySet.model_validate(self._tokens.keyring.jwks(int(time.time())))
        return json_response(
            key_set, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"}
        )

    async def register(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.RegisterRequest, body)
        await self._identity.register(
            email=request.email,
            password=request.password,
            display_name=request.display_name,
            locale=request.locale,
        )
        return json_response(ACCEPTED, status=202)

    async def login(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.LoginRequest, body)
        session = await self._identity.login(
            email=request.email, password=request.password, organization_id=request.organization_id
        )
        return _session(session)

    async def refresh_tokens(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.RefreshRequest, body)
        session = await self._identity.refresh(
            refresh_token=request.refresh_token, organization_id=request.organization_id
        )
        return _session(session)

    async def logout(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.LogoutRequest, body)
        await self._identity.logout(refresh_token=request.refresh_token)
        return no_content()

    async def request_email_verification(self) -> ConnexionResponse:
        await self._identity.request_verification(principal())
        return json_response(ACCEPTED, status=202)

    async def confirm_email_verification(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.ActionTokenRequest, body)
        await self._identity.confirm_verification(token=request.token)
        return no_content()

    async def forgot_password(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.ForgotPasswordRequest, body)
        await self._identity.forgot_password(email=request.email)
        return json_response(ACCEPTED, status=202)

    async def reset_password(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.ResetPasswordRequest, body)
        await self._identity.reset_password(token=request.token, password=request.password)
        return no_content()

    async def get_me(self) -> ConnexionResponse:
        return _me(await self._identity.me(principal()))

    async def update_me(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.MeUpdate, body)
        view = await self._identity.update_me(
            principal(),
            version=expected_version(),
            display_name=request.display_name,
            locale=request.locale,
        )
        return _me(view)

    async def switch_organization(self, body: dict[str, Any]) -> ConnexionResponse:
        request = parse(api.SwitchOrganizationRequest, body)
        grant = await self._identity.switch_organization(principal(), request.organization_id)
        token = api.AccessToken(
            access_token=grant.access_token,
            token_type=api.TokenType.Bearer,
            expires_in=grant.expires_in,
        )
        return json_response(token, headers=NO_STORE)


def _session(session: Session) -> ConnexionResponse:
    pair = api.TokenPair(
        access_token=session.access.access_token,
        token_type=api.TokenType.Bearer,
        expires_in=session.access.expires_in,
        refresh_token=session.refresh_token,
        refresh_expires_in=session.refresh_expires_in,
    )
    return json_response(pair, headers=NO_STORE)


def _me(view: MeView) -> ConnexionResponse:
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
    return json_response(me, headers={"ETag": etag(user.version), "Cache-Control": "no-store"})
