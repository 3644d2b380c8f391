"""The `Querier` protocol, its psycopg implementation, and `Database`: two pools, one door each.

- `db.transaction(principal)` — the app pool (restricted role, no BYPASSRLS). The tenant
  settings are set with `set_config(..., true)` before anything else, so they end with the
  transaction and a pooled connection never carries them into the next one.
- `db.admin_transaction()` — the owner pool, for superadmin and system jobs only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.abc import QueryNoTemplate as Query
from psycopg.rows import class_row, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from carebase.errors import DependencyUnavailable
from carebase.pages import PageRequest
from carebase.principal import Principal

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any] | None


class Querier(Protocol):
    """What repositories need: run a statement, read typed rows. Never commits."""

    async def execute(self, query: Query, params: Params = None) -> int: ...

    async def fetch_one(self, query: Query, params: Params = None, *, row: type[T]) -> T | None: ...

    async def fetch_all(self, query: Query, params: Params = None, *, row: type[T]) -> list[T]: ...

    async def fetch_value(self, query: Query, params: Params = None) -> Any: ...


class ConnectionQuerier:
    """A `Querier` over one psycopg connection (inside a transaction or in autocommit)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, query: Query, params: Params = None) -> int:
        async with self._conn.cursor() as cursor:
            await cursor.execute(query, params)
            return cursor.rowcount

    async def fetch_one(self, query: Query, params: Params = None, *, row: type[T]) -> T | None:
        async with self._conn.cursor(row_factory=class_row(row)) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchone()

    async def fetch_all(self, query: Query, params: Params = None, *, row: type[T]) -> list[T]:
        async with self._conn.cursor(row_factory=class_row(row)) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def fetch_value(self, query: Query, params: Params = None) -> Any:
        async with self._conn.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(query, params)
            found = await cursor.fetchone()
            return None if found is None else found[0]


def one(row: T | None) -> T:
    """The row a statement with RETURNING always yields."""
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row


async def fetch_page(
    q: Querier,
    count_query: Query,
    page_query: Query,
    params: Mapping[str, Any],
    page: PageRequest,
    *,
    row: type[T],
) -> tuple[list[T], int]:
    """A page of rows and the total. `page_query` takes `%(limit)s` and `%(offset)s`.

    A first page that is not full is the whole list, so it needs no count.
    """
    rows = await q.fetch_all(
        page_query, {**params, "limit": page.page_size, "offset": page.offset}, row=row
    )
    if page.offset == 0 and len(rows) < page.page_size:
        return rows, len(rows)
    return rows, int(await q.fetch_value(count_query, params))


def search_term(text: str | None) -> str | None:
    """A caller's search text for `LIKE '%' || term || '%'`: trimmed, lower case, with the
    LIKE wildcards escaped; None when blank."""
    if text is None or not text.strip():
        return None
    return text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_BEGIN_AS = sql.SQL(
    "BEGIN{mode}; SELECT set_config('app.current_org_id', {org}, true),"
    " set_config('app.current_user_id', {user}, true),"
    " set_config('app.current_role', {role}, true)"
)


def begin_as(principal: Principal, *, read_only: bool = False) -> sql.Composed:
    """BEGIN and the tenant settings, as one statement list with quoted literals."""
    org, user, role = tenant_settings(principal)
    return _BEGIN_AS.format(
        mode=sql.SQL(" READ ONLY" if read_only else ""),
        org=sql.Literal(org),
        user=sql.Literal(user),
        role=sql.Literal(role),
    )


async def _rollback(conn: AsyncConnection[Any]) -> None:
    """Best effort: a broken connection is discarded by the pool, which also rolls back."""
    with contextlib.suppress(psycopg.Error):
        await conn.execute("ROLLBACK")


def tenant_settings(principal: Principal) -> tuple[str, str, str]:
    """Empty strings, not NULL, for what is unknown: policies read them with NULLIF(..., '')."""
    return (
        str(principal.organization_id) if principal.organization_id else "",
        str(principal.user_id) if principal.user_id else "",
        principal.role or "",
    )


def make_pool(
    conninfo: str,
    *,
    name: str,
    min_size: int,
    max_size: int,
    application_name: str,
    statement_timeout_ms: int,
    connect_timeout_s: float,
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    return AsyncConnectionPool(
        conninfo,
        name=name,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=connect_timeout_s,
        # psycopg-pool does not check idle connections unless told to (GROUND.md).
        check=AsyncConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "application_name": application_name,
            "connect_timeout": max(1, int(connect_timeout_s)),
            "options": f"-c statement_timeout={statement_timeout_ms}",
        },
    )


class Database:
    def __init__(
        self,
        app_pool: AsyncConnectionPool[AsyncConnection[Any]],
        admin_pool: AsyncConnectionPool[AsyncConnection[Any]],
    ) -> None:
        self._app = app_pool
        self._admin = admin_pool

    async def open(self, *, wait: bool = True, wait_s: float = 10.0) -> None:
        await self._app.open(wait=wait, timeout=wait_s)
        await self._admin.open(wait=wait, timeout=wait_s)

    async def close(self) -> None:
        await self._app.close()
        await self._admin.close()

    @asynccontextmanager
    async def transaction(
        self, principal: Principal, *, read_only: bool = False
    ) -> AsyncIterator[Querier]:
        """Commits when the block finishes, rolls back when it raises.

        BEGIN and the tenant settings travel as one message (simple query protocol, the
        values quoted by psycopg): one round trip instead of two or three (GROUND.md).
        """
        async with _unavailable_as_domain_error(), self._app.connection() as conn:
            await conn.execute(begin_as(principal, read_only=read_only))
            try:
                yield ConnectionQuerier(conn)
            except BaseException:
                await _rollback(conn)
                raise
            await conn.execute("COMMIT")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Querier]:
        """A pooled app connection with no tenant and no transaction: RLS shows no tenant row."""
        async with _unavailable_as_domain_error(), self._app.connection() as conn:
            yield ConnectionQuerier(conn)

    @asynccontextmanager
    async def admin_transaction(self) -> AsyncIterator[Querier]:
        """The owner pool, which bypasses row-level security: superadmin and system jobs only."""
        async with (
            _unavailable_as_domain_error(),
            self._admin.connection() as conn,
            conn.transaction(),
        ):
            yield ConnectionQuerier(conn)


@asynccontextmanager
async def _unavailable_as_domain_error() -> AsyncIterator[None]:
    try:
        yield
    except PoolTimeout as exc:
        raise DependencyUnavailable(
            "The database is busy; no connection was free in time."
        ) from exc
    except psycopg.OperationalError as exc:
        raise DependencyUnavailable("The database is unavailable.") from exc
