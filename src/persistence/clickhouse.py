"""ClickHouse through clickhouse-connect, for a server or the embedded engine (chdb).

`CLICKHOUSE_URL` set → a server over HTTP; unset → chdb under `<DATA_DIR>/clickhouse` through
clickhouse-connect's `chdb://` DSN. One client, the same SQL, either way (GROUND.md).

- **Inserts** are JSONEachRow bytes (orjson-encoded rows: ~100× cheaper than a `VALUES`
  text) with the settings pinned per call, because chdb's defaults differ from a server's
  (`async_insert=1`): ingest buffers in process and writes one INSERT per table per flush, so
  ClickHouse must write it synchronously, and a retried flush carries the same
  `insert_deduplication_token` so it stores nothing twice.
- **Tenant reads** go through `scoped()` only: ClickHouse has no row-level security, so the
  organization predicate is bound by the one function every dashboard query passes through
  (tests/unit/test_clickhouse_scope.py proves no tenant query is written another way).
- clickhouse-connect has no async client and a client is not safe for concurrent use: every
  call runs on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

DATABASE = "telemetry"

INSERT_SETTINGS: Mapping[str, Any] = {
    "async_insert": 0,  # chdb's default is 1: we buffer ourselves and want the write done
    "insert_deduplicate": 1,
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 0,
}
QUERY_SETTINGS: Mapping[str, Any] = {
    "max_execution_time": 10,
    "readonly": 2,  # reads only (2: settings may still be set per query)
}

# Every tenant query names the organization by this one bound parameter.
ORGANIZATION_PARAMETER = "{organization_id:UUID}"
MUTATION_SETTINGS: Mapping[str, Any] = {
    "mutations_sync": 2,  # wait until every replica has rewritten its parts
}
_SCOPED = re.compile(r"\borganization_id\s*=\s*\{organization_id:UUID\}")


class StoreUnavailable(Exception):
    """ClickHouse could not be reached or refused the statement."""


class StoreLocked(Exception):
    """The embedded engine's directory is open in another process."""


def connect(url: str | None, data_dir: Path) -> Client:
    """A client for the server `url` names, or for the embedded engine under `data_dir`."""
    if url:
        return clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)
    directory = (data_dir / "clickhouse").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{directory}")
    except ClickHouseError as exc:
        # chdb answers "Error initializing EmbeddedServer" when another process holds the
        # directory's lock (one process per directory, GROUND.md).
        raise StoreLocked(
            f"the embedded ClickHouse engine at {directory} is open in another process "
            "(only one process may open it: stop that process, or set CLICKHOUSE_URL to a "
            f"ClickHouse server): {exc}"
        ) from None


VERSION_TABLE = f"{DATABASE}.schema_migrations"


def applied_versions(client: Client) -> set[str]:
    """The migrations applied (none when the version table does not exist yet)."""
    exists = client.command("EXISTS TABLE telemetry.schema_migrations")
    if str(exists).strip() != "1":
        return set()
    result = client.query("SELECT version FROM telemetry.schema_migrations FINAL")
    return {str(row[0]) for row in result.result_rows}


class ClickHouse:
    """The telemetry store: inserts of encoded rows and organization-scoped reads."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    @property
    def client(self) -> Client:
        return self._client

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, lambda: function(*args, **kwargs))
        except ClickHouseError as exc:
            raise StoreUnavailable(str(exc)[:500]) from exc

    async def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: bytes,
        *,
        token: str,
        fmt: str = "JSONEachRow",
    ) -> None:
        """One INSERT of encoded `rows` (JSONEachRow lines or RowBinary); `token` makes a
        retry of the same rows store nothing new."""
        await self._call(
            self._client.raw_insert,
            f"{DATABASE}.{table}",
            list(columns),
            insert_block=rows,
            fmt=fmt,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": token},
        )

    async def scoped(
        self, organization_id: UUID, query: str, parameters: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of a tenant query. The query must filter `organization_id =
        {organization_id:UUID}`, and the organization is bound here, never by the caller."""
        if not _SCOPED.search(query):
            raise ValueError("a tenant query must filter organization_id = {organization_id:UUID}")
        bound = {**(parameters or {}), "organization_id": organization_id}
        result = await self._call(
            self._client.query, query, parameters=bound, settings=dict(QUERY_SETTINGS)
        )
        return [tuple(row) for row in result.result_rows]

    async def scoped_records(
        self, organization_id: UUID, query: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Like `scoped`, each row as a mapping of its column names (a subject's export)."""
        if not _SCOPED.search(query):
            raise ValueError("a tenant query must filter organization_id = {organization_id:UUID}")
        bound = {**(parameters or {}), "organization_id": organization_id}
        result = await self._call(
            self._client.query, query, parameters=bound, settings=dict(QUERY_SETTINGS)
        )
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    async def scoped_mutation(
        self, organization_id: UUID, statement: str, parameters: Mapping[str, Any] | None = None
    ) -> None:
        """An `ALTER TABLE … DELETE` of one organization's rows, waited for: a mutation
        rewrites the parts, so the rows are physically gone when this returns (a lightweight
        DELETE only masks them until a merge)."""
        if not statement.lstrip().upper().startswith("ALTER TABLE") or not _SCOPED.search(
            statement
        ):
            raise ValueError("a mutation is an ALTER TABLE filtering organization_id")
        bound = {**(parameters or {}), "organization_id": organization_id}
        await self._call(
            self._client.command, statement, parameters=bound, settings=MUTATION_SETTINGS
        )

    async def ping(self) -> None:
        await self._call(self._client.command, "SELECT 1")

    async def applied_versions(self) -> set[str]:
        return await self._call(applied_versions, self._client)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._client.close()
