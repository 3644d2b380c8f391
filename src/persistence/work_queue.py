"""Work queues: the rhythm of the workers that drain them, and announcements of new work.

Every worker runs `Rounds`: a round each interval, or at once when nudged. Queue tables NOTIFY
`carebase_work` with their name when rows arrive (sql/platform/0005_work_notifications.sql);
`listen` turns those into nudges. The polls stay: a notification lost while a listener
reconnects only delays the work until the next round."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import psycopg
import structlog

from carebase.persistence.db import Querier

CHANNEL = "carebase_work"

_log = structlog.get_logger("carebase.work_queue")


async def announce(q: Querier, table: str) -> None:
    """Announce work the insert triggers do not see (rows made due again by an update), in
    the caller's transaction: sent at its commit, like the triggers' announcements."""
    await q.execute("SELECT pg_notify(%s, %s)", (CHANNEL, table))


class Rounds:
    """A worker's rhythm: one round every `interval_s`, or at once when nudged. A round that
    fails is logged as `<name>_failed` and the next one comes: a worker outlives an outage.

    `stop()` asks for a graceful end: no new round starts, and a round's loops check
    `stopping` between batches, so the batch in hand (claimed, sent, marked) finishes and
    nothing is left claimed under a lease that would have to run out first."""

    def __init__(self, name: str, interval_s: float, log: structlog.typing.FilteringBoundLogger):
        self._name = name
        self._interval_s = interval_s
        self._log = log
        self._wake = asyncio.Event()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    def nudge(self) -> None:
        """Work now rather than at the next interval (something was just queued)."""
        self._wake.set()

    @property
    def nudged(self) -> bool:
        return self._wake.is_set()

    async def run(self, round_: Callable[[], Awaitable[object]]) -> None:
        while True:  # until stopped (a stop wakes the wait) or cancelled
            # Waiting first lets the pools open before the first round, and keeps a process
            # that stops right after starting from cancelling a connection attempt mid-way.
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation
            # that arrives as the wait ends (cpython#86296), and the worker would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if self.stopping:
                return
            try:
                await round_()
            except Exception as exc:
                self._log.warning(f"{self._name}_failed", error=type(exc).__name__, detail=str(exc))


async def listen(url: str, on_work: Callable[[str], None], *, retry_s: float = 1.0) -> None:
    """Call `on_work(table)` for every announcement until cancelled; reconnect after a failure."""
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        except psycopg.Error as exc:
            _log.warning("work_listener_failed", error=type(exc).__name__, detail=str(exc))
            await asyncio.sleep(retry_s)
            continue
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            while True:
                # A bounded wait: the generator returns each second, so cancelling the task
                # (at shutdown) never waits on a read that no notification will end.
                async for notice in conn.notifies(timeout=1.0):
                    on_work(notice.payload)
        except psycopg.Error as exc:
            _log.warning("work_listener_failed", error=type(exc).__name__, detail=str(exc))
            await asyncio.sleep(retry_s)
        finally:
            await conn.close()
