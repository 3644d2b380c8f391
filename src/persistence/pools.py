"""The connection pools: psycopg-pool, configured once for both of `Database`'s doors."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from contextvars import ContextVar
from typing import Any, Protocol

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from carebase.metrics import REPLICA_FALLBACKS, PoolStats

_log = structlog.get_logger("carebase.db")
_FALLBACKS = {reason: REPLICA_FALLBACKS.labels(reason) for reason in ("down", "lagging")}

IDLE_CHECK_S = 2.0
"""A pooled connection idle longer than this is checked (one empty query) before it is used."""


class IdleCheck:
    """psycopg-pool's `check`, skipped for a connection handed out in the last `after_s`.

    The pool's own `check_connection` sends an empty query on *every* checkout: a whole round
    trip per request (~4.6 % of a GET's CPU, GROUND.md). A connection used a moment ago is as
    good as checked; one that sat idle (a restarted server, a dropped socket) is checked, and a
    broken one is replaced before the caller sees it. One that breaks between two requests
    surfaces as the 503 the pool already maps.
    """

    def __init__(self, after_s: float = IDLE_CHECK_S) -> None:
        self.after_s = after_s
        self._handed_out: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self.checks = 0

    async def __call__(self, conn: AsyncConnection[Any]) -> None:
        now = time.monotonic()
        last = self._handed_out.get(conn)
        self._handed_out[conn] = now
        if last is not None and now - last < self.after_s:
            return
        self.checks += 1
        await AsyncConnectionPool.check_connection(conn)


class Door(Protocol):
    """Where a read or a transaction gets its connection and gives it back."""

    async def acquire(self) -> AsyncConnection[Any]: ...

    async def release(self, conn: AsyncConnection[Any]) -> None: ...


_wrote: ContextVar[bool] = ContextVar("carebase_wrote", default=False)


def mark_written() -> None:
    """This request (task) committed a write: its later reads stay on the primary."""
    _wrote.set(True)


class ReadRoute:
    """Where read-only work goes when a streaming replica is configured (DATABASE_READ_URL).

    - **Read your writes**: a request that has committed a write reads on the primary for
      the rest of it (`mark_written`); the replica may not have replayed that write yet.
      Another request may read from the replica right after: up to the replica's lag behind.
    - **Down**: a checkout that fails (no connection within the replica pool's short
      timeout) or a connection that comes back broken sends reads to the primary for
      `retry_s`; then the replica is tried again. Logged once per outage, counted per read.
    - **Lagging**: the replica check (`lagging(for_s)`, every 5 s) sends reads to the
      primary while the replica's replay lag is past DATABASE_READ_MAX_LAG_S.
    """

    def __init__(self, primary: Checkout, replica: Checkout, *, retry_s: float = 5.0) -> None:
        self.primary = primary
        self.replica = replica
        self.retry_s = retry_s
        self._until = 0.0
        self._reason = "down"
        self._from_replica: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()

    async def acquire(self) -> AsyncConnection[Any]:
        if _wrote.get():
            return await self.primary.acquire()
        if time.monotonic() < self._until:
            _FALLBACKS[self._reason].inc()
            return await self.primary.acquire()
        try:
            conn = await self.replica.acquire()
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self.fall_back("down", str(exc), self.retry_s)
            _FALLBACKS["down"].inc()
            return await self.primary.acquire()
        self._from_replica.add(conn)
        return conn

    def from_replica(self, conn: AsyncConnection[Any]) -> bool:
        return conn in self._from_replica

    async def release(self, conn: AsyncConnection[Any]) -> None:
        if conn not in self._from_replica:
            await self.primary.release(conn)
            return
        self._from_replica.discard(conn)
        if conn.broken or conn.closed:
            self.fall_back("down", "a replica connection broke", self.retry_s)
        await self.replica.release(conn)

    def lagging(self, lag_s: float, for_s: float) -> None:
        self.fall_back("lagging", f"{lag_s:.1f} s behind", for_s)

    def fall_back(self, reason: str, why: str, for_s: float) -> None:
        now = time.monotonic()
        if now >= self._until or reason != self._reason:
            _log.warning("replica_unused", reason=reason, detail=why[:200], for_s=for_s)
        self._until, self._reason = now + for_s, reason

    def recovered(self) -> None:
        """The replica check found it answering and close enough: read from it again."""
        if self._until and time.monotonic() < self._until:
            _log.info("replica_used_again")
        self._until = 0.0


def pool_stats(pool: AsyncConnectionPool[AsyncConnection[Any]]) -> PoolStats:
    """psycopg-pool's own numbers, for a pool callers use directly (the owner pool)."""
    stats = pool.get_stats()
    size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
    return PoolStats(
        pool.name,
        size=size,
        in_use=size - available,
        waiting=stats.get("requests_waiting", 0),
        checkouts=stats.get("requests_num", 0),
        timeouts=stats.get("requests_errors", 0),
    )


def make_pool(
    conninfo: str,
    *,
    name: str,
    min_size: int,
    max_size: int,
    application_name: str,
    statement_timeout_ms: int,
    connect_timeout_s: float,
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    return AsyncConnectionPool(
        conninfo,
        name=name,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=connect_timeout_s,
        # psycopg-pool does not check idle connections unless told to (GROUND.md).
        check=IdleCheck(),
        kwargs={
            "autocommit": True,
            "application_name": application_name,
            "connect_timeout": max(1, int(connect_timeout_s)),
            "options": f"-c statement_timeout={statement_timeout_ms}",
        },
    )


class Checkout:
    """The app pool's one door: psycopg-pool lends the connections, this hands them out.

    psycopg-pool's checkout takes its lock, keeps statistics and runs the check, and a caller
    that finds every connection busy waits on a condition with timeout machinery of its own —
    under load (more requests than connections) that doubled a GET's CPU (measured: 626 → 307
    µs). Here a connection that comes back in good order (open, idle) goes straight to the first
    waiting caller, or is kept at hand, newest first; a waiting caller waits on one future.

    It borrows at most the pool's `max_size` connections and gives one back to the pool when it
    broke, sat unused longer than `fresh_s` (the pool checks it before lending it again) or has
    been out for `max_age_s` (so psycopg-pool's own lifetime and health rules apply to it again).
    Running out of time raises psycopg-pool's own `PoolTimeout`, so callers map it as before.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        *,
        fresh_s: float = 1.0,
        max_age_s: float = 1800.0,
    ) -> None:
        self.pool = pool
        self.fresh_s = fresh_s
        self.max_age_s = max_age_s
        self._kept: list[tuple[AsyncConnection[Any], float]] = []
        self._born: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        # Each resolves to a connection, or to None: "a slot is free, borrow one yourself".
        self._waiting: deque[asyncio.Future[AsyncConnection[Any] | None]] = deque()
        self.lent = 0
        self.checkouts = 0
        self.timeouts = 0

    async def acquire(self) -> AsyncConnection[Any]:
        self.checkouts += 1
        kept = self._kept
        if kept:
            now = time.monotonic()
            while kept:
                conn, since = kept.pop()
                if now - since < self.fresh_s and not conn.closed:
                    return conn
                await self._give_back(conn)
        if self.lent < self.pool.max_size:
            return await self._borrow()
        waiter: asyncio.Future[AsyncConnection[Any] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self.pool.timeout):
                handed = await waiter
        except BaseException as exc:
            self._pass_on(waiter)
            if isinstance(exc, TimeoutError):
                self.timeouts += 1
                raise PoolTimeout(f"no connection was free within {self.pool.timeout} s") from None
            raise
        return handed if handed is not None else await self._borrow()

    async def release(self, conn: AsyncConnection[Any]) -> None:
        if (
            not conn.closed
            and conn.pgconn.transaction_status == TransactionStatus.IDLE
            and time.monotonic() - self._born.get(conn, 0.0) < self.max_age_s
        ):
            self._hand_over(conn)
            return
        await self._give_back(conn)
        self._wake(None)

    def stats(self) -> PoolStats:
        """This door's numbers: connections held by the pool, lent to callers (not kept at
        hand), callers waiting, and the running totals of checkouts and timeouts."""
        return PoolStats(
            self.pool.name,
            size=self.pool.get_stats()["pool_size"],
            in_use=self.lent - len(self._kept),
            waiting=len(self._waiting),
            checkouts=self.checkouts,
            timeouts=self.timeouts,
        )

    async def close(self) -> None:
        kept, self._kept = self._kept, []
        for conn, _ in kept:
            await self._give_back(conn)
        while self._waiting:
            self._waiting.popleft().cancel()
        await self.pool.close()

    def _hand_over(self, conn: AsyncConnection[Any]) -> None:
        if not self._wake(conn):
            self._kept.append((conn, time.monotonic()))

    def _wake(self, handed: AsyncConnection[Any] | None) -> bool:
        """Give the first live waiter `handed`; False when nobody waits."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _pass_on(self, waiter: asyncio.Future[AsyncConnection[Any] | None]) -> None:
        """A waiter that gave up (timed out, cancelled) passes on what it was handed."""
        if not waiter.done():
            waiter.cancel()
        elif not waiter.cancelled():
            handed = waiter.result()
            if handed is None:
                self._wake(None)
            else:
                self._hand_over(handed)

    async def _borrow(self) -> AsyncConnection[Any]:
        self.lent += 1
        try:
            conn = await self.pool.getconn()
        except BaseException:
            self.lent -= 1
            self._wake(None)
            raise
        self._born.setdefault(conn, time.monotonic())
        return conn

    async def _give_back(self, conn: AsyncConnection[Any]) -> None:
        self.lent -= 1
        self._born.pop(conn, None)
        await self.pool.putconn(conn)
