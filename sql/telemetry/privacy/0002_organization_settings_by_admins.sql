-- migrate:up
-- An organization's admins opt it out of analytics (and back in) themselves; who did it last
-- is kept on the row.
ALTER TABLE privacy.organization_settings ADD COLUMN updated_by uuid;
CREATE POLICY organization_settings_insert ON privacy.organization_settings FOR INSERT
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
CREATE POLICY organization_settings_update ON privacy.organization_settings FOR UPDATE
    USING (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin')
    WITH CHECK (organization_id = platform.current_org_id() AND platform.current_app_role() = 'admin');
GRANT INSERT (organization_id, analytics_opt_out, updated_by),
    UPDATE (analytics_opt_out, updated_at, updated_by) ON privacy.organization_settings
    TO carebase_app_access;

-- migrate:down
REVOKE INSERT, UPDATE ON privacy.organization_settings FROM carebase_app_access;
DROP POLICY organization_settings_update ON privacy.organization_settings;
DROP POLICY organization_settings_insert ON privacy.organization_settings;
ALTER TABLE privacy.organization_settings DROP COLUMN updated_by;
