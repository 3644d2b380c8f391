"""Jitsi Meet with JWT authentication (prosody's token auth): a room exists while people are in
it, so there is nothing to create or delete; a join token names the room, the user and whether
they moderate, signed with the app's secret."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import jwt

from carebase.integrations.video import JoinToken, UrlRooms


class JitsiVideo(UrlRooms):
    def __init__(self, *, base_url: str, app_id: str, app_secret: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self._secret = app_secret
        self.domain = urlsplit(self.base_url).hostname or "*"

    async def join_token(
        self, room: str, *, user_id: str, user_name: str, is_owner: bool, expires_at: dt.datetime
    ) -> JoinToken:
        now = int(dt.datetime.now(dt.UTC).timestamp())
        claims = {
            "aud": "jitsi",
            "iss": self.app_id,
            "sub": self.domain,
            "room": room,
            "iat": now,
            "nbf": now - 10,
            "exp": int(expires_at.timestamp()),
            "context": {"user": {"id": user_id, "name": user_name, "moderator": is_owner}},
        }
        return JoinToken(jwt.encode(claims, self._secret, algorithm="HS256"), expires_at)
