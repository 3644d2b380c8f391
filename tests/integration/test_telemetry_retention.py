"""Retention: every ClickHouse table has a TTL that follows its setting."""

from __future__ import annotations

import re

from carebase.config import Settings
from carebase.operations import clickhouse_migrations
from carebase.persistence.clickhouse import ClickHouse


def _ttl_days(store: ClickHouse, table: str) -> int:
    query = store.client.query(
        "SELECT create_table_query FROM system.tables"
        " WHERE database = 'telemetry' AND name = {t:String}",
        parameters={"t": table},
    ).result_rows[0][0]
    found = re.search(r"TTL .*?toIntervalDay\((\d+)\)", query)
    assert found is not None, query
    return int(found.group(1))


def test_every_table_has_a_retention_rule(clickhouse_store: ClickHouse) -> None:
    tables = {
        name
        for (name, engine) in clickhouse_store.client.query(
            "SELECT name, engine FROM system.tables WHERE database = 'telemetry'"
        ).result_rows
        if engine != "MaterializedView" and name != "schema_migrations"
    }
    assert tables == set(clickhouse_migrations.RETENTION)


def test_ttls_follow_the_settings(clickhouse_store: ClickHouse, settings: Settings) -> None:
    client = clickhouse_store.client
    defaults = settings.retention_days
    clickhouse_migrations.apply_retention(client, defaults)
    assert _ttl_days(clickhouse_store, "pose_frames") == 183
    assert _ttl_days(clickhouse_store, "daily_pose") == 2555
    assert _ttl_days(clickhouse_store, "audit_events") == 2190
    shorter = {**defaults, "pose_frames": 30, "audit": 3650}
    try:
        changed = clickhouse_migrations.apply_retention(client, shorter)
        assert sorted(changed) == ["audit_events", "daily_staff", "pose_frames"]
        assert _ttl_days(clickhouse_store, "pose_frames") == 30
        assert _ttl_days(clickhouse_store, "daily_staff") == 3650
        assert clickhouse_migrations.apply_retention(client, shorter) == []  # nothing to do
    finally:
        clickhouse_migrations.apply_retention(client, defaults)
