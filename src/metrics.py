"""Prometheus metrics: what each process counts, and the listener that serves them.

The metrics are prometheus-client's, defined once here and served in Prometheus' text format
at `/metrics` on a listener of their own (`METRICS_PORT`, never the public port). Under
`carebase serve --workers N` (N > 1) every worker writes its values to files in a directory
the supervisor made (prometheus-client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`) and
the supervisor's listener adds them up; one process serves its own registry.

Labels are bounded: operationIds (or `unmatched` for a path no operation serves, so a scanner
cannot mint series), the HTTP methods the contract uses (anything else is `other`), status
codes, pool names and fixed reasons. Never a raw path, an id, or an organization.

Gauges that describe one process (in flight, pool sizes, buffered rows) add up over the live
workers; gauges that describe the database (outbox backlog) keep the most recent sample.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

_log = structlog.get_logger("carebase.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# --- requests ----------------------------------------------------------------------------------

REQUEST_SECONDS = Histogram(
    "carebase_http_request_duration_seconds",
    "Requests by operationId, method and status: how long each took, edge to last byte.",
    ["operation", "method", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "carebase_http_requests_in_flight",
    "Requests being answered now.",
    multiprocess_mode="livesum",
)

# --- pools, Redis, rate limits -------------------------------------------------------------------

POOL_SIZE = Gauge(
    "carebase_db_pool_connections",
    "Connections a pool holds open.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "carebase_db_pool_in_use",
    "Connections lent out now.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "carebase_db_pool_waiting",
    "Callers waiting for a connection now.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_CHECKOUTS = Counter(
    "carebase_db_pool_checkouts", "Connections handed out by a pool.", ["pool"]
)
POOL_TIMEOUTS = Counter(
    "carebase_db_pool_timeouts",
    "Callers that gave up waiting for a connection (each a 503).",
    ["pool"],
)
REPLICA_FALLBACKS = Counter(
    "carebase_db_replica_fallbacks",
    "Reads sent to the primary because the replica was down or lagging.",
    ["reason"],
)
REPLICA_LAG_SECONDS = Gauge(
    "carebase_db_replica_lag_seconds",
    "The read replica's replay lag at the last check (0 when it has replayed all it got).",
    multiprocess_mode="max",
)
REDIS_ERRORS = Counter(
    "carebase_redis_errors",
    "Redis calls that failed: no answer in time, refused, or an error reply.",
    ["client", "kind"],
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "carebase_rate_limit_unavailable",
    "Rate-limit checks Redis could not answer: let through (fail_open) or refused with 503"
    " (fail_closed).",
    ["outcome"],
)

# --- the outbox and webhooks ----------------------------------------------------------------

OUTBOX_BACKLOG = Gauge(
    "carebase_outbox_backlog",
    "Outbox events not yet handed on, by consumer (webhooks: dispatched; telemetry: forwarded).",
    ["consumer"],
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "carebase_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox event a consumer has not handed on (0 when none).",
    ["consumer"],
    multiprocess_mode="mostrecent",
)
OUTBOX_REFUSED = Counter(
    "carebase_outbox_refused_events",
    "Outbox events telemetry's contract refused (422) on their own: logged and dropped.",
)
WEBHOOK_ATTEMPTS = Counter(
    "carebase_webhook_attempts",
    "Webhook delivery attempts by outcome.",
    ["outcome"],
)

# --- telemetry ingest --------------------------------------------------------------------------

TELEMETRY_BUFFER_ROWS = Gauge(
    "carebase_telemetry_buffer_rows",
    "Rows accepted and not yet written to ClickHouse.",
    multiprocess_mode="livesum",
)
TELEMETRY_FLUSH_SECONDS = Histogram(
    "carebase_telemetry_flush_duration_seconds",
    "One table's batch written to ClickHouse.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TELEMETRY_DROPPED = Counter(
    "carebase_telemetry_dropped_events",
    "Events or rows not stored, by reason: consent and privacy exclusions, a full buffer"
    " (backlog), a batch ClickHouse kept refusing (poison).",
    ["reason"],
)

# --- the build -----------------------------------------------------------------------------------

BUILD_INFO = Gauge(
    "carebase_build_info",
    "Always 1; the labels say which build and Python run.",
    ["version", "python"],
    multiprocess_mode="max",
)


def _version() -> str:
    try:
        return version("carebase")
    except PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version()).set(1)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class RequestTimers:
    """The request histogram's `observe` per (operation, method, status), looked up once:
    prometheus-client's `labels()` takes a lock and converts every value on each call. The
    keys are bounded as the labels are (operationIds, `METHODS`, status codes)."""

    def __init__(self) -> None:
        self._observers: dict[tuple[str, str, int], Callable[[float], None]] = {}

    def __call__(self, operation: str, method: str, status: int) -> Callable[[float], None]:
        key = (operation, method if method in METHODS else "other", status)
        observe = self._observers.get(key)
        if observe is None:
            child = REQUEST_SECONDS.labels(*key[:2], str(status))
            observe = self._observers[key] = child.observe
        return observe


# --- sampled numbers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolStats:
    name: str
    size: int
    in_use: int
    waiting: int
    checkouts: int
    timeouts: int


class PoolSampler:
    """Turns pools' own statistics into the gauges, and their running totals into counter
    increments (a pool counts from its start; a counter only goes up by what happened since
    the last sample)."""

    def __init__(self, stats: Callable[[], Sequence[PoolStats]]) -> None:
        self._stats = stats
        self._seen: dict[str, tuple[int, int]] = {}

    def sample(self) -> None:
        for pool in self._stats():
            POOL_SIZE.labels(pool.name).set(pool.size)
            POOL_IN_USE.labels(pool.name).set(pool.in_use)
            POOL_WAITING.labels(pool.name).set(pool.waiting)
            checkouts, timeouts = self._seen.get(pool.name, (0, 0))
            POOL_CHECKOUTS.labels(pool.name).inc(max(0, pool.checkouts - checkouts))
            POOL_TIMEOUTS.labels(pool.name).inc(max(0, pool.timeouts - timeouts))
            self._seen[pool.name] = (pool.checkouts, pool.timeouts)


SAMPLE_S = 5.0
"""How often the sampled numbers (pools, the outbox backlog) are read."""


async def sample_every(
    samplers: Sequence[Callable[[], Awaitable[None]]], interval_s: float = SAMPLE_S
) -> None:
    """Run each sampler every `interval_s` until cancelled; one that fails is logged and
    tried again next time (a database outage must not stop the pools' numbers)."""
    while True:
        for sampler in samplers:
            try:
                await sampler()
            except Exception as exc:
                _log.warning("metrics_sample_failed", sampler=sampler.__name__, error=str(exc))
        await asyncio.sleep(interval_s)


def pools_of(stats: Callable[[], Sequence[PoolStats]]) -> Callable[[], Awaitable[None]]:
    """A sampler of pools' numbers, for `sample_every`."""
    sampler = PoolSampler(stats)

    async def pools() -> None:
        sampler.sample()

    return pools


# --- the listener --------------------------------------------------------------------------------


def exposition_registry() -> CollectorRegistry:
    """What the listener serves: the workers' files under multiprocess mode, else this
    process's registry."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


class Listener:
    """`/metrics` on its own address, served from a thread (the event loop never waits)."""

    def __init__(self, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host, registry=exposition_registry())
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.port = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_listener(host: str, port: int) -> Listener | None:
    """The listener, or None when `port` is 0 (metrics off)."""
    return Listener(host, port) if port else None


def prepare_multiprocess() -> Path:
    """A fresh, empty directory for the workers' files, announced in the environment before
    they start (prometheus-client chooses file-backed values when it is imported)."""
    directory = Path(tempfile.mkdtemp(prefix="carebase-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def forget_multiprocess(directory: Path) -> None:
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(directory, ignore_errors=True)


def process_exiting() -> None:
    """A worker under multiprocess mode leaves: its live gauges stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
