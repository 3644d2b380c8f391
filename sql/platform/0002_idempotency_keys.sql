-- migrate:up
-- Idempotency-Key on creates: one row per (scope, key), where the scope is the caller's
-- organization (or, for a caller acting in none, their user id). The first request reserves
-- the key as `pending`; its 2xx answer is stored (body sealed: it can hold health data) and
-- replayed to a retry with the same body for 24 hours. A pending reservation older than
-- `locked_until` (a crashed request) may be taken over.
CREATE TABLE platform.idempotency_keys (
    scope         uuid        NOT NULL,
    key           text        NOT NULL,
    operation_id  text        NOT NULL,
    request_hash  bytea       NOT NULL,
    state         text        NOT NULL DEFAULT 'pending',
    status        integer,
    headers       jsonb,
    body_sealed   bytea,
    locked_until  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_state_known CHECK (state IN ('pending', 'done')),
    CONSTRAINT idempotency_keys_key_format CHECK (key ~ '^[A-Za-z0-9._:-]{8,128}$')
);
CREATE INDEX idempotency_keys_expiry_idx ON platform.idempotency_keys (expires_at);

CREATE FUNCTION platform.current_scope() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(platform.current_org_id(), platform.current_user_id()) $$;
GRANT EXECUTE ON FUNCTION platform.current_scope() TO carebase_app_access;

ALTER TABLE platform.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform.idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_own ON platform.idempotency_keys
    USING (scope = platform.current_scope()) WITH CHECK (scope = platform.current_scope());
GRANT SELECT, INSERT, UPDATE, DELETE ON platform.idempotency_keys TO carebase_app_access;

-- migrate:down
DROP TABLE platform.idempotency_keys;
DROP FUNCTION platform.current_scope();
