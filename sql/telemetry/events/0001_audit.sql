-- migrate:up
CREATE SCHEMA IF NOT EXISTS events;
GRANT USAGE ON SCHEMA events TO carebase_app_access;

-- Core's audit events as its relay delivers them, at least once: the event id makes a
-- repeated delivery store nothing new. Actors are kept as keyed hashes, never as ids.
-- Append-only: written by ingest on the owner pool, read by the organization's admins.
CREATE TABLE events.audit_events (
    event_id          uuid        PRIMARY KEY,
    organization_id   uuid,
    occurred_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    action            text        NOT NULL,
    entity_type       text        NOT NULL,
    entity_id         uuid,
    changed_fields    text[]      NOT NULL DEFAULT '{}',
    actor_type        text        NOT NULL,
    actor_hash        text,
    impersonator_hash text,
    request_id        text,
    CONSTRAINT audit_events_actor_type CHECK (actor_type IN ('user', 'api_key', 'system'))
);
CREATE INDEX audit_events_organization_time_idx
    ON events.audit_events (organization_id, occurred_at DESC);
ALTER TABLE events.audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_events_select ON events.audit_events FOR SELECT
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT ON events.audit_events TO carebase_app_access;

-- migrate:down
DROP TABLE events.audit_events;
