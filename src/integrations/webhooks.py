"""Sending webhooks: Standard Webhooks v1 signatures, and a POST that connects only where the
SSRF guard said it may.

A secret is `whsec_` + base64 of 32 random bytes. Each attempt carries `webhook-id` (the
event id, the same on every retry), `webhook-timestamp` (unix seconds, fresh per attempt) and
`webhook-signature`: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one per secret
that signs (the current one and, during a rotation, the previous one), space-separated. The
body sent is the body signed, byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from uuid import UUID

import httpx

from carebase.security.egress import Address, Destination

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
CONNECT_TIMEOUT_S = 5.0
TOTAL_TIMEOUT_S = 15.0
EXCERPT_BYTES = 1024
USER_AGENT = "Carebase-Webhooks/1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    keys: Sequence[bytes], message_id: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, message_id, timestamp, body) for k in keys),
    }


@dataclass(frozen=True, slots=True)
class Response:
    """What an attempt came back with: a status (any: the caller judges it), or an error."""

    status_code: int | None
    error: str | None
    retry_after_s: float | None
    excerpt: str | None
    duration_ms: int


class WebhookPoster:
    """POSTs to a checked destination, connected to the address that was checked (pinned),
    with the URL's host in `Host` and in TLS SNI (the certificate is checked against it).
    Redirects are never followed; proxies from the environment are ignored. Each endpoint has
    its own connection pool (at most `per_endpoint` connections): a pool never mixes hosts,
    and one slow receiver holds only its own connections."""

    def __init__(
        self,
        *,
        per_endpoint: int = 10,
        max_endpoints: int = 1000,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        total_timeout_s: float = TOTAL_TIMEOUT_S,
        verify: bool = True,
    ) -> None:
        self._per_endpoint = per_endpoint
        self._max_endpoints = max_endpoints
        self._connect_timeout_s = connect_timeout_s
        self._total_timeout_s = total_timeout_s
        self._verify = verify
        self._clients: OrderedDict[UUID, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, endpoint_id: UUID) -> httpx.AsyncClient:
        client = self._clients.get(endpoint_id)
        if client is not None:
            self._clients.move_to_end(endpoint_id)
            return client
        client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=self._per_endpoint, max_keepalive_connections=self._per_endpoint
            ),
            timeout=httpx.Timeout(self._total_timeout_s, connect=self._connect_timeout_s),
            follow_redirects=False,
            trust_env=False,
            verify=self._verify,
        )
        self._clients[endpoint_id] = client
        while len(self._clients) > self._max_endpoints:
            _, oldest = self._clients.popitem(last=False)
            task = asyncio.create_task(oldest.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return client

    async def post(
        self, endpoint_id: UUID, destination: Destination, headers: dict[str, str], body: bytes
    ) -> Response:
        """Tries the checked addresses in turn (at most 3) while none accepts a connection:
        nothing was sent to one that refused. Any later failure ends the attempt."""
        started = time.perf_counter()
        failed = Response(None, "connection failed", None, None, 0)
        try:
            async with asyncio.timeout(self._total_timeout_s):
                for address in destination.addresses[:3]:
                    outcome = await self._post_to(endpoint_id, destination, address, headers, body)
                    if outcome is not None:
                        return replace(outcome, duration_ms=_ms(started))
        except TimeoutError:
            return Response(None, "timeout", None, None, _ms(started))
        return replace(failed, duration_ms=_ms(started))

    async def _post_to(
        self,
        endpoint_id: UUID,
        destination: Destination,
        address: Address,
        headers: dict[str, str],
        body: bytes,
    ) -> Response | None:
        """The response, or None when the address refused the connection (try the next)."""
        url = pinned_url(destination, address)
        default_port = 443 if destination.scheme == "https" else 80
        host = _bracketed(destination.host)
        if destination.port != default_port:
            host = f"{host}:{destination.port}"
        sent = {
            **headers,
            "host": host,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
        client = self._client(endpoint_id)
        try:
            request = client.build_request(
                "POST", url, headers=sent, content=body, extensions=extensions
            )
            reply = await client.send(request, stream=True)
            try:
                excerpt = await _excerpt(reply)
            finally:
                await reply.aclose()
        except httpx.ConnectTimeout:
            return Response(None, "connect timeout", None, None, 0)
        except httpx.TimeoutException:
            return Response(None, "timeout", None, None, 0)
        except httpx.ConnectError as exc:
            kind = _describe(exc)
            return None if kind == "connection failed" else Response(None, kind, None, None, 0)
        except httpx.HTTPError as exc:
            return Response(None, _describe(exc), None, None, 0)
        except OSError as exc:
            return Response(None, f"connection failed: {type(exc).__name__}", None, None, 0)
        retry_after = retry_after_s(reply.headers.get("retry-after"))
        return Response(reply.status_code, None, retry_after, excerpt, 0)

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()
        for task in list(self._closing):
            await task


def sendable(url: str) -> bool:
    """Whether the HTTP client can send to `url` at all (no control characters and the like)."""
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return False
    return True


def pinned_url(destination: Destination, address: Address) -> str:
    """The destination's URL with its host replaced by a checked address."""
    url = httpx.URL(destination.url)
    return str(url.copy_with(host=str(address), port=destination.port))


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _excerpt(reply: httpx.Response) -> str | None:
    taken = b""
    async for chunk in reply.aiter_raw():
        taken += chunk
        if len(taken) >= EXCERPT_BYTES:
            break
    text = taken[:EXCERPT_BYTES].decode("utf-8", errors="replace").strip()
    return text[:EXCERPT_BYTES] or None


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        detail = str(exc).lower()
        if "ssl" in detail or "certificate" in detail or "tls" in detail:
            return "tls error"
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection reset or protocol error"
    return type(exc).__name__


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
