"""Queries behind the readiness checks."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from carebase.persistence.db import Querier

PING = "SELECT 1"
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
APPLIED_MIGRATIONS = sql.SQL("SELECT version FROM {}.schema_migrations")


@dataclass(frozen=True, slots=True)
class MigrationRow:
    version: str


async def ping(q: Querier) -> None:
    await q.fetch_value(PING)


async def applied_migrations(q: Querier, module: str) -> set[str]:
    """Versions dbmate recorded in the module's own `<module>.schema_migrations` table."""
    if not await q.fetch_value(MIGRATIONS_TABLE_EXISTS, (f"{module}.schema_migrations",)):
        return set()
    query = APPLIED_MIGRATIONS.format(sql.Identifier(module))
    rows = await q.fetch_all(query, row=MigrationRow)
    return {row.version for row in rows}
