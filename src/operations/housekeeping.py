"""Periodic chores of a running process: dropping expired idempotency keys, outbox events
both consumers are done with, and deliveries finished more than 30 days ago."""

from __future__ import annotations

import asyncio

import structlog

from carebase.persistence import idempotency, webhooks
from carebase.persistence.db import Database

INTERVAL_S = 600.0
DELIVERIES_KEPT_DAYS = 30

_log = structlog.get_logger("carebase.operations.housekeeping")


async def housekeeping(
    db: Database, *, forwarding: bool = False, interval_s: float = INTERVAL_S
) -> None:
    """Every process runs it; the statements are idempotent, so that is harmless.
    `forwarding`: events wait for the telemetry forward before they go."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await sweep(db, forwarding=forwarding)
        except Exception:
            _log.warning("housekeeping_failed", exc_info=True)


async def sweep(db: Database, *, forwarding: bool) -> None:
    async with db.admin_transaction() as q:
        purged = await idempotency.purge_expired(q)
        events, deliveries = await webhooks.purge(
            q, forwarding=forwarding, keep_days=DELIVERIES_KEPT_DAYS
        )
    if purged or events or deliveries:
        _log.info(
            "housekeeping_purged", idempotency_keys=purged, events=events, deliveries=deliveries
        )
