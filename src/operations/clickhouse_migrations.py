"""ClickHouse migrations: `sql/clickhouse/NNNN_name.sql`, applied in order, recorded in
`telemetry.schema_migrations`.

The files look like dbmate's (`-- migrate:up`, `-- migrate:down`); statements end with `;` at
the end of a line. ClickHouse has no transactional DDL, so each statement should be safe to
run again (`IF NOT EXISTS`): a migration that fails halfway is re-run whole after the fix.
There is no lock either: run `carebase migrate` from one place (a deploy's one-shot job), as
the embedded engine's one-process rule already forces.
"""

from __future__ import annotations

import re
from pathlib import Path

from clickhouse_connect.driver.client import Client

from carebase.persistence.clickhouse import DATABASE, VERSION_TABLE, applied_versions

_VERSION = re.compile(r"^(\d+)_[^/]+\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?$", re.MULTILINE)


class ClickHouseMigrationError(Exception):
    pass


def migration_files(directory: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _VERSION.match(path.name)
        if not match:
            raise ClickHouseMigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append((match.group(1), path))
    return found


def expected_versions(directory: Path) -> set[str]:
    return {version for version, _ in migration_files(directory)}


def statements(path: Path, section: str = "up") -> list[str]:
    """The statements of a file's `-- migrate:up` (or `down`) section."""
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"^-- migrate:(up|down)[ \t]*$", text, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    if "up" not in sections:
        raise ClickHouseMigrationError(f"{path}: no `-- migrate:up` section")
    body = sections.get(section, "")
    found = []
    for chunk in _STATEMENT_END.split(body):
        lines = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            found.append(statement)
    return found


def up(client: Client, directory: Path) -> list[str]:
    """Apply every migration not yet applied; answers the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version String, applied_at DateTime "
        "DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = applied_versions(client)
    applied = []
    for version, path in migration_files(directory):
        if version in done:
            continue
        for statement in statements(path):
            try:
                client.command(statement, settings={"mutations_sync": 2})
            except Exception as exc:
                raise ClickHouseMigrationError(f"{path.name}: {exc}") from exc
        client.insert(VERSION_TABLE, [(version,)], column_names=["version"])
        applied.append(version)
    return applied


# Each table's TTL: the time it is counted from, and the retention group (a setting) it follows.
RETENTION: dict[str, tuple[str, str]] = {
    "analytics_events": ("toDateTime(occurred_at)", "analytics"),
    "media_events": ("toDateTime(at)", "media"),
    "media_samples": ("toDateTime(at)", "media"),
    "pose_frames": ("toDateTime(received_at)", "pose_frames"),
    "audit_events": ("toDateTime(occurred_at)", "audit"),
    "daily_staff": ("day", "audit"),
    "daily_analytics": ("day", "aggregates"),
    "daily_pose": ("day", "aggregates"),
    "session_pose": ("toDateTime(last_at)", "aggregates"),
    "media_summaries": ("day", "aggregates"),
}
_TTL_DAYS = re.compile(r"\bTTL .*?toIntervalDay\((\d+)\)")


def apply_retention(client: Client, days: dict[str, int]) -> list[str]:
    """Set each table's TTL to its group's days where it differs; answers the tables changed.

    Only the rule changes (`materialize_ttl_after_modify = 0`): parts are not rewritten now;
    rows past the new TTL go at the next merges."""
    changed = []
    for table, (column, group) in RETENTION.items():
        found = client.query(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String}"
            " AND name = {table:String}",
            parameters={"db": DATABASE, "table": table},
        ).result_rows
        if not found:
            raise ClickHouseMigrationError(f"{DATABASE}.{table} does not exist: migrate first")
        current = _TTL_DAYS.search(str(found[0][0]))
        wanted = days[group]
        if current is not None and int(current.group(1)) == wanted:
            continue
        ttl = f"{column} + INTERVAL {int(wanted)} DAY"
        client.command(
            f"ALTER TABLE {DATABASE}.{table} MODIFY TTL {ttl}",
            settings={"materialize_ttl_after_modify": 0},
        )
        changed.append(table)
    return changed


def status(client: Client, directory: Path) -> str:
    done = applied_versions(client)
    lines = [
        f"[{'X' if version in done else ' '}] {path.name}"
        for version, path in migration_files(directory)
    ]
    pending = len([1 for version, _ in migration_files(directory) if version not in done])
    return "\n".join([*lines, "", f"Applied: {len(done)}", f"Pending: {pending}"]) + "\n"
