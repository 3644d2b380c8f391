-- migrate:up
-- Security events core's relay delivers (failed sign-ins, refresh-token reuse, rate limiting,
-- permission denials, blocked webhook targets, attack paths): append-only, idempotent by the
-- event id, actors as keyed hashes and addresses truncated. An organization's admins read
-- theirs; events of no organization (a sign-in that failed) are for operators.
CREATE TABLE events.security_events (
    event_id        uuid        PRIMARY KEY,
    organization_id uuid,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    kind            text        NOT NULL,
    actor_hash      text,
    ip_prefix       text,
    request_id      text,
    detail          jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT security_events_kind CHECK (kind ~ '^[a-z_]{1,64}$')
);
CREATE INDEX security_events_organization_time_idx
    ON events.security_events (organization_id, occurred_at DESC, event_id DESC);
ALTER TABLE events.security_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.security_events FORCE ROW LEVEL SECURITY;
CREATE POLICY security_events_select ON events.security_events FOR SELECT
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT ON events.security_events TO carebase_app_access;

-- migrate:down
DROP TABLE events.security_events;
