"""Sign-in lockout: repeated failures for an address lock it for a growing while.

Kept in Redis and keyed by a hash of the address, whether or not it has an account: an
unknown address locks exactly like a known one, so the lock reveals nothing. Redis down
fails closed (sign-in answers 503), since an attacker could otherwise guess without limit.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

from carebase.errors import DependencyUnavailable, RateLimited
from carebase.metrics import REDIS_ERRORS

_UNAVAILABLE = REDIS_ERRORS.labels("client", "unavailable")

MAX_LOCK_S = 3600
FAILURE_MEMORY_S = 3600

# KEYS: failures, lock. ARGV: memory_s, max_failures, base_lock_s, max_lock_s.
# Past max_failures, each failure locks for base * 2^(extra failures), capped.
_RECORD_FAILURE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local max_failures = tonumber(ARGV[2])
if n >= max_failures then
  local lock = math.min(tonumber(ARGV[3]) * 2 ^ (n - max_failures), tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], '1', 'EX', math.floor(lock))
end
return n
"""


class Lockout:
    def __init__(
        self, redis: Redis, *, max_failures: int, base_lock_s: int, prefix: str = "login"
    ) -> None:
        self._redis = redis
        self._max_failures = max_failures
        self._base_lock_s = base_lock_s
        self._prefix = prefix
        self._record = redis.register_script(_RECORD_FAILURE)

    def _keys(self, email: str) -> tuple[str, str]:
        tag = hashlib.sha256(email.encode()).hexdigest()[:32]
        return f"{self._prefix}:fail:{tag}", f"{self._prefix}:lock:{tag}"

    async def check(self, email: str) -> None:
        """Raises `RateLimited` with the remaining lock time while the address is locked."""
        _, lock = self._keys(email)
        try:
            remaining = await self._redis.ttl(lock)
        except RedisError as exc:
            _UNAVAILABLE.inc()
            raise DependencyUnavailable("Sign-in is unavailable; try again shortly.") from exc
        if remaining > 0:
            raise RateLimited(
                limit=self._max_failures,
                retry_after=remaining,
                detail="Too many failed sign-in attempts; try again later.",
            )

    async def failed(self, email: str) -> None:
        failures, lock = self._keys(email)
        try:
            await self._record(
                keys=[failures, lock],
                args=[FAILURE_MEMORY_S, self._max_failures, self._base_lock_s, MAX_LOCK_S],
            )
        except RedisError as exc:
            _UNAVAILABLE.inc()
            raise DependencyUnavailable("Sign-in is unavailable; try again shortly.") from exc

    async def clear(self, email: str) -> None:
        """After a successful sign-in or a password reset."""
        try:
            await self._redis.delete(*self._keys(email))
        except RedisError as exc:
            _UNAVAILABLE.inc()
            raise DependencyUnavailable("Sign-in is unavailable; try again shortly.") from exc
