"""`make bench`: load a live core server with wrk and write docs/benchmarks.md.

Starts the embedded stack under .data/bench, bootstraps and migrates it, runs
`carebase serve core` with production settings (response validation off, JSON access log to
/dev/null), and drives each endpoint with wrk at 64 connections on loopback. Server CPU per
request is the server processes' user+system CPU time over the run divided by the requests
wrk completed. Bounded: each run lasts DURATION seconds.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import psutil
import psycopg
from argon2 import PasswordHasher

from carebase import devstack, migrations, seed
from carebase.config import PROJECT_ROOT
from carebase.tokens import Keyring, TokenService, load_keyring

HOST, PORT = "127.0.0.1", 9100
CONNECTIONS, THREADS = 64, 2
DURATION_S = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP_S = 3
# (name, path, authenticated): the second pays for a JWT, the role lookup and an RLS read.
ENDPOINTS = [("GET /health/live", "/health/live", False), ("GET /v1/me", "/v1/me", True)]
REPORT = PROJECT_ROOT / "docs" / "benchmarks.md"
BENCH_DIR = PROJECT_ROOT / ".data" / "bench"


@dataclass(frozen=True)
class Result:
    name: str
    workers: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    non_2xx: int


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("bench: wrk is missing; install it (Debian: apt-get install wrk)")
    print("bench: installing wrk from Debian…", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL
    )
    return shutil.which("wrk") or sys.exit("bench: wrk did not install")


def start_server(stack: devstack.EmbeddedStack, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "DATABASE_URL": stack.database_url,
        "DATABASE_ADMIN_URL": stack.database_admin_url,
        "REDIS_URL": stack.redis_url,
        "JWT_SIGNING_KEYS": keyring().dumps(),
        "SMTP_HOST": "127.0.0.1",  # production needs one; nothing is mailed during the run
        # One user sends every request: the limiter still runs its Redis script on each, but
        # the per-user default (600/min) would turn the run into a measurement of 429s.
        "RATE_LIMIT_DEFAULT_LIMIT": "1000000",
        "VALIDATE_RESPONSES": "false",
        "LOG_LEVEL": "info",
        "DB_POOL_MIN_SIZE": "4",
        "DB_POOL_MAX_SIZE": "16",
    }
    command = [
        str(Path(sys.executable).parent / "carebase"),
        "serve",
        "core",
        "--host",
        HOST,
        "--port",
        str(PORT),
        "--workers",
        str(workers),
    ]
    errors_log = BENCH_DIR / "server-stderr.log"
    with errors_log.open("wb") as errors:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{PORT}/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit(f"bench: the server did not become ready:\n{errors_log.read_text()[-2000:]}")


def server_cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    root = psutil.Process(server.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def keyring() -> Keyring:
    return load_keyring(BENCH_DIR / "jwt-keys.json", token_ttl_s=3600)


def demo_token(stack: devstack.EmbeddedStack) -> str:
    """An access token of the seeded north-clinic admin, signed with the server's keyring."""
    seed.seed_demo(
        stack.database_admin_url,
        password=seed.demo_password(BENCH_DIR),
        hasher=PasswordHasher(time_cost=1, memory_cost=1024),
    )
    with psycopg.connect(stack.database_admin_url) as conn:
        row = conn.execute(
            "SELECT m.user_id, m.organization_id FROM identity.memberships m"
            " JOIN identity.users u ON u.id = m.user_id WHERE u.email = %s",
            (f"admin@north-clinic.{seed.DOMAIN}",),
        ).fetchone()
    if row is None:
        sys.exit("bench: the demo seed did not create the north-clinic admin")
    tokens = TokenService(keyring(), issuer="carebase", audience="carebase-api")
    return tokens.issue(subject=str(row[0]), organization_id=str(row[1]), role="admin", ttl_s=3600)


def preflight(url: str, headers: list[str]) -> None:
    """A run of errors measures nothing: the endpoint must answer 2xx before wrk starts."""
    # url is our own http://127.0.0.1 address.
    request = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            if 200 <= answer.status < 300:
                return
    except urllib.error.HTTPError as exc:
        sys.exit(f"bench: {url} answered {exc.code}: {exc.read()[:500]!r}")
    sys.exit(f"bench: {url} did not answer 2xx")


def run_wrk(
    wrk: str, url: str, seconds: int, headers: list[str]
) -> tuple[int, float, float, float, int]:
    header_args = [arg for header in headers for arg in ("-H", header)]
    done = subprocess.run(
        [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", *header_args, url],
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


def measure(wrk: str, stack: devstack.EmbeddedStack, workers: int, token: str) -> list[Result]:
    server = start_server(stack, workers)
    results = []
    try:
        for name, path, authenticated in ENDPOINTS:
            url = f"http://{HOST}:{PORT}{path}"
            headers = [f"Authorization: Bearer {token}"] if authenticated else []
            preflight(url, headers)
            run_wrk(wrk, url, WARMUP_S, headers)
            before = server_cpu_seconds(server)
            requests, rps, p50, p99, non_2xx = run_wrk(wrk, url, DURATION_S, headers)
            cpu = server_cpu_seconds(server) - before
            results.append(
                Result(name, workers, requests, rps, p50, p99, cpu / requests * 1e6, non_2xx)
            )
            print(f"bench: {name} ×{workers} worker(s): {rps:,.0f} req/s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, {platform.platform()}"


def write_report(results: list[Result], wrk: str) -> None:
    wrk_version = subprocess.run(
        [wrk, "-v"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("connexion", "uvicorn", "uvloop", "httptools", "psycopg", "starlette")
    )
    rows = "\n".join(
        f"| {r.name} | {r.workers} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
        f"{r.cpu_us_per_request:.0f} | {r.requests:,} | {r.non_2xx} |"
        for r in results
    )
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(
        f"""# Benchmarks

Written by `make bench` (bench/run.py) — rerun it to refresh this page.

- **When**: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
- **Machine**: {machine()}
- **Versions**: Python {platform.python_version()}, {packages}; {wrk_version}
- **Command**: `wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION_S}s --latency <url>` after a
  {WARMUP_S} s warm-up, against `carebase serve core --workers N` on loopback, with production
  settings: response validation off, JSON access log on (to /dev/null), embedded PostgreSQL
  and Redis on unix sockets.
- **Server CPU per request**: user + system CPU time of the server processes during the run,
  divided by the requests completed. wrk shares the same cores, so req/s is a floor.

| endpoint | workers | req/s | p50 ms | p99 ms | server CPU µs/req | requests | non-2xx |
|---|---:|---:|---:|---:|---:|---:|---:|
{rows}

## Reading it

`/health/live` touches no dependency: it is the fixed cost of the stack every request pays —
uvicorn + httptools, Carebase's six ASGI layers (request id, recovery, security headers,
access log, attack blocker, body limit), and Connexion's routing, security and validation
middlewares. Endpoints that reach PostgreSQL add their transaction on top of this. For scale
(GROUND.md, same machine class): raw ASGI ≈ 30 µs, Starlette ≈ 43 µs, Connexion with no
database ≈ 250 µs per request.

`/v1/me` is the first authenticated endpoint: the bearer token's EdDSA signature is verified,
the membership role is read from the database (then trusted for `AUTH_CACHE_S`), the
x-permission is checked, the per-user rate limit runs its Redis script, and the handler reads
the user and the active organization in one read-only RLS transaction (SET TRANSACTION READ
ONLY, the tenant settings, two SELECTs, COMMIT: five round trips). The tokens come from the
seeded north-clinic admin.
"""
    )
    print(f"bench: wrote {REPORT.relative_to(PROJECT_ROOT)}", flush=True)


def main() -> None:
    wrk = ensure_wrk()
    stack = devstack.start(BENCH_DIR)
    try:
        migrations.bootstrap(
            superuser_url=stack.superuser_url,
            admin_url=stack.database_admin_url,
            app_url=stack.database_url,
        )
        migrations.up(stack.database_admin_url, PROJECT_ROOT / "sql")
        token = demo_token(stack)
        results = [*measure(wrk, stack, 1, token), *measure(wrk, stack, 2, token)]
    finally:
        stack.stop()
    write_report(results, wrk)


if __name__ == "__main__":
    main()
