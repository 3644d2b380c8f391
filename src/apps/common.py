"""What every service's composition root builds the same way: pools, Redis, keyrings, mail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from carebase import metrics, tracing
from carebase.config import Environment, MessagingProvider, Settings, VideoProvider
from carebase.integrations import video
from carebase.integrations.blobs import BlobStore, FileBlobStore, UrlSigner, load_signing_key
from carebase.integrations.blobs.s3 import S3BlobStore
from carebase.integrations.mail import MailboxSender, MailSender, OutboxRelay, SmtpSender
from carebase.integrations.messaging import (
    Channels,
    EmailMessaging,
    HttpMessaging,
    MessageSender,
    OutboxMessaging,
)
from carebase.integrations.redis_pipe import RedisPipe
from carebase.integrations.telemetry import TelemetrySubjects
from carebase.integrations.video.daily import DailyVideo
from carebase.integrations.video.jitsi import JitsiVideo
from carebase.integrations.video.local import LocalVideo
from carebase.operations.housekeeping import housekeeping
from carebase.persistence import work_queue
from carebase.persistence.db import Database
from carebase.persistence.pools import make_pool
from carebase.persistence.work_queue import Rounds
from carebase.security.egress import EgressPolicy, Resolver, system_resolver
from carebase.security.encryption import Sealer, load_data_keyring
from carebase.security.events import SecurityEvents
from carebase.security.ratelimit import RateLimiter
from carebase.security.tokens import TokenService, load_keyring
from carebase.services.attachments import BlobReaper
from carebase.services.broadcast_recipients import ImportRunner
from carebase.services.broadcast_worker import BroadcastWorker, Pace, Rates
from carebase.services.broadcasts import UnsubscribeLinks
from carebase.services.gdpr import GdprWorker
from carebase.services.scheduling_worker import SchedulingWorker
from carebase.services.segments import SegmentRefresher, SegmentService
from carebase.services.webhook_delivery import (
    EventDispatcher,
    TelemetryForwarder,
    WebhookSender,
    sample_backlog,
)
from carebase.tracing import NO_TRACER, Tracer, Tracing
from carebase.web.contract import Contract
from carebase.web.cors import Cors


@dataclass(frozen=True)
class Dependencies:
    """What the services need from outside; tests override fields with `create_app(overrides=)`."""

    database: Database
    redis: Redis
    redis_pipe: RedisPipe
    """The one pipelined connection per process for calls on every request (rate limits)."""
    tokens: TokenService
    mail: MailSender
    sealer: Sealer
    tracing: Tracing | None = None
    """The process's tracing, when OTEL_* names an endpoint (tests: an in-memory exporter)."""

    @property
    def tracer(self) -> Tracer | None:
        return self.tracing.tracer if self.tracing is not None else None


def process_tasks(database: Database, security: SecurityEvents) -> list[asyncio.Task[None]]:
    """What every process on core's database runs, workers or not: the security-event writer
    and its pools' metrics."""
    return [
        asyncio.create_task(security.run(), name="security-events"),
        asyncio.create_task(
            metrics.sample_every([metrics.pools_of(database.pool_stats), database.check_replica]),
            name="pool-metrics",
        ),
    ]


async def close(
    tracing: Tracing | None, database: Database, redis_pipe: RedisPipe, redis: Redis | None = None
) -> None:
    """The end of every process's drain, in the order it needs: spans flush (they may describe
    the last queries), then the pools and connections close, then the process's live gauges
    stop counting."""
    if tracing is not None:
        tracing.shutdown()
    await database.close()
    if redis is not None:
        await redis.aclose()
    await redis_pipe.close()
    metrics.process_exiting()


def cors(settings: Settings, contract: Contract) -> Cors | None:
    """Cross-origin access for the origins CORS_ALLOWED_ORIGINS lists; none when empty."""
    return Cors(settings.cors_origins, contract) if settings.cors_origins else None


def build_tracing(service: str) -> Tracing | None:
    """Tracing as the `OTEL_*` variables describe it, its instrumentation installed."""
    found = tracing.from_environment(f"carebase-{service}")
    if found is not None:
        found.instrument()
    return found


def build_database(settings: Settings, *, service: str) -> Database:
    """The service's two pools: core's database, or telemetry's own."""
    urls = settings.telemetry_urls() if service == "telemetry" else settings.server_urls()
    common = {
        "application_name": f"carebase-{service}",
        "statement_timeout_ms": settings.db_statement_timeout_ms,
        "connect_timeout_s": settings.db_connect_timeout_s,
    }
    read_pool = None
    if settings.database_read_url and service != "telemetry":
        read_pool = make_pool(
            settings.database_read_url,
            name=f"{service}-read",
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            application_name=f"carebase-{service}",
            statement_timeout_ms=settings.db_statement_timeout_ms,
            # A replica that does not answer within a second is passed over for the primary.
            connect_timeout_s=min(settings.db_connect_timeout_s, 1.0),
        )
    return Database(
        make_pool(
            urls.database,
            name=f"{service}-app",
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            **common,  # type: ignore[arg-type]
        ),
        make_pool(
            urls.database_admin,
            name=f"{service}-admin",
            min_size=0,
            max_size=settings.db_admin_pool_max_size,
            **common,  # type: ignore[arg-type]
        ),
        read_pool,
        max_lag_s=settings.database_read_max_lag_s,
    )


def build_redis(settings: Settings) -> Redis:
    timeout = settings.redis_timeout_ms / 1000
    # redis-py retries with backoff by default, stalling a request for seconds when Redis is
    # down (GROUND.md); each caller chooses to fail open or closed instead.
    # A blocking pool: past max_connections callers wait (up to the timeout) for a
    # connection instead of failing at once with MaxConnectionsError under bursts.
    pool = BlockingConnectionPool.from_url(
        settings.server_urls().redis,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)  # owns the pool, so aclose() closes its connections


def build_tokens(settings: Settings) -> TokenService:
    path = keyring_path(settings)
    keyring = load_keyring(
        path, token_ttl_s=settings.access_token_ttl_s, from_env=settings.jwt_signing_keys
    )
    return TokenService(
        keyring,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        # From the environment, keys change with a rolling restart; a file is re-read.
        reload_from=None if settings.jwt_signing_keys else path,
    )


def build_sealer(settings: Settings) -> Sealer:
    path = data_keyring_path(settings)
    keyring = load_data_keyring(path, from_env=settings.data_encryption_keys)
    # From the environment, keys change with a rolling restart; a file is re-read.
    return Sealer(keyring, reload_from=None if settings.data_encryption_keys else path)


def data_keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "data-keys.json"


def build_mail(settings: Settings) -> MailSender:
    if settings.smtp_host:
        return SmtpSender(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout_s=settings.smtp_timeout_s,
        )
    # load_settings() refuses production without SMTP_HOST.
    return MailboxSender(settings.mailbox_dir, sender=settings.mail_from)


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "jwt-keys.json"


def dependencies(
    settings: Settings, overrides: Mapping[str, Any], *, service: str = "core"
) -> Dependencies:
    """Each dependency from `overrides` when given, otherwise built from the settings."""
    builders: dict[str, Callable[[], Any]] = {
        "database": lambda: build_database(settings, service=service),
        "redis": lambda: build_redis(settings),
        "redis_pipe": lambda: RedisPipe(
            settings.server_urls().redis, timeout_s=settings.redis_timeout_ms / 1000
        ),
        "tokens": lambda: build_tokens(settings),
        "mail": lambda: build_mail(settings),
        "sealer": lambda: build_sealer(settings),
        "tracing": lambda: build_tracing(service),
    }
    unknown = set(overrides) - set(builders)
    if unknown:
        raise TypeError(f"unknown overrides: {sorted(unknown)}")
    return Dependencies(
        **{
            name: overrides[name] if name in overrides else build()
            for name, build in builders.items()
        }
    )


def video_provider(settings: Settings) -> video.VideoProvider:
    """The provider VIDEO_PROVIDER names (configuration checks made sure it has its keys)."""
    if settings.video_provider == VideoProvider.DAILY:
        return DailyVideo(
            api_key=settings.daily_api_key or "",
            api_url=settings.daily_api_url,
            domain_id=settings.daily_domain_id,
            timeout_s=settings.daily_timeout_s,
        )
    if settings.video_provider == VideoProvider.JITSI:
        return JitsiVideo(
            base_url=settings.jitsi_base_url or "",
            app_id=settings.jitsi_app_id or "",
            app_secret=settings.jitsi_app_secret or "",
        )
    return LocalVideo(settings.video_local_base_url)


def blob_store(settings: Settings) -> BlobStore:
    """The store BLOB_STORE_URL names: S3, or a directory (by default <DATA_DIR>/blobs)."""
    url = settings.blob_store_url
    if url and url.startswith("s3://"):
        return S3BlobStore.from_url(url)
    root = Path(urlsplit(url).path) if url else settings.data_dir / "blobs"
    key = load_signing_key(settings.data_dir / "blob-signing-key", settings.blob_signing_key)
    return FileBlobStore(root, UrlSigner(key), public_base_url=settings.public_base_url)


def egress_policy(settings: Settings, resolver: Resolver | None = None) -> EgressPolicy:
    """Where webhooks may go: https only in production, the configured ports, public
    addresses (or the operator's trusted hosts)."""
    return EgressPolicy(
        allow_http=settings.environment != Environment.PRODUCTION,
        ports=settings.webhook_ports,
        trusted_hosts=settings.webhook_trusted_host_names,
        resolver=resolver or system_resolver,
    )


@dataclass(frozen=True)
class EventRelays:
    """The outbox's consumers: webhook dispatch and delivery, and the telemetry forward."""

    dispatcher: EventDispatcher
    sender: WebhookSender
    forwarder: TelemetryForwarder | None


def event_relays(
    settings: Settings,
    database: Database,
    sealer: Sealer,
    *,
    resolver: Resolver | None = None,
    security: SecurityEvents | None = None,
    tracer: Tracer | None = None,
) -> EventRelays:
    sender = WebhookSender(
        database,
        sealer=sealer,
        egress=egress_policy(settings, resolver),
        security=security,
        tracer=tracer or NO_TRACER,
    )
    forwarder = None
    if settings.telemetry_internal_url and settings.telemetry_service_token:
        forwarder = TelemetryForwarder(
            database,
            base_url=settings.telemetry_internal_url,
            token=settings.telemetry_service_token,
            tracer=tracer or NO_TRACER,
        )
    return EventRelays(EventDispatcher(database, on_deliveries=sender.nudge), sender, forwarder)


_log = structlog.get_logger("carebase.drain")

GRACEFUL_TASKS = frozenset(
    {
        "mail-relay",
        "scheduling-worker",
        "blob-reaper",
        "segment-refresher",
        "gdpr-worker",
        "broadcast-worker",
        "webhook-dispatcher",
        "webhook-sender",
        "telemetry-forwarder",
    }
)
"""The background tasks that end by themselves once their `Rounds` is stopped."""


@dataclass(frozen=True)
class Background:
    """The work no request waits for: the mail relay, the scheduling worker (video rooms,
    reminders, expired holds), the blob worker, the event relays (webhooks, telemetry), the
    segment refresher, the GDPR worker, the broadcast worker and housekeeping. `carebase worker`
    runs it; an API process runs it too unless RUN_WORKERS=false."""

    database: Database
    relay: OutboxRelay
    scheduling: SchedulingWorker
    reaper: BlobReaper
    events: EventRelays
    segments: SegmentRefresher | None = None
    gdpr: GdprWorker | None = None
    broadcasts: BroadcastWorker | None = None

    def wake(self, table: str) -> None:
        """A queue announced new rows (`work_queue.listen`): its worker starts now."""
        events = self.events
        listeners = {
            "identity.email_outbox": (self.relay.nudge,),
            "scheduling.video_tasks": (self.scheduling.nudge,),
            "attachments.blob_deletions": (self.reaper.nudge,),
            # The outbox has two consumers; the forwarder only where telemetry is configured.
            "audit.outbox": (
                events.dispatcher.nudge,
                *((events.forwarder.nudge,) if events.forwarder else ()),
            ),
            "webhooks.deliveries": (events.sender.nudge,),
            "gdpr.requests": (self.gdpr.nudge,) if self.gdpr else (),
            **{
                f"broadcasts.{table}": (self.broadcasts.nudge,) if self.broadcasts else ()
                for table in ("imports", "campaigns", "messages")
            },
        }
        for nudge in listeners.get(table, ()):
            nudge()

    async def sample_outbox(self) -> None:
        await sample_backlog(self.database, forwarding=self.events.forwarder is not None)

    def _rounds(self) -> list[Rounds]:
        events = self.events
        workers: list[Any] = [
            self.relay, self.scheduling, self.reaper, events.dispatcher, events.sender,
            events.forwarder, self.segments, self.gdpr, self.broadcasts,
        ]  # fmt: skip
        return [worker.rounds for worker in workers if worker is not None]

    async def stop(self, tasks: list[asyncio.Task[None]], grace_s: float) -> None:
        """A graceful end: every worker finishes the batch in hand (sent and marked, or
        released) and starts no other, for at most `grace_s`; then whatever still runs is
        cancelled, and a claim it held comes back when its lease runs out."""
        for rounds in self._rounds():
            rounds.stop()
        graceful = [task for task in tasks if task.get_name() in GRACEFUL_TASKS]
        if graceful:
            _, late = await asyncio.wait(graceful, timeout=grace_s)
            if late:
                _log.warning("drain_bound_reached", tasks=sorted(t.get_name() for t in late))
        await stop(tasks)

    def start(self, settings: Settings) -> list[asyncio.Task[None]]:
        tasks = [
            asyncio.create_task(self.relay.run(), name="mail-relay"),
            asyncio.create_task(
                housekeeping(self.database, forwarding=self.events.forwarder is not None),
                name="housekeeping",
            ),
            asyncio.create_task(
                work_queue.listen(settings.server_urls().database_admin, self.wake),
                name="work-listener",
            ),
            asyncio.create_task(metrics.sample_every([self.sample_outbox]), name="outbox-metrics"),
        ]
        if settings.scheduling_worker:
            tasks.append(asyncio.create_task(self.scheduling.run(), name="scheduling-worker"))
        if settings.blob_reaper:
            tasks.append(asyncio.create_task(self.reaper.run(), name="blob-reaper"))
        if settings.segments_worker and self.segments is not None:
            tasks.append(asyncio.create_task(self.segments.run(), name="segment-refresher"))
        if settings.gdpr_worker and self.gdpr is not None:
            tasks.append(asyncio.create_task(self.gdpr.run(), name="gdpr-worker"))
        if settings.broadcasts_worker and self.broadcasts is not None:
            tasks.append(asyncio.create_task(self.broadcasts.run(), name="broadcast-worker"))
        if settings.webhooks_worker:
            events = self.events
            tasks.append(asyncio.create_task(events.dispatcher.run(), name="webhook-dispatcher"))
            tasks.append(asyncio.create_task(events.sender.run(), name="webhook-sender"))
            if events.forwarder is not None:
                tasks.append(
                    asyncio.create_task(events.forwarder.run(), name="telemetry-forwarder")
                )
        return tasks


def segment_service(settings: Settings, database: Database) -> SegmentService:
    return SegmentService(db=database, timeout_ms=settings.segment_evaluation_timeout_ms)


def segment_refresher(settings: Settings, database: Database) -> SegmentRefresher:
    return SegmentRefresher(
        database, segment_service(settings, database), age_s=settings.segment_refresh_s
    )


def telemetry_subjects(
    settings: Settings, transport: Any | None = None
) -> TelemetrySubjects | None:
    """Telemetry's data-subject endpoints, where telemetry is configured."""
    if not (settings.telemetry_internal_url and settings.telemetry_service_token):
        return None
    return TelemetrySubjects(
        base_url=settings.telemetry_internal_url,
        token=settings.telemetry_service_token,
        transport=transport,
    )


def unsubscribe_links(settings: Settings, sealer: Sealer) -> UnsubscribeLinks:
    return UnsubscribeLinks(
        sealer, app_base_url=settings.app_base_url, public_base_url=settings.public_base_url
    )


def message_channels(settings: Settings, mail: MailSender) -> Channels:
    """E-mail through the platform's mail sender; SMS and WhatsApp as MESSAGING_PROVIDER says."""
    text: MessageSender
    if settings.messaging_provider == MessagingProvider.HTTP:
        text = HttpMessaging(
            base_url=settings.messaging_base_url,
            account_id=settings.messaging_account_id or "",
            auth_token=settings.messaging_auth_token or "",
            from_sms=settings.messaging_from_sms,
            from_whatsapp=settings.messaging_from_whatsapp,
            status_callback=settings.messaging_status_callback_url,
        )
    else:
        text = OutboxMessaging(settings.data_dir / "outbox")
    return Channels(EmailMessaging(mail), text)


def broadcast_worker(
    settings: Settings,
    database: Database,
    *,
    sealer: Sealer,
    blobs: BlobStore,
    mail: MailSender,
    redis_pipe: RedisPipe | None,
    channels: Channels | None = None,
) -> BroadcastWorker:
    segments = segment_service(settings, database)
    return BroadcastWorker(
        db=database,
        sealer=sealer,
        channels=channels or message_channels(settings, mail),
        links=unsubscribe_links(settings, sealer),
        imports=ImportRunner(db=database, sealer=sealer, blobs=blobs),
        refresh_segment=lambda org, segment_id: segments.refresh(org, segment_id, age_s=0),
        pace=Pace(
            RateLimiter(redis_pipe, prefix="broadcast") if redis_pipe is not None else None,
            Rates(
                organization=settings.broadcast_rate_per_organization,
                provider=settings.broadcast_rate_per_provider,
            ),
        ),
    )


def gdpr_worker(
    settings: Settings, database: Database, sealer: Sealer, blobs: BlobStore
) -> GdprWorker:
    return GdprWorker(database, sealer=sealer, blobs=blobs, telemetry=telemetry_subjects(settings))


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
