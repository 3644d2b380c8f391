"""Announcements of new work: queue tables NOTIFY `carebase_work` with their name when rows
arrive (sql/platform/0005_work_notifications.sql), and workers LISTEN, so they start at once
rather than at their next poll. The polls stay: a notification lost while a listener
reconnects only delays the work until then."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import structlog

CHANNEL = "carebase_work"

_log = structlog.get_logger("carebase.work_queue")


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
