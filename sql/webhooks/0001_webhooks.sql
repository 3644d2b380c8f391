-- migrate:up
CREATE SCHEMA IF NOT EXISTS webhooks;
GRANT USAGE ON SCHEMA webhooks TO carebase_app_access;

-- Where an organization wants its events: a URL checked against the SSRF guard, the event
-- types it takes (none listed: every type), and its signing secret, sealed (the plaintext is
-- shown once). During a rotation the previous secret signs too, until it expires.
CREATE TABLE webhooks.endpoints (
    organization_id            uuid        NOT NULL
        REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id                         uuid        NOT NULL DEFAULT gen_random_uuid(),
    url                        text        NOT NULL,
    description                text        NOT NULL DEFAULT '',
    event_types                text[]      NOT NULL DEFAULT '{}',
    status                     text        NOT NULL DEFAULT 'enabled',
    disabled_reason            text,
    secret_sealed              bytea       NOT NULL,
    previous_secret_sealed     bytea,
    previous_secret_expires_at timestamptz,
    failing_since              timestamptz,
    version                    integer     NOT NULL DEFAULT 1,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT endpoints_url_length CHECK (char_length(url) BETWEEN 1 AND 2048),
    CONSTRAINT endpoints_description_length CHECK (char_length(description) <= 500),
    CONSTRAINT endpoints_event_types_count CHECK (cardinality(event_types) <= 200),
    CONSTRAINT endpoints_status_known CHECK (status IN ('enabled', 'disabled', 'disabled_auto')),
    CONSTRAINT endpoints_disabled_reason CHECK (
        (status = 'enabled') = (disabled_reason IS NULL)
        AND (disabled_reason IS NULL OR disabled_reason IN ('manual', 'gone', 'failing'))),
    CONSTRAINT endpoints_previous_secret CHECK (
        (previous_secret_sealed IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX endpoints_listed_idx ON webhooks.endpoints (organization_id, created_at, id);

-- One event for one endpoint. `body` is the exact bytes signed and sent, fixed when the
-- event is dispatched: every retry sends the same body under the same `webhook-id`
-- (`event_id`). `step` is the place in the retry schedule (a redelivery starts it again);
-- `attempts` counts every attempt. A claimed delivery has `claimed_until` (its lease).
CREATE TABLE webhooks.deliveries (
    organization_id  uuid        NOT NULL,
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    endpoint_id      uuid        NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    body             bytea       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    step             integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT deliveries_endpoint_fkey FOREIGN KEY (organization_id, endpoint_id)
        REFERENCES webhooks.endpoints (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT deliveries_event_once UNIQUE (endpoint_id, event_id),
    CONSTRAINT deliveries_status_known CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT deliveries_finished CHECK ((status = 'pending') = (finished_at IS NULL)),
    CONSTRAINT deliveries_body_size CHECK (octet_length(body) <= 65536)
);
-- The sender takes each endpoint's due deliveries in turn (one dead endpoint's backlog never
-- fills a claim), at most 10 in flight per endpoint.
CREATE INDEX deliveries_due_idx ON webhooks.deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_finished_idx ON webhooks.deliveries (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_in_flight_idx ON webhooks.deliveries (endpoint_id)
    WHERE claimed_until IS NOT NULL;
CREATE INDEX deliveries_listed_idx
    ON webhooks.deliveries (organization_id, endpoint_id, created_at DESC, id DESC);

-- Every attempt: when, how long, and what came back (status, error, the response's first KB).
CREATE TABLE webhooks.attempts (
    organization_id  uuid        NOT NULL,
    delivery_id      uuid        NOT NULL,
    number           integer     NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer     NOT NULL,
    outcome          text        NOT NULL,
    status_code      integer,
    error            text,
    response_excerpt text,
    PRIMARY KEY (organization_id, delivery_id, number),
    CONSTRAINT attempts_delivery_fkey FOREIGN KEY (organization_id, delivery_id)
        REFERENCES webhooks.deliveries (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT attempts_outcome_known CHECK (outcome IN ('succeeded', 'failed', 'blocked')),
    CONSTRAINT attempts_error_length CHECK (char_length(error) <= 500),
    CONSTRAINT attempts_excerpt_length CHECK (char_length(response_excerpt) <= 1024)
);

-- Admins of the organization manage its endpoints and read their deliveries; the worker
-- (owner pool) sends them. Nobody else sees a row.
ALTER TABLE webhooks.endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY endpoints_admin ON webhooks.endpoints FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() = 'admin');
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.endpoints TO carebase_app_access;

ALTER TABLE webhooks.deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY deliveries_admin ON webhooks.deliveries FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() = 'admin');
GRANT SELECT, INSERT, UPDATE ON webhooks.deliveries TO carebase_app_access;

ALTER TABLE webhooks.attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY attempts_admin ON webhooks.attempts FOR SELECT
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT ON webhooks.attempts TO carebase_app_access;

CREATE TRIGGER deliveries_announced AFTER INSERT ON webhooks.deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- migrate:down
DROP TABLE webhooks.attempts;
DROP TABLE webhooks.deliveries;
DROP TABLE webhooks.endpoints;
DROP SCHEMA webhooks;
