"""`make bench`: Carebase against its anchors, interleaved, and docs/benchmarks.{md,json}.

Starts the embedded stack under .data/bench, bootstraps and migrates it, seeds BENCH_PATIENTS
patients (default 100k) over 10 clinics, and measures with wrk at 64 connections on loopback:

- carebase: `carebase serve core` with production settings (response validation off, JSON
  access log to /dev/null): /health/live, /v1/me, GET /v1/patients/{id}, a page of 25, a
  specialist-week of the calendar and a booking (POST /v1/appointments with an
  Idempotency-Key) in a clinic of BENCH_APPOINTMENTS appointments (bench/scheduling.py), a
  40-item form and its submit (BENCH_FORMS forms, bench/forms.py), and a final report's PDF
  (BENCH_REPORTS reports, bench/documents.py);
- reference-fastapi: the same GET as a plain FastAPI + psycopg app (bench/reference.py);
- go: the same GET in Go with chi + pgx (bench/go/main.go, built here from Debian's packages);
- starlette: a bare Starlette route for /health/live (bench/bare.py).

Each stack runs with one and two workers (Go: GOMAXPROCS), in BENCH_ROUNDS rounds (default
3) whose stack order rotates, so drift on this shared machine spreads over all of them.
Absolute figures move ±25 % between runs; the report gives medians and the ratios between
stacks measured in the same run. Server CPU per request is the server processes'
user+system CPU over the run divided by the requests wrk completed.

Then the event relay is measured (bench/webhooks.py; BENCH_WEBHOOKS=0 skips it): deliveries/s
from one worker and outbox → first attempt latency. Then telemetry's ingest (bench/telemetry.py;
BENCH_TELEMETRY=0 skips it): analytics events/s and pose frames/s into one `carebase serve
telemetry`, and how soon an event is queryable. Then segments and CSV export over a clinic of
100,000 patients (bench/segments.py; BENCH_SEGMENTS=0 skips it), and the erasure of one
data subject with 10,000 telemetry rows (bench/gdpr.py; BENCH_GDPR=0 skips it), and a broadcast
campaign's expansion and send rate (bench/broadcasts.py; BENCH_BROADCASTS=0 skips it). Then the
calendar's statement is EXPLAINed at about a million appointments over 100 clinics
(BENCH_PLAN=0 skips it; the last plan stays in docs/benchmarks-plan.json).

BENCH_DURATION (s per run), BENCH_STACKS, BENCH_WORKERS and BENCH_ENDPOINTS (comma lists)
narrow a run for quick before/after checks; BENCH_WRITE=0 prints the summary without touching
docs/.
`bench/run.py --report` re-renders docs/benchmarks.md from docs/benchmarks.json (after
editing bench/history.md, say).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import broadcasts
import documents
import forms
import gdpr
import psutil
import psycopg
import scheduling
import segments
import telemetry
import webhooks
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from carebase.config import PROJECT_ROOT
from carebase.operations import devstack, migrations, seed
from carebase.operations.seed_clinical import seed_benchmark
from carebase.security.encryption import DataKeyring, load_data_keyring
from carebase.security.tokens import Keyring, TokenService, load_keyring

HOST, PORT = "127.0.0.1", 9100
CONNECTIONS, THREADS = 64, 2
DURATION_S = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP_S = 3
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PATIENTS = int(os.environ.get("BENCH_PATIENTS", "100000"))
ORGANIZATIONS = 10
REPORT = PROJECT_ROOT / "docs" / "benchmarks.md"
RECORDS = PROJECT_ROOT / "docs" / "benchmarks.json"
PLAN = PROJECT_ROOT / "docs" / "benchmarks-plan.json"
HISTORY = PROJECT_ROOT / "bench" / "history.md"
BENCH_DIR = PROJECT_ROOT / ".data" / "bench"
GO_PEER = BENCH_DIR / "go-peer"
ISSUER, AUDIENCE = "carebase", "carebase-api"

LIVE = "GET /health/live"
ME = "GET /v1/me"
PATIENT = "GET /v1/patients/{id}"
PAGE = "GET /v1/patients?page_size=25"
CALENDAR = "GET /v1/calendar (specialist-week)"
BOOK = "POST /v1/appointments (booking)"
FORM = "GET /v1/forms/{id} (40 items)"
SUBMIT = "POST /v1/forms/{id}/submit"
PDF = "GET /v1/reports/{id}/pdf"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    authenticated: bool
    script: str | None = None
    sample: str | None = None
    """For a scripted endpoint: the key of its preflight request in samples.json."""
    reset: bool = False
    """Its requests change what they act on: bench/forms.py resets the forms before each run."""


ENDPOINTS = {
    LIVE: Endpoint(LIVE, "/health/live", False),
    ME: Endpoint(ME, "/v1/me", True),
    PATIENT: Endpoint(PATIENT, "/v1/patients", True, "random-patient.lua", "patient"),
    PAGE: Endpoint(PAGE, "/v1/patients?page_size=25", True),
    CALENDAR: Endpoint(CALENDAR, "/v1/calendar", True, "calendar-week.lua", "calendar"),
    BOOK: Endpoint(BOOK, "/v1/appointments", True, "book.lua", "book"),
    FORM: Endpoint(FORM, "/v1/forms", True, "form-get.lua", "form"),
    SUBMIT: Endpoint(SUBMIT, "/v1/forms", True, "form-submit.lua", "submit", reset=True),
    PDF: Endpoint(PDF, "/v1/reports", True, "report-pdf.lua", "report_pdf"),
}
# stack → the endpoints it serves here
STACKS: dict[str, tuple[str, ...]] = {
    "carebase": (LIVE, ME, PATIENT, PAGE, CALENDAR, BOOK, FORM, SUBMIT, PDF),
    "reference-fastapi": (PATIENT,),
    "go": (PATIENT,),
    "starlette": (LIVE,),
}


@dataclass(frozen=True)
class Record:
    endpoint: str
    stack: str
    workers: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    requests: int
    non_2xx: int


# --- tools ----------------------------------------------------------------------------------


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        sys.exit(f"bench: install {' '.join(packages)} (Debian) first")
    print(f"bench: installing {' '.join(packages)} from Debian…", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        _apt_install("wrk")
    return shutil.which("wrk") or sys.exit("bench: wrk did not install")


GO_PACKAGES = ("golang-go", "golang-github-jackc-pgx-v4-dev", "golang-github-go-chi-chi-dev")
GOPATH = "/usr/share/gocode"


def build_go_peer() -> Path:
    """The Go peer, from Debian's Go and its packaged chi and pgx (GOPATH mode, no network)."""
    if not shutil.which("go") or not Path(GOPATH, "src/github.com/jackc/pgx/v4").exists():
        _apt_install(*GO_PACKAGES)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(BENCH_DIR / "go-cache"),
        "CGO_ENABLED": "0",
    }
    subprocess.run(
        ["go", "build", "-o", str(GO_PEER), "./bench/go/"], check=True, cwd=PROJECT_ROOT, env=env
    )
    return GO_PEER


# --- the stacks -------------------------------------------------------------------------------


def keyring() -> Keyring:
    return load_keyring(BENCH_DIR / "jwt-keys.json", token_ttl_s=3600)


def data_keyring() -> DataKeyring:
    return load_data_keyring(BENCH_DIR / "data-keys.json")


def _python_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _uvicorn(app: str, workers: int, *, pythonpath: Path) -> list[str]:
    return [
        _python_bin("uvicorn"),
        app,
        "--host",
        HOST,
        "--port",
        str(PORT),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--app-dir",
        str(pythonpath),
    ]


def start_server(
    stack: devstack.EmbeddedStack, workers: int, kind: str = "carebase"
) -> subprocess.Popen[bytes]:
    """Start one stack on PORT and wait until it answers."""
    common = {**os.environ, "DATABASE_URL": stack.database_url}
    if kind == "carebase":
        env = {
            **common,
            "ENVIRONMENT": "production",
            "DATABASE_ADMIN_URL": stack.database_admin_url,
            "REDIS_URL": stack.redis_url,
            "JWT_SIGNING_KEYS": keyring().dumps(),
            "DATA_ENCRYPTION_KEYS": data_keyring().dumps(),
            "SMTP_HOST": "127.0.0.1",  # production needs one; nothing is mailed during the run
            # One user sends every request: the limiter still runs its Redis script on each,
            # but the per-user default (600/min) would turn the run into a measurement of 429s.
            "RATE_LIMIT_DEFAULT_LIMIT": "1000000",
            "VALIDATE_RESPONSES": "false",
            "LOG_LEVEL": "info",
            "DB_POOL_MIN_SIZE": "4",
            "DB_POOL_MAX_SIZE": os.environ.get("BENCH_POOL", "16"),
        }
        command = [
            *(_python_bin("carebase"), "serve", "core"),
            *("--host", HOST, "--port", str(PORT), "--workers", str(workers)),
        ]
        ready = "/health/ready"
    elif kind == "reference-fastapi":
        env = {
            **common,
            "JWT_SIGNING_KEYS": keyring().dumps(),
            "DATA_ENCRYPTION_KEYS": data_keyring().dumps(),
        }
        command, ready = _uvicorn("reference:app", workers, pythonpath=PROJECT_ROOT / "bench"), ""
    elif kind == "starlette":
        env = dict(os.environ)
        command, ready = _uvicorn("bare:app", workers, pythonpath=PROJECT_ROOT / "bench"), ""
    elif kind == "go":
        env = {
            **common,
            "GOMAXPROCS": str(workers),
            "LISTEN": f"{HOST}:{PORT}",
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_PUBLIC_KEYS": json.dumps(
                {
                    k.kid: base64.b64encode(
                        k.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
                    ).decode()
                    for k in keyring().keys
                }
            ),
            "DATA_KEYS": json.dumps(
                {k.kid: base64.b64encode(k.secret).decode() for k in data_keyring().keys}
            ),
        }
        command, ready = [str(GO_PEER)], ""
    else:
        raise ValueError(kind)
    errors_log = BENCH_DIR / f"{kind}-stderr.log"
    with errors_log.open("wb") as errors:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            # Any HTTP answer (a 404 at /) means it listens; carebase must also be ready.
            urllib.request.urlopen(f"http://{HOST}:{PORT}{ready or '/health/live'}", timeout=1)
            return server
        except urllib.error.HTTPError:
            if not ready:
                return server
            time.sleep(0.2)
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit(f"bench: {kind} did not become ready:\n{errors_log.read_text()[-2000:]}")


def server_cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    return tree_cpu_seconds(server.pid)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its children."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# --- data -------------------------------------------------------------------------------------


def prepared_stack() -> devstack.EmbeddedStack:
    """The embedded stack under BENCH_DIR, bootstrapped and migrated."""
    stack = devstack.start(BENCH_DIR)
    migrations.bootstrap(
        superuser_url=stack.superuser_url,
        admin_url=stack.database_admin_url,
        app_url=stack.database_url,
    )
    migrations.up(stack.database_admin_url, PROJECT_ROOT / "sql")
    migrations.bootstrap(
        superuser_url=stack.superuser_url,
        admin_url=stack.telemetry_database_admin_url,
        app_url=stack.telemetry_database_url,
    )
    migrations.up(
        stack.telemetry_database_admin_url,
        PROJECT_ROOT / "sql" / "telemetry",
        migrations.TELEMETRY_MODULES,
    )
    return stack


def seeded_token(stack: devstack.EmbeddedStack) -> str:
    """Demo data and PATIENTS patients over ORGANIZATIONS clinics, the first with its
    appointments; a token of a staff member of the first clinic, and the wrk scripts (a random
    one of its patients, a specialist-week of its calendar, a booking)."""
    return _seeded(stack)[0]


def _seeded(stack: devstack.EmbeddedStack) -> tuple[str, uuid.UUID]:
    seed.seed_demo(
        stack.database_admin_url,
        password=seed.demo_password(BENCH_DIR),
        hasher=PasswordHasher(time_cost=1, memory_cost=1024),
        keyring=data_keyring(),
    )
    with psycopg.connect(stack.database_admin_url) as conn:
        clinics = seed_benchmark(
            conn,
            data_keyring(),
            patients=PATIENTS,
            organizations=ORGANIZATIONS,
            progress=sys.stderr.isatty(),
        )
        conn.execute("ANALYZE patients.patients")
        user = conn.execute(
            "INSERT INTO identity.users (email, display_name) VALUES ('bench-staff@example.com',"
            " 'Bench Staff') ON CONFLICT (email) DO UPDATE SET display_name = EXCLUDED.display_name"
            " RETURNING id"
        ).fetchone()
        assert user is not None  # noqa: S101 - RETURNING always yields the row
        conn.execute(
            "INSERT INTO identity.memberships (organization_id, user_id, role)"
            " VALUES (%s, %s, 'staff') ON CONFLICT DO NOTHING",
            (clinics[0], user[0]),
        )
        ids = [
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM patients.patients WHERE organization_id = %s"
                " ORDER BY random() LIMIT 1000",
                (clinics[0],),
            )
        ]
    samples = scheduling.prepare(stack, clinics[0], BENCH_DIR)
    samples |= forms.prepare(stack, clinics[0], BENCH_DIR, data_keyring())
    samples |= documents.prepare(stack, clinics[0], BENCH_DIR, data_keyring())
    # Seeding and earlier runs leave dead rows and stale visibility maps behind (the page of 25
    # ran at 520 req/s before a VACUUM and 710 after, same code): every run starts clean.
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    samples["patient"] = {"method": "GET", "path": f"/v1/patients/{ids[0]}"}
    (BENCH_DIR / "samples.json").write_text(json.dumps(samples, default=str))
    quoted = ",".join(f'"{i}"' for i in ids)
    (BENCH_DIR / "random-patient.lua").write_text(
        f"ids = {{{quoted}}}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        '  return wrk.format(nil, "/v1/patients/" .. ids[math.random(#ids)])\n'
        "end\n"
    )
    tokens = TokenService(keyring(), issuer=ISSUER, audience=AUDIENCE)
    token = tokens.issue(
        subject=str(user[0]), organization_id=str(clinics[0]), role="staff", ttl_s=3600
    )
    return token, clinics[0]


def sample(key: str) -> tuple[str, str, bytes | None]:
    """The preflight request of a scripted endpoint: method, path and body. A booking's start
    is drawn afresh, so a preflight never collides with an earlier run's."""
    found = json.loads((BENCH_DIR / "samples.json").read_text())[key]
    body = found.get("body")
    if body is not None and "starts_at" in body:
        # In the 20,000 slots (about 1.7 years) before the bookings' own range: in the future.
        slot = random.SystemRandom().randrange(1, 20_000)
        body["starts_at"] = (scheduling.BOOKING_EPOCH - dt.timedelta(minutes=45 * slot)).isoformat()
    return found["method"], found["path"], json.dumps(body).encode() if body else None


# --- measuring --------------------------------------------------------------------------------


def preflight(
    url: str, headers: list[str], *, method: str = "GET", body: bytes | None = None
) -> None:
    """A run of errors measures nothing: the endpoint must answer 2xx before wrk starts."""
    fields = dict(h.split(": ", 1) for h in headers)
    if body is not None:
        fields |= {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
    # url is our own http://127.0.0.1 address.
    request = urllib.request.Request(url, data=body, headers=fields, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            if 200 <= answer.status < 300:
                return
    except urllib.error.HTTPError as exc:
        sys.exit(f"bench: {url} answered {exc.code}: {exc.read()[:500]!r}")
    sys.exit(f"bench: {url} did not answer 2xx")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    wrk: str, url: str, seconds: int, headers: list[str], script: str | None = None
) -> tuple[int, float, float, float, int]:
    header_args = [arg for header in headers for arg in ("-H", header)]
    script_args = ["-s", str(BENCH_DIR / script)] if script else []
    done = subprocess.run(
        [
            *(wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"),
            *script_args,
            *header_args,
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    out = done.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        requests,
        rps,
        _ms(*p50.groups()) if p50 else float("nan"),
        _ms(*p99.groups()) if p99 else float("nan"),
        int(non_2xx.group(1)) if non_2xx else 0,
    )


SELECTED = frozenset(
    e.strip() for e in os.environ.get("BENCH_ENDPOINTS", ",".join(ENDPOINTS)).split(",") if e
)


def measure(
    wrk: str, stack: devstack.EmbeddedStack, kind: str, workers: int, round_: int, token: str
) -> list[Record]:
    records = []
    server = start_server(stack, workers, kind)
    try:
        for name in STACKS[kind]:
            if name not in SELECTED:
                continue
            endpoint = ENDPOINTS[name]
            url = f"http://{HOST}:{PORT}{endpoint.path}"
            headers = [f"Authorization: Bearer {token}"] if endpoint.authenticated else []
            if endpoint.reset:
                forms.reset(stack)
            if endpoint.sample is None:
                preflight(url, headers)
            else:
                method, path, body = sample(endpoint.sample)
                preflight(f"http://{HOST}:{PORT}{path}", headers, method=method, body=body)
            run_wrk(wrk, url, WARMUP_S, headers, endpoint.script)
            if endpoint.reset:
                forms.reset(stack)
            before = server_cpu_seconds(server)
            requests, rps, p50, p99, non_2xx = run_wrk(
                wrk, url, DURATION_S, headers, endpoint.script
            )
            cpu = server_cpu_seconds(server) - before
            records.append(
                Record(
                    name,
                    kind,
                    workers,
                    round_,
                    rps,
                    p50,
                    p99,
                    cpu / requests * 1e6,
                    requests,
                    non_2xx,
                )
            )
            print(
                f"bench: round {round_} {kind:<17} {name:<30} ×{workers}: {rps:>8,.0f} req/s "
                f"{cpu / requests * 1e6:>6,.0f} µs/req",
                flush=True,
            )
    finally:
        stop(server)
    return records


# --- the report -------------------------------------------------------------------------------


def median(records: Iterable[Record], field: str) -> float:
    values = [getattr(r, field) for r in records]
    return statistics.median(values) if values else float("nan")


def pick(records: list[Record], endpoint: str, stack: str, workers: int) -> list[Record]:
    return [r for r in records if (r.endpoint, r.stack, r.workers) == (endpoint, stack, workers)]


def ratio(records: list[Record], a: tuple[str, str], b: tuple[str, str], w: int, f: str) -> float:
    """Median of `a` over median of `b` (endpoint, stack) at `w` workers, for field `f`."""
    return median(pick(records, *a, w), f) / median(pick(records, *b, w), f)


def targets(records: list[Record]) -> list[tuple[str, str, float, bool]]:
    """Issue 9's targets: (what, wanted, measured, met)."""
    ours, ref, go = (PATIENT, "carebase"), (PATIENT, "reference-fastapi"), (PATIENT, "go")
    found = []
    for w in (1, 2):
        value = ratio(records, ours, ref, w, "rps")
        found.append((f"{PATIENT} req/s vs FastAPI, {w} worker(s)", "≥ 2×", value, value >= 2))
    value = ratio(records, ours, go, 2, "rps")
    found.append((f"{PATIENT} req/s vs Go, 2 workers", "≥ 0.30×", value, value >= 0.30))
    for w in (1, 2):
        value = ratio(records, ours, ref, w, "cpu_us_per_req")
        found.append(
            (f"{PATIENT} server CPU/req vs FastAPI, {w} worker(s)", "≤ 0.5×", value, value <= 0.5)
        )
    for w in (1, 2):
        value = ratio(records, (LIVE, "carebase"), (LIVE, "starlette"), w, "cpu_us_per_req")
        found.append(
            (f"{LIVE} server CPU/req vs bare Starlette, {w} worker(s)", "≤ 3×", value, value <= 3)
        )
    return [t for t in found if t[2] == t[2]]  # drop NaN (a narrowed run)


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, {platform.platform()}"


def _tool_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().split("\n")[0]


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _debian_version(package: str) -> str:
    return _tool_version(["dpkg-query", "-W", "-f", "${Version}", package])


def summary(records: list[Record]) -> str:
    rows = []
    keys = sorted(
        {(r.endpoint, r.stack, r.workers) for r in records},
        key=lambda k: (list(ENDPOINTS).index(k[0]), k[2], list(STACKS).index(k[1])),
    )
    for endpoint, stack, workers in keys:
        runs = pick(records, endpoint, stack, workers)
        rps = [r.rps for r in runs]
        rows.append(
            f"| {endpoint} | {stack} | {workers} | {median(runs, 'rps'):,.0f} "
            f"({min(rps):,.0f}–{max(rps):,.0f}) | {median(runs, 'p50_ms'):.2f} | "
            f"{median(runs, 'p99_ms'):.2f} | {median(runs, 'cpu_us_per_req'):,.0f} | "
            f"{len(runs)} | {sum(r.non_2xx for r in runs)} |"
        )
    return (
        "| endpoint | stack | workers | req/s median (min–max) | p50 ms | p99 ms "
        "| server CPU µs/req | runs | non-2xx |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
    )


def write_report(records: list[Record], wrk: str, *, when: datetime | None = None) -> None:
    packages = ", ".join(
        f"{name} {_package_version(name)}"
        for name in (
            "connexion",
            "uvicorn",
            "uvloop",
            "httptools",
            "psycopg",
            "starlette",
            "fastapi",
            "redis",
            "hiredis",
            "orjson",
            "fastjsonschema",
        )
    )
    go = (
        f"{_tool_version(['go', 'version'])}, pgx {_debian_version('golang-github-jackc-pgx-v4-dev')}"
        f", chi {_debian_version('golang-github-go-chi-chi-dev')}"
    )
    target_rows = "\n".join(
        f"| {what} | {wanted} | {value:.2f}× | {'met' if met else '**missed**'} |"
        for what, wanted, value, met in targets(records)
    )
    history = HISTORY.read_text() if HISTORY.exists() else ""
    recorded_plan = scheduling.load_plan(PLAN)
    plan = scheduling.plan_markdown(recorded_plan) if recorded_plan else ""
    hooks = (
        webhooks.markdown(json.loads(webhooks.RESULTS.read_text()))
        if webhooks.RESULTS.exists()
        else ""
    )
    ingest = (
        telemetry.markdown(json.loads(telemetry.RESULTS.read_text()))
        if telemetry.RESULTS.exists()
        else ""
    )
    grouped = (
        segments.markdown(json.loads(segments.RESULTS.read_text()))
        if segments.RESULTS.exists()
        else ""
    )
    erased = gdpr.markdown(json.loads(gdpr.RESULTS.read_text())) if gdpr.RESULTS.exists() else ""
    sent = (
        broadcasts.markdown(json.loads(broadcasts.RESULTS.read_text()))
        if broadcasts.RESULTS.exists()
        else ""
    )
    if when is None:  # a fresh run; a re-render keeps the records (and their time) as they are
        RECORDS.write_text(json.dumps([_public(r) for r in records], indent=1) + "\n")
    REPORT.write_text(
        f"""# Benchmarks

Written by `make bench` (bench/run.py) — rerun it to refresh this page and
[benchmarks.json](benchmarks.json) (one record per measured run). The sections after the
tables are kept in `bench/history.md`.

- **When**: {(when or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")}
- **Machine**: {machine()}
- **Versions**: Python {platform.python_version()}, {packages}; {go}; {_tool_version([wrk, "-v"])}
- **Command**: `wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION_S}s --latency <url>` after a {WARMUP_S} s
  warm-up, {ROUNDS} interleaved rounds (the stack order rotates each round), each stack with 1
  and 2 workers on loopback; embedded PostgreSQL 18 and Redis on unix sockets. Carebase runs
  `carebase serve core` with production settings: response validation off, JSON access log on
  (to /dev/null).
- **Server CPU per request**: user + system CPU time of the server processes during the run,
  divided by the requests completed (PostgreSQL and Redis are not counted, for any stack).
  wrk, PostgreSQL and Redis share the same two cores, so req/s is a floor.

The patient endpoints read a database of {PATIENTS:,} patients over {ORGANIZATIONS} clinics as a staff
member of one of them, with a real EdDSA JWT, under row-level security; GET by id asks for a
random one of 1,000 of the clinic's patients and opens its five sealed fields. The anchors:
**reference-fastapi** (bench/reference.py) and **go** (bench/go/main.go, chi + pgx) do the same
GET the straightforward way — verify the token on every request, a pooled read-only
transaction with the tenant settings, the select, the sealed fields opened — and trust the
token's role; neither has a rate limit, contract validation, audit context, problem documents,
security headers or an access log, all of which Carebase keeps. **starlette** is one bare route.

The scheduling endpoints work in the same clinic, which has {scheduling.APPOINTMENTS:,}
appointments over {scheduling.SPECIALISTS} specialists: the calendar asks for a random
specialist-week of them (about 65 appointments, each with its video state and the moves it
allows); a booking creates a 45-minute appointment at a random future start for a random
specialist and patient with a fresh `Idempotency-Key` — the working-hours check, the
per-specialist lock, the exclusion constraint, the history event, the reminder, the audit row
and the stored idempotent answer, in one transaction. A start someone already took is a 409
(counted as non-2xx).

The forms and documents endpoints work in the same clinic too: a form of 40 items (4 groups,
enable_when, a sealed answer per group) read by id from {forms.FORMS:,} forms, and submitted
(enable_when evaluated, hidden answers dropped, required ones checked, the answers re-sealed,
the audit row) — each run walks forms still in progress; and a random one of
{documents.REPORTS:,} final reports rendered as a PDF/A with typst (its body opened, the clinic,
patient and visit read, the read audited).

## Medians

{summary(records)}

## Targets (issue 9), from the medians of this run

| what | wanted | measured | |
|---|---|---:|---|
{target_rows}

{hooks}
{ingest}
{grouped}
{erased}
{sent}
{plan}
{history}"""
    )
    print(f"bench: wrote {REPORT.relative_to(PROJECT_ROOT)} and {RECORDS.name}", flush=True)


def _public(record: Record) -> dict[str, object]:
    out = asdict(record)
    for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"):
        out[key] = round(out[key], 3)
    return out


def main() -> None:
    if sys.argv[1:] == ["--report"]:  # re-render docs/benchmarks.md from the recorded runs
        recorded = [Record(**r) for r in json.loads(RECORDS.read_text())]
        ran = datetime.fromtimestamp(RECORDS.stat().st_mtime, UTC)
        write_report(recorded, shutil.which("wrk") or "wrk", when=ran)
        return
    wrk = ensure_wrk()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in os.environ.get("BENCH_STACKS", ",".join(STACKS)).split(",") if k]
    worker_counts = [int(w) for w in os.environ.get("BENCH_WORKERS", "1,2").split(",") if w]
    if "go" in kinds:
        build_go_peer()
    stack = prepared_stack()
    records: list[Record] = []
    try:
        token, clinic = _seeded(stack)
        for round_ in range(1, ROUNDS + 1):
            order = kinds[round_ - 1 :] + kinds[: round_ - 1]
            for workers in worker_counts:
                for kind in order:
                    records += measure(wrk, stack, kind, workers, round_, token)
        plan, hooks, ingest, grouped, erased = _beside(stack, clinic, wrk)
    finally:
        stack.stop()
    if plan is not None:
        for name, text in plan["plans"].items():  # type: ignore[union-attr]
            print(f"bench: calendar plan, {name}:\n{text}")
    print(summary(records))
    for what, wanted, value, met in targets(records):
        print(f"  {what}: {value:.2f}× (wanted {wanted}) {'met' if met else 'MISSED'}")
    if os.environ.get("BENCH_WRITE", "1") != "0":
        save(records, wrk, plan=plan, hooks=hooks, ingest=ingest, grouped=grouped, erased=erased)


def _beside(
    stack: devstack.EmbeddedStack, clinic: uuid.UUID, wrk: str
) -> tuple[dict[str, object] | None, object | None, object | None, object | None, object | None]:
    """The measurements beside the HTTP table, each skipped by its BENCH_… = 0."""

    def wanted(name: str) -> bool:
        return os.environ.get(name, "1") != "0"

    plan = scheduling.calendar_plan(stack, clinic) if wanted("BENCH_PLAN") else None
    hooks = webhooks.measure(stack, BENCH_DIR) if wanted("BENCH_WEBHOOKS") else None
    ingest = telemetry.measure(stack, BENCH_DIR, wrk) if wanted("BENCH_TELEMETRY") else None
    grouped = segments.measure(stack) if wanted("BENCH_SEGMENTS") else None
    erased = gdpr.measure(stack, BENCH_DIR) if wanted("BENCH_GDPR") else None
    if wanted("BENCH_BROADCASTS"):
        sent = broadcasts.measure(stack, BENCH_DIR)
        if wanted("BENCH_WRITE"):
            broadcasts.RESULTS.write_text(json.dumps(sent, indent=1) + "\n")
    return plan, hooks, ingest, grouped, erased


def save(
    records: list[Record],
    wrk: str,
    *,
    plan: dict[str, object] | None,
    hooks: object | None,
    ingest: object | None,
    grouped: object | None,
    erased: object | None,
) -> None:
    if plan is not None:
        PLAN.write_text(json.dumps(plan, indent=1) + "\n")
    if hooks is not None:
        webhooks.RESULTS.write_text(json.dumps(hooks, indent=1) + "\n")
    if ingest is not None:
        telemetry.RESULTS.write_text(json.dumps(ingest, indent=1) + "\n")
    if grouped is not None:
        segments.RESULTS.write_text(json.dumps(grouped, indent=1) + "\n")
    if erased is not None:
        gdpr.RESULTS.write_text(json.dumps(erased, indent=1) + "\n")
    write_report(records, wrk)


if __name__ == "__main__":
    main()
