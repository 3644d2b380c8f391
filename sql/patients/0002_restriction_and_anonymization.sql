-- migrate:up
-- Restriction (GDPR Art. 18): a restricted patient is kept but left out of analytics,
-- segments and campaigns, and only admins (and the patient) read the record. Anonymization
-- keeps what is clinical of the identifiers it replaces: the birth year and the region.
ALTER TABLE patients.patients ADD COLUMN restricted_at timestamptz;
ALTER TABLE patients.patients ADD COLUMN anonymized_at timestamptz;
ALTER TABLE patients.patients ADD COLUMN birth_year smallint;
ALTER TABLE patients.patients ADD COLUMN region text;
ALTER TABLE patients.patients ADD CONSTRAINT patients_region_length CHECK (char_length(region) <= 100);
DROP POLICY patients_select ON patients.patients;
CREATE POLICY patients_select ON patients.patients FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND (platform.current_app_role() IS DISTINCT FROM 'patient'
                OR user_id = platform.current_user_id())
           AND (restricted_at IS NULL OR platform.current_app_role() = 'admin'
                OR user_id = platform.current_user_id()));

-- migrate:down
DROP POLICY patients_select ON patients.patients;
CREATE POLICY patients_select ON patients.patients FOR SELECT
    USING (organization_id = platform.current_org_id()
           AND (platform.current_app_role() IS DISTINCT FROM 'patient'
                OR user_id = platform.current_user_id()));
ALTER TABLE patients.patients DROP CONSTRAINT patients_region_length;
ALTER TABLE patients.patients DROP COLUMN region;
ALTER TABLE patients.patients DROP COLUMN birth_year;
ALTER TABLE patients.patients DROP COLUMN anonymized_at;
ALTER TABLE patients.patients DROP COLUMN restricted_at;
