"""Rate limits declared per operation in the contract (`x-rate-limit`), counted in Redis.

Every hit runs one Lua script in Redis that increments a fixed-window counter and reads its
expiry atomically, so concurrent requests — from one process or many — are admitted exactly
up to the limit: Redis is the authority, nothing is counted in process memory. The call
goes over the process's one pipelined connection (`integrations.redis_pipe`), so it costs a
write and a read, not a pool checkout. Operations without a declaration get the default limit;
`x-rate-limit: false` opts out (health probes).

When Redis is down an ordinary operation fails open (logged and counted); one declared
with `fail: closed` (login, password reset) answers 503 instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from carebase.errors import DependencyUnavailable, RateLimited
from carebase.integrations.redis_pipe import (
    RedisPipe,
    RedisReplyError,
    RedisScript,
    RedisUnavailable,
)
from carebase.metrics import RATE_LIMIT_UNAVAILABLE

KeyKind = Literal["ip", "user", "organization"]
KEY_KINDS: tuple[KeyKind, ...] = ("ip", "user", "organization")

# KEYS[1] counter; ARGV[1] window in ms. Returns {count, ms until the window resets}.
SCRIPT = RedisScript(b"""
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
""")

_log = structlog.get_logger("carebase.ratelimit")
_FAILED_OPEN = RATE_LIMIT_UNAVAILABLE.labels("fail_open")
_FAILED_CLOSED = RATE_LIMIT_UNAVAILABLE.labels("fail_closed")


@dataclass(frozen=True, slots=True)
class Rule:
    limit: int
    window_s: int
    key: KeyKind = "ip"
    fail_closed: bool = False

    @classmethod
    def from_extension(cls, value: Mapping[str, Any]) -> Rule:
        return cls(
            limit=int(value["limit"]),
            window_s=int(value["window_s"]),
            key=value.get("key", "ip"),
            fail_closed=value.get("fail", "open") == "closed",
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int


class RateLimiter:
    def __init__(self, redis: RedisPipe, *, prefix: str = "rl") -> None:
        self._redis = redis
        self._prefix = prefix
        self.failed_open = 0

    async def hit(self, bucket: str, identity: str, rule: Rule) -> Decision:
        """Count one request; `RedisUnavailable` when Redis cannot answer."""
        # The identity is the hash tag, so one caller's counters share a Redis Cluster slot.
        key = f"{self._prefix}:{{{identity}}}:{bucket}:{rule.window_s}"
        window_ms = rule.window_s * 1000
        try:
            count, ttl_ms = await SCRIPT(self._redis, (key,), (window_ms,))
        except RedisReplyError as exc:
            raise RedisUnavailable(f"the rate-limit script failed: {exc}") from exc
        reset_s = max(1, -(-int(ttl_ms) // 1000))
        return Decision(
            allowed=int(count) <= rule.limit,
            limit=rule.limit,
            remaining=max(0, rule.limit - int(count)),
            reset_s=reset_s,
        )

    async def check(
        self, operation: str, bucket: str, identity: str, rule: Rule
    ) -> Decision | None:
        """The decision for an admitted request; `RateLimited` past the limit. None when Redis
        is down and the rule fails open; `DependencyUnavailable` when it fails closed."""
        try:
            decision = await self.hit(bucket, identity, rule)
        except RedisUnavailable as exc:
            if rule.fail_closed:
                _FAILED_CLOSED.inc()
                raise DependencyUnavailable("Rate limiting is unavailable; try again.") from exc
            _FAILED_OPEN.inc()
            self.failed_open += 1
            _log.warning(
                "rate_limit_failed_open",
                operation=operation,
                error=str(exc),
                failed_open_total=self.failed_open,
            )
            return None
        if not decision.allowed:
            raise RateLimited(limit=decision.limit, retry_after=decision.reset_s)
        return decision
