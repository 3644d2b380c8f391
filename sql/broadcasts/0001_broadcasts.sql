-- migrate:up
CREATE SCHEMA IF NOT EXISTS broadcasts;
GRANT USAGE ON SCHEMA broadcasts TO carebase_app_access;

-- A message template: a channel, and a subject (e-mail only) and body naming declared
-- variables (`{{patient.given_name}}`), checked when saved, rendered by a logic-less renderer.
CREATE TABLE broadcasts.templates (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    name            text        NOT NULL,
    channel         text        NOT NULL,
    subject         text,
    body            text        NOT NULL,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT templates_channel_known CHECK (channel IN ('email', 'sms', 'whatsapp')),
    CONSTRAINT templates_subject_for_email CHECK ((channel = 'email') = (subject IS NOT NULL)),
    CONSTRAINT templates_name_length CHECK (char_length(name) BETWEEN 1 AND 120),
    CONSTRAINT templates_subject_length CHECK (char_length(subject) BETWEEN 1 AND 200),
    CONSTRAINT templates_body_length CHECK (char_length(body) BETWEEN 1 AND 20000)
);
CREATE INDEX templates_listed_idx ON broadcasts.templates (organization_id, lower(name), id);

-- Recipient lists: people to message beside the segments, imported or added by hand. A row
-- matched to a patient (by e-mail or phone) is messaged as that patient; the others are
-- contacts with their own names and addresses. The phone is sealed, found by its blind index
-- (the patients' own, so matching is an equality).
CREATE TABLE broadcasts.imports (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    list_name       text        NOT NULL,
    filename        text        NOT NULL,
    media_type      text        NOT NULL,
    sha256          bytea       NOT NULL,
    blob_key        text,
    status          text        NOT NULL DEFAULT 'queued',
    total_rows      integer,
    rows_done       integer     NOT NULL DEFAULT 0,
    created         integer     NOT NULL DEFAULT 0,
    matched         integer     NOT NULL DEFAULT 0,
    invalid         integer     NOT NULL DEFAULT 0,
    duplicate       integer     NOT NULL DEFAULT 0,
    error           text,
    attempts        integer     NOT NULL DEFAULT 0,
    claimed_until   timestamptz,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (organization_id, id),
    -- Idempotent by file: the same bytes into the same list are the same import.
    CONSTRAINT imports_file_key UNIQUE (organization_id, list_name, sha256),
    CONSTRAINT imports_status_known CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    CONSTRAINT imports_list_name_length CHECK (char_length(list_name) BETWEEN 1 AND 80),
    CONSTRAINT imports_filename_length CHECK (char_length(filename) BETWEEN 1 AND 255)
);
CREATE INDEX imports_listed_idx ON broadcasts.imports (organization_id, created_at DESC, id);
CREATE INDEX imports_due_idx ON broadcasts.imports (claimed_until NULLS FIRST)
    WHERE status IN ('queued', 'running');
CREATE TRIGGER imports_announced AFTER INSERT ON broadcasts.imports
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

CREATE TABLE broadcasts.recipients (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    list_name       text        NOT NULL,
    patient_id      uuid,
    given_name      text        NOT NULL DEFAULT '',
    family_name     text        NOT NULL DEFAULT '',
    email           text,
    phone_sealed    bytea,
    phone_index     bytea,
    import_id       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT recipients_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT recipients_import_fkey FOREIGN KEY (organization_id, import_id)
        REFERENCES broadcasts.imports (organization_id, id) ON DELETE SET NULL (import_id),
    CONSTRAINT recipients_email_key UNIQUE (organization_id, list_name, email),
    CONSTRAINT recipients_phone_key UNIQUE (organization_id, list_name, phone_index),
    CONSTRAINT recipients_patient_key UNIQUE (organization_id, list_name, patient_id),
    CONSTRAINT recipients_address
        CHECK (patient_id IS NOT NULL OR email IS NOT NULL OR phone_index IS NOT NULL),
    CONSTRAINT recipients_phone_pair CHECK ((phone_sealed IS NULL) = (phone_index IS NULL)),
    CONSTRAINT recipients_email_format CHECK (email = lower(email) AND char_length(email) <= 254),
    CONSTRAINT recipients_list_name_length CHECK (char_length(list_name) BETWEEN 1 AND 80),
    CONSTRAINT recipients_given_name_length CHECK (char_length(given_name) <= 100),
    CONSTRAINT recipients_family_name_length CHECK (char_length(family_name) <= 100)
);
CREATE INDEX recipients_listed_idx
    ON broadcasts.recipients (organization_id, list_name, created_at, id);
CREATE INDEX recipients_patient_idx ON broadcasts.recipients (organization_id, patient_id);

-- Each imported line's outcome, by line number (the header is line 1).
CREATE TABLE broadcasts.import_rows (
    organization_id uuid    NOT NULL,
    import_id       uuid    NOT NULL,
    line            integer NOT NULL,
    outcome         text    NOT NULL,
    reason          text,
    recipient_id    uuid,
    PRIMARY KEY (organization_id, import_id, line),
    FOREIGN KEY (organization_id, import_id)
        REFERENCES broadcasts.imports (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT import_rows_outcome_known
        CHECK (outcome IN ('created', 'matched', 'invalid', 'duplicate')),
    CONSTRAINT import_rows_reason CHECK ((outcome = 'invalid') = (reason IS NOT NULL))
);

-- Who asked not to be messaged on a channel: a patient (by their record, whatever their
-- address becomes), or an address (a contact's, or from an unsubscribe link): sha256 of the
-- lower-cased e-mail, or the phone's blind index.
CREATE TABLE broadcasts.opt_outs (
    organization_id uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    channel         text        NOT NULL,
    patient_id      uuid,
    address_key     bytea,
    source          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT opt_outs_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT opt_outs_channel_known CHECK (channel IN ('email', 'sms', 'whatsapp')),
    CONSTRAINT opt_outs_source_known
        CHECK (source IN ('patient', 'staff', 'unsubscribe_link', 'provider')),
    CONSTRAINT opt_outs_one_subject CHECK ((patient_id IS NULL) <> (address_key IS NULL))
);
CREATE UNIQUE INDEX opt_outs_patient_key ON broadcasts.opt_outs (organization_id, channel, patient_id)
    WHERE patient_id IS NOT NULL;
CREATE UNIQUE INDEX opt_outs_address_key ON broadcasts.opt_outs (organization_id, channel, address_key)
    WHERE address_key IS NOT NULL;

-- A campaign: a template to an audience (segments and recipient lists), sent once. `subject`
-- and `body` are the template's, copied when sending starts. The worker expands the audience
-- once (`expanded_at`), into one message per address.
CREATE TABLE broadcasts.campaigns (
    organization_id     uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id                  uuid        NOT NULL DEFAULT gen_random_uuid(),
    name                text        NOT NULL,
    template_id         uuid        NOT NULL,
    channel             text        NOT NULL,
    segment_ids         uuid[]      NOT NULL DEFAULT '{}',
    recipient_lists     text[]      NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'draft',
    scheduled_at        timestamptz,
    started_at          timestamptz,
    expanded_at         timestamptz,
    finished_at         timestamptz,
    subject             text,
    body                text,
    failure_reason      text,
    audience            integer,
    excluded_opted_out  integer     NOT NULL DEFAULT 0,
    excluded_restricted integer     NOT NULL DEFAULT 0,
    excluded_no_address integer     NOT NULL DEFAULT 0,
    claimed_until       timestamptz,
    created_by          uuid,
    version             integer     NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT campaigns_template_fkey FOREIGN KEY (organization_id, template_id)
        REFERENCES broadcasts.templates (organization_id, id) ON DELETE RESTRICT,
    CONSTRAINT campaigns_channel_known CHECK (channel IN ('email', 'sms', 'whatsapp')),
    CONSTRAINT campaigns_status_known CHECK (status IN (
        'draft', 'scheduled', 'sending', 'sent', 'cancelled', 'failed')),
    CONSTRAINT campaigns_scheduled CHECK (status <> 'scheduled' OR scheduled_at IS NOT NULL),
    CONSTRAINT campaigns_name_length CHECK (char_length(name) BETWEEN 1 AND 120),
    CONSTRAINT campaigns_audience_size CHECK (
        cardinality(segment_ids) <= 20 AND cardinality(recipient_lists) <= 20)
);
CREATE INDEX campaigns_listed_idx ON broadcasts.campaigns (organization_id, created_at DESC, id);
CREATE INDEX campaigns_due_idx ON broadcasts.campaigns (scheduled_at)
    WHERE status IN ('scheduled', 'sending');
CREATE TRIGGER campaigns_announced AFTER INSERT OR UPDATE OF status ON broadcasts.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- One message per campaign and address. No body is kept: the worker renders it when it sends.
-- An e-mail's unsubscribe link names the message (with a MAC); it works once
-- (`unsubscribed_at`).
CREATE TABLE broadcasts.messages (
    organization_id     uuid        NOT NULL,
    id                  uuid        NOT NULL DEFAULT gen_random_uuid(),
    campaign_id         uuid        NOT NULL,
    channel             text        NOT NULL,
    patient_id          uuid,
    recipient_id        uuid,
    address_key         bytea       NOT NULL,
    status              text        NOT NULL DEFAULT 'queued',
    attempts            integer     NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    claimed_until       timestamptz,
    provider            text,
    provider_message_id text,
    error               text,
    unsubscribed_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    delivered_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, campaign_id)
        REFERENCES broadcasts.campaigns (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT messages_patient_fkey FOREIGN KEY (organization_id, patient_id)
        REFERENCES patients.patients (organization_id, id) ON DELETE SET NULL (patient_id),
    CONSTRAINT messages_recipient_fkey FOREIGN KEY (organization_id, recipient_id)
        REFERENCES broadcasts.recipients (organization_id, id) ON DELETE SET NULL (recipient_id),
    CONSTRAINT messages_once UNIQUE (organization_id, campaign_id, address_key),
    CONSTRAINT messages_status_known CHECK (status IN (
        'queued', 'sending', 'sent', 'delivered', 'failed', 'bounced', 'cancelled', 'suppressed')),
    CONSTRAINT messages_error_length CHECK (char_length(error) <= 500)
);
CREATE INDEX messages_listed_idx
    ON broadcasts.messages (organization_id, campaign_id, status, created_at, id);
CREATE INDEX messages_due_idx ON broadcasts.messages (next_attempt_at)
    WHERE status IN ('queued', 'sending');
-- Receipts find their message by the provider's id.
CREATE INDEX messages_provider_idx ON broadcasts.messages (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_patient_idx ON broadcasts.messages (organization_id, patient_id)
    WHERE patient_id IS NOT NULL;
CREATE TRIGGER messages_announced AFTER INSERT ON broadcasts.messages
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- Admins and staff run the clinic's broadcasts; specialists read them. A patient reads and
-- changes only their own opt-outs.
ALTER TABLE broadcasts.templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.templates FORCE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.imports ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.imports FORCE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.recipients ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.recipients FORCE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.import_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.import_rows FORCE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.opt_outs ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.opt_outs FORCE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.campaigns FORCE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE broadcasts.messages FORCE ROW LEVEL SECURITY;

CREATE POLICY templates_select ON broadcasts.templates FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY templates_write ON broadcasts.templates FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
CREATE POLICY imports_select ON broadcasts.imports FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY imports_write ON broadcasts.imports FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
CREATE POLICY recipients_select ON broadcasts.recipients FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY recipients_write ON broadcasts.recipients FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
CREATE POLICY import_rows_select ON broadcasts.import_rows FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY import_rows_write ON broadcasts.import_rows FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
CREATE POLICY campaigns_select ON broadcasts.campaigns FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY campaigns_write ON broadcasts.campaigns FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
CREATE POLICY messages_select ON broadcasts.messages FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY messages_write ON broadcasts.messages FOR ALL
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'staff'))
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'staff'));
-- The clinic's staff roles keep a patient's choices on their behalf; a patient keeps their
-- own (the patients policy lets them see their own record only).
CREATE POLICY opt_outs_access ON broadcasts.opt_outs FOR ALL
    USING (organization_id = platform.current_org_id()
           AND (platform.current_app_role() IN ('admin', 'specialist', 'staff')
                OR EXISTS (SELECT 1 FROM patients.patients p
                            WHERE p.organization_id = opt_outs.organization_id
                              AND p.id = opt_outs.patient_id
                              AND p.user_id = platform.current_user_id())))
    WITH CHECK (organization_id = platform.current_org_id()
                AND (platform.current_app_role() IN ('admin', 'specialist', 'staff')
                     OR EXISTS (SELECT 1 FROM patients.patients p
                                 WHERE p.organization_id = opt_outs.organization_id
                                   AND p.id = opt_outs.patient_id
                                   AND p.user_id = platform.current_user_id())));

GRANT SELECT, INSERT, DELETE, UPDATE (name, subject, body, version, updated_at)
    ON broadcasts.templates TO carebase_app_access;
GRANT SELECT, INSERT ON broadcasts.imports TO carebase_app_access;
GRANT SELECT, INSERT, DELETE ON broadcasts.recipients TO carebase_app_access;
GRANT SELECT ON broadcasts.import_rows TO carebase_app_access;
GRANT SELECT, INSERT, DELETE ON broadcasts.opt_outs TO carebase_app_access;
GRANT SELECT, INSERT, DELETE,
    UPDATE (name, template_id, channel, segment_ids, recipient_lists, status, scheduled_at,
            started_at, subject, body, finished_at, version, updated_at)
    ON broadcasts.campaigns TO carebase_app_access;
GRANT SELECT, UPDATE (status, updated_at) ON broadcasts.messages TO carebase_app_access;

-- migrate:down
DROP TABLE broadcasts.messages;
DROP TABLE broadcasts.campaigns;
DROP TABLE broadcasts.opt_outs;
DROP TABLE broadcasts.import_rows;
DROP TABLE broadcasts.recipients;
DROP TABLE broadcasts.imports;
DROP TABLE broadcasts.templates;
