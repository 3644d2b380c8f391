"""Session fixtures: the embedded PostgreSQL and Redis (real servers), bootstrapped and migrated."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
import yaml
from aiosmtpd.controller import Controller
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from support import ALL_WEEK, PASSWORD, Clinic, Inbox, Person, fresh_ip
from webhook_support import REGISTRATION_DNS

from carebase.apps import telemetry as telemetry_service
from carebase.apps.core import CoreApp, create_app
from carebase.config import PROJECT_ROOT, Settings, load_settings
from carebase.operations import clickhouse_migrations, devstack, migrations
from carebase.persistence import clickhouse
from carebase.persistence.clickhouse import ClickHouse
from carebase.services.webhook_delivery import TelemetryForwarder
from carebase.tracing import NO_TRACER, Tracer
from carebase.web.contract import Contract

SQL_DIR = PROJECT_ROOT / "sql"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.EmbeddedStack]:
    data_dir: Path = tmp_path_factory.mktemp("carebase-data")
    started = devstack.start(data_dir)
    migrations.bootstrap(
        superuser_url=started.superuser_url,
        admin_url=started.database_admin_url,
        app_url=started.database_url,
    )
    migrations.up(started.database_admin_url, SQL_DIR)
    migrations.bootstrap(
        superuser_url=started.superuser_url,
        admin_url=started.telemetry_database_admin_url,
        app_url=started.telemetry_database_url,
    )
    migrations.up(
        started.telemetry_database_admin_url, SQL_DIR / "telemetry", migrations.TELEMETRY_MODULES
    )
    yield started
    started.stop()


class _Collect:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        message = BytesParser(policy=default_policy).parsebytes(envelope.content)
        self.inbox.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(_Collect(inbox), hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def inbox(smtp: tuple[Inbox, int]) -> Inbox:
    return smtp[0]


RECEIPT_SECRET = "whsec_" + base64.b64encode(b"fake-receipt-secret-for-tests-only").decode()


@pytest.fixture(scope="session")
def settings(
    stack: devstack.EmbeddedStack,
    tmp_path_factory: pytest.TempPathFactory,
    smtp: tuple[Inbox, int],
) -> Settings:
    return load_settings(
        {
            "ENVIRONMENT": "test",
            "DATA_DIR": str(tmp_path_factory.mktemp("data-dir")),
            "DATABASE_URL": stack.database_url,
            "DATABASE_ADMIN_URL": stack.database_admin_url,
            "REDIS_URL": stack.redis_url,
            "VALIDATE_RESPONSES": "true",  # on in tests and CI; a setting in production
            "DB_POOL_MIN_SIZE": "1",
            "DB_POOL_MAX_SIZE": "4",
            "MAX_BODY_BYTES": "4096",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp[1]),
            "SMTP_STARTTLS": "false",
            # Cheap hashes keep the suite fast; production cost is a setting (see config).
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            # No per-process trust: a revoked role or key is refused on the next request.
            "AUTH_CACHE_S": "0",
            # Schemathesis sends thousands of requests a minute as one user.
            "RATE_LIMIT_DEFAULT_LIMIT": "20000",
            # Tests run the background work's rounds themselves (app.relay.deliver_batch(),
            # app.scheduling.run_once(), app.reaper.run_once()); with queues now waking their
            # workers at once, an in-process relay raced the tests that drive one.
            "RUN_WORKERS": "false",
            "SCHEDULING_WORKER": "false",
            # Tests run the blob store's outbox rounds themselves (app.reaper.run_once()).
            "BLOB_REAPER": "false",
            "WEBHOOKS_WORKER": "false",
            # The loopback receiver of the webhook tests (tests/webhook_support.py).
            "WEBHOOK_TRUSTED_HOSTS": "receiver.carebase.test",
            # An obviously fake secret the broadcast tests sign provider receipts with.
            "MESSAGING_WEBHOOK_SECRET": RECEIPT_SECRET,
        }
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[CoreApp]:
    application = create_app(settings, overrides={"resolver": REGISTRATION_DNS.resolve})
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: CoreApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
        yield c


SERVICE_TOKEN = "test-service-credential-0123456789abcdef"


async def forward_to_telemetry(
    app: CoreApp, telemetry_app: telemetry_service.TelemetryApp, *, tracer: Tracer = NO_TRACER
) -> None:
    """Core's relay, pointed at telemetry in process, until the outbox is forwarded."""
    forwarder = TelemetryForwarder(
        app.dependencies.database,
        base_url="http://telemetry.test",
        token=SERVICE_TOKEN,
        batch=1000,
        transport=httpx.ASGITransport(app=telemetry_app),
        tracer=tracer,
    )
    while await forwarder.forward_once() == 1000:
        pass


@pytest.fixture(scope="session")
def clickhouse_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    """The embedded ClickHouse engine in a directory of the session's own (one per process)."""
    client = clickhouse.connect(None, tmp_path_factory.mktemp("clickhouse-data"))
    clickhouse_migrations.up(client, SQL_DIR / "clickhouse")
    store = ClickHouse(client)
    yield store
    store.close()


@pytest.fixture(scope="session")
def telemetry_settings(settings: Settings, stack: devstack.EmbeddedStack) -> Settings:
    return settings.model_copy(
        update={
            "telemetry_database_url": stack.telemetry_database_url,
            "telemetry_database_admin_url": stack.telemetry_database_admin_url,
            "telemetry_service_token": SERVICE_TOKEN,
        }
    )


@pytest.fixture(scope="session")
async def telemetry_app(
    telemetry_settings: Settings, clickhouse_store: ClickHouse, app: CoreApp
) -> AsyncIterator[telemetry_service.TelemetryApp]:
    """Telemetry, verifying core's tokens against core's JWKS (core served in process)."""
    application = telemetry_service.create_app(
        telemetry_settings,
        overrides={
            "clickhouse": clickhouse_store,
            "jwks_transport": httpx.ASGITransport(app=app),
        },
    )
    async with LifespanManager(application):
        yield application


@pytest.fixture(scope="session")
async def telemetry(
    telemetry_app: telemetry_service.TelemetryApp,
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=telemetry_app, client=("203.0.113.77", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://telemetry.test") as c:
        yield c


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(application: Any, name: str) -> Iterator[str]:
    """An app under real uvicorn on a loopback port, in a thread of its own: its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            lifespan="on",
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the {name} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[str]:
    """The core service under real uvicorn on a loopback port, in a thread of its own."""
    application = create_app(settings, overrides={"resolver": REGISTRATION_DNS.resolve})
    with serving(application, "live-server") as url:
        yield url


PROBLEM_RESPONSES = {
    "400": "BadRequest",
    "413": "PayloadTooLarge",
    "415": "UnsupportedMediaType",
    "422": "UnprocessableContent",
    "429": "TooManyRequests",
    "500": "InternalServerError",
    "503": "ServiceUnavailable",
}


@pytest.fixture(scope="session")
def extended_contract(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Contract]:
    """The real core bundle plus test-only paths, for machinery no product operation uses yet.

    Every added operation also documents the shared problem responses named in `problems`.
    """

    def extend(paths: dict[str, Any], *, problems: tuple[str, ...]) -> Contract:
        document = yaml.safe_load(Contract.for_service("core").raw)
        refs = {s: {"$ref": f"#/components/responses/{PROBLEM_RESPONSES[s]}"} for s in problems}
        for route, item in copy.deepcopy(paths).items():
            for operation in item.values():
                operation["responses"].update(refs)
            document["paths"][route] = item
        path = tmp_path_factory.mktemp("contract") / "core.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return Contract(path)

    return extend


@pytest.fixture
def admin_conn(stack: devstack.EmbeddedStack) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The owner (RLS-bypassing) connection, for arranging and inspecting rows in tests."""
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def new_org(
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> Callable[..., uuid.UUID]:
    """Creates a fresh organization, so tests never see each other's tenants."""

    def create(name: str = "Clinic") -> uuid.UUID:
        slug = f"t-{uuid.uuid4().hex[:12]}"
        row = admin_conn.execute(
            "INSERT INTO platform.organizations (slug, name) VALUES (%s, %s) RETURNING id",
            (slug, name),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    return create


@pytest.fixture
def person(
    admin_conn: psycopg.Connection[tuple[object, ...]], app: CoreApp, settings: Settings
) -> Callable[..., Person]:
    """A verified user with a password, optionally a member of `org` in `role`, and a token."""
    hasher = PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_cost=settings.password_hash_memory_kib,
        parallelism=4,
    )
    password_hash = hasher.hash(PASSWORD)

    def make(
        org: uuid.UUID | None = None, role: str | None = None, *, superadmin: bool = False
    ) -> Person:
        email = f"u-{uuid.uuid4().hex[:12]}@example.com"
        row = admin_conn.execute(
            "INSERT INTO identity.users (email, password_hash, email_verified_at, is_superadmin)"
            " VALUES (%s, %s, now(), %s) RETURNING id",
            (email, password_hash, superadmin),
        ).fetchone()
        assert row is not None
        user_id = uuid.UUID(str(row[0]))
        if org is not None and role is not None:
            admin_conn.execute(
                "INSERT INTO identity.memberships (organization_id, user_id, role)"
                " VALUES (%s, %s, %s)",
                (org, user_id, role),
            )
        token = app.dependencies.tokens.issue(
            subject=str(user_id), organization_id=str(org) if org else None, role=role
        )
        return Person(user_id, email, PASSWORD, org, role if org else None, token)

    return make


@pytest.fixture
async def anon(app: CoreApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client from an address of its own, so per-IP limits of other tests never apply."""
    transport = httpx.ASGITransport(app=app, client=(fresh_ip(), 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://carebase.test") as c:
        yield c


@pytest.fixture
def clinic(
    admin_conn: psycopg.Connection[tuple[object, ...]],
    new_org: Callable[..., uuid.UUID],
    person: Callable[..., Person],
) -> Callable[..., Clinic]:
    """A fresh clinic ready to book: its specialist works `weekly` in `zone` (all day, every
    day, by default) and its patient's record belongs to the patient's account."""

    def make(*, zone: str = "UTC", weekly: list[dict[str, str]] | None = None) -> Clinic:
        org = new_org()
        admin, staff = person(org, "admin"), person(org, "staff")
        specialist, patient = person(org, "specialist"), person(org, "patient")
        found = admin_conn.execute(
            "INSERT INTO specialists.specialists (organization_id, user_id, display_name)"
            " VALUES (%s, %s, 'Dr Sam') RETURNING id",
            (org, specialist.user_id),
        ).fetchone()
        assert found is not None
        specialist_id = str(found[0])
        admin_conn.execute(
            "INSERT INTO scheduling.schedules (organization_id, specialist_id, time_zone, weekly)"
            " VALUES (%s, %s, %s, %s)",
            (org, specialist_id, zone, json.dumps(ALL_WEEK if weekly is None else weekly)),
        )
        found = admin_conn.execute(
            "INSERT INTO patients.patients (organization_id, given_name, family_name, email,"
            " user_id) VALUES (%s, 'Ana', 'Pop', %s, %s) RETURNING id",
            (org, patient.email, patient.user_id),
        ).fetchone()
        assert found is not None
        return Clinic(org, admin, staff, specialist, specialist_id, patient, str(found[0]))

    return make
