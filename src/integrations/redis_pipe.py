"""A lean Redis client for calls on every request: one connection per process, pipelined.

redis-py spends most of a call in its own machinery — a pool checkout under a condition,
health-check bookkeeping, a timeout context per command — not on the socket (GROUND.md). Here
every caller writes its command onto one shared connection and waits for a future; Redis
answers in order, so replies (parsed by hiredis) resolve the futures first in, first out.
Concurrent callers share the round trip instead of queueing for pooled connections, and the
commands queued in one turn of the event loop leave in one write.

Failure is fast and explicit: a call that gets no reply within `timeout_s` fails with
`RedisUnavailable` (the stalled connection is dropped and every call waiting on it fails with
it), a refused connection fails at once and is not retried for `retry_after_s`, so a Redis
outage costs callers nothing but the decision to fail open or closed.

It speaks to one node (`redis://`, `rediss://`, `unix://`; AUTH and SELECT from the URL).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.connection import parse_url

from carebase.metrics import REDIS_ERRORS

_UNAVAILABLE = REDIS_ERRORS.labels("pipe", "unavailable")
_REPLY_ERRORS = REDIS_ERRORS.labels("pipe", "reply")


class RedisUnavailable(Exception):
    """No answer from Redis: refused, dropped, or slower than the timeout."""


class RedisReplyError(Exception):
    """Redis answered with an error (`NOSCRIPT`, `WRONGTYPE`, …)."""


Arg = bytes | str | int


def encode(args: Sequence[Arg]) -> bytes:
    """A command in RESP: `*<n>` then `$<len>` and the bytes of each argument."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisScript:
    """A Lua script run by its SHA-1 (`EVALSHA`); when Redis has forgotten it (restarted or
    flushed: `NOSCRIPT`), `EVAL` sends the source once and Redis caches it again."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source).hexdigest().encode()  # noqa: S324 - Redis names scripts by SHA-1

    async def __call__(self, redis: RedisPipe, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await redis.send(encode((b"EVALSHA", self.sha, len(keys), *keys, *args)))
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await redis.send(encode((b"EVAL", self.source, len(keys), *keys, *args)))


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader(replyError=RedisReplyError)
        self.pending: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        try:
            reply = self.reader.gets()
            while reply is not False:
                _, future = pending.popleft()
                if not future.done():
                    future.set_result(reply)
                reply = self.reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self._fail(RedisUnavailable(f"unreadable reply: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisUnavailable(f"connection lost: {exc or 'closed'}"))

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise RedisUnavailable("not connected")
        future = self.loop.create_future()
        deadline = self.loop.time() + self.timeout_s
        if not self.pending:
            self.watchdog = self.loop.call_at(deadline, self._watch)
        self.pending.append((deadline, future))
        if not self.outgoing:
            self.loop.call_soon(self._flush)
        self.outgoing.append(payload)
        return future

    def _flush(self) -> None:
        """One write for every command queued in this turn of the loop: concurrent requests
        share the syscall (~25 µs each on this machine) as they share the connection."""
        payload = b"".join(self.outgoing)
        self.outgoing.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def _watch(self) -> None:
        """Replies come in order: if the oldest call is late, every call behind it is too."""
        self.watchdog = None
        if not self.pending:
            return
        deadline = self.pending[0][0]
        if deadline <= self.loop.time():
            self._fail(RedisUnavailable(f"no reply within {self.timeout_s:.3f} s"))
        else:
            self.watchdog = self.loop.call_at(deadline, self._watch)

    def _fail(self, error: BaseException) -> None:
        if self.lost is None:
            self.lost = error
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        while self.pending:
            _, future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class RedisPipe:
    def __init__(self, url: str, *, timeout_s: float, retry_after_s: float = 1.0) -> None:
        self._options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._tls = url.startswith("rediss://")
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._down_until = 0.0

    async def call(self, *args: Arg) -> Any:
        """One command's reply; `RedisReplyError` for an error reply, `RedisUnavailable` when
        Redis cannot be reached in time."""
        return await self.send(encode(args))

    async def ping(self) -> Any:
        """PING (readiness checks)."""
        return await self.call("PING")

    async def send(self, payload: bytes) -> Any:
        """`call` for a command already encoded (hot paths encode their constant parts once)."""
        try:
            connection = self._connection
            if connection is None or connection.lost is not None:
                connection = await self._connect()
            reply = await connection.send(payload)
        except RedisUnavailable:
            _UNAVAILABLE.inc()
            raise
        if isinstance(reply, RedisReplyError):
            _REPLY_ERRORS.inc()
            raise reply
        return reply

    async def _connect(self) -> _Connection:
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("Redis was unreachable a moment ago")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            async with asyncio.timeout(self._timeout_s):
                if "path" in options:
                    _, connection = await loop.create_unix_connection(
                        lambda: _Connection(self._timeout_s), options["path"]
                    )
                else:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self._timeout_s),
                        options.get("host", "localhost"),
                        int(options.get("port", 6379)),
                        ssl=ssl.create_default_context() if self._tls else None,
                    )
                greeting = []
                if options.get("password"):
                    auth: list[Arg] = ["AUTH"]
                    if options.get("username"):
                        auth.append(options["username"])
                    greeting.append(connection.send(encode([*auth, options["password"]])))
                if int(options.get("db", 0) or 0):
                    greeting.append(connection.send(encode(["SELECT", int(options["db"])])))
                for reply in await asyncio.gather(*greeting):
                    if isinstance(reply, RedisReplyError):
                        raise RedisUnavailable(f"Redis refused the greeting: {reply}")
        except (OSError, TimeoutError, RedisUnavailable) as exc:
            self._down_until = time.monotonic() + self._retry_after_s
            raise RedisUnavailable(f"cannot reach Redis: {exc}") from exc
        self._connection = connection
        return connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()
