"""`carebase serve telemetry` as its own process: SIGTERM writes every accepted row, and the
embedded engine's one-process rule is enforced with a clear message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import SERVICE_TOKEN, _free_port
from support import Person

from carebase.operations import cli, devstack


def _environment(stack: devstack.EmbeddedStack, data_dir: Path, live_server: str) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATA_DIR": str(data_dir),
        "TELEMETRY_DATABASE_URL": stack.telemetry_database_url,
        "TELEMETRY_DATABASE_ADMIN_URL": stack.telemetry_database_admin_url,
        "REDIS_URL": stack.redis_url,
        "AUTH_JWKS_URL": f"{live_server}/.well-known/jwks.json",
        "AUTH_ISSUER": "carebase",
        "AUTH_AUDIENCE": "carebase-api",
        "TELEMETRY_SERVICE_TOKEN": SERVICE_TOKEN,
        "LOG_LEVEL": "warning",
    }


def test_sigterm_writes_the_rows_still_buffered(
    stack: devstack.EmbeddedStack,
    live_server: str,
    tmp_path: Path,
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> None:
    someone = person(new_org(), "patient")
    port = _free_port()
    env = _environment(stack, tmp_path, live_server)
    command = [sys.executable, "-m", "carebase.operations.cli", "serve", "telemetry"]
    server = subprocess.Popen([*command, "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "telemetry exited while starting"
            assert time.monotonic() < deadline, "telemetry did not become ready"
            time.sleep(0.1)
        now = datetime.now(UTC).isoformat()
        batch = {
            "batch": [
                {"message_id": uuid.uuid4().hex, "event": "Set Done", "timestamp": now}
                for _ in range(250)
            ]
        }
        answer = httpx.post(f"{base}/v1/analytics/batch", json=batch, headers=someone.auth)
        assert answer.status_code == 202, answer.text
        server.send_signal(signal.SIGTERM)  # well inside the one-second flush interval
        # uvicorn shuts down gracefully (lifespan included), then raises SIGTERM again.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # The engine's directory is free again: read it from another process.
    count = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from carebase.persistence import clickhouse;"
            "c = clickhouse.connect(None, Path(sys.argv[1]));"
            "print(c.query('SELECT count() FROM telemetry.analytics_events').result_rows[0][0])",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert count.stdout.strip() == "250"


def test_several_workers_need_a_clickhouse_server(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stack: devstack.EmbeddedStack,
) -> None:
    for name, value in {
        "TELEMETRY_DATABASE_URL": stack.telemetry_database_url,
        "TELEMETRY_DATABASE_ADMIN_URL": stack.telemetry_database_admin_url,
        "REDIS_URL": stack.redis_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    assert cli.main(["serve", "telemetry", "--workers", "2"]) == 2
    assert "needs a ClickHouse server" in capsys.readouterr().err
