"""Periodic chores of a running process: today, dropping expired idempotency keys."""

from __future__ import annotations

import asyncio

import structlog

from carebase.persistence import idempotency
from carebase.persistence.db import Database

INTERVAL_S = 600.0

_log = structlog.get_logger("carebase.operations.housekeeping")


async def housekeeping(db: Database, *, interval_s: float = INTERVAL_S) -> None:
    """Every process runs it; the statements are idempotent, so that is harmless."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            async with db.admin_transaction() as q:
                purged = await idempotency.purge_expired(q)
            if purged:
                _log.info("idempotency_keys_purged", count=purged)
        except Exception:
            _log.warning("housekeeping_failed", exc_info=True)
