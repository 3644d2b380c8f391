-- migrate:up
CREATE SCHEMA IF NOT EXISTS documents;
GRANT USAGE ON SCHEMA documents TO carebase_app_access;

-- Reports and prescriptions written after a session: one table, a kind. The body is one
-- sealed JSON document (AES-GCM, the row's identity as associated data); finalizing stores a
-- SHA-256 of the canonical content and locks the row. A correction is a new document that
-- amends the final one; `entered_in_error` withdraws one written for the wrong patient or visit.
CREATE TABLE documents.documents (
    organization_id uuid        NOT NULL,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    kind            text        NOT NULL,
    appointment_id  uuid        NOT NULL,
    patient_id      uuid        NOT NULL,
    title           text        NOT NULL,
    status          text        NOT NULL DEFAULT 'draft',
    body_sealed     bytea       NOT NULL,
    author_user_id  uuid,
    finalized_at    timestamptz,
    finalized_by    uuid,
    content_sha256  text,
    amends_id       uuid,
    amend_reason    text,
    amended_by_id   uuid,
    error_reason    text,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT documents_appointment_fkey FOREIGN KEY (organization_id, appointment_id)
        REFERENCES scheduling.appointments (organization_id, id),
    CONSTRAINT documents_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT documents_amends_fkey FOREIGN KEY (organization_id, amends_id)
        REFERENCES documents.documents (organization_id, id),
    CONSTRAINT documents_kind_known CHECK (kind IN ('report', 'prescription')),
    CONSTRAINT documents_status_known CHECK (status IN ('draft', 'final', 'entered_in_error')),
    CONSTRAINT documents_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT documents_final_hashed CHECK ((status = 'draft') = (finalized_at IS NULL)
        AND (finalized_at IS NULL) = (content_sha256 IS NULL)),
    CONSTRAINT documents_sha256 CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT documents_amend_reason CHECK ((amends_id IS NULL) = (amend_reason IS NULL)
        AND char_length(amend_reason) <= 500),
    CONSTRAINT documents_error_reason CHECK ((status = 'entered_in_error') = (error_reason IS NOT NULL)
        AND char_length(error_reason) <= 500),
    CONSTRAINT documents_one_amendment UNIQUE (organization_id, amends_id)
);
CREATE INDEX documents_listed_idx ON documents.documents (organization_id, kind, created_at, id);
CREATE INDEX documents_patient_idx ON documents.documents (organization_id, patient_id, created_at);
CREATE INDEX documents_appointment_idx ON documents.documents (organization_id, appointment_id);

-- A final document is locked in the database, whoever asks: the only changes it accepts are
-- the link to the document that amends it (set once), a withdrawal as entered in error (with
-- its reason), and its body re-sealed under a newer data key (`carebase keys rotate-data`; the
-- hash covers the plaintext). It is never deleted.
CREATE FUNCTION documents.keep_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'a final document is never deleted' USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (
           (to_jsonb(NEW) - 'amended_by_id' - 'body_sealed' - 'status' - 'error_reason'
                - 'version' - 'updated_at')
               IS DISTINCT FROM
           (to_jsonb(OLD) - 'amended_by_id' - 'body_sealed' - 'status' - 'error_reason'
                - 'version' - 'updated_at')
           OR (OLD.amended_by_id IS NOT NULL AND NEW.amended_by_id IS DISTINCT FROM OLD.amended_by_id)
           OR (NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'entered_in_error')
           OR (OLD.status = 'entered_in_error' AND NEW.error_reason IS DISTINCT FROM OLD.error_reason)) THEN
        RAISE EXCEPTION 'a final document never changes' USING ERRCODE = 'restrict_violation',
            HINT = 'amend it: the correction is a new document linked to this one';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER documents_final_locked BEFORE UPDATE OR DELETE ON documents.documents
    FOR EACH ROW EXECUTE FUNCTION documents.keep_final();

-- The clinic reads and writes its documents; a patient reads their own final ones.
ALTER TABLE documents.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents.documents FORCE ROW LEVEL SECURITY;
CREATE POLICY documents_select ON documents.documents FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND (scheduling.is_staff()
                OR (status = 'final' AND scheduling.visible_patient(organization_id, patient_id))));
CREATE POLICY documents_write ON documents.documents FOR ALL
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff())
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT, UPDATE, DELETE ON documents.documents TO carebase_app_access;

-- migrate:down
DROP TABLE documents.documents;
DROP FUNCTION documents.keep_final();
DROP SCHEMA documents;
