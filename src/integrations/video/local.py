"""The development provider: a room is a URL on a base the developer chooses; no network.

Join tokens are JWTs signed with a secret of this process, so they have the shape a real
provider's have (room, owner flag, expiry) and anything reading them can check those claims.
"""

from __future__ import annotations

import datetime as dt
import secrets

import jwt

from carebase.integrations.video import JoinToken, UrlRooms


class LocalVideo(UrlRooms):
    def __init__(self, base_url: str, *, secret: bytes | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret or secrets.token_bytes(32)

    async def join_token(
        self, room: str, *, user_id: str, user_name: str, is_owner: bool, expires_at: dt.datetime
    ) -> JoinToken:
        claims = {
            "r": room,
            "ud": user_id,
            "u": user_name,
            "o": is_owner,
            "iat": int(dt.datetime.now(dt.UTC).timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        return JoinToken(jwt.encode(claims, self._secret, algorithm="HS256"), expires_at)
