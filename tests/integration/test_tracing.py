"""Tracing, end to end through the real database, a real webhook receiver on 127.0.0.1 and the
telemetry service: one booking's trace from the frontend's `traceparent` through core's
request (with its SQL beneath), the webhook delivery and the forward to telemetry, and the
trace ids in the request's log lines. Spans land in the SDK's in-memory exporter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from conftest import forward_to_telemetry
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support import Clinic, book, day_at
from webhook_support import (
    DELIVERY_DNS,
    RECEIVER_HOST,
    REGISTRATION_DNS,
    Receiver,
    running_receiver,
)

from carebase.apps import telemetry as telemetry_service
from carebase.apps.core import CoreApp, create_app
from carebase.config import Settings
from carebase.integrations.webhooks import WebhookPoster
from carebase.persistence.clickhouse import ClickHouse
from carebase.security.egress import EgressPolicy
from carebase.services.webhook_delivery import WebhookSender
from carebase.tracing import Tracing, from_environment

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]
FRONTEND_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FRONTEND_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{FRONTEND_TRACE}-{FRONTEND_SPAN}-01"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
async def traced(
    settings: Settings,
    telemetry_settings: Settings,
    clickhouse_store: ClickHouse,
    exporter: InMemorySpanExporter,
) -> AsyncIterator[tuple[CoreApp, telemetry_service.TelemetryApp]]:
    """Core and telemetry with tracing, as `OTEL_*` would configure them, but exporting to
    memory. Core's tracing instruments psycopg, redis and httpx (process-wide)."""
    core_tracing = Tracing.with_processor("carebase-core", SimpleSpanProcessor(exporter))
    core_tracing.instrument()
    core = create_app(
        settings,
        overrides={"resolver": REGISTRATION_DNS.resolve, "tracing": core_tracing},
    )
    telemetry = telemetry_service.create_app(
        telemetry_settings,
        overrides={
            "clickhouse": clickhouse_store,
            "jwks_transport": httpx.ASGITransport(app=core),
            "tracing": Tracing.with_processor("carebase-telemetry", SimpleSpanProcessor(exporter)),
        },
    )
    async with LifespanManager(core), LifespanManager(telemetry):
        yield core, telemetry


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


def spans_of(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def descends_from(
    span: ReadableSpan, ancestor: ReadableSpan, spans: Sequence[ReadableSpan]
) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


async def test_one_booking_is_one_trace_through_the_relay_webhook_and_telemetry(
    *,
    traced: tuple[CoreApp, telemetry_service.TelemetryApp],
    exporter: InMemorySpanExporter,
    clinic: Callable[..., Clinic],
    receiver: Receiver,
    admin_conn: Conn,
) -> None:
    core, telemetry = traced
    # Only this test's events and deliveries are relayed (the outbox is shared by the suite).
    admin_conn.execute("UPDATE audit.outbox SET dispatched_at = now() WHERE dispatched_at IS NULL")
    admin_conn.execute("UPDATE audit.outbox SET forwarded_at = now() WHERE forwarded_at IS NULL")
    c = clinic()
    transport = httpx.ASGITransport(app=core, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as client:
        made = await client.post(
            "/v1/webhooks/endpoints",
            headers=c.admin.auth,
            json={"url": receiver.url(), "event_types": ["appointment.created"]},
        )
        assert made.status_code == 201, made.text
        exporter.clear()
        client.headers["traceparent"] = TRACEPARENT
        booked = await book(client, c, day_at(3, 10))
        assert booked.status_code == 201, booked.text

    trace_id = int(FRONTEND_TRACE, 16)
    request = one(spans_of(exporter, trace_id), "POST /v1/appointments")
    assert request.kind is SpanKind.SERVER
    assert request.parent is not None
    assert request.parent.span_id == int(FRONTEND_SPAN, 16)
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/v1/appointments"
    assert request.attributes["http.response.status_code"] == 201
    assert request.resource.attributes["service.name"] == "carebase-core"
    statements = [
        s
        for s in spans_of(exporter, trace_id)
        if s.attributes and s.attributes.get("db.system") == "postgresql"
    ]
    assert len(statements) >= 3  # the transaction's role, the insert, the audit row, …
    assert all(descends_from(s, request, spans_of(exporter, trace_id)) for s in statements)

    # The relay: the outbox event kept the request's context; the delivery is its child.
    while await core.events.dispatcher.dispatch_once():
        pass
    sender = WebhookSender(
        core.dependencies.database,
        sealer=core.dependencies.sealer,
        egress=EgressPolicy(
            allow_http=True,
            trusted_hosts=frozenset({RECEIVER_HOST}),
            resolver=DELIVERY_DNS.resolve,
        ),
        poster=WebhookPoster(connect_timeout_s=2, total_timeout_s=3),
        tracer=core.dependencies.tracer,  # type: ignore[arg-type]
    )
    try:
        await sender.send_once()
    finally:
        await sender._poster.close()
    assert len(receiver.received) == 1
    # Trace ids stay inside the platform: a clinic's endpoint gets no trace context.
    assert "traceparent" not in receiver.received[0].headers
    delivery = one(spans_of(exporter, trace_id), "webhook appointment.created")
    assert delivery.parent is not None
    assert delivery.parent.span_id == request.context.span_id
    assert delivery.attributes is not None
    assert delivery.attributes["carebase.webhook.outcome"] == "succeeded"

    # The forward to telemetry: a batch has many causes, so it links to each; telemetry's
    # request is a child of the forward (the `traceparent` went with the call).
    assert core.dependencies.tracer is not None
    await forward_to_telemetry(core, telemetry, tracer=core.dependencies.tracer)
    forwards = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "telemetry forward /v1/audit/events"
        and any(link.context.span_id == request.context.span_id for link in s.links)
    ]
    assert len(forwards) == 1
    forward = forwards[0]
    assert forward.kind is SpanKind.PRODUCER
    ingest = one(spans_of(exporter, forward.context.trace_id), "POST /v1/audit/events")
    assert ingest.resource.attributes["service.name"] == "carebase-telemetry"
    assert ingest.parent is not None
    assert ingest.parent.span_id == forward.context.span_id


async def test_spans_are_named_by_route_template_and_log_lines_carry_the_trace(
    *,
    traced: tuple[CoreApp, telemetry_service.TelemetryApp],
    exporter: InMemorySpanExporter,
    clinic: Callable[..., Clinic],
    capfd: pytest.CaptureFixture[str],
) -> None:
    core, _ = traced
    c = clinic()
    transport = httpx.ASGITransport(app=core, client=("203.0.113.9", 50000))
    exporter.clear()
    async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as client:
        patient = await client.get(f"/v1/patients/{c.patient_id}", headers=c.staff.auth)
        assert patient.status_code == 200
        missing = await client.get(f"/v1/patients/{uuid.uuid4()}", headers=c.staff.auth)
        assert missing.status_code == 404
        # A path no operation serves keeps the method alone: never the raw path.
        unknown = await client.get(f"/v1/nothing/{uuid.uuid4()}")
        assert unknown.status_code == 404
        # A patient may not create patients: the refusal is logged as a security event.
        refused = await client.post(
            "/v1/patients",
            headers=c.patient.auth,
            json={"given_name": "Ana", "family_name": "Pop"},
        )
        assert refused.status_code == 403

    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    names = [s.name for s in servers]
    assert names == [
        "GET /v1/patients/{patient_id}",
        "GET /v1/patients/{patient_id}",
        "GET",
        "POST /v1/patients",
    ]
    assert not any(str(c.patient_id) in s.name for s in exporter.get_finished_spans())

    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if line[:1] == "{"]
    by_request = {s.attributes["carebase.request_id"]: s for s in servers if s.attributes}
    access = [line for line in lines if line.get("event") == "request"]
    assert len(access) == 4
    for line in access:
        span = by_request[line["request_id"]]
        assert line["trace_id"] == format(span.context.trace_id, "032x")
        assert line["span_id"] == format(span.context.span_id, "016x")
    denied = [line for line in lines if line.get("event") == "security_event"]
    assert denied, lines
    assert denied[-1]["trace_id"] == format(servers[-1].context.trace_id, "032x")


def test_tracing_is_off_without_an_endpoint_and_when_disabled() -> None:
    assert from_environment("carebase-core", {}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert from_environment("carebase-core", {**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    configured = from_environment("carebase-core", endpoint)
    assert configured is not None
    assert configured.provider.resource.attributes["service.name"] == "carebase-core"
    configured.provider.shutdown()
