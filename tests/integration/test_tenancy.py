"""Row-level security against real PostgreSQL: closed by default, never leaking via the pool."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import class_row

from carebase.operations import migrations
from carebase.operations.devstack import EmbeddedStack
from carebase.persistence.db import Database
from carebase.persistence.pools import make_pool
from carebase.principal import Principal

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class OrgRow:
    id: uuid.UUID
    name: str


VISIBLE = "SELECT id, name FROM platform.organizations ORDER BY id"
SETTINGS = (
    "SELECT ARRAY[current_setting('app.current_org_id', true), "
    "current_setting('app.current_user_id', true), current_setting('app.current_role', true)]"
)


def _pool(url: str, size: int) -> object:
    return make_pool(
        url,
        name=f"test-{uuid.uuid4().hex[:6]}",
        min_size=size,
        max_size=size,
        application_name="carebase-test",
        statement_timeout_ms=5000,
        connect_timeout_s=5,
    )


@pytest.fixture
async def db(stack: EmbeddedStack) -> AsyncIterator[Database]:
    """A database whose app pool holds exactly one connection: every transaction reuses it."""
    database = Database(_pool(stack.database_url, 1), _pool(stack.database_admin_url, 1))  # type: ignore[arg-type]
    await database.open()
    yield database
    await database.close()


def member(org: uuid.UUID) -> Principal:
    return Principal(user_id=uuid.uuid4(), organization_id=org, role="admin")


async def test_no_tenant_sees_no_row(db: Database, new_org: Callable[..., uuid.UUID]) -> None:
    new_org()
    async with db.connection() as q:
        assert await q.fetch_all(VISIBLE, row=OrgRow) == []
    async with db.transaction(Principal.anonymous()) as q:
        assert await q.fetch_all(VISIBLE, row=OrgRow) == []


async def test_a_tenant_sees_only_itself(db: Database, new_org: Callable[..., uuid.UUID]) -> None:
    a, b = new_org("A"), new_org("B")
    async with db.transaction(member(a)) as q:
        assert [row.id for row in await q.fetch_all(VISIBLE, row=OrgRow)] == [a]
    async with db.transaction(member(b)) as q:
        assert [row.id for row in await q.fetch_all(VISIBLE, row=OrgRow)] == [b]


async def test_pooled_connection_forgets_the_tenant(
    db: Database, new_org: Callable[..., uuid.UUID]
) -> None:
    """Tenant A, then B, then a checkout that sets nothing: the last must see nothing."""
    a, b = new_org("A"), new_org("B")
    backends = set()
    for principal, expected in ((member(a), [a]), (member(b), [b])):
        async with db.transaction(principal) as q:
            backends.add(await q.fetch_value("SELECT pg_backend_pid()"))
            assert [row.id for row in await q.fetch_all(VISIBLE, row=OrgRow)] == expected
    async with db.connection() as q:
        backends.add(await q.fetch_value("SELECT pg_backend_pid()"))
        assert await q.fetch_value(SETTINGS) in (["", "", ""], [None, None, None])
        assert await q.fetch_all(VISIBLE, row=OrgRow) == []
    assert len(backends) == 1, "the test needs one reused connection to prove anything"


async def test_reader_sees_one_tenant_per_statement_and_leaves_nothing_behind(
    db: Database, new_org: Callable[..., uuid.UUID]
) -> None:
    """The one-statement reads set the tenant inside the statement's own transaction: A, then
    B, then a checkout that sets nothing, all on one reused connection."""
    a, b = new_org("A"), new_org("B")
    backends = set()
    for principal, expected in ((member(a), [a]), (member(b), [b])):
        reader = db.reader(principal)
        backends.add(await reader.fetch_value("SELECT pg_backend_pid()"))
        assert [row.id for row in await reader.fetch_all(VISIBLE, row=OrgRow)] == expected
        assert await reader.fetch_one(VISIBLE, row=OrgRow) == OrgRow(
            expected[0], "AB"[expected[0] == b]
        )
        assert await reader.fetch_value("SELECT current_setting('transaction_read_only')") == "on"
        assert await reader.fetch_value(
            "SELECT count(*) FROM platform.organizations WHERE id = %(id)s", {"id": b}
        ) == (1 if expected == [b] else 0)
    async with db.connection() as q:
        backends.add(await q.fetch_value("SELECT pg_backend_pid()"))
        assert await q.fetch_value(SETTINGS) in (["", "", ""], [None, None, None])
        assert await q.fetch_value("SELECT current_setting('transaction_read_only')") == "off"
        assert await q.fetch_all(VISIBLE, row=OrgRow) == []
    assert len(backends) == 1, "the test needs one reused connection to prove anything"


async def test_reader_only_reads(
    db: Database,
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    a = new_org("A")
    reader = db.reader(member(a))
    with pytest.raises(TypeError):
        await reader.execute("UPDATE platform.organizations SET name = 'x' WHERE id = %s", (a,))
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        await reader.fetch_value(
            "WITH x AS (UPDATE platform.organizations SET name = 'x' WHERE id = %s RETURNING id)"
            " SELECT id FROM x",
            (a,),
        )
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        await reader.fetch_value("SELECT lo_create(0)")
    with pytest.raises(psycopg.errors.ActiveSqlTransaction):
        await reader.fetch_value("SELECT set_config('transaction_read_only', 'off', true)")
    row = admin_conn.execute("SELECT name FROM platform.organizations WHERE id = %s", (a,))
    assert row.fetchone() == ("A",)


async def test_rolled_back_transaction_leaves_no_tenant(
    db: Database, new_org: Callable[..., uuid.UUID]
) -> None:
    a = new_org("A")

    class Boom(Exception):
        pass

    async def fail_inside_a_transaction() -> None:
        async with db.transaction(member(a)) as q:
            assert len(await q.fetch_all(VISIBLE, row=OrgRow)) == 1
            raise Boom

    with pytest.raises(Boom):
        await fail_inside_a_transaction()
    async with db.connection() as q:
        assert await q.fetch_all(VISIBLE, row=OrgRow) == []
        assert await q.fetch_value(SETTINGS) in (["", "", ""], [None, None, None])


async def test_a_tenant_cannot_change_another(
    db: Database,
    new_org: Callable[..., uuid.UUID],
    admin_conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    a, b = new_org("A"), new_org("B")
    async with db.transaction(member(a)) as q:
        changed = await q.execute(
            "UPDATE platform.organizations SET name = 'taken' WHERE id = %s", (b,)
        )
    assert changed == 0
    row = admin_conn.execute(
        "SELECT name FROM platform.organizations WHERE id = %s", (b,)
    ).fetchone()
    assert row == ("B",)


async def test_a_tenant_cannot_move_its_row_to_another(
    db: Database, new_org: Callable[..., uuid.UUID]
) -> None:
    a = new_org("A")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with db.transaction(member(a)) as q:
            await q.execute(
                "UPDATE platform.organizations SET id = gen_random_uuid() WHERE id = %s", (a,)
            )


async def test_app_role_cannot_create_organizations(db: Database) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with db.transaction(Principal.anonymous()) as q:
            await q.execute(
                "INSERT INTO platform.organizations (slug, name) VALUES ('sneaky', 'Sneaky')"
            )


async def test_read_only_transaction_refuses_writes(
    db: Database, new_org: Callable[..., uuid.UUID]
) -> None:
    a = new_org("A")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        async with db.transaction(member(a), read_only=True) as q:
            await q.execute("UPDATE platform.organizations SET name = 'x' WHERE id = %s", (a,))


@dataclass(frozen=True)
class _Table:
    name: str
    rls: bool
    forced: bool
    policies: int
    write_policies_without_check: int
    app_grants: int


CATALOG = """
SELECT n.nspname || '.' || c.relname AS name, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS forced,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)::int AS policies,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid
          AND p.polcmd IN ('a', 'w', '*') AND p.polwithcheck IS NULL)::int
         AS write_policies_without_check,
       (SELECT count(*) FROM information_schema.role_table_grants g
         WHERE g.table_schema = n.nspname AND g.table_name = c.relname
           AND g.grantee = 'carebase_app_access')::int AS app_grants
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s) AND c.relname <> 'schema_migrations'
"""
# Telemetry tables only its system work reads (the owner role); the app role has no grant.
OWNER_ONLY = {
    "privacy.organization_keys": "the keys actor ids are hashed with",
    "privacy.erasure_tombstones": "the erased subjects' hashes, read by ingest",
}


def _assert_locked_down(conn: psycopg.Connection[Any], modules: tuple[str, ...]) -> None:
    tables = (
        conn.cursor(row_factory=class_row(_Table)).execute(CATALOG, (list(modules),)).fetchall()
    )
    assert tables, "no tenant tables found: the audit would prove nothing"
    for table in tables:
        assert table.rls, f"{table.name}: row-level security is not enabled"
        assert table.forced, f"{table.name}: row-level security is not forced"
        if table.name in OWNER_ONLY:
            assert table.app_grants == 0, f"{table.name}: the app role must not reach it"
            continue
        assert table.policies > 0, f"{table.name}: no policy"
        assert table.write_policies_without_check == 0, (
            f"{table.name}: write policy lacks WITH CHECK"
        )


def test_catalog_every_tenant_table_is_locked_down(
    admin_conn: psycopg.Connection[tuple[object, ...]], stack: EmbeddedStack
) -> None:
    _assert_locked_down(admin_conn, migrations.MODULES)


def test_catalog_every_telemetry_table_is_locked_down(stack: EmbeddedStack) -> None:
    """Telemetry's own database, by the same rules."""
    with psycopg.connect(stack.telemetry_database_admin_url) as conn:
        _assert_locked_down(conn, migrations.TELEMETRY_MODULES)


def test_catalog_app_role_is_restricted(
    admin_conn: psycopg.Connection[tuple[object, ...]], stack: EmbeddedStack
) -> None:
    app_role = migrations.Login.from_url(stack.database_url).user
    row = admin_conn.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb"
        " FROM pg_roles WHERE rolname = %s",
        (app_role,),
    ).fetchone()
    assert row == (False, False, False, False)
    owned = admin_conn.execute(
        """
        SELECT count(*) FROM (
            SELECT relowner AS owner FROM pg_class
            UNION ALL SELECT nspowner FROM pg_namespace
            UNION ALL SELECT proowner FROM pg_proc
            UNION ALL SELECT typowner FROM pg_type
        ) o JOIN pg_roles r ON r.oid = o.owner WHERE r.rolname = %s
        """,
        (app_role,),
    ).fetchone()
    assert owned == (0,)
