-- migrate:up
CREATE SCHEMA IF NOT EXISTS patients;
GRANT USAGE ON SCHEMA patients TO carebase_app_access;
-- Trigram search on names (a trusted extension: the database owner may create it).
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

-- Patient identifiers, clinical notes and sensitive custom values are sealed by the
-- application (AES-256-GCM, key id in the blob, row identity as associated data): the
-- database, its dumps and its backups hold ciphertext only. Equality lookups go through a
-- keyed blind index (HMAC), never the plaintext. Names stay searchable.
CREATE TABLE patients.patients (
    organization_id    uuid        NOT NULL REFERENCES platform.organizations (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id            uuid,
    given_name         text        NOT NULL,
    family_name        text        NOT NULL,
    email              text,
    status             text        NOT NULL DEFAULT 'active',
    birth_date_sealed  bytea,
    national_id_sealed bytea,
    national_id_index  bytea,
    phone_sealed       bytea,
    phone_index        bytea,
    address_sealed     bytea,
    notes_sealed       bytea,
    custom_values      jsonb       NOT NULL DEFAULT '{}',
    custom_sealed      bytea,
    version            integer     NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    CONSTRAINT patients_user_key UNIQUE (organization_id, user_id),
    CONSTRAINT patients_national_id_key UNIQUE (organization_id, national_id_index),
    CONSTRAINT patients_account_fkey FOREIGN KEY (organization_id, user_id)
        REFERENCES identity.memberships (organization_id, user_id) ON DELETE SET NULL (user_id),
    CONSTRAINT patients_status_known CHECK (status IN ('active', 'archived')),
    CONSTRAINT patients_given_name_length CHECK (char_length(given_name) BETWEEN 1 AND 100),
    CONSTRAINT patients_family_name_length CHECK (char_length(family_name) BETWEEN 1 AND 100),
    CONSTRAINT patients_email_format CHECK (email = lower(email) AND char_length(email) <= 254)
);
CREATE INDEX patients_name_idx
    ON patients.patients (organization_id, lower(family_name), lower(given_name), id);
CREATE INDEX patients_created_idx ON patients.patients (organization_id, created_at, id);
CREATE INDEX patients_name_search_idx ON patients.patients
    USING gin ((lower(given_name || ' ' || family_name)) public.gin_trgm_ops);
CREATE INDEX patients_phone_idx ON patients.patients (organization_id, phone_index);

-- A patient sees and changes only their own record; everyone else in the organization
-- sees all of its patients. Only staff roles create or delete patients.
ALTER TABLE patients.patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE patients.patients FORCE ROW LEVEL SECURITY;
CREATE POLICY patients_select ON patients.patients FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND (platform.current_app_role() IS DISTINCT FROM 'patient'
                OR user_id = platform.current_user_id()));
CREATE POLICY patients_update ON patients.patients FOR UPDATE
    USING (organization_id = platform.current_org_id()
           AND (platform.current_app_role() IS DISTINCT FROM 'patient'
                OR user_id = platform.current_user_id()))
    WITH CHECK (organization_id = platform.current_org_id());
CREATE POLICY patients_insert ON patients.patients FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id()
                AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
CREATE POLICY patients_delete ON patients.patients FOR DELETE
    USING (organization_id = platform.current_org_id()
           AND platform.current_app_role() IN ('admin', 'specialist', 'staff'));
GRANT SELECT, INSERT, DELETE,
    UPDATE (given_name, family_name, email, status, birth_date_sealed, national_id_sealed,
            national_id_index, phone_sealed, phone_index, address_sealed, notes_sealed,
            custom_values, custom_sealed, version, updated_at)
    ON patients.patients TO carebase_app_access;

-- Onboarding gives a patient an account: find or create the user by address and make them
-- a `patient` member. Memberships are otherwise an admin's to change, so this is the one
-- narrow door for the staff roles; it refuses someone who is already a member in another role.
CREATE FUNCTION patients.enroll_patient_account(p_email text, p_display_name text)
    RETURNS TABLE (user_id uuid, created boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_user uuid;
    v_created boolean := false;
    v_role text;
BEGIN
    IF platform.current_org_id() IS NULL
       OR NOT (platform.current_app_role() = ANY (ARRAY['admin', 'specialist', 'staff'])) THEN
        RAISE EXCEPTION 'only staff of the current organization onboard patients'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO identity.users AS u (email, display_name)
    VALUES (lower(p_email), coalesce(p_display_name, ''))
    ON CONFLICT (email) DO NOTHING
    RETURNING u.id INTO v_user;
    IF v_user IS NULL THEN
        SELECT u.id INTO v_user FROM identity.users AS u WHERE u.email = lower(p_email);
    ELSE
        v_created := true;
    END IF;
    SELECT m.role INTO v_role FROM identity.memberships AS m
     WHERE m.organization_id = platform.current_org_id() AND m.user_id = v_user;
    IF v_role IS NOT NULL AND v_role <> 'patient' THEN
        RAISE EXCEPTION 'this person is already a member in another role'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'patients_account_role';
    END IF;
    IF v_role IS NULL THEN
        INSERT INTO identity.memberships (organization_id, user_id, role)
        VALUES (platform.current_org_id(), v_user, 'patient');
    END IF;
    RETURN QUERY SELECT v_user, v_created;
END
$$;
REVOKE ALL ON FUNCTION patients.enroll_patient_account(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION patients.enroll_patient_account(text, text) TO carebase_app_access;

-- ...and the invitation that onboarding mails: staff roles may queue it for a patient
-- member of the current organization (admins already may for anyone they add).
CREATE POLICY action_tokens_insert_patient_invitation ON identity.action_tokens FOR INSERT
    WITH CHECK (purpose = 'invitation'
                AND platform.current_app_role() IN ('specialist', 'staff')
                AND EXISTS (SELECT 1 FROM identity.memberships m
                             WHERE m.organization_id = platform.current_org_id()
                               AND m.user_id = action_tokens.user_id AND m.role = 'patient'));
CREATE POLICY email_outbox_insert_patient ON identity.email_outbox FOR INSERT
    WITH CHECK (platform.current_app_role() IN ('specialist', 'staff')
                AND EXISTS (SELECT 1 FROM identity.memberships m
                             WHERE m.organization_id = platform.current_org_id()
                               AND m.user_id = email_outbox.user_id AND m.role = 'patient'));

-- migrate:down
DROP POLICY email_outbox_insert_patient ON identity.email_outbox;
DROP POLICY action_tokens_insert_patient_invitation ON identity.action_tokens;
DROP FUNCTION patients.enroll_patient_account(text, text);
DROP TABLE patients.patients;
