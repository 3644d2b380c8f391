"""ClickHouse has no row-level security: every tenant read goes through `ClickHouse.scoped()`,
which binds the organization itself and refuses a query that does not filter by it."""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import pytest

from carebase.config import PROJECT_ROOT
from carebase.persistence.clickhouse import ClickHouse

SOURCES = PROJECT_ROOT / "src"
READS = re.compile(r"\bFROM\s+telemetry\.(?!schema_migrations\b)", re.IGNORECASE)
SCOPED = re.compile(r"organization_id\s*=\s*\{organization_id:UUID\}")


def _sql_strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_every_telemetry_read_in_the_code_is_scoped_by_organization() -> None:
    unscoped = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}"
        for path in sorted(SOURCES.rglob("*.py"))
        for line, text in _sql_strings(path)
        if READS.search(text) and not SCOPED.search(text)
    ]
    assert unscoped == []


class _NoClient:
    def query(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("an unscoped query must not reach ClickHouse")


async def test_scoped_refuses_a_query_without_the_organization() -> None:
    store = ClickHouse(_NoClient())  # type: ignore[arg-type]
    for query in (
        "SELECT count() FROM telemetry.analytics_events",
        "SELECT count() FROM telemetry.analytics_events WHERE organization_id = {org:UUID}",
        "SELECT 1 FROM telemetry.x WHERE organization_id != {organization_id:UUID}",
    ):
        with pytest.raises(ValueError, match="organization_id"):
            await store.scoped(uuid.uuid4(), query)
