"""Handlers for openapi/core/auth.yaml."""

from __future__ import annotations

import time

from connexion.lifecycle import ConnexionResponse

from carebase.generated.models.core import JsonWebKeySet
from carebase.responses import json_response
from carebase.tokens import TokenService

# Long enough to spare the endpoint, short next to the token lifetime a rotation waits out.
JWKS_MAX_AGE_S = 300


class AuthHandlers:
    def __init__(self, *, tokens: TokenService) -> None:
        self._tokens = tokens

    async def get_jwks(self) -> ConnexionResponse:
        key_set = JsonWebKeySet.model_validate(self._tokens.keyring.jwks(int(time.time())))
        return json_response(
            key_set, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"}
        )
