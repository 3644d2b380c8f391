"""Tracing: OpenTelemetry spans exported over OTLP, configured by the standard `OTEL_*`
variables, and off (no provider, no instrumentation, nothing on the request path) when no
OTLP endpoint is set.

What is traced, once a process has a `Tracing`:
- each request, as one server span named by method and route template (`edge.Edge`), a child
  of the caller's W3C `traceparent` when one came;
- psycopg statements, Redis commands of the redis-py client, and httpx calls beneath it (the
  instrumentations patch those libraries for the whole process, so one `Tracing` is installed
  at a time); httpx calls carry `traceparent` onward (core → telemetry);
- the outbox: an event written in a request keeps the request's `traceparent`
  (`current_traceparent`), and the relays start their spans from it (`context_of`): a webhook
  delivery is a child of the request that caused it, a telemetry forward links to each event
  it carries;
- every structlog line of a request carries `trace_id` and `span_id` (`carebase.logging`).

Calls to third parties (a clinic's webhook endpoint, a messaging provider) get a client span
but no `traceparent` header: trace ids stay inside the platform.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "NO_TRACER",
    "Link",
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "Tracer",
    "Tracing",
    "context_of",
    "current_traceparent",
    "from_environment",
    "inject",
    "link_to",
]

_PROPAGATOR = TraceContextTextMapPropagator()
NO_TRACER: Tracer = trace.NoOpTracer()
"""What components that make spans use when the process has no tracing."""
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class Tracing:
    """A process's tracer provider and the library instrumentation that reports to it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("carebase")
        self._instrumented: list[Any] = []

    @classmethod
    def with_processor(cls, service: str, processor: SpanProcessor) -> Tracing:
        """A provider for `service` whose spans go to `processor` (tests: a simple processor
        over the SDK's in-memory exporter)."""
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(processor)
        return cls(provider)

    def instrument(self) -> None:
        """Patch psycopg, redis-py and httpx to report to this provider (process-wide)."""
        # Imported here: the instrumentations patch libraries on import of their targets, and
        # a process without tracing should not load them at all.
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor  # noqa: PLC0415
        from opentelemetry.instrumentation.redis import RedisInstrumentor  # noqa: PLC0415

        for instrumentor in (PsycopgInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()):
            if instrumentor.is_instrumented_by_opentelemetry:
                continue  # another Tracing of this process already did (tests build several)
            instrumentor.instrument(tracer_provider=self.provider)
            self._instrumented.append(instrumentor)

    def shutdown(self) -> None:
        """Export what is buffered, stop exporting, and undo this provider's patches."""
        for instrumentor in self._instrumented:
            instrumentor.uninstrument()
        self._instrumented.clear()
        self.provider.force_flush()
        self.provider.shutdown()


def from_environment(service: str, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The OTLP/HTTP exporter the `OTEL_*` variables describe, or None when no endpoint is set
    or `OTEL_SDK_DISABLED` is true. The SDK reads the rest itself: `OTEL_SERVICE_NAME` and
    `OTEL_RESOURCE_ATTRIBUTES` (over `service`), `OTEL_TRACES_SAMPLER[_ARG]`,
    `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS|TIMEOUT`, `OTEL_BSP_*`."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not any(env.get(name) for name in _ENDPOINTS):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    exporter: SpanExporter = OTLPSpanExporter()
    return Tracing.with_processor(service, BatchSpanProcessor(exporter))


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the span now current, to store beside work done later."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def inject(headers: dict[str, str]) -> None:
    """Add the current span's `traceparent` to a call to another Carebase service (the httpx
    instrumentation does too where it is installed; this holds for any transport)."""
    _PROPAGATOR.inject(headers)


def context_of(traceparent: str | None) -> Context | None:
    """The context a stored `traceparent` names (None when there is none or it is malformed)."""
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    span_context = trace.get_current_span(extracted).get_span_context()
    return extracted if span_context.is_valid else None


def link_to(traceparent: str | None) -> Link | None:
    """A link to the span a stored `traceparent` names."""
    extracted = context_of(traceparent)
    if extracted is None:
        return None
    return Link(trace.get_current_span(extracted).get_span_context())


def extract(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The caller's context from an ASGI request's `traceparent`/`tracestate` headers."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    return _PROPAGATOR.extract(carrier) if carrier else None


current_span = trace.get_current_span
attach = otel_context.attach
detach = otel_context.detach
set_span_in_context = trace.set_span_in_context
