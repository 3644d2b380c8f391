-- migrate:up
CREATE SCHEMA IF NOT EXISTS audit;
GRANT USAGE ON SCHEMA audit TO carebase_app_access;

-- One row per mutation, written in the mutation's transaction. It names what changed
-- (field names), never the values: no health data lands here. Append-only for the app
-- role: no UPDATE or DELETE is granted.
CREATE TABLE audit.events (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    actor_user_id    uuid,
    actor_api_key_id uuid,
    impersonator_id  uuid,
    action           text        NOT NULL,
    entity_type      text        NOT NULL,
    entity_id        uuid,
    changed_fields   text[]      NOT NULL DEFAULT '{}',
    request_id       text,
    ip               inet,
    user_agent       text,
    CONSTRAINT events_action_format CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    CONSTRAINT events_user_agent_length CHECK (char_length(user_agent) <= 512)
);
CREATE INDEX events_organization_time_idx ON audit.events (organization_id, occurred_at DESC, id DESC);
CREATE INDEX events_entity_idx ON audit.events (organization_id, entity_type, entity_id);

-- Admins of the organization read its trail. Anyone acting writes rows for the tenant
-- they act in (or for none, when they act outside an organization).
ALTER TABLE audit.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_select ON audit.events FOR SELECT
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY events_insert ON audit.events FOR INSERT
    WITH CHECK (organization_id IS NOT DISTINCT FROM platform.current_org_id());
GRANT SELECT, INSERT ON audit.events TO carebase_app_access;

-- The event for whoever listens (telemetry, webhooks): written beside the audit row, in the
-- same transaction, and forwarded later by a worker on the owner pool (SKIP LOCKED).
CREATE TABLE audit.outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    organization_id uuid,
    topic           text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT outbox_event_id_key UNIQUE (event_id)
);
CREATE INDEX outbox_pending_idx ON audit.outbox (next_attempt_at) WHERE delivered_at IS NULL;

ALTER TABLE audit.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY outbox_insert ON audit.outbox FOR INSERT
    WITH CHECK (organization_id IS NOT DISTINCT FROM platform.current_org_id());
GRANT INSERT (organization_id, topic, payload) ON audit.outbox TO carebase_app_access;

-- migrate:down
DROP TABLE audit.outbox;
DROP TABLE audit.events;
