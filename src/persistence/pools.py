"""The connection pools: psycopg-pool, configured once for both of `Database`'s doors."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from typing import Any

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from carebase.metrics import PoolStats

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
