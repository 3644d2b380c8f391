"""Retention: every ClickHouse table has a TTL that follows its setting, and telemetry's
PostgreSQL rows go after theirs."""

from __future__ import annotations

import re
import uuid

import psycopg

from carebase.apps.telemetry import TelemetryApp
from carebase.config import Settings
from carebase.operations import clickhouse_migrations, devstack
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


async def test_telemetry_database_rows_go_after_their_retention(
    telemetry_app: TelemetryApp, stack: devstack.EmbeddedStack
) -> None:
    org = uuid.uuid4()
    old, recent = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(stack.telemetry_database_admin_url, autocommit=True) as conn:
        for event_id, age in ((old, "2191 days"), (recent, "1 day")):
            conn.execute(
                "INSERT INTO events.audit_events (event_id, organization_id, occurred_at, action,"
                " entity_type, actor_type) VALUES (%s, %s, now() - %s::interval,"
                " 'patient.updated', 'patient', 'user')",
                (event_id, org, age),
            )
            conn.execute(
                "INSERT INTO events.security_events (event_id, organization_id, occurred_at, kind)"
                " VALUES (%s, %s, now() - %s::interval, 'rate_limited')",
                (event_id, org, age),
            )
        conn.execute(
            "INSERT INTO events.media_sessions (organization_id, session_id, last_seen_at,"
            " status, summarized_at) VALUES (%s, %s, now() - interval '731 days', 'ended', now()),"
            " (%s, %s, now() - interval '731 days', 'open', NULL)",
            (org, old, org, recent),
        )
        conn.execute(
            "INSERT INTO privacy.consents (organization_id, subject_id, purpose, granted,"
            " notice_version, recorded_at) VALUES (%s, %s, 'analytics', true, 'v0',"
            " now() - interval '3000 days')",
            (org, uuid.uuid4()),
        )
        purged = await telemetry_app.housekeeping.sweep()
        assert purged.audit_events >= 1
        assert purged.security_events >= 1
        kept = conn.execute(
            "SELECT"
            " (SELECT array_agg(event_id) FROM events.audit_events WHERE organization_id = %s),"
            " (SELECT array_agg(event_id) FROM events.security_events WHERE organization_id = %s),"
            " (SELECT array_agg(session_id) FROM events.media_sessions"
            "   WHERE organization_id = %s),"
            " (SELECT count(*) FROM privacy.consents WHERE organization_id = %s)",
            (org, org, org, org),
        ).fetchone()
    # The recent events stay; an unsummarized session waits for its summary; consent stays.
    assert kept == ([recent], [recent], [recent], 1)
