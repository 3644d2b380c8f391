-- migrate:up
-- Media (video) quality: the events and bandwidth samples a session's participants send.
CREATE TABLE IF NOT EXISTS telemetry.media_events (
    organization_id UUID,
    session_id      UUID,
    actor_hash      String,
    type            LowCardinality(String),
    at              DateTime64(3, 'UTC'),
    stall_ms        UInt32,
    received_at     DateTime64(3, 'UTC')
) ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (organization_id, session_id, at)
TTL toDateTime(at) + INTERVAL 730 DAY;

CREATE TABLE IF NOT EXISTS telemetry.media_samples (
    organization_id UUID,
    session_id      UUID,
    actor_hash      String,
    at              DateTime64(3, 'UTC'),
    kbps_up         Float32,
    kbps_down       Float32,
    rtt_ms          Float32,
    loss_pct        Float32,
    jitter_ms       Float32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (organization_id, session_id, at)
TTL toDateTime(at) + INTERVAL 730 DAY;

-- One row per finished session, written when its summary is computed.
CREATE TABLE IF NOT EXISTS telemetry.media_summaries (
    organization_id UUID,
    session_id      UUID,
    day             Date,
    status          LowCardinality(String),
    p50_kbps        Nullable(Float64),
    p95_kbps        Nullable(Float64),
    stalls          UInt32,
    samples         UInt32
) ENGINE = ReplacingMergeTree
ORDER BY (organization_id, day, session_id)
TTL day + INTERVAL 2555 DAY;

-- Dashboards read these aggregates, kept up to date by materialized views at insert time.
CREATE TABLE IF NOT EXISTS telemetry.daily_analytics (
    organization_id UUID,
    day             Date,
    events          SimpleAggregateFunction(sum, UInt64),
    active_patients AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree
ORDER BY (organization_id, day)
TTL day + INTERVAL 2555 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry.daily_analytics_mv
TO telemetry.daily_analytics AS
SELECT organization_id,
       toDate(occurred_at) AS day,
       count() AS events,
       uniqExactStateIf(actor_hash, actor_role = 'patient' AND actor_hash != '') AS active_patients
  FROM telemetry.analytics_events
 GROUP BY organization_id, day;

CREATE TABLE IF NOT EXISTS telemetry.daily_pose (
    organization_id UUID,
    day             Date,
    frames          SimpleAggregateFunction(sum, UInt64),
    minutes         AggregateFunction(uniqExact, UUID, UInt32)
) ENGINE = AggregatingMergeTree
ORDER BY (organization_id, day)
TTL day + INTERVAL 2555 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry.daily_pose_mv
TO telemetry.daily_pose AS
SELECT organization_id,
       toDate(received_at) AS day,
       count() AS frames,
       uniqExactState(session_id, intDiv(t_ms, 60000)) AS minutes
  FROM telemetry.pose_frames
 GROUP BY organization_id, day;

CREATE TABLE IF NOT EXISTS telemetry.session_pose (
    organization_id UUID,
    session_id      UUID,
    frames          SimpleAggregateFunction(sum, UInt64),
    minutes         AggregateFunction(uniqExact, UInt32),
    first_at        SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at         SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (organization_id, session_id)
TTL toDateTime(last_at) + INTERVAL 2555 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry.session_pose_mv
TO telemetry.session_pose AS
SELECT organization_id,
       session_id,
       count() AS frames,
       uniqExactState(intDiv(t_ms, 60000)) AS minutes,
       min(received_at) AS first_at,
       max(received_at) AS last_at
  FROM telemetry.pose_frames
 GROUP BY organization_id, session_id;

-- Staff activity from the audit trail: people (not API keys), per day.
CREATE TABLE IF NOT EXISTS telemetry.daily_staff (
    organization_id UUID,
    day             Date,
    actor_hash      String,
    actions         SimpleAggregateFunction(sum, UInt64),
    active_minutes  AggregateFunction(uniqExact, DateTime),
    patients        AggregateFunction(uniqExact, UUID)
) ENGINE = AggregatingMergeTree
ORDER BY (organization_id, day, actor_hash)
TTL day + INTERVAL 2190 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry.daily_staff_mv
TO telemetry.daily_staff AS
SELECT organization_id,
       toDate(occurred_at) AS day,
       actor_hash,
       count() AS actions,
       uniqExactState(toStartOfMinute(toDateTime(occurred_at))) AS active_minutes,
       uniqExactStateIf(assumeNotNull(entity_id), entity_type = 'patient' AND entity_id IS NOT NULL)
           AS patients
  FROM telemetry.audit_events
 WHERE actor_type = 'user' AND actor_hash != ''
 GROUP BY organization_id, day, actor_hash;

-- migrate:down
DROP VIEW IF EXISTS telemetry.daily_staff_mv;
DROP TABLE IF EXISTS telemetry.daily_staff;
DROP VIEW IF EXISTS telemetry.session_pose_mv;
DROP TABLE IF EXISTS telemetry.session_pose;
DROP VIEW IF EXISTS telemetry.daily_pose_mv;
DROP TABLE IF EXISTS telemetry.daily_pose;
DROP VIEW IF EXISTS telemetry.daily_analytics_mv;
DROP TABLE IF EXISTS telemetry.daily_analytics;
DROP TABLE IF EXISTS telemetry.media_summaries;
DROP TABLE IF EXISTS telemetry.media_samples;
DROP TABLE IF EXISTS telemetry.media_events;
