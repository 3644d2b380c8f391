"""The providers that need no network: room URLs and the claims of their join tokens."""

from __future__ import annotations

import datetime as dt

import jwt

from carebase.integrations.video.jitsi import JitsiVideo
from carebase.integrations.video.local import LocalVideo

START = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
CLOSES = START + dt.timedelta(hours=1, minutes=30)


async def test_local_rooms_are_urls_and_tokens_carry_room_owner_and_expiry() -> None:
    secret = b"s" * 32
    video = LocalVideo("http://localhost:3000/rooms/", secret=secret)
    room = await video.create_room("cb-abc", not_before=START, expires_at=CLOSES)
    assert room.url == "http://localhost:3000/rooms/cb-abc"
    await video.delete_room("cb-abc")  # nothing to delete, and no error
    granted = await video.join_token(
        "cb-abc", user_id="u1", user_name="Dana", is_owner=True, expires_at=CLOSES
    )
    claims = jwt.decode(granted.token, secret, algorithms=["HS256"], options={"verify_exp": False})
    assert (claims["r"], claims["o"], claims["exp"]) == ("cb-abc", True, int(CLOSES.timestamp()))
    assert granted.expires_at == CLOSES


async def test_jitsi_tokens_name_the_room_and_make_only_the_owner_a_moderator() -> None:
    secret = "jitsi-app-secret-for-tests-0123456789"
    video = JitsiVideo(base_url="https://meet.example.org", app_id="carebase", app_secret=secret)
    room = await video.create_room("cb-abc", not_before=START, expires_at=CLOSES)
    assert room.url == "https://meet.example.org/cb-abc"
    for owner in (True, False):
        granted = await video.join_token(
            "cb-abc", user_id="u1", user_name="Ana", is_owner=owner, expires_at=CLOSES
        )
        claims = jwt.decode(
            granted.token,
            secret,
            algorithms=["HS256"],
            audience="jitsi",
            options={"verify_exp": False, "verify_nbf": False},
        )
        assert claims["iss"] == "carebase"
        assert claims["sub"] == "meet.example.org"
        assert claims["room"] == "cb-abc"
        assert claims["context"]["user"]["moderator"] is owner
        assert claims["exp"] == int(CLOSES.timestamp())
