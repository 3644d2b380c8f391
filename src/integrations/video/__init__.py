"""Video rooms for tele-rehab sessions, behind one protocol.

- `local` (the development default): a room URL on a configurable base; no network.
- `daily`: Daily.co's REST API creates and deletes private rooms; join tokens are self-signed
  (HS256 with the API key) and never stored.
- `jitsi`: rooms exist when joined; access is a JWT signed with the app secret.

Rooms are created and deleted by the scheduling worker from tasks written with the booking,
never inside a request; join tokens are minted per request and expire no later than the room.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Room:
    name: str
    url: str
    not_before: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class JoinToken:
    token: str
    expires_at: dt.datetime


class VideoUnavailable(Exception):
    """The provider could not do it now (down, rate-limited, a server error): try again later.
    `retry_after_s` is the provider's own hint, when it gave one."""

    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class VideoRefused(Exception):
    """The provider refused the request for good (bad credentials, an invalid room)."""


class VideoProvider(Protocol):
    async def create_room(
        self, name: str, *, not_before: dt.datetime, expires_at: dt.datetime
    ) -> Room:
        """Create the room, or bring an existing one of that name to these times."""
        ...

    async def delete_room(self, name: str) -> None:
        """Delete the room; one that is already gone counts as deleted."""
        ...

    async def join_token(
        self, room: str, *, user_id: str, user_name: str, is_owner: bool, expires_at: dt.datetime
    ) -> JoinToken: ...


class UrlRooms:
    """Providers whose rooms exist while someone is in them (a URL under a base): creating is
    naming the URL, deleting has nothing to do."""

    base_url: str

    async def create_room(
        self, name: str, *, not_before: dt.datetime, expires_at: dt.datetime
    ) -> Room:
        return Room(name, f"{self.base_url}/{name}", not_before, expires_at)

    async def delete_room(self, name: str) -> None:
        return None
