"""The request path without the network: where a GET's CPU goes inside Carebase.

`python bench/inprocess.py [path-kind]` (after `make bench` seeded .data/bench) builds the core
app with production settings against the bench database and Redis, and calls it as ASGI from
16 concurrent tasks — no uvicorn, no sockets, no wrk — so the figures are Carebase's own:
CPU per request (this process), then a cProfile of the same loop sorted by own time.
`path-kind` is `patient` (GET /v1/patients/{id}, default), `live`, `me`, `calendar` (a
specialist-week of GET /v1/calendar) or `book` (POST /v1/appointments at a random future
start, with an Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import cProfile
import datetime as dt
import json
import os
import pstats
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
import run

from carebase.apps.core import create_app
from carebase.config import load_settings
from carebase.operations import devstack

REQUESTS = int(os.environ.get("REQUESTS", "20000"))
TASKS = int(os.environ.get("TASKS", "16"))


def library(filename: str) -> str:
    """`…/site-packages/psycopg/cursor.py` → psycopg; `…/src/web/edge.py` → carebase.web."""
    if "/src/" in filename:
        part = filename.split("/src/", 1)[1].split("/")
        return "carebase." + (part[0] if len(part) > 1 else part[0].removesuffix(".py"))
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C: sockets, crypto, orjson, dict …)"
    return "python stdlib: " + filename.rsplit("/", 1)[-1].removesuffix(".py")


def print_by_library(stats: pstats.Stats) -> None:
    own: dict[str, float] = {}
    total = 0.0
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        own[library(filename)] = own.get(library(filename), 0.0) + tottime
        total += tottime
    print("own time by library (cProfile):")
    for name, seconds in sorted(own.items(), key=lambda kv: -kv[1])[:18]:
        print(f"  {seconds / total:6.1%}  {name}")


def scope(target: str, token: str, method: str = "GET") -> dict[str, Any]:
    path, _, query = target.partition("?")
    extra = (
        [
            (b"content-type", b"application/json"),
            (b"idempotency-key", os.urandom(12).hex().encode()),
        ]
        if method == "POST"
        else []
    )
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:9100"),
            (b"user-agent", b"wrk"),
            (b"authorization", f"Bearer {token}".encode()),
            *extra,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9100),
    }


def request_for(kind: str, ids: list[str], booking: dict[str, Any]) -> tuple[str, str, bytes]:
    """Method, path and body of one request of `kind`."""
    if kind == "live":
        return "GET", "/health/live", b""
    if kind == "me":
        return "GET", "/v1/me", b""
    if kind == "calendar":
        return "GET", run.sample("calendar")[1], b""
    if kind == "book":
        start = run.scheduling.BOOKING_EPOCH + dt.timedelta(minutes=45 * random.randrange(10**7))
        body = json.dumps({**booking, "starts_at": start.isoformat()}).encode()
        return "POST", "/v1/appointments", body
    return "GET", f"/v1/patients/{random.choice(ids)}", b""


async def main(kind: str) -> None:
    stack = devstack.start(run.BENCH_DIR)
    token = run.seeded_token(stack)
    script = (run.BENCH_DIR / "random-patient.lua").read_text()
    ids = [quoted.strip('"') for quoted in script.split("{", 1)[1].split("}", 1)[0].split(",")]
    settings = load_settings(
        {
            "ENVIRONMENT": "production",
            "DATABASE_URL": stack.database_url,
            "DATABASE_ADMIN_URL": stack.database_admin_url,
            "REDIS_URL": stack.redis_url,
            "JWT_SIGNING_KEYS": run.keyring().dumps(),
            "DATA_ENCRYPTION_KEYS": run.data_keyring().dumps(),
            "SMTP_HOST": "127.0.0.1",
            "RATE_LIMIT_DEFAULT_LIMIT": "1000000",
            "LOG_LEVEL": "info",
            "DB_POOL_MIN_SIZE": "4",
            "DB_POOL_MAX_SIZE": "16",
        }
    )
    app = create_app(settings)
    lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await lifespan.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, lifespan_send))
    await started.wait()
    statuses: dict[int, int] = {}

    booking = json.loads((run.BENCH_DIR / "samples.json").read_text())["book"]["body"]

    async def one() -> None:
        method, target, sent = request_for(kind, ids, booking)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": sent, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope(target, token, method), receive, send)

    async def load(count: int) -> None:
        async def worker(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(worker(count // TASKS) for _ in range(TASKS)))

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    os.dup2(devnull, 1)  # the access log goes where production sends it in the bench
    try:
        await load(2000)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await load(REQUESTS)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        profiler = cProfile.Profile()
        profiler.enable()
        await load(REQUESTS // 4)
        profiler.disable()
    finally:
        os.dup2(saved, 1)
    print(
        f"{kind}: {REQUESTS / wall:,.0f} req/s in process, {cpu / REQUESTS * 1e6:.0f} µs CPU/request"
    )
    print(f"statuses: {statuses}")
    stats = pstats.Stats(profiler)
    print_by_library(stats)
    stats.sort_stats(os.environ.get("SORT", "tottime")).print_stats(
        int(os.environ.get("ROWS", "35"))
    )
    await lifespan.put({"type": "lifespan.shutdown"})
    await life


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "patient"))
