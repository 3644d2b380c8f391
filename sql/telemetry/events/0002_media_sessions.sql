-- migrate:up
-- A media (video) session's state, kept by ingest as its events arrive, and its quality
-- summary once it ended (or went five minutes without a heartbeat). The session id is the
-- appointment's. The organization reads its own; ingest writes as the caller's tenant.
CREATE TABLE events.media_sessions (
    organization_id uuid        NOT NULL,
    session_id      uuid        NOT NULL,
    started_at      timestamptz,
    ended_at        timestamptz,
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'open',
    p50_kbps        double precision,
    p95_kbps        double precision,
    stalls          integer,
    samples         integer,
    summarized_at   timestamptz,
    PRIMARY KEY (organization_id, session_id),
    CONSTRAINT media_sessions_status CHECK (status IN ('open', 'ended', 'timed_out'))
);
CREATE INDEX media_sessions_due_idx ON events.media_sessions (last_seen_at)
    WHERE summarized_at IS NULL;
ALTER TABLE events.media_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE events.media_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY media_sessions_select ON events.media_sessions FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY media_sessions_insert ON events.media_sessions FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id());
CREATE POLICY media_sessions_update ON events.media_sessions FOR UPDATE
    USING (organization_id = platform.current_org_id())
    WITH CHECK (organization_id = platform.current_org_id());
GRANT SELECT, INSERT (organization_id, session_id, started_at, ended_at, last_seen_at),
    UPDATE (started_at, ended_at, last_seen_at) ON events.media_sessions TO carebase_app_access;

-- migrate:down
DROP TABLE events.media_sessions;
