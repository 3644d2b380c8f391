"""Daily.co: private rooms through its REST API, join tokens self-signed.

A room is created private with `nbf`/`exp` and ejects everyone at `exp`; creating a room whose
name exists updates its times instead (a rescheduled appointment keeps its room). Deleting a
room that is already gone (404) counts as done. 429 and server errors are `VideoUnavailable`
(with Daily's `Retry-After` when it sends one) for the worker to retry with backoff; other
refusals are `VideoRefused`, with Daily's `{error, info}`.

Join tokens are JWTs signed with the API key (Daily's self-signed tokens: `r` room, `d`
domain id, `o` owner, `ejt` eject at token expiry); the domain id comes from the settings or,
once, from Daily's domain endpoint.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import jwt

from carebase.integrations.video import JoinToken, Room, VideoRefused, VideoUnavailable


class DailyVideo:
    def __init__(
        self,
        *,
        api_key: str,
        api_url: str = "https://api.daily.co/v1",
        domain_id: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        self._domain_id = domain_id
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def create_room(
        self, name: str, *, not_before: dt.datetime, expires_at: dt.datetime
    ) -> Room:
        properties = {
            "nbf": int(not_before.timestamp()),
            "exp": int(expires_at.timestamp()),
            "eject_at_room_exp": True,
        }
        answer = await self._call(
            "POST", "/rooms", json={"name": name, "privacy": "private", "properties": properties}
        )
        if answer.status_code == 400 and "already exists" in _info(answer):
            answer = await self._call("POST", f"/rooms/{name}", json={"properties": properties})
        document = self._ok(answer)
        return Room(name, str(document["url"]), not_before, expires_at)

    async def delete_room(self, name: str) -> None:
        answer = await self._call("DELETE", f"/rooms/{name}")
        if answer.status_code != 404:
            self._ok(answer)

    async def join_token(
        self, room: str, *, user_id: str, user_name: str, is_owner: bool, expires_at: dt.datetime
    ) -> JoinToken:
        claims = {
            "r": room,
            "d": await self.domain_id(),
            "iat": int(dt.datetime.now(dt.UTC).timestamp()),
            "exp": int(expires_at.timestamp()),
            "o": is_owner,
            "u": user_name[:128],
            "ud": user_id,
            "ejt": True,
        }
        return JoinToken(jwt.encode(claims, self._api_key, algorithm="HS256"), expires_at)

    async def domain_id(self) -> str:
        if self._domain_id is None:
            document = self._ok(await self._call("GET", "/"))
            self._domain_id = str(document["domain_id"])
        return self._domain_id

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise VideoUnavailable(f"Daily unreachable: {type(exc).__name__}") from exc

    @staticmethod
    def _ok(answer: httpx.Response) -> dict[str, Any]:
        if answer.status_code == 429 or answer.status_code >= 500:
            retry = answer.headers.get("retry-after", "")
            raise VideoUnavailable(
                f"Daily answered {answer.status_code}: {_info(answer)}",
                retry_after_s=float(retry) if retry.isdigit() else None,
            )
        if answer.status_code >= 400:
            raise VideoRefused(f"Daily refused ({answer.status_code}): {_info(answer)}")
        document: dict[str, Any] = answer.json()
        return document


def _info(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    if not isinstance(body, dict):
        return ""
    return f"{body.get('error', '')}: {body.get('info', '')}"[:300]
