"""How to send a read-only RLS transaction: measured, client and server side.

`python bench/roundtrips.py` (after `make bench` has seeded .data/bench) reads random patients
of one clinic as the app role, 16 tasks at once for SECONDS each, in four ways:

- **three**: `BEGIN READ ONLY; set_config…` as one message, the SELECT (prepared), `COMMIT`;
- **one-message**: `BEGIN READ ONLY; set_config…; SELECT …; COMMIT` as one simple-protocol
  message, the values quoted by psycopg.sql (planned every time);
- **pipeline**: the four statements in psycopg's pipeline mode, one sync;
- **function**: one prepared `SELECT * FROM f(…)` where f is a SECURITY INVOKER plpgsql
  function that sets the tenant settings transaction-locally, then `RETURN QUERY`s the SELECT
  (created in a scratch schema for this measurement only).

It prints reads per second, the client's CPU per read (this process) and PostgreSQL's
(every backend of the embedded server) — so a saving on one side paid on the other shows.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, os.path.dirname(__file__))
import run

from carebase.operations import devstack

SECONDS = float(os.environ.get("SECONDS_PER_WAY", "6"))
TASKS = 16
COLUMNS = (
    "organization_id, id, user_id, given_name, family_name, email, status, birth_date_sealed,"
    " national_id_sealed, phone_sealed, address_sealed, notes_sealed, national_id_index,"
    " phone_index, custom_values, custom_sealed, version, created_at, updated_at"
)
SELECT = f"SELECT {COLUMNS} FROM patients.patients WHERE organization_id = %s AND id = %s"  # noqa: S608
SETTINGS = (
    "SELECT set_config('app.current_org_id', %s, true),"
    " set_config('app.current_user_id', %s, true), set_config('app.current_role', %s, true)"
)
FUNCTION = """
CREATE SCHEMA IF NOT EXISTS bench_scratch;
GRANT USAGE ON SCHEMA bench_scratch TO carebase_app_access;
CREATE OR REPLACE FUNCTION bench_scratch.read_patient(org uuid, usr text, rol text, pid uuid)
RETURNS SETOF patients.patients LANGUAGE plpgsql SECURITY INVOKER AS $$
BEGIN
  PERFORM set_config('transaction_read_only', 'on', true),
          set_config('app.current_org_id', org::text, true),
          set_config('app.current_user_id', usr, true),
          set_config('app.current_role', rol, true);
  RETURN QUERY SELECT * FROM patients.patients p WHERE p.organization_id = org AND p.id = pid;
END $$;
GRANT EXECUTE ON FUNCTION bench_scratch.read_patient(uuid, text, text, uuid) TO carebase_app_access;
CREATE OR REPLACE FUNCTION bench_scratch.enter(org text, usr text, rol text)
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$
BEGIN
  PERFORM set_config('transaction_read_only', 'on', true),
          set_config('app.current_org_id', org, true),
          set_config('app.current_user_id', usr, true),
          set_config('app.current_role', rol, true);
  RETURN true;
END $$;
GRANT EXECUTE ON FUNCTION bench_scratch.enter(text, text, text) TO carebase_app_access;
"""
LATERAL = sql.SQL(
    "SELECT r.* FROM bench_scratch.enter(%s, %s, %s) AS t(entered)"
    " CROSS JOIN LATERAL (SELECT * FROM ({select}) AS q WHERE t.entered OFFSET 0) AS r"
).format(select=sql.SQL(SELECT))

Way = Callable[[psycopg.AsyncConnection[Any], str, str, str], Awaitable[Any]]


async def three(conn: psycopg.AsyncConnection[Any], org: str, user: str, pid: str) -> Any:
    await conn.execute(
        sql.SQL(
            "BEGIN READ ONLY; SELECT set_config('app.current_org_id', {}, true),"
            " set_config('app.current_user_id', {}, true), set_config('app.current_role', {}, true)"
        ).format(sql.Literal(org), sql.Literal(user), sql.Literal("staff"))
    )
    cursor = await conn.execute(SELECT, (org, pid))
    row = await cursor.fetchone()
    await conn.execute("COMMIT")
    return row


ONE_MESSAGE = sql.SQL(
    "BEGIN READ ONLY; SELECT set_config('app.current_org_id', {org}, true),"
    " set_config('app.current_user_id', {user}, true), set_config('app.current_role', {role}, true);"
    " SELECT {columns} FROM patients.patients WHERE organization_id = {org} AND id = {pid};"
    " COMMIT"
)


async def one_message(conn: psycopg.AsyncConnection[Any], org: str, user: str, pid: str) -> Any:
    query = ONE_MESSAGE.format(
        columns=sql.SQL(COLUMNS),
        org=sql.Literal(org),
        user=sql.Literal(user),
        role=sql.Literal("staff"),
        pid=sql.Literal(pid),
    )
    cursor = conn.cursor()
    await cursor.execute(query)
    cursor.nextset()  # past BEGIN's and set_config's results to the SELECT's
    cursor.nextset()
    return await cursor.fetchone()


async def pipeline(conn: psycopg.AsyncConnection[Any], org: str, user: str, pid: str) -> Any:
    async with conn.pipeline():
        await conn.execute("BEGIN READ ONLY")
        await conn.execute(SETTINGS, (org, user, "staff"))
        cursor = await conn.execute(SELECT, (org, pid))
        await conn.execute("COMMIT")
    return await cursor.fetchone()


async def function(conn: psycopg.AsyncConnection[Any], org: str, user: str, pid: str) -> Any:
    cursor = await conn.execute(
        "SELECT * FROM bench_scratch.read_patient(%s, %s, %s, %s)", (org, user, "staff", pid)
    )
    return await cursor.fetchone()


async def lateral(conn: psycopg.AsyncConnection[Any], org: str, user: str, pid: str) -> Any:
    cursor = await conn.execute(LATERAL, (org, user, "staff", org, pid))
    return await cursor.fetchone()


async def measure(
    pool: AsyncConnectionPool[Any], way: Way, org: str, user: str, ids: list[str], pg: int
) -> None:
    done = 0
    stop = time.monotonic() + SECONDS

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            async with pool.connection() as conn:
                pid = random.choice(ids)
                row = await way(conn, org, user, pid)
                assert row is not None  # noqa: S101 - RLS shows the clinic's own row
                assert str(row[1]) == pid  # noqa: S101
            done += 1

    cpu0, pg0, t0 = time.process_time(), run.tree_cpu_seconds(pg), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    cpu, pgcpu, wall = (
        time.process_time() - cpu0,
        run.tree_cpu_seconds(pg) - pg0,
        time.monotonic() - t0,
    )
    print(
        f"{way.__name__:<12} {done / wall:>8,.0f} reads/s   client {cpu / done * 1e6:>5.0f} µs/read"
        f"   postgres {pgcpu / done * 1e6:>5.0f} µs/read",
        flush=True,
    )


def postmaster_pid() -> int:
    found = next(run.BENCH_DIR.joinpath("postgres").rglob("postmaster.pid"))
    return int(found.read_text().split("\n", 1)[0])


async def main() -> None:
    stack = devstack.start(run.BENCH_DIR)
    with psycopg.connect(stack.database_admin_url, autocommit=True) as admin:
        admin.execute(FUNCTION)
        org, user = (
            str(v)
            for v in admin.execute(
                "SELECT organization_id, user_id FROM identity.memberships m JOIN identity.users u"
                " ON u.id = m.user_id WHERE u.email = 'bench-staff@example.com'"
            ).fetchone()
            or ()
        )
        ids = [
            str(r[0])
            for r in admin.execute(
                "SELECT id FROM patients.patients WHERE organization_id = %s LIMIT 1000", (org,)
            )
        ]
    pg = postmaster_pid()
    pool = AsyncConnectionPool(
        stack.database_url, min_size=TASKS, max_size=TASKS, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    try:
        for way in (three, one_message, pipeline, function, lateral) * 2:
            await measure(pool, way, org, user, ids, pg)
    finally:
        await pool.close()
        with psycopg.connect(stack.database_admin_url, autocommit=True) as admin:
            admin.execute("DROP SCHEMA bench_scratch CASCADE")


if __name__ == "__main__":
    asyncio.run(main())
