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
import ssl
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from uuid import UUID

import aiohttp
from yarl import URL

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
    and one slow receiver holds only its own connections.

    aiohttp, not httpx (used elsewhere): on this path it costs ~90 µs of CPU a request against
    httpx's ~890 µs (measured here, bench/webhooks.py), the difference between ~1,000 deliveries
    a second from one worker and ~150."""

    def __init__(
        self,
        *,
        per_endpoint: int = 10,
        max_endpoints: int = 1000,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        total_timeout_s: float = TOTAL_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._per_endpoint = per_endpoint
        self._max_endpoints = max_endpoints
        self._timeout = aiohttp.ClientTimeout(total=total_timeout_s, connect=connect_timeout_s)
        self._total_timeout_s = total_timeout_s
        self._ssl = ssl_context or ssl.create_default_context()
        self._sessions: OrderedDict[UUID, aiohttp.ClientSession] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _session(self, endpoint_id: UUID) -> aiohttp.ClientSession:
        session = self._sessions.get(endpoint_id)
        if session is not None:
            self._sessions.move_to_end(endpoint_id)
            return session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._per_endpoint, use_dns_cache=False, ssl=self._ssl
            ),
            timeout=self._timeout,
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self._sessions[endpoint_id] = session
        while len(self._sessions) > self._max_endpoints:
            _, oldest = self._sessions.popitem(last=False)
            task = asyncio.create_task(oldest.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return session

    async def post(
        self, endpoint_id: UUID, destination: Destination, headers: dict[str, str], body: bytes
    ) -> Response:
        """Tries the checked addresses in turn (at most 3) while none accepts a connection:
        nothing was sent to one that refused. Any later failure ends the attempt."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._total_timeout_s):
                for address in destination.addresses[:3]:
                    outcome = await self._post_to(endpoint_id, destination, address, headers, body)
                    if outcome is not None:
                        return replace(outcome, duration_ms=_ms(started))
        except TimeoutError:
            return Response(None, "timeout", None, None, _ms(started))
        return Response(None, "connection failed", None, None, _ms(started))

    async def _post_to(
        self,
        endpoint_id: UUID,
        destination: Destination,
        address: Address,
        headers: dict[str, str],
        body: bytes,
    ) -> Response | None:
        """The response, or None when the address refused the connection (try the next)."""
        default_port = 443 if destination.scheme == "https" else 80
        host = _bracketed(destination.host)
        if destination.port != default_port:
            host = f"{host}:{destination.port}"
        sent = {
            **headers,
            "Host": host,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        https = destination.scheme == "https"
        try:
            async with self._session(endpoint_id).post(
                pinned_url(destination, address),
                data=body,
                headers=sent,
                allow_redirects=False,
                server_hostname=destination.host if https else None,
            ) as reply:
                excerpt = await reply.content.read(EXCERPT_BYTES)
                status, retry_after = reply.status, reply.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = _failure(exc)
            return None if failure is None else Response(None, failure, None, None, 0)
        text = excerpt.decode("utf-8", errors="replace").strip() or None
        return Response(status, None, retry_after_s(retry_after), text, 0)

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()
        for task in list(self._closing):
            await task


def sendable(url: str) -> bool:
    """Whether the HTTP client can send to `url` at all."""
    try:
        return bool(URL(url).host)
    except (ValueError, TypeError):
        return False


def pinned_url(destination: Destination, address: Address) -> str:
    """The destination's URL with its host replaced by a checked address."""
    return str(URL(destination.url).with_host(str(address)).with_port(destination.port))


# aiohttp's failures, most specific first; None: refused before a byte was sent (the next
# checked address may be tried).
_FAILURES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str | None], ...] = (
    (aiohttp.ClientConnectorCertificateError, "tls error: certificate"),
    (aiohttp.ClientSSLError, "tls error"),
    (aiohttp.ConnectionTimeoutError, "connect timeout"),
    (aiohttp.ClientConnectorError, None),
    ((aiohttp.ServerTimeoutError, TimeoutError), "timeout"),
    ((aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError), "connection reset"),
)


def _failure(exc: BaseException) -> str | None:
    """What went wrong, in a few words (None: the address refused the connection)."""
    for kinds, words in _FAILURES:
        if isinstance(exc, kinds):
            return words
    return f"protocol error: {type(exc).__name__}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
