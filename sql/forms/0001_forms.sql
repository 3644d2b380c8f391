-- migrate:up
CREATE SCHEMA IF NOT EXISTS forms;
GRANT USAGE ON SCHEMA forms TO carebase_app_access;

-- ---------------------------------------------------------------------------------------------
-- A form template holds at most one draft (its items, being edited); publishing freezes the
-- draft as version latest_version + 1 and clears it. The service checks the items as a whole
-- (links, nesting, enable_when, prefill keys, RE2 patterns); the database keeps the shape.
CREATE TABLE forms.templates (
    organization_id  uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    title            text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    signer_roles     text[]      NOT NULL DEFAULT '{admin,specialist}',
    active           boolean     NOT NULL DEFAULT true,
    draft_items      jsonb,
    draft_updated_at timestamptz,
    latest_version   integer     NOT NULL DEFAULT 0,
    version          integer     NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT templates_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT templates_description_length CHECK (char_length(description) <= 2000),
    CONSTRAINT templates_signer_roles_known CHECK (
        cardinality(signer_roles) BETWEEN 1 AND 4
        AND signer_roles <@ ARRAY['admin', 'specialist', 'staff', 'patient']),
    CONSTRAINT templates_draft_is_array CHECK (draft_items IS NULL OR jsonb_typeof(draft_items) = 'array'),
    CONSTRAINT templates_draft_dated CHECK ((draft_items IS NULL) = (draft_updated_at IS NULL))
);

-- A published version never changes: the app role may only insert, and a trigger refuses
-- updates from anyone.
CREATE TABLE forms.template_versions (
    organization_id uuid        NOT NULL,
    template_id     uuid        NOT NULL,
    number          integer     NOT NULL,
    title           text        NOT NULL,
    description     text        NOT NULL,
    signer_roles    text[]      NOT NULL,
    items           jsonb       NOT NULL,
    schema_sha256   text        NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    published_by    uuid,
    PRIMARY KEY (organization_id, template_id, number),
    FOREIGN KEY (organization_id, template_id)
        REFERENCES forms.templates (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT template_versions_number_positive CHECK (number >= 1),
    CONSTRAINT template_versions_items_is_array CHECK (jsonb_typeof(items) = 'array'),
    CONSTRAINT template_versions_sha256 CHECK (schema_sha256 ~ '^[0-9a-f]{64}$')
);

CREATE FUNCTION forms.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows never change', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation', HINT = 'publish a new version instead';
END
$$;
CREATE TRIGGER template_versions_frozen BEFORE UPDATE ON forms.template_versions
    FOR EACH ROW EXECUTE FUNCTION forms.refuse_change();

-- ---------------------------------------------------------------------------------------------
-- A form: one patient's answers to one pinned template version. Answers to ordinary items
-- live in `answers` (JSON by link_id); answers to sensitive items in one sealed JSON
-- document (`sealed_answers`, AES-GCM with the row's identity as associated data).
CREATE TABLE forms.forms (
    organization_id   uuid        NOT NULL,
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    template_id       uuid        NOT NULL,
    template_version  integer     NOT NULL,
    patient_id        uuid        NOT NULL,
    appointment_id    uuid,
    status            text        NOT NULL DEFAULT 'draft',
    answers           jsonb       NOT NULL DEFAULT '{}',
    sealed_answers    bytea,
    prefill_sources   jsonb       NOT NULL DEFAULT '{}',
    submitted_at      timestamptz,
    signer_user_id    uuid,
    signer_role       text,
    signature_meaning text,
    signed_at         timestamptz,
    content_sha256    text,
    signature_sha256  text,
    amends_id         uuid,
    amend_reason      text,
    amended_by_id     uuid,
    version           integer     NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT forms_template_version_fkey FOREIGN KEY (organization_id, template_id, template_version)
        REFERENCES forms.template_versions (organization_id, template_id, number) ON DELETE RESTRICT,
    CONSTRAINT forms_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT forms_appointment_fkey FOREIGN KEY (organization_id, appointment_id)
        REFERENCES scheduling.appointments (organization_id, id) ON DELETE SET NULL (appointment_id),
    CONSTRAINT forms_amends_fkey FOREIGN KEY (organization_id, amends_id)
        REFERENCES forms.forms (organization_id, id),
    CONSTRAINT forms_status_known CHECK (status IN ('draft', 'in_progress', 'completed', 'signed')),
    CONSTRAINT forms_answers_is_object CHECK (jsonb_typeof(answers) = 'object'),
    CONSTRAINT forms_signed_complete CHECK ((status = 'signed') = (signed_at IS NOT NULL
        AND signer_role IS NOT NULL AND signature_meaning IS NOT NULL
        AND content_sha256 IS NOT NULL AND signature_sha256 IS NOT NULL)),
    CONSTRAINT forms_amend_reason CHECK ((amends_id IS NULL) = (amend_reason IS NULL)
        AND char_length(amend_reason) <= 500),
    CONSTRAINT forms_one_amendment UNIQUE (organization_id, amends_id)
);
-- Attaching a template to an appointment is idempotent: one original form per pair.
CREATE UNIQUE INDEX forms_appointment_template_key
    ON forms.forms (organization_id, appointment_id, template_id)
    WHERE appointment_id IS NOT NULL AND amends_id IS NULL;
CREATE INDEX forms_patient_idx ON forms.forms (organization_id, patient_id, created_at);
CREATE INDEX forms_listed_idx ON forms.forms (organization_id, created_at, id);

-- Signed content is immutable in the database, whoever asks (the owner role included): the
-- only changes a signed form accepts are the link to the form that amends it, set once, and
-- its sealed answers re-sealed under a newer data key (`carebase keys rotate-data`; the
-- signature covers the plaintext, so `verify` catches a ciphertext that says anything else).
-- A signed form is never deleted.
CREATE FUNCTION forms.keep_signed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status = 'signed' THEN
            RAISE EXCEPTION 'a signed form is never deleted' USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'signed' AND (
           (to_jsonb(NEW) - 'amended_by_id' - 'sealed_answers' - 'version' - 'updated_at')
               IS DISTINCT FROM
           (to_jsonb(OLD) - 'amended_by_id' - 'sealed_answers' - 'version' - 'updated_at')
           OR (OLD.sealed_answers IS NULL) <> (NEW.sealed_answers IS NULL)
           OR (OLD.amended_by_id IS NOT NULL
               AND NEW.amended_by_id IS DISTINCT FROM OLD.amended_by_id)) THEN
        RAISE EXCEPTION 'a signed form never changes' USING ERRCODE = 'restrict_violation',
            HINT = 'amend it: the correction is a new form linked to this one';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER forms_signed_immutable BEFORE UPDATE OR DELETE ON forms.forms
    FOR EACH ROW EXECUTE FUNCTION forms.keep_signed();

-- ---------------------------------------------------------------------------------------------
-- Templates: the organization reads (a patient fills forms from them); the clinic designs.
ALTER TABLE forms.templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE forms.templates FORCE ROW LEVEL SECURITY;
CREATE POLICY templates_select ON forms.templates FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY templates_write ON forms.templates FOR ALL
    USING (organization_id = platform.current_org_id() AND scheduling.is_staff())
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT, UPDATE, DELETE ON forms.templates TO carebase_app_access;

ALTER TABLE forms.template_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE forms.template_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY template_versions_select ON forms.template_versions FOR SELECT
    USING (organization_id = platform.current_org_id());
CREATE POLICY template_versions_insert ON forms.template_versions FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id() AND scheduling.is_staff());
GRANT SELECT, INSERT ON forms.template_versions TO carebase_app_access;

-- Forms: the clinic sees all of its; a patient only their own (and fills them in).
ALTER TABLE forms.forms ENABLE ROW LEVEL SECURITY;
ALTER TABLE forms.forms FORCE ROW LEVEL SECURITY;
CREATE POLICY forms_select ON forms.forms FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id));
CREATE POLICY forms_insert ON forms.forms FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id()
                AND scheduling.visible_patient(organization_id, patient_id));
CREATE POLICY forms_update ON forms.forms FOR UPDATE
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id))
    WITH CHECK (organization_id = platform.current_org_id()
                AND scheduling.visible_patient(organization_id, patient_id));
CREATE POLICY forms_delete ON forms.forms FOR DELETE
    USING (organization_id = platform.current_org_id()
           AND scheduling.visible_patient(organization_id, patient_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON forms.forms TO carebase_app_access;

-- migrate:down
DROP TABLE forms.forms;
DROP FUNCTION forms.keep_signed();
DROP TABLE forms.template_versions;
DROP FUNCTION forms.refuse_change();
DROP TABLE forms.templates;
DROP SCHEMA forms;
