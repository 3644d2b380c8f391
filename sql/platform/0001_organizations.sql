-- migrate:up
CREATE SCHEMA IF NOT EXISTS platform;
GRANT USAGE ON SCHEMA platform TO carebase_app_access;

-- The tenant of the current transaction, as set by Database.transaction(); NULL when unset.
-- Committed local settings read back as '' (not NULL), hence NULLIF.
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

CREATE TABLE platform.organizations (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text        NOT NULL,
    name        text        NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organizations_slug_key UNIQUE (slug),
    CONSTRAINT organizations_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$'),
    CONSTRAINT organizations_name_length CHECK (char_length(name) BETWEEN 1 AND 200)
);

-- An organization is its own tenant: a member sees and edits only their organization.
-- Creating and deleting organizations is a platform (owner pool) job, so no policy allows it.
ALTER TABLE platform.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_select ON platform.organizations
    FOR SELECT USING (id = platform.current_org_id());
CREATE POLICY organizations_update ON platform.organizations
    FOR UPDATE USING (id = platform.current_org_id())
    WITH CHECK (id = platform.current_org_id());
GRANT SELECT, UPDATE (name, version, updated_at) ON platform.organizations TO carebase_app_access;

-- migrate:down
DROP TABLE platform.organizations;
DROP FUNCTION platform.current_app_role();
DROP FUNCTION platform.current_user_id();
DROP FUNCTION platform.current_org_id();
