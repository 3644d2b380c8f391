-- migrate:up
-- Segment-shaped track events from the frontend. Actors are keyed hashes, IPs truncated
-- (/24, /48) before they get here. ReplacingMergeTree on the message id: ingest dedupes a
-- repeated message at once; a duplicate that slips past it (Redis down) merges away.
CREATE TABLE IF NOT EXISTS telemetry.analytics_events (
    organization_id UUID,
    message_id      String,
    event           LowCardinality(String),
    occurred_at     DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    actor_hash      String,
    actor_role      LowCardinality(String),
    properties      String,
    context         String,
    ip_prefix       String,
    user_agent      String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (organization_id, toDate(occurred_at), message_id)
TTL toDateTime(occurred_at) + INTERVAL 730 DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Core's audit events (also kept in telemetry's PostgreSQL), for dashboards. Events of no
-- organization carry the nil UUID.
CREATE TABLE IF NOT EXISTS telemetry.audit_events (
    organization_id UUID,
    event_id        UUID,
    occurred_at     DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    action          LowCardinality(String),
    entity_type     LowCardinality(String),
    entity_id       Nullable(UUID),
    changed_fields  Array(String),
    actor_type      LowCardinality(String),
    actor_hash      String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (organization_id, toDate(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL 2190 DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- migrate:down
DROP TABLE IF EXISTS telemetry.audit_events;
DROP TABLE IF EXISTS telemetry.analytics_events;
