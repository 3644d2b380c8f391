"""Rate limits declared per operation in the contract (`x-rate-limit`), counted in Redis.

One Lua script per check increments a fixed-window counter and reads its expiry atomically,
so concurrent requests are admitted exactly up to the limit. Operations without a
declaration get the default limit; `x-rate-limit: false` opts out (health probes).

When Redis is down an ordinary operation fails open (logged and counted); one declared
with `fail: closed` (login, password reset) answers 503 instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carebase.errors import DependencyUnavailable, RateLimited
from carebase.web.contract import Operation
from carebase.web.middleware import HttpLayer, operation_id, principal_of

KeyKind = Literal["ip", "user", "organization"]
KEY_KINDS: tuple[KeyKind, ...] = ("ip", "user", "organization")

# KEYS[1] counter; ARGV[1] window in ms. Returns {count, ms until the window resets}.
_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

_log = structlog.get_logger("carebase.security.ratelimit")


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
    def __init__(self, redis: Redis, *, prefix: str = "rl") -> None:
        self._script = redis.register_script(_SCRIPT)
        self._prefix = prefix
        self.failed_open = 0

    async def hit(self, bucket: str, identity: str, rule: Rule) -> Decision:
        # The identity is the hash tag, so one caller's counters share a Redis Cluster slot.
        key = f"{self._prefix}:{{{identity}}}:{bucket}:{rule.window_s}"
        count, ttl_ms = await self._script(keys=[key], args=[rule.window_s * 1000])
        reset_s = max(1, -(-int(ttl_ms) // 1000))
        return Decision(
            allowed=int(count) <= rule.limit,
            limit=rule.limit,
            remaining=max(0, rule.limit - int(count)),
            reset_s=reset_s,
        )


def rules_from_contract(operations: Mapping[str, Operation]) -> dict[str, Rule | None]:
    """operationId → its declared rule; None where the operation opts out."""
    return {
        op_id: None if op.rate_limit is False else Rule.from_extension(op.rate_limit)
        for op_id, op in operations.items()
        if op.rate_limit is not None
    }


class RateLimit(HttpLayer):
    """Connexion middleware, placed after authentication so callers can be keyed by user."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        rules: Mapping[str, Rule | None],
        default: Rule,
    ) -> None:
        super().__init__(app)
        self.limiter = limiter
        self.rules = rules
        self.default = default

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = operation_id(scope)
        rule = self.rules.get(operation, self.default) if operation else None
        if rule is None or operation is None:
            await self.app(scope, receive, send)
            return
        bucket = operation if operation in self.rules else "default"
        try:
            decision = await self.limiter.hit(bucket, _identity(scope, rule.key), rule)
        except RedisError as exc:
            if rule.fail_closed:
                raise DependencyUnavailable("Rate limiting is unavailable; try again.") from exc
            self.limiter.failed_open += 1
            _log.warning(
                "rate_limit_failed_open",
                operation=operation,
                error=type(exc).__name__,
                failed_open_total=self.limiter.failed_open,
            )
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            raise RateLimited(limit=decision.limit, retry_after=decision.reset_s)
        headers = [
            (b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(decision.reset_s).encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _identity(scope: Scope, kind: KeyKind) -> str:
    """The caller to count: the principal's user or organization when known, else the IP."""
    principal = principal_of(scope)
    if kind == "user" and principal.user_id:
        return f"user:{principal.user_id}"
    if kind == "organization" and principal.organization_id:
        return f"org:{principal.organization_id}"
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"
