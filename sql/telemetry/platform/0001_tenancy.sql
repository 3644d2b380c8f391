-- migrate:up
-- Telemetry's own database keeps core's tenancy convention: the pipeline sets
-- app.current_org_id / app.current_user_id / app.current_role per transaction, and every
-- tenant table's policies read them through these functions.
CREATE SCHEMA IF NOT EXISTS platform;
GRANT USAGE ON SCHEMA platform TO carebase_app_access;

CREATE FUNCTION platform.current_org_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.current_org_id', true), '')::uuid $$;
CREATE FUNCTION platform.current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.current_user_id', true), '')::uuid $$;
CREATE FUNCTION platform.current_app_role() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.current_role', true), '') $$;
GRANT EXECUTE ON FUNCTION platform.current_org_id(), platform.current_user_id(),
    platform.current_app_role() TO carebase_app_access;

-- migrate:down
DROP FUNCTION platform.current_app_role();
DROP FUNCTION platform.current_user_id();
DROP FUNCTION platform.current_org_id();
