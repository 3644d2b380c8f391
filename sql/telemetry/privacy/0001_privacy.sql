-- migrate:up
CREATE SCHEMA IF NOT EXISTS privacy;
GRANT USAGE ON SCHEMA privacy TO carebase_app_access;

-- The key actor ids are hashed with before anything is stored, one per organization.
-- Destroying an organization's key leaves every hash made with it unattributable. Only the
-- owner role (ingest's system path) reads it.
CREATE TABLE privacy.organization_keys (
    organization_id uuid        PRIMARY KEY,
    hash_key        bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organization_keys_length CHECK (octet_length(hash_key) = 32)
);
ALTER TABLE privacy.organization_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE privacy.organization_keys FORCE ROW LEVEL SECURITY;

-- An organization that opted out of analytics: its analytics events are dropped at ingest.
CREATE TABLE privacy.organization_settings (
    organization_id   uuid        PRIMARY KEY,
    analytics_opt_out boolean     NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE privacy.organization_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE privacy.organization_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY organization_settings_select ON privacy.organization_settings FOR SELECT
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT SELECT ON privacy.organization_settings TO carebase_app_access;

-- Consent, append-only: the latest record per subject and purpose is the state. A person
-- records their own; an organization's admins read everyone's.
CREATE TABLE privacy.consents (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL,
    subject_id      uuid        NOT NULL,
    purpose         text        NOT NULL,
    granted         boolean     NOT NULL,
    notice_version  text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT consents_purpose CHECK (purpose IN ('analytics', 'media_quality', 'pose_tracking')),
    CONSTRAINT consents_notice_version CHECK (char_length(notice_version) BETWEEN 1 AND 64)
);
CREATE INDEX consents_subject_idx
    ON privacy.consents (organization_id, subject_id, purpose, recorded_at DESC);
CREATE INDEX consents_recent_idx ON privacy.consents (organization_id, recorded_at DESC);
ALTER TABLE privacy.consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE privacy.consents FORCE ROW LEVEL SECURITY;
CREATE POLICY consents_select ON privacy.consents FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND (subject_id = platform.current_user_id() OR platform.current_app_role() = 'admin'));
CREATE POLICY consents_insert ON privacy.consents FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id()
                AND subject_id = platform.current_user_id());
GRANT SELECT, INSERT (organization_id, subject_id, purpose, granted, notice_version)
    ON privacy.consents TO carebase_app_access;

-- A data subject erased (GDPR): events naming them are dropped at ingest from then on. The
-- subject is kept only as its keyed hash, the form every stored event already has.
CREATE TABLE privacy.erasure_tombstones (
    organization_id uuid        NOT NULL,
    actor_hash      text        NOT NULL,
    erased_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, actor_hash)
);
ALTER TABLE privacy.erasure_tombstones ENABLE ROW LEVEL SECURITY;
ALTER TABLE privacy.erasure_tombstones FORCE ROW LEVEL SECURITY;

-- migrate:down
DROP TABLE privacy.erasure_tombstones;
DROP TABLE privacy.consents;
DROP TABLE privacy.organization_settings;
DROP TABLE privacy.organization_keys;
