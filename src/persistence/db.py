"""The `Querier` protocol, its psycopg implementations, and `Database`: two pools, three doors.

- `db.transaction(principal)` — the app pool (restricted role, no BYPASSRLS). The tenant
  settings are set with `set_config(..., true)` before anything else, so they end with the
  transaction and a pooled connection never carries them into the next one.
- `db.reader(principal)` — the app pool too, for reads: every statement is its own read-only
  transaction, sent with the tenant settings as ONE prepared statement (one round trip; see
  sql/platform/0003_tenant_reads.sql). Reads that need one snapshot across statements use
  `transaction(principal, read_only=True)`.
- `db.admin_transaction()` — the owner pool, for superadmin and system jobs only.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.abc import QueryNoTemplate as Query
from psycopg.rows import AsyncRowFactory, RowMaker, class_row, tuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from carebase.errors import DependencyUnavailable
from carebase.metrics import REPLICA_LAG_SECONDS, SAMPLE_S, PoolStats
from carebase.pages import PageRequest
from carebase.persistence.pools import Checkout, Door, ReadRoute, mark_written, pool_stats
from carebase.principal import Principal

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any] | None
BUSY = "The database is busy; no connection was free in time."
# How far the replica's replay is behind: 0 when it has replayed everything it received (an
# idle primary sends nothing, and the last replay's age would only measure the quiet).
REPLAY_LAG = """
SELECT CASE WHEN NOT pg_is_in_recovery()
              OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END
"""
DOWN = "The database is unavailable."

# JSON and JSONB columns are read by orjson (types as json.loads gives them, ~5× faster).
set_json_loads(orjson.loads)


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
        async with self._conn.cursor(row_factory=_row_factory(row)) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchone()

    async def fetch_all(self, query: Query, params: Params = None, *, row: type[T]) -> list[T]:
        async with self._conn.cursor(row_factory=_row_factory(row)) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def fetch_value(self, query: Query, params: Params = None) -> Any:
        async with self._conn.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(query, params)
            found = await cursor.fetchone()
            return None if found is None else found[0]


_TENANT_READ = sql.SQL(
    "SELECT r.* FROM platform.enter_tenant({org}, {user}, {role}) AS t(entered)"
    " CROSS JOIN LATERAL (SELECT * FROM ({query}) AS q WHERE t.entered OFFSET 0) AS r"
)
_POSITIONAL = (sql.SQL("%s"), sql.SQL("%s"), sql.SQL("%s"))
_NAMED_KEYS = ("_tenant_org", "_tenant_user", "_tenant_role")
_NAMED = tuple(sql.Placeholder(key) for key in _NAMED_KEYS)
_wrapped: dict[tuple[Query, bool], bytes] = {}


def tenant_read(query: Query, *, named: bool) -> bytes:
    """`query` inside the one-statement tenant read; a constant query is wrapped only once."""
    if isinstance(query, sql.Composable):  # composed per call (dynamic ORDER BY): not cached
        return _wrap(query, named)
    key = (query, named)
    found = _wrapped.get(key)
    if found is None:
        found = _wrap(sql.SQL(_text(query)), named)
        if len(_wrapped) < 1024:
            _wrapped[key] = found
    return found


def _wrap(inner: sql.Composable, named: bool) -> bytes:
    org, user, role = _NAMED if named else _POSITIONAL
    return _TENANT_READ.format(org=org, user=user, role=role, query=inner).as_bytes(None)


def _text(query: Query) -> str:
    return query.decode() if isinstance(query, bytes) else str(query)


class TenantReader:
    """A `Querier` whose every statement is its own read-only transaction in one round trip.

    `platform.enter_tenant()` sets the principal's tenant settings and `transaction_read_only`
    for the statement's implicit transaction, and the statement runs in a LATERAL subquery
    after it — under every row-level policy, as the app role. Nothing outlives the statement.
    Results come in binary (no hex decoding of sealed `bytea` columns, no text parsing).
    """

    __slots__ = ("_checkout", "_settings")

    def __init__(self, checkout: Door, principal: Principal) -> None:
        self._checkout = checkout
        self._settings = tenant_settings(principal)

    def _bound(self, query: Query, params: Params) -> tuple[bytes, Params]:
        if isinstance(params, Mapping):
            named = dict(zip(_NAMED_KEYS, self._settings, strict=True))
            return tenant_read(query, named=True), {**named, **params}
        return tenant_read(query, named=False), (*self._settings, *(params or ()))

    async def execute(self, query: Query, params: Params = None) -> int:
        raise TypeError("a tenant reader only reads; change rows in db.transaction()")

    async def fetch_one(self, query: Query, params: Params = None, *, row: type[T]) -> T | None:
        cursor, conn = await self._run(query, params, _row_factory(row))
        try:
            return await cursor.fetchone()
        finally:
            await self._checkout.release(conn)

    async def fetch_all(self, query: Query, params: Params = None, *, row: type[T]) -> list[T]:
        cursor, conn = await self._run(query, params, _row_factory(row))
        try:
            return await cursor.fetchall()
        finally:
            await self._checkout.release(conn)

    async def fetch_value(self, query: Query, params: Params = None) -> Any:
        cursor, conn = await self._run(query, params, tuple_row)
        try:
            found = await cursor.fetchone()
        finally:
            await self._checkout.release(conn)
        return None if found is None else found[0]

    async def _run(
        self, query: Query, params: Params, factory: AsyncRowFactory[Any]
    ) -> tuple[AsyncCursor[Any], AsyncConnection[Any]]:
        """The executed cursor and its connection; the caller fetches, then releases it."""
        statement, bound = self._bound(query, params)
        try:
            conn, cursor = await _started(self._checkout, statement, bound, factory)
        except PoolTimeout as exc:
            raise DependencyUnavailable(BUSY) from exc
        except psycopg.OperationalError as exc:
            raise DependencyUnavailable(DOWN) from exc
        return cursor, conn


async def _started(
    door: Door,
    statement: Query,
    params: Params,
    factory: AsyncRowFactory[Any] | None = None,
) -> tuple[AsyncConnection[Any], AsyncCursor[Any]]:
    """A connection from `door` and the cursor of its first statement: a one-statement read
    (`factory` given: binary results in its rows), or a transaction's BEGIN. A replica
    connection that fails at it (the replica went away) goes back, and the statement runs
    again on the primary's: safe, since nothing it did can have taken effect. Any other
    failure returns the connection, a transaction it began rolled back first."""
    for attempt in (1, 2):
        conn = await door.acquire()
        try:
            if factory is None:
                cursor: AsyncCursor[Any] = conn.cursor()
            else:
                cursor = conn.cursor(binary=True, row_factory=factory)
            await cursor.execute(statement, params)
            return conn, cursor
        except psycopg.OperationalError:
            replica = isinstance(door, ReadRoute) and door.from_replica(conn)
            await door.release(conn)  # a broken replica connection sends reads to the primary
            if not (replica and attempt == 1):
                raise
        except BaseException:
            if factory is None:  # it was a BEGIN
                await _rollback(conn)
            await door.release(conn)
            raise
    raise psycopg.OperationalError("no connection could start")  # the loop returns or raises


_row_factories: dict[type[Any], AsyncRowFactory[Any]] = {}


def _row_factory(row: type[T]) -> AsyncRowFactory[T]:
    found = _row_factories.get(row)
    if found is None:
        found = _row_factories[row] = positional_row(row)
    return found


def positional_row(cls: type[T]) -> AsyncRowFactory[T]:
    """psycopg's `class_row`, faster when it can be: a dataclass whose fields are the selected
    columns in the same order is built from the values by position, not through a keyword
    dict (a third of the row cost: 4.8 → 3.1 µs for a 24-column appointment). Any other
    column list falls back to keywords, so a mismatch is an error, never a shifted value."""
    fields = (
        tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None
    )
    by_keyword = class_row(cls)

    def factory(cursor: AsyncCursor[Any]) -> RowMaker[T]:
        description = cursor.description
        if (
            fields is not None
            and description is not None
            and tuple(column.name for column in description) == fields
        ):
            return lambda values: cls(*values)
        return by_keyword(cursor)

    return factory


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

    A first page that is not full is the whole list, so it needs no count. Through a
    `TenantReader` the page and the count are two statements with two snapshots: under
    concurrent writes the total may differ from what the page saw by the rows changed between.
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


_settings_seen: dict[tuple[Any, Any, Any], tuple[str, str, str]] = {}


def tenant_settings(principal: Principal) -> tuple[str, str, str]:
    """Empty strings, not NULL, for what is unknown: policies read them with NULLIF(..., '').

    Remembered per (organization, user, role): the same few callers ask again and again, and
    turning two UUIDs into text was a measurable part of a read."""
    key = (principal.organization_id, principal.user_id, principal.role)
    found = _settings_seen.get(key)
    if found is None:
        found = (
            str(principal.organization_id) if principal.organization_id else "",
            str(principal.user_id) if principal.user_id else "",
            principal.role or "",
        )
        if len(_settings_seen) >= 4096:
            _settings_seen.clear()
        _settings_seen[key] = found
    return found


class Database:
    def __init__(
        self,
        app_pool: AsyncConnectionPool[AsyncConnection[Any]],
        admin_pool: AsyncConnectionPool[AsyncConnection[Any]],
        read_pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None,
        *,
        max_lag_s: float = 5.0,
    ) -> None:
        """`read_pool`: a streaming replica's, for read-only work (`pools.ReadRoute`)."""
        self._app = Checkout(app_pool)
        self._admin = admin_pool
        self._route = ReadRoute(self._app, Checkout(read_pool)) if read_pool else None
        self._read: Door = self._route or self._app
        self._max_lag_s = max_lag_s

    async def open(self, *, wait: bool = True, wait_s: float = 10.0) -> None:
        await self._app.pool.open(wait=wait, timeout=wait_s)
        await self._admin.open(wait=wait, timeout=wait_s)
        if self._route is not None:  # a replica that is down must not hold the start back
            await self._route.replica.pool.open(wait=False)

    async def close(self) -> None:
        await self._app.close()
        await self._admin.close()
        if self._route is not None:
            await self._route.replica.close()

    def pool_stats(self) -> list[PoolStats]:
        """Every pool's numbers, for the metrics."""
        found = [self._app.stats(), pool_stats(self._admin)]
        return [*found, self._route.replica.stats()] if self._route is not None else found

    async def check_replica(self) -> None:
        """The replica's replay lag, into the metrics and the read route: a replica past
        DATABASE_READ_MAX_LAG_S, or one that does not answer, is not read from until a later
        check finds it back (run every 5 s beside the pools' numbers)."""
        route = self._route
        if route is None:
            return
        try:
            conn = await route.replica.acquire()
        except (PoolTimeout, psycopg.OperationalError) as exc:
            route.fall_back("down", str(exc), route.retry_s)
            return
        try:
            cursor = await conn.execute(REPLAY_LAG)
            found = await cursor.fetchone()
        except psycopg.Error as exc:
            route.fall_back("down", str(exc), route.retry_s)
            return
        finally:
            await route.replica.release(conn)
        lag = float(found[0]) if found and found[0] is not None else 0.0
        REPLICA_LAG_SECONDS.set(lag)
        if lag > self._max_lag_s:
            route.lagging(lag, SAMPLE_S + 1)
        else:
            route.recovered()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        conn = await self._app.acquire()
        try:
            yield conn
        finally:
            await self._app.release(conn)

    @asynccontextmanager
    async def transaction(
        self, principal: Principal, *, read_only: bool = False
    ) -> AsyncIterator[Querier]:
        """Commits when the block finishes, rolls back when it raises.

        BEGIN and the tenant settings travel as one message (simple query protocol, the
        values quoted by psycopg): one round trip instead of two or three (GROUND.md).
        """
        door = self._read if read_only else self._app
        async with _unavailable_as_domain_error():
            conn = await self._begin(door, principal, read_only=read_only)
            try:
                try:
                    yield ConnectionQuerier(conn)
                except BaseException:
                    await _rollback(conn)
                    raise
                await conn.execute("COMMIT")
            finally:
                await door.release(conn)
        if not read_only:
            mark_written()

    @staticmethod
    async def _begin(door: Door, principal: Principal, *, read_only: bool) -> AsyncConnection[Any]:
        """A connection in the principal's transaction (the primary's, should the replica's
        fail at BEGIN: `_started`)."""
        conn, _ = await _started(door, begin_as(principal, read_only=read_only), None)
        return conn

    async def lease(self, principal: Principal) -> Lease:
        """A connection held in a read-only tenant transaction until `Lease.close()`."""
        async with _unavailable_as_domain_error():
            conn = await self._begin(self._read, principal, read_only=True)
        return Lease(self._read, conn)

    def reader(self, principal: Principal) -> Querier:
        """Reads for `principal`, each statement one round trip (see `TenantReader`)."""
        return TenantReader(self._read, principal)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Querier]:
        """A pooled app connection with no tenant and no transaction: RLS shows no tenant row."""
        async with _unavailable_as_domain_error(), self._connection() as conn:
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


class Lease:
    """A pooled app connection in one read-only tenant transaction, held past the handler:
    an answer streamed from a server-side cursor reads it while the client receives. One
    snapshot from the first statement to the last; `close()` ends it and returns the
    connection, whatever happened."""

    def __init__(self, checkout: Door, conn: AsyncConnection[Any]) -> None:
        self._checkout = checkout
        self._conn: AsyncConnection[Any] | None = conn

    def _open(self) -> AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the lease is closed")
        return self._conn

    async def fetch_value(self, query: Query, params: Params = None) -> Any:
        cursor = await self._open().execute(query, params)
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def batches(
        self, query: Query, params: Params = None, *, size: int = 2000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The rows `size` at a time from a server-side cursor: memory holds one batch."""
        async with self._open().cursor(name="lease_stream", row_factory=tuple_row) as cursor:
            await cursor.execute(query, params)
            while rows := await cursor.fetchmany(size):
                yield rows

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _rollback(conn)  # read-only: nothing to keep
            await self._checkout.release(conn)


@asynccontextmanager
async def _unavailable_as_domain_error() -> AsyncIterator[None]:
    try:
        yield
    except PoolTimeout as exc:
        raise DependencyUnavailable(BUSY) from exc
    except psycopg.OperationalError as exc:
        raise DependencyUnavailable(DOWN) from exc
