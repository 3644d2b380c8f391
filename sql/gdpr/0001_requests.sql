-- migrate:up
CREATE SCHEMA IF NOT EXISTS gdpr;
GRANT USAGE ON SCHEMA gdpr TO carebase_app_access;

-- A data-subject request: received, approved (or rejected), then carried out by the worker in
-- steps it records as it goes (`steps`, by name), so a worker that died midway resumes where
-- it stopped. `claimed_until` is the running worker's lease.
CREATE TABLE gdpr.requests (
    organization_id    uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    kind               text        NOT NULL,
    patient_id         uuid,
    user_id            uuid,
    reason             text        NOT NULL,
    status             text        NOT NULL DEFAULT 'received',
    received_at        timestamptz NOT NULL DEFAULT now(),
    due_at             timestamptz NOT NULL DEFAULT now() + interval '1 month',
    received_by        uuid,
    approved_at        timestamptz,
    approved_by        uuid,
    rejected_reason    text,
    started_at         timestamptz,
    finished_at        timestamptz,
    claimed_until      timestamptz,
    attempts           integer     NOT NULL DEFAULT 0,
    steps              jsonb       NOT NULL DEFAULT '[]',
    export_key         text,
    export_size        bigint,
    export_expires_at  timestamptz,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT requests_kind_known CHECK (kind IN ('export', 'erase', 'anonymize', 'restrict')),
    CONSTRAINT requests_status_known CHECK (status IN (
        'received', 'approved', 'running', 'completed', 'partially_completed', 'rejected')),
    CONSTRAINT requests_subject CHECK (patient_id IS NOT NULL OR user_id IS NOT NULL),
    CONSTRAINT requests_reason_length CHECK (char_length(reason) BETWEEN 1 AND 1000),
    CONSTRAINT requests_rejected CHECK ((status = 'rejected') = (rejected_reason IS NOT NULL)),
    CONSTRAINT requests_steps_array CHECK (jsonb_typeof(steps) = 'array')
);
-- One open request of a kind per subject.
CREATE UNIQUE INDEX requests_one_open ON gdpr.requests
    (organization_id, kind, coalesce(patient_id, user_id))
    WHERE status IN ('received', 'approved', 'running');
CREATE INDEX requests_listed_idx ON gdpr.requests (organization_id, received_at DESC, id);
-- The worker's queue and the exports it deletes after 7 days.
CREATE INDEX requests_due_idx ON gdpr.requests (claimed_until NULLS FIRST)
    WHERE status IN ('approved', 'running');
CREATE INDEX requests_exports_idx ON gdpr.requests (export_expires_at)
    WHERE export_key IS NOT NULL;

CREATE TRIGGER requests_announced AFTER INSERT OR UPDATE OF status ON gdpr.requests
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- Admins only: requests name the subject and the reason they gave.
ALTER TABLE gdpr.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE gdpr.requests FORCE ROW LEVEL SECURITY;
CREATE POLICY requests_admin ON gdpr.requests FOR ALL
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() = 'admin');
GRANT SELECT, INSERT, UPDATE (status, approved_at, approved_by, rejected_reason)
    ON gdpr.requests TO carebase_app_access;

-- migrate:down
DROP TABLE gdpr.requests;
