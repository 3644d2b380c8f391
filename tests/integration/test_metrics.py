"""Prometheus metrics: the request histogram's bounded labels, the sampled pool and outbox
numbers, and `carebase serve core --workers 2` adding both workers' counts up on a listener of
its own (prometheus-client's multiprocess mode), never on the public port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import _free_port
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import Clinic

from carebase import metrics
from carebase.apps.core import CoreApp
from carebase.operations import devstack
from carebase.services.webhook_delivery import sample_backlog

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (found, labels) in samples if found == name]


COUNT = "carebase_http_request_duration_seconds_count"


async def test_requests_are_counted_by_operation_and_unknown_paths_share_one_label(
    *, client: httpx.AsyncClient, clinic: Callable[..., Clinic]
) -> None:
    c = clinic()
    before = scrape(generate_latest().decode())
    got = await client.get(f"/v1/patients/{c.patient_id}", headers=c.staff.auth)
    assert got.status_code == 200
    for _ in range(2):
        missing = await client.get(f"/v1/patients/{uuid.uuid4()}", headers=c.staff.auth)
        assert missing.status_code == 404
    probes = [f"/v1/nothing-{uuid.uuid4()}", "/wp-admin/setup.php", f"/v2/{uuid.uuid4()}/x"]
    for path in probes:
        assert (await client.get(path)).status_code == 404
    odd = await client.request("BREW", "/v1/patients")
    assert odd.status_code in (404, 405)
    after = scrape(generate_latest().decode())

    def grew(**labels: str) -> float:
        return value(after, COUNT, **labels) - value(before, COUNT, **labels)

    assert grew(operation="getPatient", method="GET", status="200") == 1
    assert grew(operation="getPatient", method="GET", status="404") == 2
    assert grew(operation=metrics.UNMATCHED, method="GET", status="404") == len(probes)
    # Labels are operationIds and fixed words only: no path, id or client method ever.
    labels = series(after, COUNT)
    operations = {found["operation"] for found in labels}
    assert not any("/" in operation for operation in operations)
    assert {found["method"] for found in labels} <= metrics.METHODS | {"other"}
    assert grew(operation=metrics.UNMATCHED, method="other", status=str(odd.status_code)) == 1
    assert value(after, "carebase_http_requests_in_flight") == 0
    assert value(after, "carebase_build_info", version="0.1.0", python=sys.version.split()[0])


async def test_pools_and_the_outbox_backlog_are_sampled(
    *, app: CoreApp, admin_conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    database = app.dependencies.database
    async with database.admin_transaction() as q:
        await q.execute("SELECT 1")
    await metrics.pools_of(database.pool_stats)()
    samples = scrape(generate_latest().decode())
    for pool in ("core-app", "core-admin"):
        assert value(samples, "carebase_db_pool_connections", pool=pool) >= 1
        assert value(samples, "carebase_db_pool_checkouts_total", pool=pool) >= 1
    # An event a minute old that nobody dispatched or forwarded yet.
    admin_conn.execute("UPDATE audit.outbox SET dispatched_at = now() WHERE dispatched_at IS NULL")
    made = admin_conn.execute(
        "INSERT INTO audit.outbox (topic, payload, created_at)"
        " VALUES ('test.metrics', '{}', now() - interval '60 seconds') RETURNING id"
    ).fetchone()
    assert made is not None
    try:
        await sample_backlog(database, forwarding=True)
    finally:  # a made-up event must not reach the relays of later tests
        admin_conn.execute("DELETE FROM audit.outbox WHERE id = %s", made)
    samples = scrape(generate_latest().decode())
    assert value(samples, "carebase_outbox_backlog", consumer="webhooks") >= 1
    assert value(samples, "carebase_outbox_oldest_unsent_age_seconds", consumer="webhooks") >= 59
    assert value(samples, "carebase_outbox_backlog", consumer="telemetry") >= 1


def _environment(
    stack: devstack.EmbeddedStack, data_dir: Path, metrics_port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": stack.database_url,
        "DATABASE_ADMIN_URL": stack.database_admin_url,
        "REDIS_URL": stack.redis_url,
        "RUN_WORKERS": "false",
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "2",
        "METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "warning",
    }


def test_several_workers_add_up_on_a_listener_of_their_own(
    stack: devstack.EmbeddedStack, tmp_path: Path
) -> None:
    port, metrics_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "carebase.operations.cli", "serve", "core", "--workers", "2"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=_environment(stack, tmp_path, metrics_port)
    )
    base, listener = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, "core exited while starting"
            assert time.monotonic() < deadline, "core did not become ready"
            try:
                # Each worker's app pool holds its one connection: the listener adds both up.
                pools = value(
                    scrape(httpx.get(listener, timeout=2).text),
                    "carebase_db_pool_connections",
                    pool="core-app",
                )
                if pools == 2 and httpx.get(f"{base}/health/live", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        for _ in range(40):
            with httpx.Client(base_url=base, timeout=5) as fresh:  # a new connection each
                assert fresh.get(f"/v1/nowhere/{uuid.uuid4()}").status_code == 404
        # /metrics is not served on the public port.
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 404
        samples = scrape(httpx.get(listener, timeout=5).text)
        assert value(samples, COUNT, operation=metrics.UNMATCHED, method="GET", status="404") == 41
        assert value(samples, "carebase_http_requests_in_flight") == 0
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
