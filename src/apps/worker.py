"""The worker's composition root: `carebase worker` runs the background work outside the API
processes (which then run with RUN_WORKERS=false). Several workers may run at once: every
queue is claimed with SKIP LOCKED and a lease."""

from __future__ import annotations

import asyncio

import structlog

from carebase.apps import common
from carebase.config import Settings
from carebase.integrations.mail import OutboxRelay
from carebase.integrations.redis_pipe import RedisPipe
from carebase.integrations.video.daily import DailyVideo
from carebase.logging import configure_logging
from carebase.security.events import SecurityEvents
from carebase.services.attachments import BlobReaper
from carebase.services.scheduling_worker import SchedulingWorker

_log = structlog.get_logger("carebase.worker")


async def run_worker(settings: Settings, stopping: asyncio.Event) -> None:
    """Run the background work until `stopping` is set, then finish cleanly."""
    configure_logging(level=settings.log_level, json_output=settings.log_format == "json")
    tracing = common.build_tracing("worker")
    database = common.build_database(settings, service="worker")
    sealer = common.build_sealer(settings)
    blobs = common.blob_store(settings)
    security = SecurityEvents(database)
    rooms = common.video_provider(settings)
    mail = common.build_mail(settings)
    redis_pipe = RedisPipe(settings.server_urls().redis, timeout_s=settings.redis_timeout_ms / 1000)
    broadcasts = common.broadcast_worker(
        settings, database, sealer=sealer, blobs=blobs, mail=mail, redis_pipe=redis_pipe
    )
    background = common.Background(
        database,
        OutboxRelay(database, mail),
        SchedulingWorker(database, rooms),
        BlobReaper(database, blobs),
        common.event_relays(
            settings,
            database,
            sealer,
            security=security,
            tracer=tracing.tracer if tracing else None,
        ),
        common.segment_refresher(settings, database),
        common.gdpr_worker(settings, database, sealer, blobs),
        broadcasts,
    )
    await database.open(wait=False)
    tasks = [*background.start(settings), *common.process_tasks(database, security)]
    _log.info("worker_started", tasks=[task.get_name() for task in tasks])
    try:
        await stopping.wait()
    finally:
        await background.stop(tasks, settings.graceful_shutdown_s)
        await broadcasts.close()
        await common.close(tracing, database, redis_pipe)
        if isinstance(rooms, DailyVideo):
            await rooms.close()
        _log.info("worker_stopped")
