-- migrate:up
CREATE SCHEMA IF NOT EXISTS attachments;
GRANT USAGE ON SCHEMA attachments TO carebase_app_access;

-- Files attached to a patient, a report or prescription, or a form (an `attachment` answer,
-- named by its `link_id`). The bytes live in the blob store under `storage_key`
-- (<organization>/<attachment>: no health data, no file name); the row holds what the store
-- was told and what the API found: the sniffed media type, size and SHA-256. A presigned
-- upload is `pending` (size and hash as declared) until `complete` checks the stored object.
CREATE TABLE attachments.attachments (
    organization_id uuid        NOT NULL,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    owner_type      text        NOT NULL,
    patient_id      uuid        NOT NULL,
    document_id     uuid,
    form_id         uuid,
    link_id         text,
    filename        text        NOT NULL,
    media_type      text,
    size_bytes      bigint      NOT NULL,
    sha256          text        NOT NULL,
    storage_key     text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    uploaded_by     uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT attachments_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT attachments_document_fkey FOREIGN KEY (organization_id, document_id)
        REFERENCES documents.documents (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT attachments_form_fkey FOREIGN KEY (organization_id, form_id)
        REFERENCES forms.forms (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT attachments_owner CHECK (
        (owner_type = 'patient' AND document_id IS NULL AND form_id IS NULL AND link_id IS NULL)
        OR (owner_type IN ('report', 'prescription') AND document_id IS NOT NULL
            AND form_id IS NULL AND link_id IS NULL)
        OR (owner_type = 'form' AND form_id IS NOT NULL AND document_id IS NULL
            AND link_id IS NOT NULL)),
    CONSTRAINT attachments_status_known CHECK (status IN ('pending', 'available')),
    CONSTRAINT attachments_available CHECK ((status = 'available')
        = (media_type IS NOT NULL AND completed_at IS NOT NULL)),
    CONSTRAINT attachments_filename CHECK (char_length(filename) BETWEEN 1 AND 255),
    CONSTRAINT attachments_size CHECK (size_bytes BETWEEN 1 AND 20971520),
    CONSTRAINT attachments_sha256 CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT attachments_storage_key UNIQUE (storage_key)
);
CREATE INDEX attachments_listed_idx ON attachments.attachments (organization_id, created_at, id);
CREATE INDEX attachments_patient_idx ON attachments.attachments (organization_id, patient_id);
CREATE INDEX attachments_document_idx ON attachments.attachments (organization_id, document_id)
    WHERE document_id IS NOT NULL;
CREATE INDEX attachments_form_idx ON attachments.attachments (organization_id, form_id)
    WHERE form_id IS NOT NULL;
CREATE INDEX attachments_pending_idx ON attachments.attachments (created_at)
    WHERE status = 'pending';

-- The clinic sees its attachments; a patient those on their record and their forms, and
-- those on documents they can read (their own final ones). The clinic writes any; a patient
-- uploads to their own record and forms.
ALTER TABLE attachments.attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE attachments.attachments FORCE ROW LEVEL SECURITY;
CREATE POLICY attachments_select ON attachments.attachments FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id)
           AND (scheduling.is_staff() OR owner_type IN ('patient', 'form')
                OR EXISTS (SELECT 1 FROM documents.documents d
                            WHERE d.organization_id = attachments.organization_id
                              AND d.id = attachments.document_id)));
CREATE POLICY attachments_write ON attachments.attachments FOR ALL
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id)
           AND (scheduling.is_staff() OR owner_type IN ('patient', 'form')))
    WITH CHECK (organization_id = platform.current_org_id()
                AND scheduling.visible_patient(organization_id, patient_id)
                AND (scheduling.is_staff() OR owner_type IN ('patient', 'form')));
GRANT SELECT, INSERT, UPDATE, DELETE ON attachments.attachments TO carebase_app_access;

-- The transactional outbox of the blob store: whenever an attachment row goes (deleted,
-- or with its patient, draft document or form), its object is queued for removal in the same
-- transaction; the worker deletes the object, then the queue row.
CREATE TABLE attachments.blob_deletions (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id uuid        NOT NULL,
    storage_key     text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_error      text
);
CREATE INDEX blob_deletions_due_idx ON attachments.blob_deletions (next_attempt_at);
ALTER TABLE attachments.blob_deletions ENABLE ROW LEVEL SECURITY;
ALTER TABLE attachments.blob_deletions FORCE ROW LEVEL SECURITY;
CREATE POLICY blob_deletions_insert ON attachments.blob_deletions FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id());
GRANT INSERT (organization_id, storage_key) ON attachments.blob_deletions TO carebase_app_access;

CREATE FUNCTION attachments.queue_blob_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO attachments.blob_deletions (organization_id, storage_key)
    VALUES (OLD.organization_id, OLD.storage_key);
    RETURN OLD;
END
$$;
CREATE TRIGGER attachments_blob_deleted AFTER DELETE ON attachments.attachments
    FOR EACH ROW EXECUTE FUNCTION attachments.queue_blob_deletion();

-- migrate:down
DROP TABLE attachments.attachments;
DROP FUNCTION attachments.queue_blob_deletion();
DROP TABLE attachments.blob_deletions;
DROP SCHEMA attachments;
