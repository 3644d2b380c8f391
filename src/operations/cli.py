"""`carebase`: run the platform, its database chores and its embedded development stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from carebase.config import ConfigError, Settings, load_settings
from carebase.operations import devstack, migrations, seed
from carebase.security.encryption import DataKeyring, load_data_keyring
from carebase.security.tokens import Keyring, SigningKey, load_keyring, save_keyring


def core_app_factory() -> object:
    """What uvicorn workers import (`carebase serve core`): settings from the environment."""
    from carebase.apps.core import create_app

    return create_app(load_settings())


def telemetry_app_factory() -> object:
    """What uvicorn imports for `carebase serve telemetry`: settings from the environment."""
    from carebase.apps.telemetry import create_app

    return create_app(load_settings(require=TELEMETRY_REQUIRED))


TELEMETRY_REQUIRED = ("telemetry_database_url", "telemetry_database_admin_url", "redis_url")


def _settings(*, require: tuple[str, ...]) -> Settings:
    try:
        return load_settings(require=require)
    except ConfigError as exc:
        print(f"carebase: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _with_stack(settings: Settings) -> tuple[Settings, devstack.EmbeddedStack | None, str | None]:
    """Settings for real servers; without DATABASE_URL, the embedded stack under DATA_DIR."""
    superuser = settings.database_superuser_url
    if settings.database_url and settings.database_admin_url and settings.redis_url:
        return settings, None, superuser
    if settings.database_url or settings.database_admin_url or settings.redis_url:
        print(
            "carebase: set all of DATABASE_URL, DATABASE_ADMIN_URL and REDIS_URL, or none of them "
            "to use the embedded stack",
            file=sys.stderr,
        )
        raise SystemExit(2)
    stack = devstack.start(settings.data_dir)
    updated = settings.model_copy(
        update={
            "database_url": stack.database_url,
            "database_admin_url": stack.database_admin_url,
            "redis_url": stack.redis_url,
            "telemetry_database_url": stack.telemetry_database_url,
            "telemetry_database_admin_url": stack.telemetry_database_admin_url,
        }
    )
    return updated, stack, stack.superuser_url


def _seed(settings: Settings) -> tuple[list[seed.Account], str]:
    from argon2 import PasswordHasher

    password = seed.demo_password(settings.data_dir)
    hasher = PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_cost=settings.password_hash_memory_kib,
        parallelism=4,
    )
    from carebase.apps.common import blob_store

    blobs = blob_store(settings)

    def store_blob(key: str, data: bytes, media_type: str) -> None:
        with contextlib.suppress(FileExistsError):  # kept from a run that was rolled back
            asyncio.run(blobs.put(key, data, media_type))

    return seed.seed_demo(
        settings.server_urls().database_admin,
        password=password,
        hasher=hasher,
        keyring=_data_keyring(settings),
        store_blob=store_blob,
    ), password


def _data_keyring(settings: Settings) -> DataKeyring:
    from carebase.apps.common import data_keyring_path

    return load_data_keyring(data_keyring_path(settings), from_env=settings.data_encryption_keys)


def _bootstrap(settings: Settings, superuser_url: str) -> None:
    """Roles, database and grants for core's database, and telemetry's when it is set."""
    urls = settings.server_urls()
    migrations.bootstrap(
        superuser_url=superuser_url, admin_url=urls.database_admin, app_url=urls.database
    )
    if settings.telemetry_database_url and settings.telemetry_database_admin_url:
        telemetry = settings.telemetry_urls()
        migrations.bootstrap(
            superuser_url=superuser_url,
            admin_url=telemetry.database_admin,
            app_url=telemetry.database,
        )


def _prepare(settings: Settings, superuser_url: str | None) -> None:
    """Bootstrap (with a superuser) and migrate core's database, and telemetry's when set."""
    if superuser_url:
        _bootstrap(settings, superuser_url)
    migrations.up(settings.server_urls().database_admin, settings.migrations_dir)
    if settings.telemetry_database_url and settings.telemetry_database_admin_url:
        telemetry = settings.telemetry_urls()
        migrations.up(
            telemetry.database_admin,
            settings.migrations_dir / "telemetry",
            migrations.TELEMETRY_MODULES,
        )


def _clickhouse(settings: Settings, action: str) -> str:
    """Apply (`up`) or list (`status`) the ClickHouse migrations. The embedded engine is
    opened for the moment, so this fails clearly while a telemetry server holds it."""
    from carebase.operations import clickhouse_migrations
    from carebase.persistence import clickhouse

    client = clickhouse.connect(settings.clickhouse_url, settings.data_dir)
    try:
        directory = settings.migrations_dir / "clickhouse"
        if action == "up":
            clickhouse_migrations.up(client, directory)
            clickhouse_migrations.apply_retention(client, settings.retention_days)
        return clickhouse_migrations.status(client, directory)
    finally:
        client.close()


def cmd_dev(_: argparse.Namespace) -> int:
    # uvicorn shuts down gracefully on SIGTERM, then raises it again; by default that kills
    # the process before `finally` and atexit run, and the embedded engines would outlive it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    from carebase import metrics
    from carebase.apps.core import create_app

    settings, stack, superuser = _with_stack(_settings(require=()))
    listener: metrics.Listener | None = None
    if not settings.telemetry_service_token:
        token = devstack.service_token(settings.data_dir)
        settings = settings.model_copy(update={"telemetry_service_token": token})
    worker: subprocess.Popen[bytes] | None = None
    telemetry: subprocess.Popen[bytes] | None = None
    try:
        _prepare(settings, superuser)
        accounts, password = _seed(settings)
        # Telemetry and the background work run beside the API in their own processes, as
        # in production.
        telemetry = _start_telemetry(settings)
        worker = _start_worker(settings)
        app = create_app(settings.model_copy(update={"run_workers": False}))
        listener = metrics.start_listener(settings.metrics_host, settings.metrics_port)
        base = f"http://{settings.host}:{settings.core_port}"
        telemetry_base = f"http://{settings.host}:{settings.telemetry_port}"
        print(
            "\nCarebase core is starting (Ctrl-C stops everything):\n"
            f"  API            {base}\n"
            f"  OpenAPI spec   {base}/openapi.yaml\n"
            f"  Swagger UI     {base}/ui/\n"
            f"  Readiness      {base}/health/ready\n"
            f"  Metrics        http://{settings.metrics_host}:{settings.metrics_port}/metrics"
            f" (telemetry :{settings.telemetry_metrics_port}, worker"
            f" :{settings.worker_metrics_port})\n"
            f"  Telemetry      {telemetry_base} (spec {telemetry_base}/openapi.yaml,"
            f" UI {telemetry_base}/ui/)\n"
            f"  Worker         pid {worker.pid} (mail, webhooks, telemetry relay, video rooms,"
            " reminders, blobs)\n"
            f"  Data           {settings.data_dir}\n"
            f"  Mail           {settings.mailbox_dir} (and the log)\n\n"
            f"Demo accounts, all with the password {password}:\n"
            + "\n".join(
                f"  {a.role:<11} {a.email:<52} {a.organization or '(platform)'}" for a in accounts
            )
            + "\n\nSign in:\n"
            f"  curl -s {base}/v1/auth/login -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"email": "{accounts[1].email}", "password": "{password}"}}\'\n',
            flush=True,
        )
        serve_in_process(app, settings, host=settings.host, port=settings.core_port)
    finally:
        if listener is not None:
            listener.close()
        for process in (worker, telemetry):
            if process is not None:
                _stop_worker(process, settings.graceful_shutdown_s)
        if stack:
            stack.stop()
    return 0


def serve_in_process(app: object, settings: Settings, *, host: str, port: int) -> None:
    """uvicorn in this process, configured as `carebase serve` configures its workers."""
    import uvicorn

    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, **_uvicorn_options(settings))  # type: ignore[arg-type]
    ).run()


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What every Carebase server runs with, in process or as `carebase serve`'s workers.
    uvloop: with the stdlib loop and several workers, uvicorn never sets TCP_NODELAY and every
    response stalls ~44 ms (GROUND.md)."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
    }


def _child_env(settings: Settings) -> dict[str, str]:
    """The environment of `make dev`'s other processes: the same servers and data."""
    base = f"http://{settings.host}:{settings.core_port}"
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "DATABASE_ADMIN_URL": settings.database_admin_url or "",
        "REDIS_URL": settings.redis_url or "",
        "TELEMETRY_DATABASE_URL": settings.telemetry_database_url or "",
        "TELEMETRY_DATABASE_ADMIN_URL": settings.telemetry_database_admin_url or "",
        "DATA_DIR": str(settings.data_dir),
        "TELEMETRY_SERVICE_TOKEN": settings.telemetry_service_token or "",
        "TELEMETRY_INTERNAL_URL": f"http://{settings.host}:{settings.telemetry_port}",
        "AUTH_JWKS_URL": f"{base}/.well-known/jwks.json",
        "AUTH_ISSUER": settings.jwt_issuer,
        "AUTH_AUDIENCE": settings.jwt_audience,
    }


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """`carebase worker` against the same servers and data directory; it forwards events to
    the telemetry service beside it."""
    env = _child_env(settings)
    for name in ("AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"):  # core's own tokens only
        env.pop(name)
    return subprocess.Popen([sys.executable, "-m", "carebase.operations.cli", "worker"], env=env)


def _start_telemetry(settings: Settings) -> subprocess.Popen[bytes]:
    """`carebase serve telemetry` (one worker: it owns the embedded ClickHouse engine)."""
    env = _child_env(settings)
    env.pop("TELEMETRY_INTERNAL_URL")
    return subprocess.Popen(
        [sys.executable, "-m", "carebase.operations.cli", "serve", "telemetry", "--workers", "1"],
        env=env,
    )


def _stop_worker(worker: subprocess.Popen[bytes], grace_s: float) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=grace_s + 5)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    telemetry = args.service == "telemetry"
    required = (
        TELEMETRY_REQUIRED if telemetry else ("database_url", "database_admin_url", "redis_url")
    )
    settings = _settings(require=required)
    workers = args.workers or settings.workers
    if telemetry and workers > 1 and not settings.clickhouse_url:
        print(
            "carebase: the embedded ClickHouse engine can be opened by one process only, so "
            f"`serve telemetry --workers {workers}` needs a ClickHouse server: set "
            "CLICKHOUSE_URL, or serve with one worker",
            file=sys.stderr,
        )
        return 2
    from carebase import metrics

    port = settings.telemetry_metrics_port if telemetry else settings.metrics_port
    public = args.port or (settings.telemetry_port if telemetry else settings.core_port)
    if port and port == public:
        print(
            f"carebase: port {public} is the metrics listener's; serve on another port or move"
            f" {'TELEMETRY_METRICS_PORT' if telemetry else 'METRICS_PORT'}",
            file=sys.stderr,
        )
        return 2
    # Several workers write their numbers to files the listener here adds up; one serves its own.
    shared = metrics.prepare_multiprocess() if workers > 1 and port else None
    listener = metrics.start_listener(settings.metrics_host, port)
    try:
        _serve(args, settings, telemetry=telemetry, workers=workers)
    finally:
        if listener is not None:
            listener.close()
        if shared is not None:
            metrics.forget_multiprocess(shared)
    return 0


def _serve(args: argparse.Namespace, settings: Settings, *, telemetry: bool, workers: int) -> None:
    import uvicorn

    # uvicorn drains on SIGTERM (stops accepting, waits for requests in flight up to
    # GRACEFUL_SHUTDOWN_S, runs the lifespan's shutdown), then raises the signal again under
    # the handler it found: this one lets the drained process exit 0, not die by the signal.
    signal.signal(signal.SIGTERM, lambda *_: None)

    uvicorn.run(
        f"carebase.operations.cli:{'telemetry' if telemetry else 'core'}_app_factory",
        factory=True,
        host=args.host or settings.host,
        port=args.port or (settings.telemetry_port if telemetry else settings.core_port),
        workers=workers,
        **_uvicorn_options(settings),
        # X-Forwarded-For is believed only from TRUSTED_PROXIES (uvicorn rewrites the client
        # address, which rate limits key on); with none listed, the peer address is the client.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )


def cmd_worker(_: argparse.Namespace) -> int:
    """The background work (mail, webhooks and the telemetry forward, video rooms, reminders,
    blob deletions, housekeeping) in this process, until SIGTERM or SIGINT; run the API with
    RUN_WORKERS=false beside it."""
    from carebase.apps.worker import run_worker

    settings = _settings(require=("database_url", "database_admin_url", "redis_url"))

    from carebase import metrics

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await run_worker(settings, stopping)

    listener = metrics.start_listener(settings.metrics_host, settings.worker_metrics_port)
    try:
        asyncio.run(main())
    finally:
        if listener is not None:
            listener.close()
    return 0


def cmd_events_status(_: argparse.Namespace) -> int:
    """The event relays' numbers as JSON: outbox backlogs and their oldest event's age,
    deliveries by status, those due now and the oldest due, endpoints by status."""
    import dataclasses
    import json

    from carebase.apps import common
    from carebase.persistence import webhooks

    settings = _settings(require=("database_url", "database_admin_url"))

    async def main() -> webhooks.Metrics:
        database = common.build_database(settings, service="cli")
        await database.open()
        try:
            async with database.admin_transaction() as q:
                return await webhooks.metrics(q)
        finally:
            await database.close()

    print(json.dumps(dataclasses.asdict(asyncio.run(main())), indent=2))
    return 0


def cmd_bootstrap(_: argparse.Namespace) -> int:
    settings, stack, superuser = _with_stack(_settings(require=()))
    try:
        if not superuser:
            print("carebase: DATABASE_SUPERUSER_URL is required to bootstrap", file=sys.stderr)
            return 2
        _bootstrap(settings, superuser)
        print("bootstrap: roles, databases and grants are in place")
    finally:
        if stack:
            stack.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from carebase.operations.clickhouse_migrations import ClickHouseMigrationError
    from carebase.persistence.clickhouse import StoreLocked

    settings, stack, superuser = _with_stack(_settings(require=()))
    try:
        admin_url = settings.server_urls().database_admin
        telemetry = (
            settings.telemetry_urls().database_admin if settings.telemetry_database_url else None
        )
        telemetry_dir = settings.migrations_dir / "telemetry"
        modules = migrations.TELEMETRY_MODULES
        if args.action == "down":
            module = args.module or migrations.MODULES[-1]
            print(migrations.down(admin_url, settings.migrations_dir, module), end="")
            return 0
        if args.action == "up":
            if stack:  # the embedded stack is ours to bootstrap
                _prepare(settings, superuser)
            else:
                migrations.up(admin_url, settings.migrations_dir)
                if telemetry:
                    migrations.up(telemetry, telemetry_dir, modules)
        print(migrations.status(admin_url, settings.migrations_dir), end="")
        if telemetry:
            print("== telemetry database")
            print(migrations.status(telemetry, telemetry_dir, modules), end="")
        print("== clickhouse")
        print(_clickhouse(settings, args.action), end="")
    except (migrations.MigrationError, ClickHouseMigrationError, StoreLocked) as exc:
        print(f"carebase: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack:
            stack.stop()
    return 0


def cmd_keys_generate(_: argparse.Namespace) -> int:
    """Fresh secrets as env-file lines, for a deployment that takes them from the environment
    (compose's `.env`): the signing and data keyrings, the telemetry service credential and
    the blob URL key. Printed only; nothing is stored."""
    import json
    import secrets

    now = int(time.time())
    signing = Keyring([SigningKey.generate(now)], token_ttl_s=900).dumps()
    data = DataKeyring.generate(now).dumps()
    compact = {
        name: json.dumps(json.loads(text), separators=(",", ":"))
        for name, text in (("JWT_SIGNING_KEYS", signing), ("DATA_ENCRYPTION_KEYS", data))
    }
    for name, text in compact.items():
        print(f"{name}='{text}'")  # JSON has no single quotes: one literal line
    print(f"TELEMETRY_SERVICE_TOKEN={secrets.token_urlsafe(32)}")
    print(f"BLOB_SIGNING_KEY={secrets.token_urlsafe(32)}")
    return 0


def cmd_keys_rotate(_: argparse.Namespace) -> int:
    from carebase.apps.common import keyring_path

    settings = _settings(require=())
    now = int(time.time())
    if settings.jwt_signing_keys:
        current = Keyring.loads(settings.jwt_signing_keys, token_ttl_s=settings.access_token_ttl_s)
        print(current.rotated(now).dumps())
        print(
            "keys: store the JSON above as JWT_SIGNING_KEYS and roll the processes; "
            "retired keys stay published until their tokens have expired",
            file=sys.stderr,
        )
        return 0
    path = keyring_path(settings)
    rotated = load_keyring(path, token_ttl_s=settings.access_token_ttl_s).rotated(now)
    save_keyring(rotated, path)
    print(
        f"keys: {rotated.active.kid} now signs; running processes pick it up within seconds; "
        f"retired keys verify for {settings.access_token_ttl_s} s more"
    )
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Demo data, then `--patients N` patients over `--organizations` benchmark clinics."""
    import psycopg

    from carebase.operations.seed_clinical import seed_benchmark

    settings, stack, superuser = _with_stack(_settings(require=()))
    try:
        _prepare(settings, superuser)
        _seed(settings)
        started = time.monotonic()
        with psycopg.connect(settings.server_urls().database_admin) as conn:
            organizations = seed_benchmark(
                conn,
                _data_keyring(settings),
                patients=args.patients,
                organizations=args.organizations,
                progress=sys.stderr.isatty(),
            )
            conn.execute("ANALYZE patients.patients")
        print(
            f"seed: {args.patients:,} patients over {len(organizations)} benchmark clinics "
            f"(bench-clinic-01…) in {time.monotonic() - started:.1f} s"
        )
    finally:
        if stack:
            stack.stop()
    return 0


def cmd_keys_rotate_data(args: argparse.Namespace) -> int:
    """Add a data key (file keyring) and re-seal every stored value under the newest key."""
    import asyncio

    from carebase.apps.common import build_database, data_keyring_path
    from carebase.security.encryption import (
        DataKeyring,
        Sealer,
        load_data_keyring,
        save_data_keyring,
    )
    from carebase.services.data_keys import reseal_all

    settings, stack, _ = _with_stack(_settings(require=()))
    try:
        now = int(time.time())
        if settings.data_encryption_keys:
            keyring = DataKeyring.loads(settings.data_encryption_keys)
            if args.new_key:
                print(keyring.rotated(now).dumps())
                print(
                    "keys: store the JSON above as DATA_ENCRYPTION_KEYS, roll the processes, "
                    "then run `carebase keys rotate-data --no-new-key` to re-seal",
                    file=sys.stderr,
                )
                return 0
        else:
            path = data_keyring_path(settings)
            keyring = load_data_keyring(path)
            if args.new_key:
                keyring = keyring.rotated(now)
                save_data_keyring(keyring, path)
                print(f"keys: {keyring.active.kid} now seals; running processes pick it up")

        async def run() -> str:
            database = build_database(settings, service="keys")
            await database.open()
            try:
                done = await reseal_all(database, Sealer(keyring))
            finally:
                await database.close()
            return (
                f"keys: re-sealed {done.patients} patient, {done.specialists} specialist,"
                f" {done.forms} form, {done.documents} document, {done.webhook_secrets}"
                f" webhook secret and {done.recipients} broadcast recipient values"
                f" ({done.unreadable} unreadable, left as they are)"
            )

        print(asyncio.run(run()))
    finally:
        if stack:
            stack.stop()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="carebase", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "dev", help="embedded PostgreSQL + Redis, bootstrap, migrate, serve core on :9000"
    ).set_defaults(run=cmd_dev)

    serve = commands.add_parser("serve", help="serve a service against real servers (production)")
    serve.add_argument("service", choices=["core", "telemetry"])
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(run=cmd_serve)

    commands.add_parser(
        "worker",
        help="the background work (mail, webhooks, video rooms, reminders, blobs) off the API",
    ).set_defaults(run=cmd_worker)

    events = commands.add_parser("events", help="the event relays (webhooks, telemetry)")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    events_commands.add_parser(
        "status", help="outbox backlog, deliveries by outcome and endpoint states, as JSON"
    ).set_defaults(run=cmd_events_status)

    db = commands.add_parser("db", help="database chores")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser(
        "bootstrap", help="create the database, owner and app roles and grants (idempotent)"
    ).set_defaults(run=cmd_bootstrap)

    keys = commands.add_parser("keys", help="access-token signing keys and data keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser(
        "rotate", help="add a signing key; older keys verify until their tokens expire"
    ).set_defaults(run=cmd_keys_rotate)
    keys_commands.add_parser(
        "generate", help="print fresh keyrings and secrets as env-file lines (nothing stored)"
    ).set_defaults(run=cmd_keys_generate)
    rotate_data = keys_commands.add_parser(
        "rotate-data",
        help="add a data-encryption key and re-seal stored health data under it",
    )
    rotate_data.add_argument(
        "--no-new-key",
        dest="new_key",
        action="store_false",
        help="only re-seal under the newest key already in the keyring",
    )
    rotate_data.set_defaults(run=cmd_keys_rotate_data)

    seed_cmd = commands.add_parser(
        "seed", help="demo data, plus many patients over benchmark clinics (for `make bench`)"
    )
    seed_cmd.add_argument("--patients", type=int, default=0, help="how many (default 0)")
    seed_cmd.add_argument("--organizations", type=int, default=10, help="spread over (default 10)")
    seed_cmd.set_defaults(run=cmd_seed)

    migrate = commands.add_parser(
        "migrate",
        help="core's modules in dependency order, telemetry's database and ClickHouse",
    )
    migrate.add_argument("action", choices=["up", "down", "status"])
    migrate.add_argument("module", nargs="?", choices=migrations.MODULES, help="for down")
    migrate.set_defaults(run=cmd_migrate)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    # connexion.apps.abstract imports starlette.testclient, which warns at import; we never use it.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
