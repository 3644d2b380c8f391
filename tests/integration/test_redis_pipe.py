"""The pipelined Redis client against the real Redis, and against servers that misbehave."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from carebase.integrations.redis_pipe import RedisPipe, RedisReplyError, RedisUnavailable
from carebase.operations.devstack import EmbeddedStack
from carebase.security.ratelimit import RateLimiter, Rule

pytestmark = pytest.mark.integration


async def test_concurrent_calls_share_the_connection_and_get_their_own_replies(
    stack: EmbeddedStack,
) -> None:
    pipe = RedisPipe(stack.redis_url, timeout_s=5)
    key = f"pipe-test:{uuid.uuid4().hex}"
    try:
        replies = await asyncio.gather(*(pipe.call("INCR", key) for _ in range(500)))
        assert sorted(replies) == list(range(1, 501))
        assert await pipe.call("ECHO", "héllo") == "héllo".encode()
        with pytest.raises(RedisReplyError):
            await pipe.call("NOSUCHCOMMAND")
        assert await pipe.call("GET", key) == b"500"  # an error reply leaves the pipe usable
    finally:
        await pipe.call("DEL", key)
        await pipe.close()


async def test_the_limiter_reloads_its_script_after_a_flush(stack: EmbeddedStack) -> None:
    pipe = RedisPipe(stack.redis_url, timeout_s=5)
    limiter = RateLimiter(pipe, prefix=f"t{uuid.uuid4().hex[:6]}")
    rule = Rule(limit=2, window_s=60)
    try:
        await pipe.call("SCRIPT", "FLUSH")
        first = await limiter.hit("b", "ip:1", rule)
        second = await limiter.hit("b", "ip:1", rule)
        third = await limiter.hit("b", "ip:1", rule)
        assert (first.remaining, second.remaining, third.allowed) == (1, 0, False)
    finally:
        await pipe.close()


async def test_a_refused_connection_fails_fast_and_is_not_retried_at_once(tmp_path: Path) -> None:
    pipe = RedisPipe(f"unix://{tmp_path}/absent.sock", timeout_s=0.5, retry_after_s=30)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable):
        await pipe.call("PING")
    with pytest.raises(RedisUnavailable, match="a moment ago"):
        await pipe.call("PING")
    assert time.monotonic() - started < 0.5


async def test_a_silent_server_times_out_every_waiting_call(tmp_path: Path) -> None:
    """A Redis that accepts and never answers: the oldest call's deadline fails them all."""
    path = str(tmp_path / "silent.sock")

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_unix_server(swallow, path)
    pipe = RedisPipe(f"unix://{path}", timeout_s=0.2)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(pipe.call("PING") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, RedisUnavailable) for r in results)
        assert time.monotonic() - started < 1.5
    finally:
        await pipe.close()
        server.close()
        await server.wait_closed()
