"""The telemetry service's composition root: `create_app(settings)` wires its contract, the
stores (telemetry's PostgreSQL database and ClickHouse), ingest and the same compiled
pipeline as core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from carebase import metrics
from carebase.apps import common
from carebase.apps.core import tune_garbage_collector
from carebase.config import Environment, Settings
from carebase.handlers.system import SystemHandlers
from carebase.handlers.telemetry.analytics import AnalyticsHandlers
from carebase.handlers.telemetry.audit import AuditHandlers
from carebase.handlers.telemetry.consents import ConsentHandlers
from carebase.handlers.telemetry.dashboards import DashboardHandlers
from carebase.handlers.telemetry.media import MediaHandlers
from carebase.handlers.telemetry.pose import PoseHandlers
from carebase.handlers.telemetry.privacy import PrivacyHandlers
from carebase.handlers.telemetry.security import SecurityHandlers
from carebase.integrations.redis_pipe import RedisPipe
from carebase.logging import configure_logging
from carebase.operations import clickhouse_migrations, migrations
from carebase.persistence import clickhouse
from carebase.persistence.clickhouse import ClickHouse
from carebase.persistence.db import Database
from carebase.security.auth import TokenAuthenticator
from carebase.security.jwks import JwksClient
from carebase.security.ratelimit import RateLimiter, Rule
from carebase.security.tokens import SESSION_AUDIENCE
from carebase.services.system import HealthService
from carebase.services.telemetry.buffer import IngestBuffer
from carebase.services.telemetry.consents import ConsentService, PrivacySettingsService
from carebase.services.telemetry.dashboards import DashboardService
from carebase.services.telemetry.housekeeping import TelemetryHousekeeping
from carebase.services.telemetry.ingest import (
    TABLES,
    AnalyticsIngest,
    AuditIngest,
    MessageIds,
)
from carebase.services.telemetry.media import MEDIA_TABLES, MediaIngest, MediaSummaries
from carebase.services.telemetry.pose import PoseIngest
from carebase.services.telemetry.privacy import PrivacyGate
from carebase.services.telemetry.security_events import SecurityEventService
from carebase.services.telemetry.subjects import SubjectData
from carebase.tracing import Tracing
from carebase.web import routing
from carebase.web.accesslog import AccessLog
from carebase.web.application import Application
from carebase.web.contract import Contract
from carebase.web.edge import Edge
from carebase.web.pipeline import Runtime, compile_plans
from carebase.web.signatures import handler_registry


class TelemetryApp(Application):
    """The telemetry service, with what tests and the CLI reach into."""

    def __init__(
        self,
        edge: Edge,
        *,
        lifespan: Any,
        contract: Contract,
        database: Database,
        store: ClickHouse,
        buffer: IngestBuffer,
        privacy: PrivacyGate,
        jwks: JwksClient,
        summaries: MediaSummaries,
        housekeeping: TelemetryHousekeeping,
    ) -> None:
        super().__init__(edge, lifespan=lifespan)
        self.summaries = summaries
        self.housekeeping = housekeeping
        self.contract = contract
        self.database = database
        self.store = store
        self.buffer = buffer
        self.privacy = privacy
        self.jwks = jwks


def jwks_url(settings: Settings) -> str:
    """Core's JWKS (AUTH_JWKS_URL), by default beside core's public URL."""
    return settings.auth_jwks_url or f"{settings.public_base_url}/.well-known/jwks.json"


def open_store(settings: Settings) -> ClickHouse:
    """The ClickHouse store, its migrations applied when it is the embedded engine (which only
    this process may open, so `carebase migrate` could not while the service runs), and the
    configured retention set on every table."""
    client = clickhouse.connect(settings.clickhouse_url, settings.data_dir)
    if not settings.clickhouse_url:
        clickhouse_migrations.up(client, settings.migrations_dir / "clickhouse")
    clickhouse_migrations.apply_retention(client, settings.retention_days)
    return ClickHouse(client)


def create_app(settings: Settings, *, overrides: Mapping[str, Any] | None = None) -> TelemetryApp:
    """Build the telemetry service.

    `overrides` replaces parts for tests: `database`, `redis_pipe`, `clickhouse` (a
    `ClickHouse` store the caller owns), `jwks_transport` (how the JWKS client reaches core),
    `tracing` (a `Tracing`, or None for none).
    """
    configure_logging(level=settings.log_level, json_output=settings.log_format == "json")
    given = dict(overrides or {})
    contract = Contract.for_service("telemetry")
    database: Database = given.pop("database", None) or common.build_database(
        settings, service="telemetry"
    )
    redis_pipe: RedisPipe = given.pop("redis_pipe", None) or RedisPipe(
        settings.telemetry_urls().redis, timeout_s=settings.redis_timeout_ms / 1000
    )
    owned_store = "clickhouse" not in given
    store: ClickHouse = given.pop("clickhouse", None) or open_store(settings)
    transport: httpx.AsyncBaseTransport | None = given.pop("jwks_transport", None)
    tracing: Tracing | None = (
        given.pop("tracing") if "tracing" in given else common.build_tracing("telemetry")
    )
    if given:
        raise TypeError(f"unknown overrides: {sorted(given)}")

    jwks = JwksClient(
        jwks_url(settings),
        issuer=settings.auth_issuer or settings.jwt_issuer,
        audience=settings.auth_audience or settings.jwt_audience,
        also_accept=(SESSION_AUDIENCE,),
        transport=transport,
    )
    privacy = PrivacyGate(database, refresh_s=settings.telemetry_privacy_refresh_s)
    buffer = IngestBuffer(
        store,
        tables={**TABLES, **MEDIA_TABLES},
        interval_s=settings.telemetry_flush_interval_s,
        flush_rows=settings.telemetry_flush_rows,
        max_rows=settings.telemetry_buffer_rows,
    )

    summaries = MediaSummaries(database, store, buffer)
    housekeeping = TelemetryHousekeeping(
        database,
        audit_days=settings.telemetry_retention_audit_days,
        media_days=settings.telemetry_retention_media_days,
    )

    async def clickhouse_ready() -> str | None:
        await store.ping()
        return None

    async def clickhouse_migrated() -> str | None:
        expected = clickhouse_migrations.expected_versions(settings.migrations_dir / "clickhouse")
        missing = sorted(expected - await store.applied_versions())
        return f"pending: {', '.join(missing)}" if missing else None

    handlers = handler_registry(
        [
            AnalyticsHandlers(
                ingest=AnalyticsIngest(privacy=privacy, buffer=buffer, seen=MessageIds(redis_pipe))
            ),
            AuditHandlers(ingest=AuditIngest(db=database, privacy=privacy, buffer=buffer)),
            ConsentHandlers(consents=ConsentService(db=database, privacy=privacy)),
            PrivacyHandlers(
                settings=PrivacySettingsService(db=database, privacy=privacy),
                subjects=SubjectData(db=database, store=store, privacy=privacy, buffer=buffer),
            ),
            PoseHandlers(ingest=PoseIngest(privacy=privacy, buffer=buffer)),
            MediaHandlers(ingest=MediaIngest(db=database, privacy=privacy, buffer=buffer)),
            DashboardHandlers(dashboards=DashboardService(db=database, store=store)),
            SecurityHandlers(security=SecurityEventService(db=database, privacy=privacy)),
            SystemHandlers(
                health=HealthService(
                    db=database,
                    redis=redis_pipe,
                    expected_migrations=migrations.expected_versions(
                        settings.migrations_dir / "telemetry", migrations.TELEMETRY_MODULES
                    ),
                    more={
                        "clickhouse": clickhouse_ready,
                        "clickhouse_migrations": clickhouse_migrated,
                    },
                )
            ),
        ]
    )
    runtime = Runtime(
        authenticator=TokenAuthenticator(
            verifier=jwks, service_token=settings.telemetry_service_token
        ),
        limiter=RateLimiter(redis_pipe),
        default_rule=Rule(
            limit=settings.rate_limit_default_limit,
            window_s=settings.rate_limit_default_window_s,
            key="user",
        ),
        idempotency=None,
        validate_responses=settings.validate_responses,
        actors_in_logs=False,
    )
    plans = compile_plans(contract, handlers, runtime)
    specification = routing.load(contract)
    edge = Edge(
        contract=contract,
        router=routing.routing(contract, specification, routing.Dispatcher(contract, plans)),
        ui=routing.swagger_ui(specification),
        max_body_bytes=settings.max_body_bytes,
        access_log=AccessLog(
            json_lines=settings.log_format == "json",
            enabled=settings.log_level in ("debug", "info"),
        ),
        tracer=tracing.tracer if tracing is not None else None,
        cors=common.cors(settings, contract),
    )

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await database.open(wait=False)
        await jwks.start()
        flusher = asyncio.create_task(buffer.run(), name="telemetry-flush")
        sampler = asyncio.create_task(
            metrics.sample_every([metrics.pools_of(database.pool_stats)]), name="pool-metrics"
        )
        chores = (
            [
                asyncio.create_task(summaries.run(), name="media-summaries"),
                asyncio.create_task(housekeeping.run(), name="telemetry-housekeeping"),
            ]
            if settings.run_workers
            else []
        )
        if settings.environment != Environment.TEST:
            tune_garbage_collector()
        try:
            yield
        finally:
            await common.stop([*chores, sampler, flusher])
            await buffer.close()  # every accepted row is written before the process ends
            await jwks.close()
            if owned_store:
                store.close()
            await common.close(tracing, database, redis_pipe)

    return TelemetryApp(
        edge,
        lifespan=lifespan,
        contract=contract,
        database=database,
        store=store,
        buffer=buffer,
        privacy=privacy,
        jwks=jwks,
        summaries=summaries,
        housekeeping=housekeeping,
    )
