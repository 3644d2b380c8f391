"""Graceful drain, with a real SIGTERM to a real server process: a request in flight finishes
with its 2xx; one still running past GRACEFUL_SHUTDOWN_S is cancelled and its transaction
rolled back (no row, no audit row); the process exits 0 and leaves no session behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import _free_port

from carebase.operations import devstack

pytestmark = pytest.mark.integration

SERVER = Path(__file__).resolve().parent.parent / "drain_server.py"
APPLICATION = "carebase-drain-test"
GRACE_S = 2


def sessions(conn: psycopg.Connection[tuple[Any, ...]], state: str | None = None) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND (%s::text IS NULL OR state = %s)",
        (APPLICATION, state, state),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_sigterm_finishes_a_request_in_flight_and_cancels_one_past_the_bound(
    stack: devstack.EmbeddedStack,
    tmp_path: Path,
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    org = new_org()
    port = _free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": stack.database_url,
        "DATABASE_ADMIN_URL": stack.database_admin_url,
        "REDIS_URL": stack.redis_url,
        "RUN_WORKERS": "false",
        "GRACEFUL_SHUTDOWN_S": str(GRACE_S),
        "LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, str(SERVER), str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    answers: dict[str, httpx.Response | Exception] = {}

    def call(marker: str, seconds: float) -> None:
        body = {"organization_id": str(org), "marker": marker, "seconds": seconds}
        try:
            answers[marker] = httpx.post(f"{base}/test/slow", json=body, timeout=60)
        except httpx.HTTPError as exc:
            answers[marker] = exc

    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "the server exited while starting"
            assert time.monotonic() < deadline, "the server did not become ready"
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        callers = [
            threading.Thread(target=call, args=("quick", 1.0)),
            threading.Thread(target=call, args=("late", 30.0)),
        ]
        for caller in callers:
            caller.start()
        # Both are inside their transactions (written, not committed) before the signal.
        while sessions(admin_conn, "idle in transaction") < 2:
            assert time.monotonic() < deadline, "the requests did not start"
            time.sleep(0.05)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=GRACE_S + 20) == 0
        took = time.monotonic() - signalled
        for caller in callers:
            caller.join(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    quick = answers["quick"]
    assert isinstance(quick, httpx.Response)
    assert quick.status_code == 201, quick.text
    late = answers["late"]
    assert not (isinstance(late, httpx.Response) and late.is_success)
    assert GRACE_S <= took < GRACE_S + 10  # the bound, not the late request's 30 s
    rows = admin_conn.execute(
        "SELECT given_name FROM patients.patients WHERE organization_id = %s", (org,)
    ).fetchall()
    assert rows == [("quick",)]
    audited = admin_conn.execute(
        "SELECT count(*) FROM audit.events WHERE organization_id = %s", (org,)
    ).fetchone()
    assert audited == (1,)
    assert sessions(admin_conn) == 0
