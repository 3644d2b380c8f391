"""The core service's composition root: `create_app(settings)` wires contract, services,
handlers and the compiled pipeline."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from carebase.apps import common
from carebase.config import Environment, Settings
from carebase.handlers.core.appointment_templates import AppointmentTemplateHandlers
from carebase.handlers.core.appointments import AppointmentHandlers
from carebase.handlers.core.attachments import AttachmentHandlers
from carebase.handlers.core.audit import AuditHandlers
from carebase.handlers.core.auth import AuthHandlers
from carebase.handlers.core.availability import AvailabilityHandlers
from carebase.handlers.core.broadcasts import BroadcastHandlers
from carebase.handlers.core.calendar import CalendarHandlers
from carebase.handlers.core.custom_fields import CustomFieldHandlers
from carebase.handlers.core.export import ExportHandlers
from carebase.handlers.core.form_templates import FormTemplateHandlers
from carebase.handlers.core.forms import FormHandlers
from carebase.handlers.core.gdpr import GdprHandlers
from carebase.handlers.core.organizations import OrganizationHandlers
from carebase.handlers.core.patients import PatientHandlers
from carebase.handlers.core.prescriptions import PrescriptionHandlers
from carebase.handlers.core.reports import ReportHandlers
from carebase.handlers.core.segments import SegmentHandlers
from carebase.handlers.core.specialists import SpecialistHandlers
from carebase.handlers.core.webhooks import WebhookHandlers
from carebase.handlers.system import SystemHandlers
from carebase.integrations import video
from carebase.integrations.blobs import BlobStore, FileBlobStore
from carebase.integrations.mail import OutboxRelay
from carebase.integrations.pdf import PdfRenderer
from carebase.integrations.video.daily import DailyVideo
from carebase.logging import configure_logging
from carebase.operations import migrations
from carebase.security.auth import Authenticator
from carebase.security.events import SecurityEvents
from carebase.security.jwks import JwksClient
from carebase.security.lockout import Lockout
from carebase.security.passwords import HashCost, Passwords
from carebase.security.ratelimit import RateLimiter, Rule
from carebase.services.appointment_templates import AppointmentTemplateService
from carebase.services.appointments import AppointmentService
from carebase.services.attachments import AttachmentService, BlobReaper
from carebase.services.audit import AuditService
from carebase.services.availability import AvailabilityService
from carebase.services.broadcast_recipients import RecipientService
from carebase.services.broadcast_worker import BroadcastWorker
from carebase.services.broadcasts import BroadcastService
from carebase.services.calendar import CalendarService
from carebase.services.custom_fields import CustomFieldService
from carebase.services.documents import DocumentService
from carebase.services.export import ExportService
from carebase.services.forms import FormService, FormTemplateService
from carebase.services.gdpr import GdprService, GdprWorker
from carebase.services.identity import IdentityService, Links
from carebase.services.organizations import OrganizationService
from carebase.services.patients import PatientService
from carebase.services.scheduling_worker import SchedulingWorker
from carebase.services.specialists import SpecialistService
from carebase.services.system import HealthService
from carebase.services.webhooks import WebhookService
from carebase.web import routing
from carebase.web.accesslog import AccessLog
from carebase.web.application import Application
from carebase.web.contract import Contract
from carebase.web.edge import Edge
from carebase.web.idempotency import IdempotencyKeys
from carebase.web.pipeline import Runtime, compile_plans
from carebase.web.signatures import handler_registry


class CoreApp(Application):
    """The core service, with what tests and the CLI reach into."""

    def __init__(
        self,
        edge: Edge,
        *,
        lifespan: Any,
        contract: Contract,
        dependencies: common.Dependencies,
        relay: OutboxRelay,
        authenticator: Authenticator,
        scheduling: SchedulingWorker,
        video: video.VideoProvider,
        blobs: BlobStore,
        reaper: BlobReaper,
        events: common.EventRelays,
        security: SecurityEvents,
        gdpr: GdprWorker,
        broadcasts: BroadcastWorker,
    ) -> None:
        super().__init__(edge, lifespan=lifespan)
        self.gdpr = gdpr
        self.broadcasts = broadcasts
        self.security = security
        self.events = events
        self.blobs = blobs
        self.reaper = reaper
        self.contract = contract
        self.dependencies = dependencies
        self.relay = relay
        self.authenticator = authenticator
        self.scheduling = scheduling
        self.video = video


def create_app(settings: Settings, *, overrides: Mapping[str, Any] | None = None) -> CoreApp:
    """Build the core service.

    `overrides` replaces parts for tests: `database`, `redis`, `redis_pipe`, `tokens`, `mail`,
    `sealer`, `tracing` (Dependencies), `video` (a `VideoProvider`), `blobs` (a `BlobStore`),
    `channels` (the broadcast `Channels`), `resolver` (the SSRF guard's name resolver),
    `jwks_transport` (how the external identity provider's JWKS is fetched), `contract`
    (another bundled spec) and `extra_handlers` (handler objects for its operations).
    """
    configure_logging(level=settings.log_level, json_output=settings.log_format == "json")
    given = dict(overrides or {})
    contract: Contract = given.pop("contract", None) or Contract.for_service("core")
    extra_handlers: list[object] = given.pop("extra_handlers", [])
    rooms: video.VideoProvider = given.pop("video", None) or common.video_provider(settings)
    blobs: BlobStore = given.pop("blobs", None) or common.blob_store(settings)
    resolver, jwks_transport, channels = (
        given.pop("resolver", None), given.pop("jwks_transport", None), given.pop("channels", None)
    )  # fmt: skip
    dependencies = common.dependencies(settings, given)
    database = dependencies.database
    security = SecurityEvents(database)
    links = Links(settings.app_base_url)
    external = _external_identity(settings, jwks_transport)
    authenticator = Authenticator(
        tokens=dependencies.tokens, db=database, cache_s=settings.auth_cache_s, external=external
    )
    identity = IdentityService(
        db=database,
        tokens=dependencies.tokens,
        passwords=Passwords(
            HashCost(
                time_cost=settings.password_hash_time_cost,
                memory_kib=settings.password_hash_memory_kib,
            )
        ),
        lockout=Lockout(
            dependencies.redis,
            max_failures=settings.login_max_failures,
            base_lock_s=settings.login_lockout_s,
        ),
        links=links,
        refresh_ttl_s=settings.refresh_token_ttl_s,
        security=security,
    )
    relay, scheduling, reaper = (
        OutboxRelay(database, dependencies.mail), SchedulingWorker(database, rooms),
        BlobReaper(database, blobs),
    )  # fmt: skip
    sealer = dependencies.sealer
    events = common.event_relays(
        settings, database, sealer, resolver=resolver, security=security, tracer=dependencies.tracer
    )
    gdpr = common.gdpr_worker(settings, database, sealer, blobs)
    broadcasts = common.broadcast_worker(
        settings, database, sealer=sealer, blobs=blobs, mail=dependencies.mail,
        redis_pipe=dependencies.redis_pipe, channels=channels,
    )  # fmt: skip
    pdf = PdfRenderer()
    patients = PatientService(
        db=database,
        sealer=sealer,
        tokens=dependencies.tokens,
        links=links,
        impersonation_ttl_s=settings.impersonation_ttl_s,
    )
    handlers = handler_registry(
        [
            AppointmentHandlers(
                appointments=AppointmentService(
                    db=database, video=rooms, tokens=dependencies.tokens
                )
            ),
            AttachmentHandlers(
                attachments=AttachmentService(
                    db=database, blobs=blobs, url_ttl_s=settings.blob_url_ttl_s
                ),
                files=blobs if isinstance(blobs, FileBlobStore) else None,
            ),
            AppointmentTemplateHandlers(templates=AppointmentTemplateService(db=database)),
            AuditHandlers(audit=AuditService(db=database)),
            AuthHandlers(tokens=dependencies.tokens, identity=identity),
            AvailabilityHandlers(availability=AvailabilityService(db=database)),
            BroadcastHandlers(
                broadcasts=BroadcastService(
                    db=database,
                    links=common.unsubscribe_links(settings, sealer),
                    receipt_secret=settings.messaging_webhook_secret,
                ),
                recipients=RecipientService(db=database, sealer=sealer, blobs=blobs),
            ),
            CalendarHandlers(
                calendar=CalendarService(db=database, public_base_url=settings.public_base_url)
            ),
            CustomFieldHandlers(custom_fields=CustomFieldService(db=database)),
            OrganizationHandlers(
                organizations=OrganizationService(
                    db=database, links=links, on_access_changed=authenticator.forget
                )
            ),
            FormHandlers(
                forms=FormService(db=database, sealer=sealer, prefill=patients.prefill, pdf=pdf)
            ),
            FormTemplateHandlers(templates=FormTemplateService(db=database)),
            ExportHandlers(export=ExportService(db=database, sealer=sealer)),
            GdprHandlers(gdpr=GdprService(db=database, blobs=blobs)),
            PatientHandlers(patients=patients),
            PrescriptionHandlers(
                documents=DocumentService(db=database, sealer=sealer, kind="prescription", pdf=pdf)
            ),
            ReportHandlers(
                documents=DocumentService(db=database, sealer=sealer, kind="report", pdf=pdf)
            ),
            SegmentHandlers(segments=common.segment_service(settings, database)),
            SpecialistHandlers(specialists=SpecialistService(db=database, sealer=sealer)),
            SystemHandlers(
                health=HealthService(
                    db=database,
                    redis=dependencies.redis,
                    expected_migrations=migrations.expected_versions(settings.migrations_dir),
                )
            ),
            WebhookHandlers(
                webhooks=WebhookService(
                    db=database,
                    sealer=sealer,
                    egress=common.egress_policy(settings, resolver),
                    catalogue=contract.event_types,
                    overlap_s=settings.webhook_secret_overlap_s,
                    security=security,
                )
            ),
            *extra_handlers,
        ]
    )
    runtime = Runtime(
        authenticator=authenticator,
        limiter=RateLimiter(dependencies.redis_pipe),
        default_rule=Rule(
            limit=settings.rate_limit_default_limit,
            window_s=settings.rate_limit_default_window_s,
            key="user",
        ),
        idempotency=IdempotencyKeys(db=database, sealer=sealer, ttl_s=settings.idempotency_ttl_s),
        validate_responses=settings.validate_responses,
        security=security,
    )
    plans = compile_plans(contract, handlers, runtime)
    specification = routing.load(contract)
    dispatcher = routing.Dispatcher(contract, plans)
    edge = Edge(
        contract=contract,
        router=routing.routing(contract, specification, dispatcher),
        ui=routing.swagger_ui(specification),
        max_body_bytes=settings.max_body_bytes,
        access_log=AccessLog(
            json_lines=settings.log_format == "json",
            enabled=settings.log_level in ("debug", "info"),
        ),
        security=security,
        tracer=dependencies.tracer,
        cors=common.cors(settings, contract),
    )

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await database.open(wait=False)
        if external is not None:
            await external.start()
        background = common.Background(
            database,
            relay,
            scheduling,
            reaper,
            events,
            common.segment_refresher(settings, database),
            gdpr,
            broadcasts,
        )
        tasks = background.start(settings) if settings.run_workers else []
        tasks += common.process_tasks(database, security)
        if settings.environment != Environment.TEST:
            tune_garbage_collector()
        try:
            yield
        finally:
            await background.stop(tasks, settings.graceful_shutdown_s)
            if external is not None:
                await external.close()
            await common.close(
                dependencies.tracing,
                database,
                dependencies.redis_pipe,
                dependencies.redis,
            )
            await broadcasts.close()
            if isinstance(rooms, DailyVideo):
                await rooms.close()

    return CoreApp(
        edge,
        lifespan=lifespan,
        contract=contract,
        dependencies=dependencies,
        relay=relay,
        authenticator=authenticator,
        scheduling=scheduling,
        video=rooms,
        blobs=blobs,
        reaper=reaper,
        events=events,
        security=security,
        gdpr=gdpr,
        broadcasts=broadcasts,
    )


def _external_identity(settings: Settings, transport: Any) -> JwksClient | None:
    """An external identity provider's tokens, beside Carebase's own (AUTH_JWKS_URL)."""
    if not settings.auth_jwks_url:
        return None
    return JwksClient(
        settings.auth_jwks_url,
        issuer=settings.auth_issuer or "",
        audience=settings.auth_audience or "",
        transport=transport,
    )


def tune_garbage_collector() -> None:
    """What start-up built lives as long as the process: move it out of the collector's sight
    (`gc.freeze`) and collect the young generation less often. The collector was 6–8 % of a
    request's CPU (GROUND.md); a request makes few reference cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
